"""``flower-supernode``, looking for the coordinator's next message every 0.5 s instead of every 3 s, and
ending ClientApp processes whose run is over or that exceed the site's own time limit.

Flower 1.42's SuperNode sleeps 3 s whenever it finds no message waiting
(``flwr/supernode/start_client_internal.py``, the ``time.sleep(3)`` of its main loop). A SecAgg+
round is five message exchanges (four secure-aggregation stages and the evaluation), each waiting on
the slowest site's next look: about 12 s of every round were spent asleep. Here that module's view of
``time`` sleeps at most ``IDLE_POLL_S``; every other wait and the SuperNode itself are Flower's own. The
cost is one small request to the SuperLink every 0.5 s per idle hospital.

ClientApps: Flower waits without a bound for each message's ``flwr-clientapp`` process, which learns
nothing of its run ending (a SuperLink restart, ``flwr stop``). ``deploy/clientapp_watch.py`` ends such
processes, and any that run longer than ``--max-clientapp-seconds`` (default 3600), an option of this
wrapper that is taken out of the arguments before Flower reads them: a bound set by the hospital, never
by the server.

    python -m deploy.supernode_main [--max-clientapp-seconds S] <flower-supernode arguments>

Checked against the installed Flower: if the module no longer has the loop this was written for, the
SuperNode runs unchanged (slower, never different) and says so; the same for the ClientApp watch.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from deploy.clientapp_watch import DEFAULT_MAX_SECONDS, ClientAppWatch

IDLE_POLL_S = 0.5
MAX_CLIENTAPP_OPTION = "--max-clientapp-seconds"


class _ShortSleeps:
    """The ``time`` module as ``start_client_internal`` sees it, with sleeps capped at ``IDLE_POLL_S``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, IDLE_POLL_S))


def shorten_idle_poll(module: ModuleType) -> bool:
    """Install the short sleeps into Flower's SuperNode loop module; False (nothing done) if it changed."""
    source = inspect.getsource(module)
    if "time.sleep(3)" not in source or not isinstance(getattr(module, "time", None), type(time)):
        return False
    module.time = _ShortSleeps()  # type: ignore[attr-defined]
    return True


def split_max_clientapp_seconds(argv: Sequence[str]) -> tuple[float, list[str]]:
    """This wrapper's ``--max-clientapp-seconds S`` (or ``=S``) and the arguments left for Flower's parser.

    Raises ValueError for a missing, non-numeric or non-positive value.
    """
    value, rest, args = str(DEFAULT_MAX_SECONDS), [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == MAX_CLIENTAPP_OPTION:
            if not args:
                raise ValueError(f"{MAX_CLIENTAPP_OPTION} needs a number of seconds")
            value = args.pop(0)
        elif arg.startswith(MAX_CLIENTAPP_OPTION + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{MAX_CLIENTAPP_OPTION}: expected a positive number of seconds, got {value!r}")
    return seconds, rest


def install_clientapp_watch(cli: ModuleType, loop: ModuleType, watch: ClientAppWatch) -> bool:
    """Start WATCH with the SuperNode's state and give it the node's Fleet ``get_run``; False if Flower changed.

    Two names are wrapped, nothing else changes: ``start_client_internal`` as the SuperNode's CLI module
    calls it (its ``state_factory`` holds the NodeState) and ``http_request_response`` as the SuperNode
    loop calls it (the connection it yields carries ``get_run``).
    """
    start, connect = getattr(cli, "start_client_internal", None), getattr(loop, "http_request_response", None)
    if not callable(start) or not callable(connect):
        return False

    def start_watched(*args: Any, **kwargs: Any) -> Any:
        factory = kwargs.get("state_factory")
        if factory is not None:
            watch.attach(factory.state())
            watch.start()
        return start(*args, **kwargs)

    @contextmanager
    def connect_watched(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with connect(*args, **kwargs) as connection:
            watch.use_fleet(_named(connection, "get_run"))
            yield connection

    cli.start_client_internal = start_watched  # type: ignore[attr-defined]
    loop.http_request_response = connect_watched  # type: ignore[attr-defined]
    return True


def _named(functions: Any, name: str) -> Callable[..., Any] | None:
    return next((f for f in functions if callable(f) and getattr(f, "__name__", "") == name), None)


def main() -> None:
    import importlib

    # By module path: the package flwr.supernode.cli binds the name flower_supernode to the function.
    cli = importlib.import_module("flwr.supernode.cli.flower_supernode")
    loop = importlib.import_module("flwr.supernode.start_client_internal")

    try:
        max_seconds, flower_args = split_max_clientapp_seconds(sys.argv[1:])
    except ValueError as err:
        sys.exit(f"deploy.supernode_main: {err}")
    sys.argv[1:] = flower_args
    if not shorten_idle_poll(loop):
        print(
            "deploy.supernode_main: Flower's SuperNode loop has changed; it keeps its own 3 s idle poll",
            file=sys.stderr,
        )
    if not install_clientapp_watch(cli, loop, ClientAppWatch(max_seconds)):
        print("deploy.supernode_main: Flower's SuperNode has changed; ClientApps are not watched", file=sys.stderr)
    cli.flower_supernode()


if __name__ == "__main__":
    main()
