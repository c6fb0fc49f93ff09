"""How long the ServerApp waits for replies: signalled in a local simulation, 0.2 s polls when deployed.

Local simulation (the ServerApp runs in the process of Flower's simulation engine): every message
exchange of a round (SecAgg+ has four per fit, then evaluate) waited on two fixed 0.1 s polls, the
engine's look for new messages (``vce_api.add_messages_to_queue``) and the grid's look for replies
(``InMemoryGrid.send_and_receive``); the engine's threads also waited up to 1 s on their queues before
seeing the end of the run. Here both sides signal each other, and the queues wait at most 0.1 s.
Deployed, ``HttpGrid.send_and_receive`` sleeps 3 s between looks for replies; here 0.2 s (one small
request to the SuperLink each). What each saves: docs/performance.md. Flower has no setting for
either (no upstream report); the replacements copy Flower 1.42's functions with only the waits changed.
"""

from __future__ import annotations

import sys
import threading
import time
from queue import Empty, Queue
from typing import Any

from flower_compat.version import require_flower

ENGINE_MODULE = "flwr.server.superlink.fleet.vce.vce_api"
ENGINE_NAMES = ("add_messages_to_queue", "put_message_into_state", "Queue")
FALLBACK_POLL_S = 0.1  # Flower's own interval, kept as the longest wait (replies Flower synthesises, e.g. TTL)
DEPLOYED_POLL_S = 0.2  # Flower 1.42's HttpGrid waits 3 s between looks for replies

_VCE_WAKE = threading.Event()  # set when the ServerApp pushes messages: the engine takes them at once
_REPLY_WAKE = threading.Event()  # set when the engine stores a reply: the ServerApp pulls it at once


def add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any, f_stop: threading.Event) -> None:
    """Flower 1.42 ``vce_api.add_messages_to_queue``, woken by a push instead of sleeping a fixed 0.1 s."""
    while not f_stop.is_set():
        for node_id in nodes_mapping.keys():
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        if _VCE_WAKE.wait(FALLBACK_POLL_S):
            _VCE_WAKE.clear()


def put_message_into_state(state: Any, queue: Any, f_stop: threading.Event) -> None:
    """Flower 1.42 ``vce_api.put_message_into_state``, and a wake-up for the ServerApp waiting on replies."""
    while not f_stop.is_set():
        try:
            message_reply = queue.get(timeout=FALLBACK_POLL_S)
        except Empty:
            continue
        state.store_message_res(message_reply)
        _REPLY_WAKE.set()


class PromptStopQueue(Queue[Any]):
    # Flower's queues hold any message
    """The engine's message queues: its threads wait at most 0.1 s (not 1 s) at a time, so they see the
    end of the run, and the engine shuts Ray down, up to 0.9 s sooner. No message is treated differently."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return super().get(block, None if timeout is None else min(timeout, FALLBACK_POLL_S))


def install_simulation_engine() -> bool:
    """Replace ENGINE_NAMES in the simulation engine's module when it is loaded (False otherwise: deployed).

    Called when the ServerApp module is loaded: the engine's module is loaded before it in the simulation
    process, and creates its queues and starts the threads running these functions (all looked up by
    name) only after Ray is up, by which time the names are replaced.
    """
    engine = sys.modules.get(ENGINE_MODULE)
    if engine is None:
        return False
    require_flower("install_simulation_engine")
    missing = [name for name in ENGINE_NAMES if not hasattr(engine, name)]
    if missing:
        raise AttributeError(
            f"{ENGINE_MODULE} has no {', '.join(missing)}: Flower changed; see flower_compat/serverapp.py"
        )
    engine.add_messages_to_queue = add_messages_to_queue  # type: ignore[attr-defined]  # looked up by name
    engine.put_message_into_state = put_message_into_state  # type: ignore[attr-defined]  # as above
    engine.Queue = PromptStopQueue  # type: ignore[attr-defined]  # as above
    return True


def send_and_receive(grid: Any, messages: Any, timeout: float | None, wait: Any, poll_s: float) -> list[Any]:
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


def tune_grid(grid: Any) -> str:
    """Shorter waits for replies on this run's GRID; returns "simulation", "deployed" or "unchanged".

    Simulation: ``push_messages`` wakes the engine, and ``send_and_receive`` waits for the engine's reply
    signal instead of sleeping ``pull_interval`` (0.1 s) between looks. Deployment: ``send_and_receive``
    looks every 0.2 s instead of every 3 s; SecAgg+ has five message exchanges per round, each waiting
    for the slowest site's reply.
    """
    require_flower("tune_grid")
    from flwr.superlink.grid import InMemoryGrid
    from flwr.superlink.grid.http_grid import HttpGrid

    if isinstance(grid, InMemoryGrid):
        push = grid.push_messages

        def push_and_wake(messages: Any) -> Any:
            ids = push(messages)
            _VCE_WAKE.set()
            return ids

        def wait_for_reply(seconds: float) -> None:
            if _REPLY_WAKE.wait(seconds):
                _REPLY_WAKE.clear()

        grid.push_messages = push_and_wake  # type: ignore[method-assign]  # this run's grid only
        grid.send_and_receive = (  # type: ignore[method-assign]  # this run's grid only
            lambda messages, *, timeout=None: send_and_receive(grid, messages, timeout, wait_for_reply, FALLBACK_POLL_S)
        )
        return "simulation"
    if isinstance(grid, HttpGrid):
        grid.send_and_receive = (  # type: ignore[method-assign]  # this run's grid only
            lambda messages, *, timeout=None: send_and_receive(grid, messages, timeout, time.sleep, DEPLOYED_POLL_S)
        )
        return "deployed"
    return "unchanged"
