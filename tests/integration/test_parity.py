"""A deployed run learns what the simulated run learns.

The same three sites, run configuration and seed go through a local simulation (Ray actors that live
for the run) and a loopback deployment (a SuperLink and three ``flower-supernode`` processes, where
Flower starts a fresh ClientApp process for every message), SecAgg+ on in both. Every round's update of
the global model must agree. Two simulated runs of the same thing agree to a cosine of about 0.9999
(SecAgg+ rounds stochastically); a classifier trained on a random encoder in the deployed run gave
about 0 in its rounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.parity import compare_runs, run_deployed, run_simulated


@pytest.fixture(scope="module")
def runs(three_sites, tmp_path_factory) -> tuple[Path, Path]:
    sites = {p.parent.name: p for p in three_sites}
    work = tmp_path_factory.mktemp("parity")
    return run_simulated(sites, work / "sim"), run_deployed(sites, work / "deployed")


@pytest.mark.slow
def test_every_round_of_a_deployed_run_matches_the_simulation(runs) -> None:
    simulated, deployed = runs
    rounds = compare_runs(simulated, deployed, "tiny", seed=0)
    assert [r.phase for r in rounds] == ["ssl", "seg", "seg", "cls", "cls"]
    for r in rounds:
        assert r.norm_a > 0, r
        assert r.cosine >= 0.99, r
        assert abs(r.norm_ratio - 1.0) <= 0.05, r


@pytest.mark.slow
def test_the_deployed_run_reports_every_site(runs) -> None:
    import pandas as pd

    _, deployed = runs
    metrics = pd.read_csv(deployed / "metrics.csv")
    cls = metrics[(metrics["phase"] == "cls") & (metrics["round"] == 2)].set_index("site")
    assert set(cls.index) == {"site0", "site1", "site2", "pooled"}
    assert cls["cls_accuracy"].notna().all() and cls["dice_mean"].notna().all()
