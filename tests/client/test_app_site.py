"""Where the ClientApp finds its data: node config in deployment, partition-id in simulation."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.federated_site import resolve_site
from common.errors import ConfigError


def test_deployment_uses_data_path(tmp_path: Path) -> None:
    site = resolve_site({"data-path": str(tmp_path / "hospital-a" / "manifest.csv")}, {})
    assert site.name == "hospital-a" and site.manifest == tmp_path / "hospital-a" / "manifest.csv"


def test_simulation_picks_listed_manifest_by_partition(tmp_path: Path) -> None:
    listed = ",".join(str(tmp_path / f"s{i}" / "manifest.csv") for i in range(3))
    assert resolve_site({"partition-id": 2}, {"site-manifests": listed}).name == "s2"
    with pytest.raises(ConfigError, match="num-supernodes"):
        resolve_site({"partition-id": 3}, {"site-manifests": listed})


def test_no_site_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data-path"):
        resolve_site({}, {})
