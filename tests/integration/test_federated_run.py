"""A federated run through `flwr run` (real SuperLink, SuperExec, ServerApp, Ray clients on loopback):
3 sites, SecAgg+, one round per phase (l3 locator first); then a resume from its seg checkpoint with a
4th, broken site."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

ROUNDS = {
    "rounds-l3": 1,
    "local-epochs-l3": 1,
    "rounds-ssl": 1,
    "rounds-seg": 1,
    "rounds-cls": 1,
    "local-epochs-ssl": 1,
    "local-epochs-seg": 1,
    "local-epochs-cls": 1,
}


@pytest.fixture(scope="module")
def first_run(three_sites, superlink_factory, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    link = superlink_factory(3)
    result = link.run(
        {
            "preset": "tiny",
            "site-manifests": ",".join(map(str, three_sites)),
            "run-dir": str(runs),
            "sites-cache": str(runs / "cache"),
            **ROUNDS,
        },
        timeout_s=300,
        log_path=runs / "flwr-run.log",
    )
    link.stop()
    assert result.returncode == 0, (runs / "flwr-run.log").read_text()[-3000:]
    return runs


@pytest.mark.slow
def test_run_folder_has_metrics_checkpoints_report(first_run: Path) -> None:
    latest = first_run / "latest"
    assert latest.is_symlink() and (latest / "summary.json").is_file()
    metrics = pd.read_csv(latest / "metrics.csv")
    assert list(metrics["phase"].unique()) == ["l3", "ssl", "seg", "cls"]
    for phase in ("l3", "ssl", "seg", "cls"):
        assert set(metrics.loc[metrics["phase"] == phase, "site"]) == {"site0", "site1", "site2", "pooled"}
    seg = metrics[(metrics["phase"] == "seg")].set_index("site")
    assert (seg.loc[["site0", "site1", "site2"], "n"] == 5).all()
    assert seg.loc["pooled", "n"] == 15
    site_dice = seg.loc[["site0", "site1", "site2"], "dice_mean"]
    assert site_dice.between(0, 1).all()
    want = float((site_dice * 5).sum() / 15)  # pooled = n-weighted mean
    assert math.isclose(seg.loc["pooled", "dice_mean"], want, rel_tol=1e-6)
    ckpts = sorted(p.name for p in (latest / "checkpoints").iterdir())
    assert ckpts == [
        "best.pt",
        "round-001-l3-01.pt",
        "round-002-ssl-01.pt",
        "round-003-seg-01.pt",
        "round-004-cls-01.pt",
    ]
    l3 = metrics[metrics["phase"] == "l3"].set_index("site")
    assert (l3.loc[["site0", "site1", "site2"], "l3_n"] == 5).all() and l3.loc["pooled", "n"] == 15
    assert 0 <= l3.loc["pooled", "l3_presence_accuracy"] <= 1 and 0 <= l3.loc["pooled", "l3_inside_share"] <= 1
    hidden = l3["l3_inside_share"].isna()  # a site with fewer than 5 holdout series showing L3 keeps it
    assert all("l3_inside_share" in str(l3.loc[site, "suppressed_metrics"]) for site in l3.index[hidden])
    assert summary_l3(latest)["pooled"]["l3_n"] == 15
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["secure_aggregation"] is True and summary["failures"] == []
    assert summary["best"]["phase"] in ("seg", "cls")
    assert (latest / "report.html").is_file() and (latest / "dice_by_round.png").stat().st_size > 1000
    assert (latest / "bland_altman.png").is_file()


def summary_l3(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())["l3_final_round"]


def test_the_run_reports_each_round_as_it_goes(first_run: Path) -> None:
    """`flwr run --stream` (and so `make demo` and `flwr log`) shows one line per round, with the pooled metrics."""
    log = (first_run / "flwr-run.log").read_text()
    assert re.search(r"sarcofed \[l3 1/1\] 3 sites trained, 3 evaluated, [0-9.]+ s \| pooled L3 inside \d+%", log)
    assert "sarcofed [ssl 1/1] 3 sites trained" in log
    assert re.search(
        r"sarcofed \[seg 1/1\] 3 sites trained, 3 evaluated, [0-9.]+ s \| pooled Dice 0\.\d{3}, SMA error", log
    )
    assert "sarcofed [cls 1/1] 3 sites trained, 3 evaluated" in log


def test_checkpoint_is_self_describing(first_run: Path) -> None:
    from common.models.checkpoint import load_checkpoint

    model, info = load_checkpoint(first_run / "latest" / "checkpoints" / "round-003-seg-01.pt")
    assert info["phase"] == "seg" and model.preset.name == "tiny"


@pytest.mark.slow
def test_resume_with_a_broken_site_continues(first_run, three_sites, superlink_factory, tmp_path) -> None:
    broken = tmp_path / "broken_site" / "manifest.csv"
    broken.parent.mkdir()
    broken.write_text("this,is,not\na,manifest,\n")
    runs = tmp_path / "runs"
    checkpoint = first_run / "latest" / "checkpoints" / "round-003-seg-01.pt"
    link = superlink_factory(4)
    result = link.run(
        {
            "preset": "tiny",
            "site-manifests": ",".join(map(str, [*three_sites, broken])),
            "run-dir": str(runs),
            "sites-cache": str(runs / "cache"),
            "resume-from": str(checkpoint),
            "resume-phase": "seg",
            "resume-round": 1,
            **ROUNDS,
        },
        timeout_s=300,
        log_path=runs / "flwr-run.log",
    )
    link.stop()
    assert result.returncode == 0, (runs / "flwr-run.log").read_text()[-3000:]
    metrics = pd.read_csv(runs / "latest" / "metrics.csv")
    assert list(metrics["phase"].unique()) == ["cls"]  # ssl and seg round 1 came from the checkpoint
    assert metrics["global_round"].unique().tolist() == [4]
    assert set(metrics["site"]) == {"site0", "site1", "site2", "pooled"}  # the broken site left out, round done
    summary = json.loads((runs / "latest" / "summary.json").read_text())
    assert summary["resumed_from"]["phase"] == "seg"
    stages = {f["stage"] for f in summary["failures"]}
    assert stages == {"fit", "evaluate"}
    assert (runs / "latest" / "checkpoints" / "round-004-cls-01.pt").is_file()
