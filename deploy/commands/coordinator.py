"""`sarcofed coordinator`: the consortium's runs and hospitals, through the gate with the coordinator certificate.

Each command opens ``deploy.coordinator.Coordinator`` on ``--address`` with ``--pki`` (or
``--ca/--cert/--key``); set SARCOFED_COORDINATOR_ADDRESS and SARCOFED_PKI once instead of typing
them. Also runnable as ``python -m deploy.commands.coordinator``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from deploy.coordinator import ADDRESS_ENV, PKI_ENV, STATE_DIR_ENV

coordinator_app = typer.Typer(
    name="coordinator",
    help="Runs and hospitals of a real consortium, through the gate with the coordinator certificate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

DEFAULT_STATE_DIR = Path.home() / ".sarcofed" / "coordinator"
Address = Annotated[
    str,
    typer.Option(
        "--address",
        envvar=ADDRESS_ENV,
        show_default=False,
        help="The gate, HOST:PORT; or the SuperLink's loopback port (no certificate needed there).",
    ),
]
Pki = Annotated[
    Path | None,
    typer.Option(
        "--pki",
        envvar=PKI_ENV,
        show_default=False,
        help="Folder with ca.crt, coordinator.crt/.key, and sites/*.pub to name the nodes.",
    ),
]
Ca = Annotated[Path | None, typer.Option("--ca", help="The consortium CA certificate (instead of PKI/ca.crt).")]
Cert = Annotated[
    Path | None, typer.Option("--cert", help="The coordinator certificate (instead of PKI/coordinator.crt).")
]
Key = Annotated[Path | None, typer.Option("--key", help="Its private key (instead of PKI/coordinator.key).")]
StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar=STATE_DIR_ENV,
        help="This coordinator's own files: the site registry (sites.json), the forwarder's folder.",
    ),
]
Format = Annotated[Literal["table", "json"], typer.Option("--format", help="A table for people, or JSON for scripts.")]


def _open(
    address: str, pki: Path | None, ca: Path | None, cert: Path | None, key: Path | None, state_dir: Path | None = None
) -> Any:
    from deploy.coordinator import Coordinator, Credentials

    return Coordinator(address, Credentials.resolve(pki, ca, cert, key), state_dir=state_dir, pki=pki)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _json(rows: list[Any]) -> str:
    def plain(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    return json.dumps([{k: plain(v) for k, v in asdict(row).items()} for row in rows], indent=2)


RUN_STYLE = {"running": "blue", "starting": "blue", "completed": "green", "failed": "red", "stopped": "yellow"}
NODE_STYLE = {
    "online": "green",
    "silent": "yellow",
    "offline": "bright_yellow",
    "registered": "blue",
    "unregistered": "red",
}


@coordinator_app.command("ls")
def ls(
    address: Address = "",
    pki: Pki = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
    run_id: Annotated[int | None, typer.Option("--run-id", help="Only this run.")] = None,
    output_format: Format = "table",
) -> None:
    """List the consortium's runs, newest first: status in words, start time, duration."""
    from rich.console import Console
    from rich.table import Table

    with _open(address, pki, ca, cert, key) as coordinator:
        runs = coordinator.list_runs(run_id)
    if output_format == "json":
        typer.echo(_json(runs))
        return
    table = Table(header_style="bold cyan")
    for column in ("run id", "status", "started (UTC)", "duration", "app", "preset", "details"):
        table.add_column(column)
    for run in runs:
        style = RUN_STYLE.get(run.status, "bright_black")
        table.add_row(
            str(run.run_id),
            f"[{style}]{run.status}[/]",
            _when(run.started_at or run.submitted_at),
            _duration(run.duration_s),
            run.app,
            str(run.run_config.get("preset", "")),
            run.details,
        )
    Console().print(table if runs else f"no runs at {address}")


@coordinator_app.command("nodes")
def nodes(
    address: Address = "",
    pki: Pki = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    show_all: Annotated[bool, typer.Option("--all", help="Also list unregistered (revoked) nodes.")] = False,
    output_format: Format = "table",
) -> None:
    """List the hospitals' SuperNodes: site, status you can trust, when each was last heard from.

    online: heard from within one heartbeat interval (30 s; a SuperNode sends one every 17.5-22.5 s).

    silent: Flower still says online (for 60 s, even after a SuperLink restart), but nothing was heard for longer.

    offline: the node signed off, or Flower timed it out. registered: admitted, never connected.
    """
    from rich.console import Console
    from rich.table import Table

    with _open(address, pki, ca, cert, key, state_dir) as coordinator:
        found = [n for n in coordinator.list_nodes() if show_all or n.status != "unregistered"]
    if output_format == "json":
        typer.echo(_json(found))
        return
    table = Table(header_style="bold cyan")
    for column in ("node id", "site", "status", "last heard (UTC)", "ago"):
        table.add_column(column)
    for node in found:
        style = NODE_STYLE.get(node.status, "bright_black")
        table.add_row(
            str(node.node_id),
            node.site or "[dim]? (sarcofed coordinator register)[/]",
            f"[{style}]{node.status}[/]",
            _when(node.last_heard),
            _duration(node.silent_s),
        )
    Console().print(table if found else f"no SuperNodes registered at {address}")


@coordinator_app.command("log")
def log(
    run_id: Annotated[int, typer.Argument(help="The Flower run id (`sarcofed coordinator ls`).")],
    address: Address = "",
    pki: Pki = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the run finishes (Ctrl-C leaves).")
    ] = False,
) -> None:
    """Print a run's log (the ServerApp's, kept by the SuperLink); `sarcofed \\[phase i/N]` lines stand out.

    With --follow the exit status is the run's: 0 when it completed, 1 when it failed or was stopped.
    """
    with _open(address, pki, ca, cert, key) as coordinator:
        finished = _print_log(coordinator.stream_log(run_id, follow=follow))
        if follow and finished:
            _exit_with_outcome(coordinator, run_id)


def _print_log(chunks: Any) -> bool:
    """Print log chunks line by line as they come; Ctrl-C leaves quietly. False when Ctrl-C ended it."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    pending, finished = "", True
    try:
        for chunk in chunks:
            *lines, pending = (pending + chunk).split("\n")
            for line in lines:
                console.print(_styled(line))
    except KeyboardInterrupt:
        finished = False
    if pending:
        console.print(_styled(pending))
    return finished


OUTCOME_WAIT_S = 30.0  # the log stream can end a moment before the SuperLink marks the run finished


def _exit_with_outcome(coordinator: Any, run_id: int) -> None:
    """Say how a followed run ended; exit 1 unless it completed, so scripts can tell."""
    import time

    deadline = time.monotonic() + OUTCOME_WAIT_S
    status = "missing"
    while True:
        runs = coordinator.list_runs(run_id)
        status = runs[0].status if runs else "missing"
        if status in ("completed", "failed", "stopped") or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    typer.secho(
        f"run {run_id} {status}", err=True, fg=typer.colors.GREEN if status == "completed" else typer.colors.RED
    )
    if status != "completed":
        raise typer.Exit(1)


def _styled(line: str) -> Any:
    """Progress lines in bold green, errors red, warnings yellow, the rest as it is."""
    from rich.text import Text

    from deploy.coordinator import progress

    if progress(line) is not None:
        return Text(line, style="bold green")
    if line.startswith("ERROR") or "Traceback" in line:
        return Text(line, style="red")
    if line.startswith("WARNING"):
        return Text(line, style="yellow")
    return Text(line)


@coordinator_app.command("stop")
def stop(
    run_id: Annotated[int, typer.Argument(help="The Flower run id (`sarcofed coordinator ls`).")],
    address: Address = "",
    pki: Pki = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
) -> None:
    """Stop a run; it ends `stopped` (its run folder keeps every finished round)."""
    from common.errors import ConfigError

    with _open(address, pki, ca, cert, key) as coordinator:
        if not coordinator.stop_run(run_id):
            raise ConfigError(
                f"run {run_id} could not be stopped (already finished?): `sarcofed coordinator ls --run-id {run_id}`"
            )
    typer.echo(f"run {run_id} stopping")


@coordinator_app.command("run")
def run(
    app_dir: Annotated[
        Path, typer.Argument(help="The Flower app folder (its pyproject.toml); this repository by default.")
    ] = Path("."),
    address: Address = "",
    pki: Pki = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
    run_config: Annotated[
        list[str] | None,
        typer.Option(
            "--run-config", "-c", help="key=value settings (TOML values), as `flwr run --run-config`; repeatable."
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the run's log until it finishes.")] = False,
    output_format: Format = "table",
) -> None:
    """Submit a federated run (the app is bundled as `flwr run` does) and print its run id.

    With --follow the exit status is the run's: 0 when it completed, 1 when it failed or was stopped.
    """
    with _open(address, pki, ca, cert, key) as coordinator:
        run_id = coordinator.submit_run(app_dir, run_config)
        if output_format == "json":
            typer.echo(json.dumps({"run_id": run_id}))
        else:
            typer.echo(
                f"started run {run_id}" + ("" if follow else f"; follow it: sarcofed coordinator log {run_id} --follow")
            )
        if follow and _print_log(coordinator.stream_log(run_id, follow=True)):
            _exit_with_outcome(coordinator, run_id)


@coordinator_app.command("register")
def register(
    public_key: Annotated[Path, typer.Argument(help="The hospital's SuperNode public key (sites/NAME.pub).")],
    site: Annotated[str, typer.Option("--site", help="The hospital's site name, as its SuperNode's --site-name.")],
    address: Address = "",
    pki: Pki = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Admit a hospital's SuperNode key (or name one already admitted) and record its site name."""
    with _open(address, pki, ca, cert, key, state_dir) as coordinator:
        node_id, new = coordinator.register(public_key, site)
    verb = "registered" if new else "was already registered"
    typer.echo(f"{site}: node {node_id} {verb}; site name kept in {state_dir / 'sites.json'}")


@coordinator_app.command("forwarder")
def forwarder(
    address: Address = "",
    pki: Pki = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
    listen: Annotated[
        str, typer.Option(help="Loopback HOST:PORT `flwr` connects to (insecure = true in its config.toml).")
    ] = "127.0.0.1:9092",
    server_name: Annotated[
        str | None, typer.Option(help="Name the gate's certificate must carry (default: the host of --address).")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write nginx.conf and print the command instead of running it.")
    ] = False,
) -> None:
    """Start nginx on loopback that forwards `flwr` to the gate with the coordinator certificate.

    Writes STATE_DIR/forwarder/nginx.conf, prints the config.toml section for `flwr`, then runs nginx in
    the foreground. Anyone who can connect to --listen on this machine acts as the coordinator.
    """
    import shlex

    from common.errors import ConfigError
    from deploy.coordinator import Credentials
    from deploy.proxy import nginx_command, write_forwarder_config

    credentials = Credentials.resolve(pki, ca, cert, key)
    if credentials.cert is None or credentials.key is None:
        raise ConfigError("the forwarder needs the coordinator certificate: --pki FOLDER or --cert/--key")
    if not address:
        raise ConfigError(f"--address: give the gate as HOST:PORT, or set {ADDRESS_ENV}")
    config = write_forwarder_config(
        credentials.ca_cert,
        credentials.cert,
        credentials.key,
        state_dir / "forwarder",
        listen=listen,
        gate=address,
        server_name=server_name,
    )
    command = nginx_command(config)
    typer.echo(
        f"wrote {config}; for flwr, in $FLWR_HOME/config.toml:\n\n"
        f'[superlink.gate]\naddress = "{listen}"\ninsecure = true\n\n'
        "then e.g. `flwr ls gate`, `flwr run . gate --stream`",
        err=True,
    )
    if dry_run:
        typer.echo(shlex.join(command))
        return
    os.execvp(command[0], command)


@coordinator_app.command("view")
def view(
    run_dir: Annotated[
        Path, typer.Argument(help="The ServerApp's run-dir (the folder that holds the run folders and `latest`).")
    ],
    address: Address = "",
    pki: Pki = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    host: Annotated[
        str, typer.Option(help="Bind address of the page. Loopback only unless --allow-remote.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the page and its JSON (/api/state).")] = 8787,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote", help="Allow a non-loopback --host: anyone who reaches the port sees every site's metrics."
        ),
    ] = False,
) -> None:
    """Serve the live view of RUN_DIR: runs, per-site metrics by round, failures, and with --address the
    hospitals' node health (asked of the SuperLink at each refresh)."""
    from deploy.commands.live_view import serve_view

    nodes = None
    if address:
        coordinator = _open(address, pki, ca, cert, key, state_dir)

        def nodes() -> list[dict[str, Any]]:
            return [
                {"node_id": n.node_id, "site": n.site or "-", "status": n.status, "last_seen": n.last_heard}
                for n in coordinator.list_nodes()
            ]

    serve_view(run_dir, host, port, allow_remote, nodes)


if __name__ == "__main__":
    import sys

    from common.errors import SarcoFedError

    try:
        coordinator_app()
    except SarcoFedError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        sys.exit(error.exit_code)
