"""Serve the coordinator's live view of a run-dir on 127.0.0.1 (``deploy/live_view.py``): ``sarcofed coordinator
view`` (which adds node health from the SuperLink), or ``python -m deploy.commands.live_view RUN_DIR``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer


def live_view(
    run_dir: Annotated[
        Path, typer.Argument(help="The ServerApp's run-dir (the folder that holds the run folders and `latest`).")
    ],
    host: Annotated[
        str,
        typer.Option(
            help=(
                "Bind address. Loopback only unless --allow-remote; reach it remotely through an SSH tunnel or the "
                "nginx client-certificate gate."
            )
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the page and its JSON (/api/state).")] = 8787,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote", help="Allow a non-loopback --host: anyone who reaches the port sees every site's metrics."
        ),
    ] = False,
) -> None:
    """Serve a page that follows the runs under RUN_DIR as they go: status, Flower run ids, per-site metrics
    by round, failures.

    The page asks for new rows every few seconds; stop with Ctrl-C.
    """
    serve_view(run_dir, host, port, allow_remote)


def serve_view(
    run_dir: Path, host: str, port: int, allow_remote: bool, nodes: Callable[[], list[dict[str, Any]]] | None = None
) -> None:
    """Serve the view until Ctrl-C, saying where; ``nodes`` adds node health (``sarcofed coordinator view``)."""
    from deploy.live_view import POLL_SECONDS, serve

    if not run_dir.is_dir():
        typer.secho(
            f"note: {run_dir} does not exist yet; runs appear once the ServerApp writes there.",
            err=True,
            fg=typer.colors.YELLOW,
        )

    def ready(url: str) -> None:
        typer.echo(
            f"SarcoFed live view of {run_dir.absolute()} at {url} (refreshes every {POLL_SECONDS} s; Ctrl-C stops)"
        )

    serve(run_dir, host, port, nodes=nodes, allow_remote=allow_remote, on_ready=ready)


if __name__ == "__main__":
    import sys

    from common.errors import SarcoFedError

    try:
        typer.run(live_view)
    except SarcoFedError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        sys.exit(error.exit_code)
