"""systemd units for the consortium's long-running processes: the coordinator's SuperLink and proxy, and a
hospital's SuperNode.

Why: the SuperLink, the proxy and every SuperNode stay in the foreground for as long as the consortium
runs; they belong under a service manager that starts them at boot, restarts them when they fail, keeps
their logs and stops them with all their children. Each unit runs exactly the command line that
``deploy/launch.py`` (``superlink_command``, ``supernode_command``) and ``deploy/proxy.py``
(``nginx_command``) build, quoted for systemd, with:

- ``WorkingDirectory``: the SuperLink's state folder (a relative ``run-dir`` lands there, writable), the
  SarcoFed checkout for a SuperNode (``python -m deploy.supernode_main`` imports from it), the proxy's
  state folder for nginx; every file of the command line is an absolute path;
- ``Environment`` from ``deploy.launch.flower_env``: a ``FLWR_HOME`` of its own per service and per
  hospital (two SuperNodes on one host never share installed apps), telemetry, the update check and
  runtime installs off;
- ``Restart=on-failure``: the SuperLink and the proxy after 5 s, given up after 5 starts in 300 s (a
  configuration error should stop, not spin); a SuperNode every 30 s and never given up (one whose key is
  not registered yet, or that the proxy refuses, exits at once and comes online by itself once fixed);
- ``User=``/``Group=``: one dedicated account; logs to the journal (``journalctl -u NAME``), nginx's
  access log (the audit trail) and error log in its state folder;
- hardening Flower, torch and nginx run under: no new privileges, no capabilities, a private /tmp, the
  whole file system read-only (``ProtectSystem=strict``, ``ProtectHome=read-only``) except the unit's
  state, cache and run folders. Folders under /var/lib, /var/cache and /var/log are made by systemd for
  the service's user (``StateDirectory=``, ...); others must exist (``prepare_commands``).
  Not used: ``MemoryDenyWriteExecute`` (JIT code in torch and cffi), ``SystemCallFilter`` (not checked
  against every library the ClientApp loads), and ``PrivateDevices`` for SuperNodes (GPU devices).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from deploy.launch import SUPERLINK_PORT, SUPERNODE_RUNTIME_PORT, flower_env, superlink_command, supernode_command
from deploy.pki import PkiPaths, validate_site_name
from deploy.proxy import nginx_command, write_nginx_config

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_USER = "sarcofed"
STATE_ROOT = Path("/var/lib/sarcofed")
CACHE_ROOT = Path("/var/cache/sarcofed")
SUPERLINK_UNIT = "sarcofed-superlink.service"
PROXY_UNIT = "sarcofed-proxy.service"
# systemd makes these folders itself, owned by the service's user, and writable under ProtectSystem=strict.
MANAGED_ROOTS = {
    "StateDirectory": Path("/var/lib"),
    "CacheDirectory": Path("/var/cache"),
    "LogsDirectory": Path("/var/log"),
}
HARDENING = (
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "PrivateTmp=yes",
    "ProtectSystem=strict",
    "ProtectHome=read-only",
    "ProtectProc=invisible",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "RestrictNamespaces=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "UMask=0027",
)


@dataclass(frozen=True)
class Unit:
    """One systemd service: what it runs, as whom, where, and what it may write."""

    name: str  # the unit file's name, e.g. "sarcofed-superlink.service"
    description: str
    command: list[str]
    working_directory: Path
    user: str
    environment: Mapping[str, str] = field(default_factory=dict)
    writable: tuple[Path, ...] = ()
    check: list[str] | None = None  # ExecStartPre: refuse to start on a bad configuration
    reload: list[str] | None = None  # ExecReload
    wants: tuple[str, ...] = ("network-online.target",)
    restart_s: int = 5
    give_up_after: int | None = 5  # starts in 300 s before systemd stops trying; None: never gives up
    kill_signal: str = "SIGTERM"
    kill_mode: str = "control-group"  # every child (SuperExec, ServerApp, ClientApp) stops with the service
    private_devices: bool = True


def systemd_word(arg: str, *, command: bool = True) -> str:
    """ARG as one quoted word of a unit file: specifiers (%) literal, and in a COMMAND line variables ($) too."""
    text = arg.replace("%", "%%")
    if command:
        text = text.replace("$", "$$")
    if text and not any(c.isspace() or c in "\"'\\;" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_command(command: Sequence[str]) -> str:
    """COMMAND as an Exec line value: one option and its value per continuation line."""
    if not command or not Path(command[0]).is_absolute():
        raise ConfigError(f"a systemd unit needs the program's absolute path, got {command[:1]}")
    lines: list[str] = []
    current = [systemd_word(command[0])]
    for arg in command[1:]:
        if arg.startswith("--") and (lines or len(current) > 1):
            lines.append(" ".join(current))
            current = []
        current.append(systemd_word(arg))
    lines.append(" ".join(current))
    return " \\\n    ".join(lines)


def render_unit(unit: Unit) -> str:
    """The unit file's text."""
    for path in (unit.working_directory, *unit.writable):
        if not Path(path).is_absolute():
            raise ConfigError(f"{unit.name}: {path} is not an absolute path")
    after = " ".join(unit.wants)
    lines = [
        "# Written by `sarcofed deploy services` (deploy/services.py): change its options and write again rather",
        "# than editing this file. Install and start: deploy/README.md.",
        "[Unit]",
        f"Description={unit.description}",
        f"Wants={after}",
        f"After={after}",
        *(
            ["StartLimitIntervalSec=300", f"StartLimitBurst={unit.give_up_after}"]
            if unit.give_up_after
            else ["StartLimitIntervalSec=0"]
        ),
        "",
        "[Service]",
        "Type=exec",
        f"User={unit.user}",
        f"Group={unit.user}",
        f"WorkingDirectory={str(unit.working_directory).replace('%', '%%')}",
        *(f"Environment={systemd_word(f'{k}={v}', command=False)}" for k, v in sorted(unit.environment.items())),
    ]
    if unit.check:
        lines.append(f"ExecStartPre={systemd_command(unit.check)}")
    lines.append(f"ExecStart={systemd_command(unit.command)}")
    if unit.reload:
        lines.append(f"ExecReload={systemd_command(unit.reload)}")
    lines += [
        "Restart=on-failure",
        f"RestartSec={unit.restart_s}",
        f"KillSignal={unit.kill_signal}",
        f"KillMode={unit.kill_mode}",
        "TimeoutStopSec=30",
        "StandardOutput=journal",
        "StandardError=journal",
        f"SyslogIdentifier={unit.name.removesuffix('.service')}",
        *_directory_lines(unit.writable),
        *HARDENING,
    ]
    if unit.private_devices:
        lines.append("PrivateDevices=yes")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _directory_lines(writable: Sequence[Path]) -> list[str]:
    """StateDirectory=/CacheDirectory=/LogsDirectory= for folders under their roots, ReadWritePaths= for the rest."""
    managed: dict[str, list[str]] = {}
    others = []
    for path in writable:
        key = _managed_by(Path(path))
        if key is None:
            others.append(str(path))
        else:
            managed.setdefault(key, []).append(Path(path).relative_to(MANAGED_ROOTS[key]).as_posix())
    lines = [f"{key}={' '.join(names)}" for key, names in managed.items()]
    if others:
        lines.append("ReadWritePaths=" + " ".join(systemd_word(p, command=False) for p in others))
    return lines


def prepare_commands(units: Sequence[Unit]) -> list[str]:
    """Shell lines that make the writable folders systemd does not make itself (outside /var/lib, ...)."""
    lines = []
    for unit in units:
        owner = shlex.quote(unit.user)
        for path in unit.writable:
            if _managed_by(Path(path)) is None:
                lines.append(f"install -d -o {owner} -g {owner} -m 0750 {shlex.quote(str(path))}")
    return lines


def _managed_by(path: Path) -> str | None:
    """The systemd setting that makes PATH (StateDirectory, ...), or None when none can."""
    return next((key for key, root in MANAGED_ROOTS.items() if path.is_relative_to(root) and path != root), None)


def _service_env(flwr_home: Path, state_dir: Path) -> dict[str, str]:
    """flower_env for a service: a fixed PATH (the venv's scripts first), no inherited variables."""
    env = flower_env(flwr_home, base={"PATH": SYSTEM_PATH})
    env["MPLCONFIGDIR"] = str(state_dir / "matplotlib")  # reports and montages; the home folder is read-only
    return env


def superlink_unit(
    pki_dir: Path,
    state_dir: Path = STATE_ROOT / "coordinator",
    *,
    runs_dir: Path | None = None,
    user: str = DEFAULT_USER,
    host: str = "127.0.0.1",
    port: int = SUPERLINK_PORT,
) -> Unit:
    """The coordinator's SuperLink: database, FLWR_HOME and (by default) run folders under STATE_DIR.

    The ServerApp runs in the SuperLink's working directory, STATE_DIR: the run config's default
    ``run-dir = "runs"`` lands in STATE_DIR/runs. RUNS_DIR (default that folder) is made writable too:
    give it when runs go elsewhere, and pass the same folder as ``run-dir``.
    """
    state = _absolute(state_dir, "--state-dir")
    runs = _absolute(runs_dir, "--runs-dir") if runs_dir is not None else state / "runs"
    pki = PkiPaths(_absolute(pki_dir, "PKI_DIR"))
    command = superlink_command(pki, state / "superlink-state.db", host=host, port=port)
    return Unit(
        SUPERLINK_UNIT,
        "SarcoFed SuperLink (Flower, TLS, SuperNode authentication)",
        command,
        state,
        user,
        _service_env(state / "flwr_home", state),
        writable=_unique((state, runs)),
        kill_signal="SIGINT",
    )


def proxy_unit(
    pki_dir: Path,
    state_dir: Path = STATE_ROOT / "proxy",
    *,
    listen: str = "0.0.0.0:9443",
    upstream: str = f"127.0.0.1:{SUPERLINK_PORT}",
    user: str = DEFAULT_USER,
) -> Unit:
    """The proxy (nginx) in front of the SuperLink; writes its nginx.conf into STATE_DIR (deploy/proxy.py)."""
    state = _absolute(state_dir, "--proxy-state-dir")
    config = write_nginx_config(PkiPaths(_absolute(pki_dir, "PKI_DIR")), state, listen=listen, upstream=upstream)
    command = nginx_command(config)
    return Unit(
        PROXY_UNIT,
        "SarcoFed proxy (nginx: fleet route open, control route with the coordinator certificate)",
        command,
        state,
        user,
        writable=(state,),
        check=[*command, "-t", "-q"],
        reload=nginx_command(config, reload=True),
        wants=("network-online.target", SUPERLINK_UNIT),
        kill_signal="SIGQUIT",
        kill_mode="mixed",
    )


def supernode_unit(
    site_name: str,
    superlink: str,
    ca_cert: Path,
    key: Path,
    data_path: Path,
    *,
    checkout: Path,
    state_dir: Path | None = None,
    cache_dir: Path | None = None,
    policy: Path | None = None,
    port: int = SUPERNODE_RUNTIME_PORT,
    max_clientapp_seconds: float | None = None,
    user: str = DEFAULT_USER,
) -> Unit:
    """One hospital's SuperNode, named after the site: its own FLWR_HOME (STATE_DIR/flwr_home) and cache.

    Defaults: STATE_DIR = /var/lib/sarcofed/SITE, CACHE_DIR = /var/cache/sarcofed/SITE; give each
    SuperNode on one host its own PORT.
    """
    site = validate_site_name(site_name)
    state = _absolute(state_dir, "--state-dir") if state_dir is not None else STATE_ROOT / site
    cache = _absolute(cache_dir, "--cache-dir") if cache_dir is not None else CACHE_ROOT / site
    files = {"--ca": ca_cert, "--key": key, "--data-path": data_path, **({"--policy": policy} if policy else {})}
    resolved = {what: _absolute(path, what) for what, path in files.items()}
    command = supernode_command(
        superlink,
        resolved["--ca"],
        resolved["--key"],
        resolved["--data-path"],
        site_name=site,
        runtime_port=port,
        cache_dir=cache,
        extra_node_config={"policy": str(resolved["--policy"])} if policy else None,
        max_clientapp_seconds=max_clientapp_seconds,
    )
    return Unit(
        f"sarcofed-supernode-{site}.service",
        f"SarcoFed SuperNode of {site} (Flower)",
        command,
        _absolute(checkout, "--checkout"),
        user,
        _service_env(state / "flwr_home", state),
        writable=_unique((state, cache)),
        restart_s=30,
        give_up_after=None,
        private_devices=False,
    )


def write_units(units: Sequence[Unit], out_dir: Path) -> list[Path]:
    """Write each unit as OUT_DIR/<name>; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in units:
        path = out / unit.name
        path.write_text(render_unit(unit))
        written.append(path)
    return written


def _absolute(path: Path, what: str) -> Path:
    """PATH made absolute against the current directory (units never depend on one), ~ expanded."""
    if path is None:
        raise ConfigError(f"{what}: a path is required")
    return Path(path).expanduser().absolute()


def _unique(paths: Sequence[Path]) -> tuple[Path, ...]:
    """PATHS in their order, without repeats and without folders inside another one of them."""
    unique = list(dict.fromkeys(paths))
    return tuple(p for p in unique if not any(p != q and p.is_relative_to(q) for q in unique))
