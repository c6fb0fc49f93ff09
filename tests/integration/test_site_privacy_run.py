"""A federated run with differential privacy at every site (their policy file), through SecAgg+ on real
Flower processes: every round is applied, and each site's spent epsilon reaches metrics.csv and summary.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

ROUNDS = {
    "rounds-ssl": 1,
    "rounds-seg": 1,
    "rounds-cls": 0,
    "local-epochs-ssl": 1,
    "local-epochs-seg": 1,
    "local-epochs-cls": 1,
}


@pytest.mark.slow
def test_a_run_with_little_site_noise_applies_every_round_and_reports_epsilon(
    three_sites, superlink_factory, tmp_path: Path
) -> None:
    from common.privacy import gaussian_epsilon

    policy = tmp_path / "policy.toml"  # as simulations/policies/dp-demo.toml: little noise, a huge epsilon
    policy.write_text("dp-clip-norm = 2.0\ndp-noise-multiplier = 0.0001\ndp-delta = 1e-5\n")
    runs = tmp_path / "runs"
    link = superlink_factory(3)
    result = link.run(
        {
            "preset": "tiny",
            "site-manifests": ",".join(map(str, three_sites)),
            "run-dir": str(runs),
            "sites-cache": str(runs / "cache"),
            "simulated-site-policy": str(policy),
            **ROUNDS,
        },
        timeout_s=300,
        log_path=runs / "flwr-run.log",
    )
    link.stop()
    assert result.returncode == 0, (runs / "flwr-run.log").read_text()[-3000:]
    metrics = pd.read_csv(runs / "latest" / "metrics.csv")
    pooled = metrics[metrics["site"] == "pooled"]
    assert (pooled["status"] == "ok").all() and list(pooled["phase"]) == ["ssl", "seg"], pooled["status"].tolist()
    sites = metrics[metrics["site"] != "pooled"].set_index(["phase", "site"])["dp_epsilon"]
    assert sites.loc["ssl"].tolist() == [pytest.approx(gaussian_epsilon(1, 1e-4, 1e-5))] * 3
    assert sites.loc["seg"].tolist() == [pytest.approx(gaussian_epsilon(2, 1e-4, 1e-5))] * 3  # the run's ledger
    summary = json.loads((runs / "latest" / "summary.json").read_text())
    spent = summary["privacy"]["dp_epsilon_by_site"]
    assert len(spent) == 3 and all(math.isfinite(v) and v > 1e6 for v in spent.values())
