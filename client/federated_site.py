"""Where a ClientApp finds its hospital's data: node config in deployment, a synthetic site in simulation.

Deployment: the SuperNode is started with
``--node-config "data-path='/data/site/manifest.csv' site-name='hospital-a' cache-dir='/var/cache/sarcofed'"``:
``site-name`` is required (it is the site's name in every metric and report of the run; two sites of a
round may not share one), ``cache-dir`` is optional (where resampled slices are kept between rounds;
without it each round reads the images again). Simulation: ``partition-id`` picks a site, either from
the run config's ``site-manifests`` (comma-separated manifest paths, in partition order; each named
after its folder) or from the consortium named by ``consortium`` (a name under simulations/consortia/
or a path to its TOML), generated once into ``<sites-cache>/<consortium>`` by
``common.phantom.ensure_consortium``; slices are cached under ``<sites-cache>/.slices``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.run_config import RunConfig

# Resolved as a file next to this package (the app bundle ships the TOMLs), not imported: client/ does
# not import simulations/.
_CONSORTIA_DIR = Path(__file__).resolve().parents[1] / "simulations" / "consortia"
NODE_CONFIG_KEYS: tuple[str, ...] = ("data-path", "site-name", "cache-dir", "policy")
"""What a hospital's node config may hold (a misspelt key is an error, not a silent default)."""


@dataclass(frozen=True)
class Site:
    """One hospital's data as the ClientApp sees it."""

    name: str
    manifest: Path
    cache_dir: Path | None = None


def consortium_toml(value: str) -> Path:
    """A consortium name ("demo", "tiny") or a path to its TOML -> the TOML path."""
    path = Path(value).expanduser()
    if path.suffix == ".toml":
        return path.absolute()
    candidate = _CONSORTIA_DIR / f"{value}.toml"
    if not candidate.is_file():
        known = sorted(p.stem for p in _CONSORTIA_DIR.glob("*.toml"))
        raise ConfigError(
            f"run config consortium={value!r}: no {candidate}; known consortia: {', '.join(known) or 'none'}"
        )
    return candidate


def hospital_site(node_config: Mapping[str, Any]) -> Site:
    """The site a deployed SuperNode serves, from its node config (see the module docstring)."""
    unknown = sorted(set(node_config) - set(NODE_CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"node config: unknown key(s) {', '.join(unknown)}; a hospital node takes {', '.join(NODE_CONFIG_KEYS)}"
        )
    name = str(node_config.get("site-name") or "").strip()
    if not name:
        raise ConfigError(
            "node config: site-name is required (the hospital's name in the run's metrics); start the "
            "SuperNode with --node-config \"data-path='/data/site/manifest.csv' site-name='hospital-a'\""
        )
    manifest = Path(str(node_config["data-path"])).expanduser().absolute()
    cache = str(node_config.get("cache-dir") or "").strip()
    return Site(name, manifest, Path(cache).expanduser().absolute() if cache else None)


def resolve_site(node_config: Mapping[str, Any], run_config: RunConfig) -> Site:
    """Pick this node's site (see the module docstring for the order of lookups).

    Raises
    ------
    ConfigError
        Neither ``data-path`` nor ``partition-id`` is in the node config, a hospital node has no
        ``site-name`` or an unknown key, or the partition id is outside the list of sites.
    """
    if "data-path" in node_config:
        return hospital_site(node_config)
    if "partition-id" not in node_config:
        raise ConfigError(
            "node config has neither data-path (deployment) nor partition-id (simulation); start the "
            "SuperNode with --node-config \"data-path='/path/to/manifest.csv' site-name='hospital-a'\""
        )
    pid = int(node_config["partition-id"])
    cache = Path(run_config.sites_cache).expanduser().absolute()
    listed = [s.strip() for s in run_config.site_manifests.split(",") if s.strip()]
    if listed:
        manifests = {Path(m).parent.name: Path(m).expanduser().absolute() for m in listed}
        if len(manifests) != len(listed):
            raise ConfigError(
                "run config site-manifests: two manifests in folders of the same name; each simulated "
                "site is named after its folder"
            )
        sites = [Site(name, path, cache / ".slices") for name, path in manifests.items()]
    else:
        from common.phantom import ensure_consortium

        toml = consortium_toml(run_config.consortium)
        found = ensure_consortium(toml, cache / toml.stem)
        sites = [Site(name, Path(path), cache / ".slices") for name, path in sorted(found.items())]
    if not 0 <= pid < len(sites):
        raise ConfigError(
            f"partition-id {pid} but the federation has {len(sites)} sites: set num-supernodes to {len(sites)}"
        )
    return sites[pid]
