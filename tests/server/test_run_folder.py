"""Run folder: pooled rows weighted by n, suppressed sites left out, best checkpoint, latest link, report."""

from __future__ import annotations

import json
import math

import pandas as pd

from server.report import write_report
from server.run_folder import RunFolder, pooled_row


def _summary(n: int, dice: float, bias: float, sd: float) -> dict:
    return {"n": n, "dice_mean": dice, "dice_mean_n": n, "sma_abs_pct_err_mean": 2.0, "sma_abs_pct_err_mean_n": n,
            "sma_bias_cm2": bias, "sma_bias_cm2_n": n, "sma_sd_diff_cm2": sd, "sma_sd_diff_cm2_n": n,
            "sma_loa_low": bias - 1.96 * sd, "sma_loa_high": bias + 1.96 * sd, "sarcopenia_accuracy": 0.8,
            "sarcopenia_accuracy_n": n}


def test_pooled_row_weights_by_n_and_skips_suppressed() -> None:
    small = {"n": 3, "dice_mean": math.nan, "dice_mean_n": 3}  # suppressed at the site (< 5 patients)
    row = pooled_row([_summary(10, 0.9, 1.0, 2.0), _summary(30, 0.8, -1.0, 2.0), small], [(40, 1.0), (120, 2.0)])
    assert math.isclose(row["dice"], (10 * 0.9 + 30 * 0.8) / 40)
    assert math.isclose(row["sma_bias_cm2"], (10 * 1.0 - 30 * 1.0) / 40)
    assert row["sma_loa_high_cm2"] - row["sma_loa_low_cm2"] > 2 * 1.96 * 2.0  # between-site spread widens limits
    assert math.isclose(row["loss"], (40 * 1.0 + 120 * 2.0) / 160) and row["n_train"] == 160


def test_folder_latest_best_and_report(tmp_path) -> None:
    folder = RunFolder.create(tmp_path, "tiny")
    assert (tmp_path / "latest").resolve() == folder.path.resolve()
    for r, dice in enumerate([0.5, 0.7, 0.6], start=1):
        ckpt = folder.checkpoint_path(r, "seg", r)
        ckpt.write_bytes(f"weights {r}".encode())
        rows = [{"site": "a", "n": 5, "dice": dice, "sma_bias_cm2": 1.0, "sma_loa_low_cm2": -2.0, "sma_loa_high_cm2": 4.0},
                {"site": "pooled", "n": 5, "dice": dice, "sma_bias_cm2": 1.0, "sma_loa_low_cm2": -2.0, "sma_loa_high_cm2": 4.0}]
        folder.append_rows([{**row, "round": r, "phase": "seg", "global_round": r, "status": "ok"} for row in rows])
        folder.offer_best(ckpt, dice, "seg", r, r)
    assert (folder.checkpoints / "best.pt").read_bytes() == b"weights 2"
    folder.write_summary({"preset": "tiny", "nan": math.nan})
    assert json.loads((folder.path / "summary.json").read_text())["nan"] is None
    write_report(folder.path)
    assert (folder.path / "dice_by_round.png").is_file() and (folder.path / "bland_altman.png").is_file()
    assert "0.6" in (folder.path / "report.md").read_text()
    assert len(pd.read_csv(folder.metrics_csv)) == 6
    assert RunFolder.create(tmp_path, "tiny").path != folder.path  # same second: a new folder, latest moves
