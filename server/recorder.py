"""Turns each finished round into files: the global model's checkpoint and the metrics.csv rows.

The strategy calls ``after_fit`` (new global arrays, per-site training loss and slice counts, the
sites that failed) and, in the seg and cls phases, ``after_evaluate`` (per-site holdout summaries,
already suppressed under 5 patients by the sites). ``Recorder`` keeps the union model: each phase
writes only its own arrays into it, so the encoder trained in ssl carries into seg and cls.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from server.run_folder import POOLED, RunFolder, csv_row, pooled_row


class Recorder:
    """Checkpoints + metrics for one run; see the module docstring for when it is called."""

    def __init__(self, folder: RunFolder, model: Any, save_checkpoint: Any, start_global_round: int = 0) -> None:
        self.folder = folder
        self.model = model
        self._save = save_checkpoint  # (model, path, phase, phase_round) -> None
        self.global_round = start_global_round
        self._fits: list[dict[str, Any]] = []
        self._checkpoint: Path | None = None
        self.last_rows: list[dict[str, Any]] = []
        self.last_rows_by_phase: dict[str, list[dict[str, Any]]] = {}
        self.round_seconds: list[float] = []
        self.dp_epsilon: dict[str, float] = {}  # site -> epsilon spent so far in this run (sites with DP on)
        self.site_names: dict[int, str] = {}  # node id -> site name, as the strategies learn them
        self._t = time.perf_counter()

    def after_fit(
        self, phase: str, phase_round: int, arrays: list[np.ndarray], fits: list[dict[str, Any]], failures: list[str]
    ) -> dict[str, Any] | None:
        """Checkpoint the new global model; in ssl (no holdout metric) also write the round's rows and
        return the pooled row."""
        from common.models.sarco import set_weights

        self.global_round += 1
        for fit in fits:
            if math.isfinite(fit.get("dp_epsilon", math.nan)):
                self.dp_epsilon[fit["site"]] = fit["dp_epsilon"]
        set_weights(self.model, phase, arrays)
        self._checkpoint = self.folder.checkpoint_path(self.global_round, phase, phase_round)
        self._save(self.model, self._checkpoint, phase, phase_round)
        self._fits = fits
        for reason in failures:
            self.folder.record_failure(phase, phase_round, "fit", reason)
        if phase == "ssl":  # no holdout metric in ssl: the row carries the training loss only
            return self._write(phase, phase_round, [])
        return None

    def after_abort(self, phase: str, phase_round: int, reason: str, failures: list[str]) -> None:
        """A round whose update was not made: its failures, and one pooled row ``aborted: <reason>`` (no
        checkpoint, no site rows: nothing of the round's training is repeated from an earlier one)."""
        self.global_round += 1
        for failure in failures:
            self.folder.record_failure(phase, phase_round, "fit", failure)
        self.folder.record_failure(phase, phase_round, "round", f"aborted: {reason}")
        self._fits, self._checkpoint = [], None
        self.folder.append_rows(
            [
                {
                    "site": POOLED,
                    "status": f"aborted: {reason}",
                    "round": phase_round,
                    "phase": phase,
                    "global_round": self.global_round,
                }
            ]
        )
        self._t = time.perf_counter()

    def after_evaluate(
        self, phase: str, phase_round: int, summaries: list[dict[str, Any]], failures: list[str]
    ) -> dict[str, Any]:
        """Write the round's rows (sites and pooled), offer the checkpoint as best.pt; return the pooled row."""
        for reason in failures:
            self.folder.record_failure(phase, phase_round, "evaluate", reason)
        pooled = self._write(phase, phase_round, summaries)
        if self._checkpoint is not None:
            self.folder.offer_best(
                self._checkpoint, float(pooled.get("dice_mean", math.nan)), phase, phase_round, self.global_round
            )
        return pooled

    def _write(self, phase: str, phase_round: int, summaries: list[dict[str, Any]]) -> dict[str, Any]:
        fits = {f["site"]: f for f in self._fits}
        by_site = {str(s["site"]): s for s in summaries}
        rows = []
        for site in sorted(set(fits) | set(by_site)):
            row: dict[str, Any] = {"site": site, "status": "ok"}
            if site in by_site:
                row.update(csv_row(by_site[site]))
            fit = fits.get(site, {})
            row["n_train"] = fit.get("n_train", 0)
            row["loss"] = fit.get("loss", math.nan)
            row["dp_epsilon"] = fit.get("dp_epsilon", math.nan)
            rows.append(row)
        pooled = pooled_row(list(by_site.values()), [(f["n_train"], f["loss"]) for f in self._fits])
        spent = [f["dp_epsilon"] for f in self._fits if math.isfinite(f.get("dp_epsilon", math.nan))]
        pooled["dp_epsilon"] = max(spent) if spent else math.nan
        now = time.perf_counter()
        self.round_seconds.append(now - self._t)
        self._t = now
        stamp = {"round": phase_round, "phase": phase, "global_round": self.global_round}
        out = [{**r, **stamp} for r in [*rows, pooled]]
        self.folder.append_rows(out)
        self.last_rows = self.last_rows_by_phase[phase] = out
        return pooled
