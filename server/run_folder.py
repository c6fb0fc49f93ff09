"""The run folder (DESIGN.md section 3): metrics.csv, summary.json, checkpoints/, report, runs/latest.

One folder per run, named by start time and preset, under ``run-dir``; ``<run-dir>/latest`` is a
relative symlink to the newest. ``metrics.csv`` has one row per round x phase x site plus one
``site == "pooled"`` row per round, appended as rounds finish so a crashed run keeps what it learned.
Only aggregates reach this folder: sites send summaries, never per-patient values.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.metrics import pooled_summary

POOLED = "pooled"
# The columns of metrics.csv, in order. Units: sma_* in cm2, sma_abs_pct_err in percent.
COLUMNS: tuple[str, ...] = (
    "round", "phase", "site", "n", "dice", "sma_abs_pct_err", "sarcopenia_accuracy", "loss",
    "global_round", "n_train", "sma_bias_cm2", "sma_loa_low_cm2", "sma_loa_high_cm2", "status",
)


def _num(value: Any) -> float:
    """A float, NaN for missing/None/non-numbers (suppressed aggregates arrive as NaN or absent)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def csv_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics.csv columns of one site (or pooled) summary from ``common.metrics`` (NaN where suppressed)."""
    return {
        "n": int(_num(summary.get("n")) if math.isfinite(_num(summary.get("n"))) else 0),
        "dice": _num(summary.get("dice_mean")),
        "sma_abs_pct_err": _num(summary.get("sma_abs_pct_err_mean")),
        "sarcopenia_accuracy": _num(summary.get("sarcopenia_accuracy")),
        "sma_bias_cm2": _num(summary.get("sma_bias_cm2")),
        "sma_loa_low_cm2": _num(summary.get("sma_loa_low")),
        "sma_loa_high_cm2": _num(summary.get("sma_loa_high")),
    }


def pooled_row(site_summaries: Sequence[Mapping[str, Any]], train: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """The pooled metrics.csv row: ``common.metrics.pooled_summary`` (each mean weighted by its n;
    Bland-Altman SD from within- and between-site variance) plus the train loss weighted by slices.

    ``train`` holds (n_train, loss) per site that trained this round.
    """
    row: dict[str, Any] = {"site": POOLED, "status": "ok"}
    if site_summaries:
        row.update(csv_row(pooled_summary(site_summaries)))
    train = [(n, v) for n, v in train if n > 0 and math.isfinite(v)]
    total = sum(n for n, _ in train)
    row["n_train"] = int(total)
    row["loss"] = sum(n * v for n, v in train) / total if total else math.nan
    return row


class RunFolder:
    """Writer for one run's folder; the ServerApp holds one and calls it as rounds finish."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.metrics_csv = self.path / "metrics.csv"
        self.best: dict[str, Any] = {"dice": -math.inf}
        self.failures: list[dict[str, Any]] = []

    @classmethod
    def create(cls, run_dir: Path, preset: str) -> RunFolder:
        """A new folder ``<run_dir>/<YYYYmmdd-HHMMSS>-<preset>`` and ``<run_dir>/latest`` pointing at it."""
        run_dir = Path(run_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = run_dir / f"{stamp}-{preset}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = run_dir / f"{stamp}-{preset}-{suffix}"
        folder = cls(path)
        latest = run_dir / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        os.symlink(path.name, latest)
        return folder

    def append_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows to metrics.csv (header written once); unknown keys are dropped, missing left empty."""
        new = not self.metrics_csv.exists()
        with self.metrics_csv.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})

    def checkpoint_path(self, global_round: int, phase: str, phase_round: int) -> Path:
        """Where the global model after one round goes: checkpoints/round-<global>-<phase>-<round>.pt."""
        return self.checkpoints / f"round-{global_round:03d}-{phase}-{phase_round:02d}.pt"

    def offer_best(self, checkpoint: Path, dice: float, phase: str, phase_round: int, global_round: int) -> bool:
        """Copy ``checkpoint`` to checkpoints/best.pt when its pooled holdout Dice beats the best so far."""
        if math.isnan(dice) or dice <= self.best["dice"]:
            return False
        shutil.copyfile(checkpoint, self.checkpoints / "best.pt")
        self.best = {"dice": dice, "phase": phase, "round": phase_round, "global_round": global_round,
                     "checkpoint": checkpoint.name}
        return True

    def record_failure(self, phase: str, phase_round: int, stage: str, reason: str) -> None:
        """Remember a site failure (reported in summary.json; the round went on with the other sites)."""
        self.failures.append({"phase": phase, "round": phase_round, "stage": stage, "reason": reason[:500]})

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """summary.json: the run's settings, timings, best round, final per-site table and failures."""
        path = self.path / "summary.json"
        body = {**summary, "best": self.best if math.isfinite(self.best["dice"]) else None, "failures": self.failures}
        path.write_text(json.dumps(_json_safe(body), indent=2, default=str))
        return path


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), recursively through dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
