"""SarcoFed ServerApp: ssl -> seg -> cls with FedAvg/FedProx over SecAgg+ (on by default).

Flower 1.42 runs SecAgg+ only on its legacy path, so each phase is one ``DefaultWorkflow`` over a
``LegacyContext`` holding that phase's strategy, with ``SecAggPlusWorkflow`` as the fit workflow
(``secure-aggregation = false`` in the run config falls back to plain FedAvg messages). The server
keeps the union model; each phase exchanges only ``exchange_keys(phase)``, so the encoder trained in
one phase is where the next begins. Settings: ``[tool.flwr.app.config]`` in pyproject.toml, read
once into ``server.plan.RunPlan``.
"""

from __future__ import annotations

import time

from flwr.app import Context
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.secure_aggregation import secaggplus_workflow

from common.secagg import compact_masked_transport, override_flower_prg

# Masks from the whole shared secret (flwr #7522); the ClientApp installs the same generator. Masked
# vectors arrive as uint32 from SarcoFed clients and are widened to int64 before Flower's arithmetic.
override_flower_prg(secaggplus_workflow)
compact_masked_transport(server_workflow=secaggplus_workflow)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured phases, then write summary.json and the report into the run folder."""
    from server.plan import RunPlan
    from server.session import run_phases

    plan = RunPlan.from_run_config(dict(context.run_config))
    started = time.perf_counter()

    def run_span(strategy, num_rounds: int) -> None:  # one phase = one legacy workflow
        fit_workflow = None
        if plan.secure_aggregation:
            fit_workflow = SecAggPlusWorkflow(
                num_shares=plan.secagg_num_shares,
                reconstruction_threshold=plan.secagg_reconstruction_threshold,
                clipping_range=plan.secagg_clipping_range,
                quantization_range=plan.secagg_quantization_range,
                max_weight=plan.secagg_max_weight,
            )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=num_rounds), strategy=strategy)
        DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)

    run_phases(plan, run_span, started=started)
