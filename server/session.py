"""One federated run from the server's side, independent of how a phase's rounds are carried out.

``run_phases`` builds (or resumes) the union model, opens the run folder (a new one, or the folder of
the run it resumes), and for each phase still to run hands a strategy to ``run_span`` (the ServerApp passes a
function that runs Flower's legacy
workflow with or without SecAgg+). At the end it writes summary.json and the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.common import log

from server.plan import RunPlan
from server.recorder import Recorder
from server.run_folder import POOLED, RunFolder, last_checkpoint
from server.strategy import make_strategy


def _save_checkpoint(model: Any, path: Path, phase: str, phase_round: int) -> None:
    from common.models.checkpoint import save_checkpoint

    model.trained_phases.add(phase)  # later phases' checkpoints still say the locator was trained
    save_checkpoint(path, model, phase=phase, extra={"round": phase_round})


def build_model(plan: RunPlan) -> Any:
    """The union model: fresh from the preset (seeded), or loaded from ``resume-from``."""
    import torch

    from common.models.checkpoint import load_checkpoint
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel

    if plan.resume_from is not None:
        return load_checkpoint(plan.resume_from)[0]
    torch.manual_seed(plan.seed)
    return SarcoModel(get_preset(plan.preset))


def _eval_arrays(model: Any, phase: str) -> Callable[[], list[Any]]:
    from common.models.sarco import get_weights
    from server.strategy import EVAL_PHASES

    phases = [p for p in EVAL_PHASES[phase].split(",") if p]
    return lambda: [a for p in phases for a in get_weights(model, p)]


def run_phases(
    plan: RunPlan,
    run_span: Callable[[Any, int], None],
    *,
    started: float | None = None,
    flower_run_id: int | None = None,
    run_config: dict[str, Any] | None = None,
) -> Path:
    """Run every phase span of ``plan``; returns the run folder.

    Parameters
    ----------
    plan : RunPlan
    run_span : callable (strategy, num_rounds) -> None
        Runs ``num_rounds`` rounds of the given strategy (the strategy reports each round itself).
    started : float, optional
        ``time.perf_counter()`` when the ServerApp started (for the summary's wall time).
    flower_run_id, run_config : optional
        Flower's run id and the run config, recorded in the folder's run.json.
    """
    from common.models.sarco import context_keys, get_arrays, get_weights

    started = time.perf_counter() if started is None else started
    model = build_model(plan)
    if plan.resume_folder is not None:
        folder = RunFolder.reopen(plan.resume_folder)
        resumed_after = last_checkpoint(plan.resume_folder)
    else:
        folder, resumed_after = RunFolder.create(plan.run_dir, model.preset.name), None
    record = folder.record_run(flower_run_id, run_config or {}, resumed_after)
    log(
        INFO,
        "sarcofed run folder: %s (Flower run %s%s)",
        folder.path,
        flower_run_id,
        "" if resumed_after is None else f", resumed after {resumed_after.phase} round {resumed_after.phase_round}",
    )
    recorder = Recorder(folder, model, _save_checkpoint, start_global_round=plan.resume_global_round)
    timings: dict[str, float] = {}
    outcome = "completed"
    try:
        for span in plan.spans():
            t0 = time.perf_counter()
            strategy = make_strategy(
                plan.strategy,
                phase=span.phase,
                first_round=span.first_round,
                local_epochs=span.local_epochs,
                seed=plan.seed,
                arrays=get_weights(model, span.phase),
                recorder=recorder,
                min_sites=plan.min_sites,
                proximal_mu=plan.proximal_mu,
                eval_arrays=_eval_arrays(model, span.phase),
                last_round=plan.rounds[span.phase],
                context_arrays=get_arrays(model, context_keys(model, span.phase)),
                min_sites_wait_s=plan.min_sites_wait,
                max_update_norm=plan.max_update_norm,
            )
            run_span(strategy, span.num_rounds)
            timings[span.phase] = round(time.perf_counter() - t0, 2)
    except Exception as error:  # the run stops, but its folder says why and keeps what it learned
        outcome = f"failed: {error}"
        raise
    finally:
        _write_summary(
            plan, model, folder, recorder, timings, started, outcome, [r["run_id"] for r in record["flower_runs"]]
        )
    return folder.path


def _final(rows: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The sites' and the pooled row of a phase's last evaluated round (None when it did not run)."""
    if not rows:
        return None
    return {"sites": [r for r in rows if r["site"] != POOLED], "pooled": next(r for r in rows if r["site"] == POOLED)}


def _write_summary(
    plan: RunPlan,
    model: Any,
    folder: RunFolder,
    recorder: Recorder,
    timings: dict[str, float],
    started: float,
    outcome: str,
    flower_run_ids: list[Any],
) -> None:
    final = [r for r in recorder.last_rows if r["site"] != POOLED]
    wall = round(time.perf_counter() - started, 2)
    if plan.resume_folder is not None:  # continued in its folder: the times cover every Flower run of it
        before = folder.previous_summary
        timings = {
            p: round(float((before.get("phase_seconds") or {}).get(p, 0.0)) + timings.get(p, 0.0), 2)
            for p in {*(before.get("phase_seconds") or {}), *timings}
        }
        wall = round(float(before.get("wall_seconds") or 0.0) + wall, 2)
    pooled = next((r for r in recorder.last_rows if r["site"] == POOLED), {})
    summary = {
        "outcome": outcome,
        "flower_run_ids": flower_run_ids,
        "preset": model.preset.name,
        "rounds": plan.rounds,
        "local_epochs": plan.local_epochs,
        "strategy": plan.strategy,
        "proximal_mu": plan.proximal_mu if plan.strategy == "fedprox" else None,
        "secure_aggregation": plan.secure_aggregation,
        "secagg": {
            "num_shares": plan.secagg_num_shares,
            "reconstruction_threshold": plan.secagg_reconstruction_threshold,
            "clipping_range": plan.secagg_clipping_range,
            "quantization_range": plan.secagg_quantization_range,
            "max_weight": plan.secagg_max_weight,
            "mask_prg": "HKDF-SHA256 -> ChaCha20 (common/secagg/mask_prg.py)",
        }
        if plan.secure_aggregation
        else None,
        "resumed_from": None
        if plan.resume_from is None
        else {
            "checkpoint": str(plan.resume_from),
            "phase": plan.resume_phase,
            "round": plan.resume_round,
            "same_folder": plan.resume_folder is not None,
        },
        "cutoff": plan.cutoff,
        "phase_seconds": timings,
        "wall_seconds": wall,
        "final_round": {"sites": final, "pooled": pooled},
        "l3_final_round": _final(recorder.last_rows_by_phase.get("l3")),
        "privacy": {
            "dp_epsilon_by_site": dict(sorted(recorder.dp_epsilon.items())),
            "note": "epsilon each site reported spending in this run, at its own policy's delta",
        }
        if recorder.dp_epsilon
        else None,
    }
    folder.write_summary(summary)
    try:
        from server.report import write_report

        write_report(folder.path)
    except Exception as error:  # the report is a view of files already written: never lose the run over it
        from logging import WARNING

        log(WARNING, "report not written: %s", error)
