"""Where the ClientApp finds its data: node config in deployment, partition-id in simulation."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.federated_site import resolve_site
from common.errors import ConfigError
from common.run_config import RunConfig
from tests.conftest import app_run_config


def _run_config(**overrides: object) -> RunConfig:
    return RunConfig.from_mapping(app_run_config(**overrides))


def test_deployment_uses_data_path_and_site_name(tmp_path: Path) -> None:
    manifest = tmp_path / "site" / "manifest.csv"
    site = resolve_site(
        {"data-path": str(manifest), "site-name": "hospital-a", "cache-dir": str(tmp_path / "c")}, _run_config()
    )
    assert site.name == "hospital-a" and site.manifest == manifest and site.cache_dir == tmp_path / "c"
    assert resolve_site({"data-path": str(manifest), "site-name": "b"}, _run_config()).cache_dir is None


def test_deployment_without_site_name_is_refused(tmp_path: Path) -> None:
    """Named after the manifest's folder, every hospital following the README's example was called "site"."""
    with pytest.raises(ConfigError, match="site-name is required"):
        resolve_site({"data-path": str(tmp_path / "site" / "manifest.csv")}, _run_config())


def test_a_misspelt_node_config_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="site_name"):
        resolve_site({"data-path": str(tmp_path / "m.csv"), "site_name": "a"}, _run_config())


def test_simulation_picks_listed_manifest_by_partition(tmp_path: Path) -> None:
    listed = ",".join(str(tmp_path / f"s{i}" / "manifest.csv") for i in range(3))
    site = resolve_site({"partition-id": 2}, _run_config(site_manifests=listed, sites_cache=str(tmp_path / "cache")))
    assert site.name == "s2" and site.cache_dir == tmp_path / "cache" / ".slices"
    with pytest.raises(ConfigError, match="num-supernodes"):
        resolve_site({"partition-id": 3}, _run_config(site_manifests=listed))


def test_simulated_sites_with_the_same_folder_name_are_refused(tmp_path: Path) -> None:
    listed = f"{tmp_path / 'a' / 'site' / 'manifest.csv'},{tmp_path / 'b' / 'site' / 'manifest.csv'}"
    with pytest.raises(ConfigError, match="same name"):
        resolve_site({"partition-id": 0}, _run_config(site_manifests=listed))


def test_no_site_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data-path"):
        resolve_site({}, _run_config())
