"""SarcoFed ServerApp: ssl -> seg -> cls with FedAvg/FedProx over SecAgg+ (on by default).

Flower 1.42 runs SecAgg+ only on its legacy path, so each phase is one ``DefaultWorkflow`` over a
``LegacyContext`` holding that phase's strategy, with ``SecAggPlusWorkflow`` as the fit workflow
(``secure-aggregation = false`` in the run config falls back to plain FedAvg messages). The server
keeps the union model; each phase exchanges only ``exchange_keys(phase)``, so the encoder trained in
one phase is where the next begins. Settings: ``[tool.flwr.app.config]`` in pyproject.toml, read
once into ``server.plan.RunPlan``.

Local simulation only (the ServerApp runs in the same process as Flower's simulation engine): the
engine and the grid signal each other when a message or a reply is there, instead of each polling on
a fixed interval between a round's message exchanges (``_tune_grid``). Deployed (a real SuperLink),
the ServerApp looks for replies every 0.2 s instead of every 3 s. What each saves is measured in
docs/performance.md.
"""

from __future__ import annotations

import sys
import threading
import time
from queue import Empty, Queue
from typing import Any

from flwr.app import Context
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.secure_aggregation import secaggplus_workflow

from common.secagg import compact_masked_transport, override_flower_prg
from server.secure_workflow import GuardedSecAggPlusWorkflow

# Masks from the whole shared secret (flwr #7522); the ClientApp installs the same generator. Masked
# vectors arrive as uint32 from SarcoFed clients and are widened to int64 before Flower's arithmetic.
override_flower_prg(secaggplus_workflow)
compact_masked_transport(server_workflow=secaggplus_workflow)

app = ServerApp()

_VCE_WAKE = threading.Event()  # set when the ServerApp pushes messages: the engine takes them at once
_REPLY_WAKE = threading.Event()  # set when the engine stores a reply: the ServerApp pulls it at once
_FALLBACK_POLL_S = 0.1  # Flower's own interval, kept as the longest wait (replies Flower synthesises, e.g. TTL)


def _add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any, f_stop: threading.Event) -> None:
    """Flower 1.42 ``vce_api.add_messages_to_queue``, woken by a push instead of sleeping a fixed 0.1 s."""
    while not f_stop.is_set():
        for node_id in nodes_mapping.keys():
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        if _VCE_WAKE.wait(_FALLBACK_POLL_S):
            _VCE_WAKE.clear()


def _put_message_into_state(state: Any, queue: Any, f_stop: threading.Event) -> None:
    """Flower 1.42 ``vce_api.put_message_into_state``, and a wake-up for the ServerApp waiting on replies."""
    while not f_stop.is_set():
        try:
            message_reply = queue.get(timeout=_FALLBACK_POLL_S)
        except Empty:
            continue
        state.store_message_res(message_reply)
        _REPLY_WAKE.set()


class _PromptStopQueue(Queue):  # type: ignore[type-arg]
    """The engine's message queues: its threads wait at most 0.1 s (not 1 s) at a time, so they see the
    end of the run, and the engine shuts Ray down, up to 0.9 s sooner. No message is treated differently."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return super().get(block, None if timeout is None else min(timeout, _FALLBACK_POLL_S))


# The simulation engine's module is loaded before this one in its process; it creates its queues and starts
# the threads running these functions (all looked up by name) only after Ray is up, by which time these
# assignments have long been made (were they not, the run would keep Flower's polls: slower, nothing else).
_VCE = sys.modules.get("flwr.server.superlink.fleet.vce.vce_api")
if _VCE is not None and all(
    hasattr(_VCE, name) for name in ("add_messages_to_queue", "put_message_into_state", "Queue")
):
    _VCE.add_messages_to_queue = _add_messages_to_queue
    _VCE.put_message_into_state = _put_message_into_state
    _VCE.Queue = _PromptStopQueue


_DEPLOYED_POLL_S = 0.2  # Flower 1.42's HttpGrid waits 3 s between looks for replies


def _send_and_receive(grid: Grid, messages: Any, timeout: float | None, wait: Any, poll_s: float) -> list[Any]:
    """Flower 1.42 ``send_and_receive`` (push, then pull until every reply is in or ``timeout`` passes),
    with ``wait(seconds)`` of at most ``poll_s`` between looks instead of its fixed sleep."""
    msg_ids = set(grid.push_messages(messages))
    del messages
    end_time = time.time() + (timeout if timeout is not None else 0.0)
    replies: list[Any] = []
    while timeout is None or time.time() < end_time:
        found = grid.pull_messages(msg_ids)
        replies.extend(found)
        msg_ids.difference_update({msg.metadata.reply_to_message_id for msg in found})
        if not msg_ids:
            break
        wait(poll_s if timeout is None else max(0.0, min(poll_s, end_time - time.time())))
    return replies


def _tune_grid(grid: Grid) -> None:
    """Shorter waits for replies: event-driven in a local simulation, 0.2 s polls when deployed.

    Simulation: the grid's ``push_messages`` wakes the engine, and ``send_and_receive`` (Flower 1.42
    ``InMemoryGrid.send_and_receive``) waits for the engine's reply signal instead of sleeping
    ``pull_interval`` (0.1 s) between looks. Deployment: ``HttpGrid.send_and_receive`` sleeps 3 s between
    looks, and SecAgg+ exchanges five message rounds per training round, each waiting for the slowest
    site's reply; a look every 0.2 s costs the SuperLink one small request.
    """
    from flwr.superlink.grid import InMemoryGrid
    from flwr.superlink.grid.http_grid import HttpGrid

    if isinstance(grid, InMemoryGrid):
        push = grid.push_messages

        def push_and_wake(messages):  # type: ignore[no-untyped-def]
            ids = push(messages)
            _VCE_WAKE.set()
            return ids

        def wait_for_reply(seconds: float) -> None:
            if _REPLY_WAKE.wait(seconds):
                _REPLY_WAKE.clear()

        grid.push_messages = push_and_wake  # type: ignore[method-assign]
        grid.send_and_receive = (  # type: ignore[method-assign]
            lambda messages, *, timeout=None: _send_and_receive(
                grid, messages, timeout, wait_for_reply, _FALLBACK_POLL_S
            )
        )
    elif isinstance(grid, HttpGrid):
        grid.send_and_receive = (  # type: ignore[method-assign]
            lambda messages, *, timeout=None: _send_and_receive(grid, messages, timeout, time.sleep, _DEPLOYED_POLL_S)
        )


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured phases, then write summary.json and the report into the run folder."""
    from server.plan import RunPlan
    from server.session import run_phases

    started = time.perf_counter()
    _tune_grid(grid)
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
