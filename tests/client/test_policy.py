"""A hospital's node enforces its own policy, whatever the coordinator sends."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from client.policy import PolicyRefusal, SitePolicy
from common.errors import ConfigError


def test_defaults_without_a_policy_file() -> None:
    policy = SitePolicy.from_node_config({"data-path": "/x/manifest.csv"})
    assert (policy.min_sites, policy.min_threshold, policy.min_cohort) == (3, 2, 5) and not policy.dp_enabled


def test_a_policy_file_is_read_and_checked(tmp_path: Path) -> None:
    file = tmp_path / "policy.toml"
    file.write_text("min-sites = 5\nmax-update-norm = 10.5\ndp-clip-norm = 1.0\ndp-noise-multiplier = 0.8\n")
    policy = SitePolicy.from_node_config({"policy": str(file)})
    assert policy.min_sites == 5 and policy.max_update_norm == 10.5 and policy.dp_enabled
    file.write_text("min_sites = 5\n")
    with pytest.raises(ConfigError, match="unknown key"):
        SitePolicy.from_node_config({"policy": str(file)})
    file.write_text("min-sites = 2\n")
    with pytest.raises(ConfigError, match="min-sites 2 < 3"):
        SitePolicy.from_node_config({"policy": str(file)})
    file.write_text("dp-clip-norm = 1.0\n")
    with pytest.raises(ConfigError, match="both dp-clip-norm and dp-noise-multiplier"):
        SitePolicy.from_node_config({"policy": str(file)})
    with pytest.raises(ConfigError, match="cannot be read"):
        SitePolicy.from_node_config({"policy": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("sample", "shares", "threshold", "rule"),
    [
        pytest.param(2, 2, 2, "min-sites", id="two-sites"),
        pytest.param(3, 3, 1, "min-threshold", id="threshold-1"),
        pytest.param(4, 4, 2, "min-threshold", id="threshold-half-of-shares"),
        pytest.param(3, 1, 1, "min-threshold", id="one-share-is-the-secret"),
        pytest.param(3, 5, 3, "min-threshold", id="more-shares-than-sites"),
    ],
)
def test_secagg_settings_that_expose_an_update_are_refused(sample: int, shares: int, threshold: int, rule: str) -> None:
    with pytest.raises(PolicyRefusal) as refused:
        SitePolicy().check_secagg_setup(sample, shares, threshold)
    assert refused.value.rule == rule


def test_secagg_settings_of_a_normal_round_pass() -> None:
    SitePolicy().check_secagg_setup(sample_num=4, share_num=4, threshold=3)
    SitePolicy().check_secagg_setup(sample_num=3, share_num=3, threshold=2)


def test_unmask_lists_that_reveal_both_masks_are_refused() -> None:
    policy = SitePolicy()
    policy.check_unmask(1, active=[1, 2, 3], dead=[4])
    with pytest.raises(PolicyRefusal, match="both active and dead"):
        policy.check_unmask(1, active=[1, 2, 3], dead=[3])
    with pytest.raises(PolicyRefusal, match="this node is listed as dead"):
        policy.check_unmask(1, active=[2, 3], dead=[1])


@pytest.mark.parametrize(("epochs", "lr_scale"), [(0, 1.0), (50, 1.0), (1, 0.0), (1, 5.0), (1, math.nan)])
def test_round_settings_outside_the_bounds_are_refused(epochs: int, lr_scale: float) -> None:
    with pytest.raises(PolicyRefusal):
        SitePolicy().check_round(epochs, lr_scale)


def test_site_noise_is_counted_in_the_nodes_own_ledger_and_capped() -> None:
    """The site's accountant lives in its node's Context state (kept by its SuperNode, never sent)."""
    import numpy as np
    from flwr.app import RecordDict

    from client.task import PRIVACY_RECORD, add_site_noise
    from common.privacy import gaussian_epsilon

    policy = SitePolicy(dp_clip_norm=1.0, dp_noise_multiplier=1.0, dp_max_epsilon=gaussian_epsilon(2, 1.0, 1e-5))
    state = RecordDict()
    update = [np.full(1000, 0.5, np.float32)]
    spent = []
    for _ in range(2):
        noised, epsilon = add_site_noise(update, policy, state)
        assert not np.allclose(noised[0], update[0]) and noised[0].dtype == np.float32
        spent.append(epsilon)
    assert spent == [gaussian_epsilon(1, 1.0, 1e-5), gaussian_epsilon(2, 1.0, 1e-5)]
    assert int(state.config_records[PRIVACY_RECORD]["releases"]) == 2
    with pytest.raises(PolicyRefusal, match="dp-max-epsilon"):
        add_site_noise(update, policy, state)
    assert int(state.config_records[PRIVACY_RECORD]["releases"]) == 2  # a refused round spends nothing
