"""SarcoFed ServerApp: ssl -> seg -> cls with FedAvg/FedProx over SecAgg+ (on by default).

Flower 1.42 runs SecAgg+ only on its legacy path, so each phase is one ``DefaultWorkflow`` over a
``LegacyContext`` holding that phase's strategy, with ``SecAggPlusWorkflow`` as the fit workflow
(``secure-aggregation = false`` in the run config falls back to plain FedAvg messages). The server
keeps the union model; each phase exchanges only ``exchange_keys(phase)``, so the encoder trained in
one phase is where the next begins. Settings: ``[tool.flwr.app.config]`` in pyproject.toml, read
once into ``server.plan.RunPlan``.

Flower's internals that SarcoFed replaces (the SecAgg+ mask generator and transport, shorter waits for
replies) are installed by ``flower_compat``'s explicit calls: the simulation engine's when this module
is loaded, the rest at the start of ``main``.
"""

from __future__ import annotations

import time

from flwr.app import Context
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow

import flower_compat
from server.secure_workflow import GuardedSecAggPlusWorkflow

flower_compat.install_simulation_engine()  # a local simulation only: before the engine starts its threads

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured phases, then write summary.json and the report into the run folder."""
    from server.plan import RunPlan
    from server.session import run_phases

    started = time.perf_counter()
    flower_compat.install_secagg_server()
    flower_compat.tune_grid(grid)
    plan = RunPlan.from_run_config(dict(context.run_config))

    def run_span(strategy, num_rounds: int) -> None:  # one phase = one legacy workflow
        fit_workflow = None
        if plan.secure_aggregation:
            fit_workflow = GuardedSecAggPlusWorkflow(
                num_shares=plan.secagg_num_shares,
                reconstruction_threshold=plan.secagg_reconstruction_threshold,
                clipping_range=plan.secagg_clipping_range,
                quantization_range=plan.secagg_quantization_range,
                max_weight=plan.secagg_max_weight,
                timeout=plan.round_timeout,
            )
        config = ServerConfig(num_rounds=num_rounds, round_timeout=plan.round_timeout)
        legacy = LegacyContext(context=context, config=config, strategy=strategy)
        DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)

    run_phases(plan, run_span, started=started, flower_run_id=context.run_id, run_config=dict(context.run_config))
