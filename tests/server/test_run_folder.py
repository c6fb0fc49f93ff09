"""Run folder: pooled rows weighted by n, suppressed sites left out, best checkpoint, latest link, report,
and metrics.csv under the names of the site summary."""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from common.metrics import pooled_summary, site_summary
from common.metrics.location import LOCATION_METRICS
from server.recorder import Recorder
from server.report import write_report
from server.run_folder import RunFolder, pooled_row

SUMMARY_NAMES = [
    "n",
    "dice_mean",
    "sma_abs_pct_err_mean",
    "sma_bias_cm2",
    "sma_loa_low",
    "sma_loa_high",
    "sarcopenia_accuracy",
    "sensitivity",
    "specificity",
    "cls_accuracy",
    "cls_sensitivity",
    "cls_specificity",
    "cls_auroc",
    "imat_abs_pct_err_mean",
    "vat_abs_pct_err_mean",
    "sat_abs_pct_err_mean",
    "myosteatosis_accuracy",
]


def _summary(n: int, dice: float, bias: float, sd: float) -> dict:
    return {
        "n": n,
        "dice_mean": dice,
        "dice_mean_n": n,
        "sma_abs_pct_err_mean": 2.0,
        "sma_abs_pct_err_mean_n": n,
        "sma_bias_cm2": bias,
        "sma_bias_cm2_n": n,
        "sma_sd_diff_cm2": sd,
        "sma_sd_diff_cm2_n": n,
        "sma_loa_low": bias - 1.96 * sd,
        "sma_loa_high": bias + 1.96 * sd,
        "sarcopenia_accuracy": 0.8,
        "sarcopenia_accuracy_n": n,
    }


def test_pooled_row_weights_by_n_and_skips_suppressed() -> None:
    small = {"n": 3, "dice_mean": math.nan, "dice_mean_n": 3}  # suppressed at the site (< 5 patients)
    row = pooled_row([_summary(10, 0.9, 1.0, 2.0), _summary(30, 0.8, -1.0, 2.0), small], [(40, 1.0), (120, 2.0)])
    assert math.isclose(row["dice_mean"], (10 * 0.9 + 30 * 0.8) / 40)
    assert math.isclose(row["sma_bias_cm2"], (10 * 1.0 - 30 * 1.0) / 40)
    assert row["sma_loa_high"] - row["sma_loa_low"] > 2 * 1.96 * 2.0  # between-site spread widens limits
    assert math.isclose(row["loss"], (40 * 1.0 + 120 * 2.0) / 160) and row["n_train"] == 160


def _holdout(n: int, n_pos: int, seed: int, classifier: bool) -> pd.DataFrame:
    """A site's per-patient holdout table as common.train.evaluate writes it."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(90, 180, n)
    pred = ref + rng.normal(2, 3, n)
    sarc = np.array([True] * n_pos + [False] * (n - n_pos))
    table = pd.DataFrame(
        {
            "dice": rng.uniform(0.85, 0.95, n),
            "vat_abs_pct_err": rng.uniform(5, 15, n),
            "myosteatosis_correct": rng.integers(0, 2, n).astype(float),
            "sma_ref_cm2": ref,
            "sma_pred_cm2": pred,
            "sma_abs_pct_err": np.abs(pred - ref) / ref * 100,
            "sarcopenic_ref": sarc,
            "sarcopenic_pred": sarc,
        }
    )
    if classifier:
        table["cls_prob"] = np.where(sarc, 0.7, 0.2)
        table.loc[0, "cls_prob"] = 0.3  # one sarcopenic patient missed by the classifier
    return table


def _as_sent(summary: dict, site: str) -> dict:
    """A site summary as the server receives it: the list of suppressed names joined with commas."""
    return {**summary, "suppressed_metrics": ",".join(summary["suppressed_metrics"]), "site": site}


def test_metrics_csv_carries_the_site_summary_names(tmp_path, monkeypatch) -> None:
    # The recorder loads each round's arrays into the model; no model is needed to check the rows.
    monkeypatch.setitem(sys.modules, "common.models.sarco", SimpleNamespace(set_weights=lambda *args: None))
    folder = RunFolder(tmp_path / "run")
    recorder = Recorder(
        folder, model=None, save_checkpoint=lambda model, path, phase, r: path.write_bytes(phase.encode())
    )
    fits = [{"site": "a", "n_train": 40, "loss": 1.0}, {"site": "b", "n_train": 20, "loss": 2.0}]
    recorder.after_fit("ssl", 1, [], fits, [])
    evaluated = {}
    for phase, classifier in (("seg", False), ("cls", True)):
        # Site b has 6 patients, 2 of them sarcopenic: its sensitivities rest on 2 patients and are suppressed.
        a, b = site_summary(_holdout(10, 5, 1, classifier)), site_summary(_holdout(6, 2, 2, classifier))
        evaluated[phase] = {"a": a, "b": b, "pooled": pooled_summary([a, b])}
        recorder.after_fit(phase, 1, [], fits, [])
        recorder.after_evaluate(phase, 1, [_as_sent(a, "a"), _as_sent(b, "b")], [])

    metrics = pd.read_csv(folder.metrics_csv)

    assert list(metrics.columns) == [
        "round",
        "phase",
        "global_round",
        "site",
        *SUMMARY_NAMES,
        *LOCATION_METRICS,  # the l3 phase's, empty in the other phases
        "suppressed_metrics",
        "n_train",
        "loss",
        "dp_epsilon",
        "status",
    ]
    assert len(metrics) == 9 and metrics["phase"].tolist() == ["ssl"] * 3 + ["seg"] * 3 + ["cls"] * 3
    ssl = metrics[metrics["phase"] == "ssl"]
    assert ssl[SUMMARY_NAMES].isna().all().all() and ssl["loss"].notna().all()
    for phase, by_site in evaluated.items():
        rows = metrics[metrics["phase"] == phase].set_index("site")
        for site, summary in by_site.items():
            for name in SUMMARY_NAMES:
                got, want = rows.loc[site, name], float(summary[name])
                assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want), (phase, site, name)
    seg, cls = (
        metrics[metrics["phase"] == "seg"].set_index("site"),
        metrics[metrics["phase"] == "cls"].set_index("site"),
    )
    assert seg[["cls_accuracy", "cls_sensitivity", "cls_specificity", "cls_auroc"]].isna().all().all()
    assert cls.loc["a", "cls_sensitivity"] == pytest.approx(4 / 5) and cls.loc["a", "cls_specificity"] == 1.0
    assert math.isnan(cls.loc["b", "cls_sensitivity"])
    assert {"sensitivity", "cls_sensitivity"} <= set(cls.loc["b", "suppressed_metrics"].split(","))
    assert cls.loc["pooled", "n"] == 16 and cls.loc["pooled", "cls_sensitivity"] == pytest.approx(4 / 5)
    assert metrics["n"].dropna().map(float.is_integer).all()
    best = max(("seg", "cls"), key=lambda p: evaluated[p]["pooled"]["dice_mean"])
    assert folder.best["dice_mean"] == pytest.approx(evaluated[best]["pooled"]["dice_mean"])
    assert (folder.checkpoints / "best.pt").read_bytes() == best.encode()


def test_folder_latest_best_and_report(tmp_path) -> None:
    folder = RunFolder.create(tmp_path, "tiny")
    assert (tmp_path / "latest").resolve() == folder.path.resolve()
    for r, dice in enumerate([0.5, 0.7, 0.6], start=1):
        ckpt = folder.checkpoint_path(r, "seg", r)
        ckpt.write_bytes(f"weights {r}".encode())
        rows = [
            {"site": "a", "n": 5, "dice_mean": dice, "sma_bias_cm2": 1.0, "sma_loa_low": -2.0, "sma_loa_high": 4.0},
            {
                "site": "pooled",
                "n": 5,
                "dice_mean": dice,
                "sma_bias_cm2": 1.0,
                "sma_loa_low": -2.0,
                "sma_loa_high": 4.0,
            },
        ]
        folder.append_rows([{**row, "round": r, "phase": "seg", "global_round": r, "status": "ok"} for row in rows])
        folder.offer_best(ckpt, dice, "seg", r, r)
    assert (folder.checkpoints / "best.pt").read_bytes() == b"weights 2"
    folder.write_summary({"preset": "tiny", "nan": math.nan})
    written = json.loads((folder.path / "summary.json").read_text())
    assert written["nan"] is None and written["best"]["dice_mean"] == 0.7
    write_report(folder.path)
    assert (folder.path / "dice_by_round.png").is_file() and (folder.path / "bland_altman.png").is_file()
    assert "0.600" in (folder.path / "report.md").read_text()
    assert len(pd.read_csv(folder.metrics_csv)) == 6
    assert RunFolder.create(tmp_path, "tiny").path != folder.path  # same second: a new folder, latest moves


def _three_seg_rounds(folder: RunFolder) -> None:
    for r, dice in enumerate([0.5, 0.7, 0.6], start=1):
        ckpt = folder.checkpoint_path(r, "seg", r)
        ckpt.write_bytes(f"weights {r}".encode())
        folder.append_rows(
            [
                {
                    "site": "pooled",
                    "n": 5,
                    "dice_mean": dice,
                    "round": r,
                    "phase": "seg",
                    "global_round": r,
                    "status": "ok",
                }
            ]
        )
        folder.offer_best(ckpt, dice, "seg", r, r)


@pytest.mark.parametrize("summary_written", [True, False], ids=["after-summary", "stopped-before-summary"])
def test_a_reopened_folder_keeps_its_best_round_failures_and_rows(tmp_path, summary_written: bool) -> None:
    from server.run_folder import last_checkpoint, read_run_record

    folder = RunFolder.create(tmp_path, "tiny")
    first = folder.record_run(111, {"preset": "tiny", "rounds-seg": 5}, None)
    _three_seg_rounds(folder)
    folder.record_failure("seg", 3, "fit", "node 7 (b) did not reply")
    if summary_written:
        folder.write_summary({"outcome": "failed: the SuperLink went away"})
    RunFolder.create(tmp_path, "tiny")  # another run since: latest moved on

    again = RunFolder.reopen(folder.path)
    assert (tmp_path / "latest").resolve() == folder.path.resolve()
    assert again.best["dice_mean"] == 0.7 and again.best["checkpoint"] == "round-002-seg-02.pt"
    assert again.failures == (folder.failures if summary_written else [])
    last = last_checkpoint(folder.path)
    assert (last.global_round, last.phase, last.phase_round) == (3, "seg", 3)
    record = again.record_run(222, {"preset": "tiny", "rounds-seg": 99}, last)
    assert first["flower_runs"][0]["run_id"] == 111
    assert (
        [r["run_id"] for r in record["flower_runs"]]
        == [111, 222]
        == [r["run_id"] for r in read_run_record(folder.path)["flower_runs"]]
    )
    assert record["run_config"]["rounds-seg"] == 5  # the config the run began with
    assert record["flower_runs"][1]["resumed_after"] == {
        "phase": "seg",
        "round": 3,
        "global_round": 3,
        "checkpoint": "round-003-seg-03.pt",
    }
    ckpt = again.checkpoint_path(4, "seg", 4)
    ckpt.write_bytes(b"weights 4")
    assert not again.offer_best(ckpt, 0.65, "seg", 4, 4)  # worse than round 2: best.pt stays
    assert (again.checkpoints / "best.pt").read_bytes() == b"weights 2"
    again.append_rows(
        [{"site": "pooled", "dice_mean": 0.65, "round": 4, "phase": "seg", "global_round": 4, "status": "ok"}]
    )
    assert pd.read_csv(folder.metrics_csv)["global_round"].tolist() == [1, 2, 3, 4]  # one table, one header


def test_rows_follow_the_header_of_a_metrics_file_begun_by_another_version(tmp_path):
    import csv

    folder = RunFolder(tmp_path / "20261202-120000-tiny")
    old_columns = ["round", "phase", "global_round", "site", "n", "dice_mean", "status"]
    folder.metrics_csv.parent.mkdir(parents=True, exist_ok=True)
    folder.metrics_csv.write_text(",".join(old_columns) + "\n1,seg,1,a,10,0.8,ok\n")

    folder.append_rows([{"round": 2, "phase": "seg", "global_round": 2, "site": "a", "n": 10, "dice_mean": 0.9,
                         "vat_abs_pct_err_mean": 12.0, "status": "ok"}])  # fmt: skip

    with folder.metrics_csv.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == old_columns and rows[2] == ["2", "seg", "2", "a", "10", "0.9", "ok"]
