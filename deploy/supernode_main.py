"""``flower-supernode`` for a hospital: a 0.5 s idle poll instead of 3 s, and ClientApp processes ended
when their run is over or when they exceed the site's own time limit.

The replacements of Flower's internals are ``flower_compat.install_supernode``'s (it says why); the
policy is here. ``deploy/clientapp_watch.py`` ends ``flwr-clientapp`` processes whose run is over (a
SuperLink restart, ``flwr stop``), and any that run longer than ``--max-clientapp-seconds`` (default
3600), an option of this wrapper that is taken out of the arguments before Flower reads them: a bound
set by the hospital, never by the server. The cost of the shorter poll is one small request to the
SuperLink every 0.5 s per idle hospital.

    python -m deploy.supernode_main [--max-clientapp-seconds S] <flower-supernode arguments>
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from deploy.clientapp_watch import DEFAULT_MAX_SECONDS, ClientAppWatch

IDLE_POLL_S = 0.5
MAX_CLIENTAPP_OPTION = "--max-clientapp-seconds"


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


def main() -> None:
    import flower_compat

    try:
        max_seconds, flower_args = split_max_clientapp_seconds(sys.argv[1:])
    except ValueError as err:
        sys.exit(f"deploy.supernode_main: {err}")
    sys.argv[1:] = flower_args
    watch = ClientAppWatch(max_seconds)

    def start_watch(node_state: object) -> None:
        watch.attach(node_state)
        watch.start()

    flower_supernode = flower_compat.install_supernode(IDLE_POLL_S, start_watch, watch.use_fleet)
    flower_supernode()


if __name__ == "__main__":
    main()
