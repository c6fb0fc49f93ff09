"""`sarcofed deploy`: start the SuperLink, a hospital's SuperNode, the control-route proxy, write the
coordinator's connection file, and write systemd units that run the same processes as services
(``sarcofed deploy services coordinator|hospital``), each with the hardened flags of ``deploy/launch.py``.

The start commands replace themselves with the real process (exec), so a service manager or a
container runtime signals Flower/nginx directly. Also runnable as ``python -m deploy.commands.launch``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

deploy_app = typer.Typer(
    name="deploy",
    help="Run a real consortium: SuperLink (coordinator), SuperNode (hospital), control-route proxy.",
    no_args_is_help=True,
)

services_app = typer.Typer(
    name="services",
    help="Write systemd units for the SuperLink and proxy (coordinator) or a SuperNode (hospital).",
    no_args_is_help=True,
)
deploy_app.add_typer(services_app, name="services")

DEFAULT_FLWR_HOME = Path.home() / ".flwr"  # Flower's own default
FlwrHome = Annotated[
    Path,
    typer.Option(
        "--flwr-home", envvar="FLWR_HOME", help="Flower's home (apps, config.toml); default $FLWR_HOME or ~/.flwr."
    ),
]
MaxClientAppSeconds = Annotated[
    float,
    typer.Option(
        min=1.0,
        help=(
            "Seconds one ClientApp process may work on a message before this node ends it (the site's own bound; "
            "the server cannot change it)."
        ),
    ),
]
CHECKOUT = Path(__file__).resolve().parents[2]


def _warn_expiry(pki_dir: Path) -> None:
    """Print a warning (stderr) for each certificate or CRL of PKI_DIR that expires within 30 days."""
    from deploy.pki import credential_warnings

    for line in credential_warnings(pki_dir):
        typer.secho(f"warning: {line}", err=True, fg=typer.colors.YELLOW)


def _exec(command: list[str], flwr_home: Path, dry_run: bool) -> None:
    from deploy.launch import flower_env

    if dry_run:
        import shlex

        typer.echo(shlex.join(command))
        return
    os.execvpe(command[0], command, flower_env(flwr_home))


@deploy_app.command("superlink")
def superlink(
    pki_dir: Annotated[Path, typer.Argument(help="PKI folder (ca.crt, superlink.crt, superlink.key).")],
    database: Annotated[
        Path, typer.Option(help="SQLite state file: registered nodes and run history survive restarts.")
    ] = Path("superlink-state.db"),
    host: Annotated[str, typer.Option(help="Bind address. Keep 127.0.0.1 and expose the proxy instead.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The SuperLink's one HTTPS port (fleet, control, runtime).")] = 9091,
    flwr_home: FlwrHome = DEFAULT_FLWR_HOME,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command instead of running it.")] = False,
) -> None:
    """Start flower-superlink with TLS, SuperNode authentication and a database; telemetry and installs off.

    Warns (stderr) when a certificate of the folder expires within 30 days.
    """
    from deploy.launch import superlink_command
    from deploy.pki import PkiPaths

    command = superlink_command(PkiPaths(pki_dir), database.absolute(), host=host, port=port)
    _warn_expiry(pki_dir)
    _exec(command, flwr_home, dry_run)


@deploy_app.command("supernode")
def supernode(
    superlink_address: Annotated[
        str, typer.Option("--superlink", help="HOST:PORT of the consortium proxy (or SuperLink).")
    ],
    ca: Annotated[Path, typer.Option(help="The consortium CA certificate (ca.crt).")],
    key: Annotated[
        Path, typer.Option(help="This hospital's SuperNode private key (sites/NAME from `sarcofed pki add-site`).")
    ],
    data_path: Annotated[
        Path, typer.Option(help="This hospital's manifest.csv (from `sarcofed ingest`); it never leaves the hospital.")
    ],
    site_name: Annotated[
        str,
        typer.Option(
            help="This hospital's name in the consortium's metrics and reports (required; unique in the consortium)."
        ),
    ],
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Where resampled slices are kept between rounds (each round runs in a fresh process); default: "
                "none, every round reads the images again."
            )
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            help=(
                "This hospital's policy file (TOML: what the node accepts; deploy/README.md lists the keys). "
                "Default: the built-in floors."
            )
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Local runtime API port on 127.0.0.1 (ClientApps connect here).")] = 9094,
    max_clientapp_seconds: MaxClientAppSeconds = 3600.0,
    flwr_home: FlwrHome = DEFAULT_FLWR_HOME,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command instead of running it.")] = False,
) -> None:
    """Start flower-supernode for one hospital: trusts only the consortium CA, signs in with its key."""
    from deploy.launch import supernode_command

    _check_site(ca, key, data_path, site_name, policy)
    command = supernode_command(
        superlink_address,
        ca.absolute(),
        key.absolute(),
        data_path,
        site_name=site_name,
        runtime_port=port,
        cache_dir=cache_dir,
        extra_node_config={"policy": str(policy.absolute())} if policy else None,
        max_clientapp_seconds=max_clientapp_seconds,
    )
    _exec(command, flwr_home, dry_run)


def _check_site(ca: Path, key: Path, data_path: Path, site_name: str, policy: Path | None) -> None:
    """Refuse a hospital's settings that would only fail once the SuperNode runs."""
    from common.errors import ConfigError

    for path, what in ((ca, "--ca"), (key, "--key"), (data_path, "--data-path")):
        if not path.is_file():
            raise ConfigError(f"{what}: file not found", path)
    if not site_name.strip():
        raise ConfigError("--site-name: give this hospital's name (unique in the consortium)")
    if policy is not None:
        from client.policy import SitePolicy

        SitePolicy.from_node_config({"policy": str(policy)})  # a bad file fails here, not in the first round


@deploy_app.command("proxy")
def proxy(
    pki_dir: Annotated[Path, typer.Argument(help="PKI folder (ca.crt, superlink.crt, superlink.key).")],
    listen: Annotated[
        str, typer.Option(help="Public ADDRESS:PORT hospitals and the coordinator reach.")
    ] = "0.0.0.0:9443",
    upstream: Annotated[str, typer.Option(help="The SuperLink's loopback HOST:PORT.")] = "127.0.0.1:9091",
    state_dir: Annotated[Path, typer.Option(help="Folder for nginx.conf, logs and temp files.")] = Path("proxy-state"),
    container: Annotated[
        bool,
        typer.Option(
            "--container",
            help="Write /pki/... and /tmp/proxy paths into nginx.conf (deploy/docker/compose.yaml); implies --dry-run.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write nginx.conf and print the command instead of running it.")
    ] = False,
) -> None:
    """Start nginx in front of the SuperLink: fleet route open, control route only with the coordinator certificate.

    Revoked certificates (crl.pem) are refused. After `sarcofed pki revoke`, reload it:
    nginx -p STATE_DIR -e STATE_DIR/error.log -c STATE_DIR/nginx.conf -s reload. Warns (stderr) when a
    certificate or the CRL
    expires within 30 days.
    """
    from deploy.pki import PkiPaths
    from deploy.proxy import nginx_command, write_nginx_config

    in_container = {"pki_dir_in_config": Path("/pki"), "state_dir_in_config": Path("/tmp/proxy")} if container else {}
    config = write_nginx_config(PkiPaths(pki_dir), state_dir, listen=listen, upstream=upstream, **in_container)
    _warn_expiry(pki_dir)
    if container:
        typer.echo(f"wrote {config} for a container that mounts the PKI at /pki")
        return
    command = nginx_command(config)
    if dry_run:
        import shlex

        typer.echo(shlex.join(command))
        return
    os.execvp(command[0], command)


@deploy_app.command("coordinator-config")
def coordinator_config(
    address: Annotated[
        str,
        typer.Option(help="HOST:PORT the coordinator's `flwr` reaches the SuperLink at (on its host: 127.0.0.1:9091)."),
    ],
    ca: Annotated[Path, typer.Option(help="The consortium CA certificate (made absolute in config.toml).")],
    name: Annotated[str, typer.Option(help="Connection name used in `flwr run . NAME`.")] = "sarcofed",
    flwr_home: FlwrHome = DEFAULT_FLWR_HOME,
) -> None:
    """Write $FLWR_HOME/config.toml with the consortium connection (replaces that file)."""
    from deploy.launch import write_coordinator_config

    path = write_coordinator_config(flwr_home, ca, {name: address})
    typer.echo(f"wrote {path}: use FLWR_HOME={flwr_home.absolute()} flwr run . {name} --stream")


Out = Annotated[
    Path, typer.Option(help="Folder the unit files are written to (then installed into /etc/systemd/system).")
]
User = Annotated[str, typer.Option(help="The account the services run as (create it first: useradd --system).")]


@services_app.command("coordinator")
def services_coordinator(
    pki_dir: Annotated[
        Path, typer.Argument(help="PKI folder on this host (ca.crt, superlink.crt/.key, crl.pem), readable by --user.")
    ],
    out: Out = Path("systemd"),
    state_dir: Annotated[
        Path,
        typer.Option(
            help="The SuperLink's folder: database, FLWR_HOME, working directory (default run folders: STATE_DIR/runs)."
        ),
    ] = Path("/var/lib/sarcofed/coordinator"),
    runs_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the ServerApp may write run folders if not STATE_DIR/runs; pass the same folder as run-dir."
        ),
    ] = None,
    proxy_state_dir: Annotated[
        Path, typer.Option(help="nginx's folder: nginx.conf (written now), access.log, error.log.")
    ] = Path("/var/lib/sarcofed/proxy"),
    listen: Annotated[str, typer.Option(help="Public ADDRESS:PORT of the proxy.")] = "0.0.0.0:9443",
    port: Annotated[int, typer.Option(help="The SuperLink's loopback port (the proxy's upstream).")] = 9091,
    user: User = "sarcofed",
) -> None:
    """Write sarcofed-superlink.service and sarcofed-proxy.service (and the proxy's nginx.conf).

    Warns (stderr) when a certificate of the folder expires within 30 days.
    """
    from deploy.services import prepare_commands, proxy_unit, superlink_unit, write_units

    units = [
        superlink_unit(pki_dir, state_dir, runs_dir=runs_dir, user=user, port=port),
        proxy_unit(pki_dir, proxy_state_dir, listen=listen, upstream=f"127.0.0.1:{port}", user=user),
    ]
    _warn_expiry(pki_dir)
    _report(write_units(units, out), prepare_commands(units))


@services_app.command("hospital")
def services_hospital(
    superlink_address: Annotated[str, typer.Option("--superlink", help="HOST:PORT of the consortium proxy.")],
    ca: Annotated[Path, typer.Option(help="The consortium CA certificate (ca.crt), readable by --user.")],
    key: Annotated[
        Path, typer.Option(help="This hospital's SuperNode private key (sites/NAME), readable by --user only.")
    ],
    data_path: Annotated[
        Path, typer.Option(help="This hospital's manifest.csv (from `sarcofed ingest`), readable by --user.")
    ],
    site_name: Annotated[
        str, typer.Option(help="This hospital's name (unique in the consortium); names the unit, its state and cache.")
    ],
    policy: Annotated[
        Path | None, typer.Option(help="This hospital's policy file (TOML; deploy/README.md lists the keys).")
    ] = None,
    port: Annotated[
        int, typer.Option(help="Local runtime API port on 127.0.0.1: one per SuperNode on this host.")
    ] = 9094,
    state_dir: Annotated[
        Path | None, typer.Option(help="The SuperNode's folder: its own FLWR_HOME. Default /var/lib/sarcofed/SITE.")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Resampled slices kept between rounds. Default /var/cache/sarcofed/SITE.")
    ] = None,
    max_clientapp_seconds: MaxClientAppSeconds = 3600.0,
    checkout: Annotated[
        Path, typer.Option(help="The SarcoFed checkout with its .venv (the SuperNode's working directory).")
    ] = CHECKOUT,
    out: Out = Path("systemd"),
    user: User = "sarcofed",
) -> None:
    """Write sarcofed-supernode-SITE.service for one hospital."""
    from deploy.services import prepare_commands, supernode_unit, write_units

    _check_site(ca, key, data_path, site_name, policy)
    unit = supernode_unit(
        site_name,
        superlink_address,
        ca,
        key,
        data_path,
        checkout=checkout,
        state_dir=state_dir,
        cache_dir=cache_dir,
        policy=policy,
        port=port,
        max_clientapp_seconds=max_clientapp_seconds,
        user=user,
    )
    _report(write_units([unit], out), prepare_commands([unit]))


def _report(paths: list[Path], prepare: list[str]) -> None:
    """What was written and the lines that install, start and follow it."""
    names = " ".join(p.name for p in paths)
    for path in paths:
        typer.echo(f"wrote {path}")
    typer.echo("install and start (as root):")
    for line in prepare:
        typer.echo(f"  {line}")
    typer.echo(f"  install -m 0644 {' '.join(str(p) for p in paths)} /etc/systemd/system/")
    typer.echo("  systemctl daemon-reload")
    typer.echo(f"  systemctl enable --now {names}")
    typer.echo(f"logs: journalctl -u {paths[0].name} -f")


if __name__ == "__main__":
    deploy_app()
