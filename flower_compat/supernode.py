"""``flower-supernode`` with a shorter idle poll, and hooks that let a watch see its ClientApps.

Idle poll (``start_client_internal.time``): Flower 1.42's SuperNode sleeps 3 s whenever it finds no
message waiting (the ``time.sleep(3)`` of its main loop). A SecAgg+ round is five message exchanges,
each waiting on the slowest site's next look: about 12 s of every round asleep. That module's view of
``time`` here sleeps at most ``idle_poll_s``; every other wait is Flower's own. No setting upstream.

Hooks (``flower_supernode.start_client_internal``, ``start_client_internal.http_request_response``):
Flower waits without a bound for each message's ``flwr-clientapp`` process, which learns nothing of its
run ending. ``deploy.clientapp_watch`` ends such processes; it needs the SuperNode's NodeState (held by
the ``state_factory`` that the CLI passes to ``start_client_internal``) and the Fleet ``get_run`` of
the connection the loop opens. The two names are wrapped to hand those over; nothing else changes.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from flower_compat.version import require_flower

CLI_MODULE = "flwr.supernode.cli.flower_supernode"  # by path: flwr.supernode.cli binds the name to the function
LOOP_MODULE = "flwr.supernode.start_client_internal"


class _ShortSleeps:
    """The ``time`` module as the SuperNode loop sees it, with sleeps capped."""

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap_s))


def shorten_idle_poll(loop: ModuleType, idle_poll_s: float) -> None:
    """Cap the sleeps of Flower's SuperNode loop module LOOP at IDLE_POLL_S."""
    try:
        source = inspect.getsource(loop)
    except (OSError, TypeError):  # no source to read: not the module this was written for
        source = ""
    if "time.sleep(3)" not in source or not isinstance(getattr(loop, "time", None), type(time)):
        raise AttributeError(
            f"{loop.__name__} no longer sleeps 3 s when idle: Flower changed; see flower_compat/supernode.py"
        )
    loop.time = _ShortSleeps(idle_poll_s)  # type: ignore[attr-defined]  # the loop's own view of time


def hook_node(
    cli: ModuleType, loop: ModuleType, on_start: Callable[[Any], None], on_connect: Callable[[Any], None]
) -> None:
    """Call ON_START(node state) as the SuperNode starts and ON_CONNECT(Fleet get_run or None) per connection."""
    start, connect = getattr(cli, "start_client_internal", None), getattr(loop, "http_request_response", None)
    if not callable(start) or not callable(connect):
        raise AttributeError(
            f"{cli.__name__}.start_client_internal or {loop.__name__}.http_request_response is gone: Flower "
            "changed; see flower_compat/supernode.py"
        )

    def start_watched(*args: Any, **kwargs: Any) -> Any:
        factory = kwargs.get("state_factory")
        if factory is not None:
            on_start(factory.state())
        return start(*args, **kwargs)

    @contextmanager
    def connect_watched(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with connect(*args, **kwargs) as connection:
            on_connect(next((f for f in connection if callable(f) and getattr(f, "__name__", "") == "get_run"), None))
            yield connection

    cli.start_client_internal = start_watched  # type: ignore[attr-defined]  # as the CLI module calls it
    loop.http_request_response = connect_watched  # type: ignore[attr-defined]  # as the loop calls it


def install_supernode(
    idle_poll_s: float, on_start: Callable[[Any], None], on_connect: Callable[[Any], None]
) -> Callable[[], None]:
    """Install both into the installed Flower; returns Flower's ``flower_supernode`` entry point to call."""
    require_flower("install_supernode")
    cli, loop = importlib.import_module(CLI_MODULE), importlib.import_module(LOOP_MODULE)
    shorten_idle_poll(loop, idle_poll_s)
    hook_node(cli, loop, on_start, on_connect)
    entry: Callable[[], None] = cli.flower_supernode
    return entry
