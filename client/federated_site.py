"""Where a ClientApp finds its hospital's data: node config in deployment, a synthetic site in simulation.

Deployment: the SuperNode is started with ``--node-config "data-path='/data/site/manifest.csv'"``
(optionally ``site-name='...'``). Simulation: ``partition-id`` picks a site, either from the run
config's ``site-manifests`` (comma-separated manifest paths, in partition order) or from the
consortium named by ``consortium`` (a name under simulations/consortia/ or a path to its TOML),
generated once into ``sites-cache`` by ``common.phantom.ensure_consortium``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError

# Resolved as a file next to this package (the app bundle ships the TOMLs), not imported: client/ does
# not import simulations/.
_CONSORTIA_DIR = Path(__file__).resolve().parents[1] / "simulations" / "consortia"


@dataclass(frozen=True)
class Site:
    """One hospital's data as the ClientApp sees it."""

    name: str
    manifest: Path


def consortium_toml(value: str) -> Path:
    """A consortium name ("demo", "tiny") or a path to its TOML -> the TOML path."""
    path = Path(value).expanduser()
    if path.suffix == ".toml":
        return path.absolute()
    candidate = _CONSORTIA_DIR / f"{value}.toml"
    if not candidate.is_file():
        known = sorted(p.stem for p in _CONSORTIA_DIR.glob("*.toml"))
        raise ConfigError(f"run config consortium={value!r}: no {candidate}; known consortia: {', '.join(known) or 'none'}")
    return candidate


def resolve_site(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> Site:
    """Pick this node's site (see the module docstring for the order of lookups).

    Raises
    ------
    ConfigError
        Neither ``data-path`` nor ``partition-id`` is in the node config, or the partition id is
        outside the list of sites.
    """
    if "data-path" in node_config:
        manifest = Path(str(node_config["data-path"])).expanduser().absolute()
        name = str(node_config.get("site-name") or manifest.parent.name)
        return Site(name, manifest)
    if "partition-id" not in node_config:
        raise ConfigError("node config has neither data-path (deployment) nor partition-id (simulation); start the "
                          "SuperNode with --node-config \"data-path='/path/to/manifest.csv'\"")
    pid = int(node_config["partition-id"])
    listed = [s.strip() for s in str(run_config.get("site-manifests", "") or "").split(",") if s.strip()]
    if listed:
        sites = [Site(Path(m).parent.name, Path(m).expanduser().absolute()) for m in listed]
    else:
        from common.phantom import ensure_consortium

        cache = Path(str(run_config.get("sites-cache", ".cache/sites"))).expanduser().absolute()
        found = ensure_consortium(consortium_toml(str(run_config.get("consortium", "demo"))), cache)
        sites = [Site(name, Path(path)) for name, path in sorted(found.items())]
    if not 0 <= pid < len(sites):
        raise ConfigError(f"partition-id {pid} but the federation has {len(sites)} sites: set num-supernodes to {len(sites)}")
    return sites[pid]
