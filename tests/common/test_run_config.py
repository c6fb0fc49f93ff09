"""The run configuration schema against pyproject.toml, and the errors a bad run config gets."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.run_config import RunConfig
from tests.conftest import app_run_config


def test_pyproject_defines_exactly_the_schema() -> None:
    assert list(app_run_config()) == RunConfig.keys()
    config = RunConfig.from_mapping(app_run_config())
    assert config.secure_aggregation is True and isinstance(config.proximal_mu, float)


def test_an_int_where_a_float_is_expected_is_a_float() -> None:
    assert RunConfig.from_mapping(app_run_config(proximal_mu=0)).proximal_mu == 0.0


def test_shares_keep_their_kind() -> None:
    assert RunConfig.from_mapping(app_run_config(secagg_num_shares=3)).secagg_num_shares == 3
    assert isinstance(RunConfig.from_mapping(app_run_config(secagg_num_shares=0.5)).secagg_num_shares, float)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param({"rounds-seg": "8"}, "'rounds-seg' must be an integer", id="string-for-int"),
        pytest.param({"rounds-seg": 2.5}, "'rounds-seg' must be an integer", id="float-for-int"),
        pytest.param({"secure-aggregation": 1}, "'secure-aggregation' must be true or false", id="int-for-bool"),
        pytest.param({"proximal-mu": True}, "'proximal-mu' must be a number", id="bool-for-float"),
        pytest.param({"preset": 3}, "'preset' must be a string", id="int-for-str"),
        pytest.param({"rounds-sgd": 3}, "'rounds-sgd' is not a SarcoFed setting", id="unknown-key"),
    ],
)
def test_bad_values_name_the_key(change: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        RunConfig.from_mapping({**app_run_config(), **change})


def test_a_missing_key_is_named() -> None:
    config = app_run_config()
    del config["min-sites"]
    with pytest.raises(ConfigError, match="'min-sites' is missing"):
        RunConfig.from_mapping(config)


@pytest.mark.parametrize("name", ["demo", "tiny"])
def test_each_profile_is_a_valid_run_config(name: str) -> None:
    """`flwr run . --run-config simulations/profiles/<name>.toml` = pyproject's defaults + the profile."""
    import tomllib
    from pathlib import Path

    profile = tomllib.loads(
        (Path(__file__).resolve().parents[2] / "simulations" / "profiles" / f"{name}.toml").read_text()
    )
    config = RunConfig.from_mapping({**app_run_config(), **profile})
    assert config.preset == name and set(profile) <= set(RunConfig.keys())
