"""The run folder: run.json, metrics.csv, summary.json, checkpoints/, report, runs/latest.

One folder per run, named by start time and preset, under ``run-dir``; ``<run-dir>/latest`` is a
relative symlink to the newest. ``run.json`` holds the run config and every Flower run that worked
in the folder (its run id, start, and the round it resumed after): a run resumed from its folder
(``resume-from = <folder>``) continues there, after its last checkpoint. ``metrics.csv`` has one row per
round x phase x site plus one
``site == "pooled"`` row per round, appended as rounds finish so a crashed run keeps what it learned.
Only aggregates reach this folder: sites send summaries, never per-patient values.

Columns of metrics.csv, in order (``COLUMNS``). The holdout columns carry the names of
``common.metrics.site_summary`` unchanged; the pooled row holds ``common.metrics.pooled_summary``.

- ``round``, ``phase``, ``global_round``: the round within its phase (1-based), the phase (ssl, seg,
  cls) and the round counted over all phases.
- ``site``: the site's name, or ``pooled``.
- ``n``: holdout patients the site evaluated (pooled: all sites); empty in rounds without evaluation.
- ``dice_mean``: mean holdout Dice (0-1) of the HU-windowed predicted mask.
- ``sma_abs_pct_err_mean``: mean |SMA predicted - reference| / reference, in percent.
- ``sma_bias_cm2``, ``sma_loa_low``, ``sma_loa_high``: Bland-Altman bias of SMA (predicted -
  reference) and its 95% limits of agreement, all in cm2.
- ``sarcopenia_accuracy``, ``sensitivity``, ``specificity``: the sarcopenia verdict from the
  predicted SMA against the reference verdict, as proportions (0-1).
- ``cls_accuracy``, ``cls_sensitivity``, ``cls_specificity``, ``cls_auroc``: the image classifier
  (probability >= 0.5 is sarcopenic) against the reference verdict, proportions (0-1); filled after
  a cls round.
- ``imat_abs_pct_err_mean``, ``vat_abs_pct_err_mean``, ``sat_abs_pct_err_mean``: mean |area predicted -
  reference| / reference of each fat tissue, in percent, over cases whose reference is a full label map.
- ``myosteatosis_accuracy``: share of cases whose myosteatosis verdict (Martin 2013, from the predicted
  mask's muscle attenuation and the BMI) agrees with the reference mask's, 0-1.
- ``suppressed_metrics``: the names, comma-separated, that the site (or the pooling) suppressed for
  resting on fewer than ``common.metrics.MIN_COHORT`` patients.
- ``n_train``: training slices this round (pooled: their sum); ``loss``: the mean training loss
  (pooled: weighted by ``n_train``).
- ``dp_epsilon``: a site that adds differential-privacy noise to its updates (its own policy) reports
  the epsilon it has spent in this run so far (at its policy's delta); empty otherwise. Pooled: the
  largest.
- ``status``: ``ok``, or for the one pooled row of a round whose update was not made, ``aborted: <why>``.

An empty cell is a value not evaluated, suppressed (named in ``suppressed_metrics``) or undefined
(a sensitivity without a sarcopenic patient, an AUROC with one class).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.metrics import pooled_summary
from common.metrics.location import LOCATION_METRICS, pooled_location

POOLED = "pooled"

HOLDOUT_METRICS: tuple[str, ...] = (
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
    *LOCATION_METRICS,
)
"""The site summary's aggregates that metrics.csv keeps, under the summary's own names (the l3 phase's
from common.metrics.location)."""

COLUMNS: tuple[str, ...] = (
    "round",
    "phase",
    "global_round",
    "site",
    "n",
    *HOLDOUT_METRICS,
    "suppressed_metrics",
    "n_train",
    "loss",
    "dp_epsilon",
    "status",
)
"""The columns of metrics.csv, in order; the module docstring gives their meaning and units."""


def _num(value: Any) -> float:
    """A float, NaN for missing/None/non-numbers (suppressed aggregates arrive as NaN or absent)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _names(value: Any) -> str:
    """``suppressed_metrics`` as one comma-separated cell: a list (``site_summary``) or the string a
    Flower client sends (the list joined with commas)."""
    if isinstance(value, str):
        names = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        names = [str(v) for v in value]
    else:
        names = []
    return ",".join(sorted(name for name in names if name))


def csv_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics.csv columns of one site (or pooled) summary from ``common.metrics`` (NaN where suppressed)."""
    n = _num(summary.get("n", summary.get("l3_n")))
    row: dict[str, Any] = {"n": int(n) if math.isfinite(n) else math.nan}  # empty: hidden (< 5 patients)
    row.update({name: _num(summary.get(name)) for name in HOLDOUT_METRICS})
    row["suppressed_metrics"] = _names(summary.get("suppressed_metrics"))
    return row


def pooled_row(site_summaries: Sequence[Mapping[str, Any]], train: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """The pooled metrics.csv row: ``common.metrics.pooled_summary`` (each mean weighted by its n;
    Bland-Altman SD from within- and between-site variance) plus the train loss weighted by slices.

    ``train`` holds (n_train, loss) per site that trained this round.
    """
    row: dict[str, Any] = {"site": POOLED, "status": "ok"}
    if site_summaries and any("l3_n" in s for s in site_summaries):  # the l3 phase: series, not patients
        pooled = pooled_location(site_summaries)
        row.update(csv_row(pooled))
        row["n"] = pooled["l3_n"]
    elif site_summaries:
        row.update(csv_row(pooled_summary(site_summaries)))
    train = [(n, v) for n, v in train if n > 0 and math.isfinite(v)]
    total = sum(n for n, _ in train)
    row["n_train"] = int(total)
    row["loss"] = sum(n * v for n, v in train) / total if total else math.nan
    return row


CHECKPOINT_NAME = re.compile(r"round-(\d{3,})-(l3|ssl|seg|cls)-(\d{2,})\.pt")
RUN_RECORD = "run.json"


@dataclass(frozen=True)
class RoundCheckpoint:
    """A checkpoint after one finished round: checkpoints/round-<global>-<phase>-<round>.pt."""

    path: Path
    global_round: int
    phase: str
    phase_round: int


def last_checkpoint(folder: Path) -> RoundCheckpoint:
    """The checkpoint of the last finished round in a run folder (where a resume continues from).

    Raises
    ------
    ConfigError
        ``folder`` is not a run folder, or no round of it finished.
    """
    folder = Path(folder)
    if not (folder / "checkpoints").is_dir():
        raise ConfigError(f"{folder}: not a run folder (no checkpoints/ in it)")
    found = []
    for path in (folder / "checkpoints").iterdir():
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match:
            found.append(RoundCheckpoint(path, int(match[1]), match[2], int(match[3])))
    if not found:
        raise ConfigError(f"{folder}: no round of this run finished (no checkpoints/round-*.pt): start a fresh run")
    return max(found, key=lambda c: c.global_round)


def read_run_record(folder: Path) -> dict[str, Any]:
    """run.json of a run folder ({} for a folder written before run folders had one)."""
    path = Path(folder) / RUN_RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None


class RunFolder:
    """Writer for one run's folder; the ServerApp holds one and calls it as rounds finish."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.metrics_csv = self.path / "metrics.csv"
        self.best: dict[str, Any] = {"dice_mean": -math.inf}
        self.failures: list[dict[str, Any]] = []
        self.previous_summary: dict[str, Any] = {}  # a reopened folder's summary.json, as the last run left it

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
        folder._point_latest()
        return folder

    @classmethod
    def reopen(cls, path: Path) -> RunFolder:
        """An existing run folder, to continue a run in: the best round and the failures so far are kept
        (from its summary.json), new rows append to its metrics.csv, and ``latest`` points at it again."""
        folder = cls(Path(path))
        summary_path = folder.path / "summary.json"
        if summary_path.is_file():
            try:
                summary = json.loads(summary_path.read_text())
            except json.JSONDecodeError:
                summary = {}
            if not isinstance(summary, dict):
                summary = {}
            if isinstance(summary.get("best"), dict):
                folder.best = summary["best"]
            folder.failures = list(summary.get("failures") or [])
            folder.previous_summary = summary
        if not math.isfinite(float(folder.best.get("dice_mean", -math.inf))):
            folder.best = folder._best_from_metrics()
        folder._point_latest()
        return folder

    def _best_from_metrics(self) -> dict[str, Any]:
        """The best pooled round in metrics.csv whose checkpoint is still here (a run that stopped before
        writing its summary)."""
        best: dict[str, Any] = {"dice_mean": -math.inf}
        if not self.metrics_csv.is_file():
            return best
        with self.metrics_csv.open(newline="") as handle:
            for row in csv.DictReader(handle):
                dice = _num(row.get("dice_mean"))
                if row.get("site") != POOLED or row.get("status") != "ok" or not dice > best["dice_mean"]:
                    continue
                phase, phase_round, global_round = row["phase"], int(row["round"]), int(row["global_round"])
                checkpoint = self.checkpoint_path(global_round, phase, phase_round)
                if checkpoint.is_file():
                    best = {
                        "dice_mean": dice,
                        "phase": phase,
                        "round": phase_round,
                        "global_round": global_round,
                        "checkpoint": checkpoint.name,
                    }
        return best

    def _point_latest(self) -> None:
        latest = self.path.parent / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        os.symlink(self.path.name, latest)

    def record_run(
        self, flower_run_id: int | None, run_config: Mapping[str, Any], resumed_after: RoundCheckpoint | None
    ) -> dict[str, Any]:
        """Add this Flower run to run.json (the first one also stores the run config); returns the record."""
        record = read_run_record(self.path)
        record.setdefault("run_config", dict(run_config))
        record.setdefault("flower_runs", []).append(
            {
                "run_id": flower_run_id,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "resumed_after": None
                if resumed_after is None
                else {
                    "phase": resumed_after.phase,
                    "round": resumed_after.phase_round,
                    "global_round": resumed_after.global_round,
                    "checkpoint": resumed_after.path.name,
                },
            }
        )
        tmp = self.path / f".{RUN_RECORD}.tmp"
        tmp.write_text(json.dumps(_json_safe(record), indent=2, default=str))
        tmp.replace(self.path / RUN_RECORD)
        return record

    def append_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows to metrics.csv (header written once); unknown keys are dropped, missing left empty.

        A file begun by another SarcoFed version keeps its own header: rows follow its columns, so a
        resumed run never writes values under the wrong names.
        """
        new = not self.metrics_csv.exists()
        fields = list(COLUMNS)
        if not new:
            with self.metrics_csv.open(newline="") as handle:
                fields = next(csv.reader(handle), []) or fields
        with self.metrics_csv.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})

    def checkpoint_path(self, global_round: int, phase: str, phase_round: int) -> Path:
        """Where the global model after one round goes: checkpoints/round-<global>-<phase>-<round>.pt."""
        return self.checkpoints / f"round-{global_round:03d}-{phase}-{phase_round:02d}.pt"

    def offer_best(self, checkpoint: Path, dice_mean: float, phase: str, phase_round: int, global_round: int) -> bool:
        """Copy ``checkpoint`` to checkpoints/best.pt when its pooled holdout ``dice_mean`` beats the best so far."""
        if math.isnan(dice_mean) or dice_mean <= self.best["dice_mean"]:
            return False
        shutil.copyfile(checkpoint, self.checkpoints / "best.pt")
        self.best = {
            "dice_mean": dice_mean,
            "phase": phase,
            "round": phase_round,
            "global_round": global_round,
            "checkpoint": checkpoint.name,
        }
        return True

    def record_failure(self, phase: str, phase_round: int, stage: str, reason: str) -> None:
        """Remember a site failure (reported in summary.json; the round went on with the other sites)."""
        self.failures.append({"phase": phase, "round": phase_round, "stage": stage, "reason": reason[:500]})

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """summary.json: the run's settings, timings, best round, final per-site table and failures."""
        path = self.path / "summary.json"
        body = {
            **summary,
            "best": self.best if math.isfinite(self.best["dice_mean"]) else None,
            "failures": self.failures,
        }
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
