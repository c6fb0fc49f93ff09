"""``flower-supernode``, looking for the coordinator's next message every 0.5 s instead of every 3 s.

Flower 1.42's SuperNode sleeps 3 s whenever it finds no message waiting
(``flwr/supernode/start_client_internal.py``, the ``time.sleep(3)`` of its main loop). A SecAgg+
round is five message exchanges (four secure-aggregation stages and the evaluation), each waiting on
the slowest site's next look: about 12 s of every round were spent asleep. Here that module's view of
``time`` sleeps at most ``IDLE_POLL_S``; every other wait and the SuperNode itself are Flower's own. The
cost is one small request to the SuperLink every 0.5 s per idle hospital.

    python -m deploy.supernode_main <flower-supernode arguments>

Checked against the installed Flower: if the module no longer has the loop this was written for, the
SuperNode runs unchanged (slower, never different) and says so.
"""

from __future__ import annotations

import inspect
import sys
import time
from types import ModuleType
from typing import Any

IDLE_POLL_S = 0.5


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


def main() -> None:
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    if not shorten_idle_poll(loop):
        print("deploy.supernode_main: Flower's SuperNode loop has changed; it keeps its own 3 s idle poll",
              file=sys.stderr)
    flower_supernode()


if __name__ == "__main__":
    main()
