"""Launch the consortium's processes the same way everywhere: scripts, containers and tests.

One place builds the command lines, so the hardened flags cannot drift apart:
- SuperLink: TLS (``--ssl-*``), ``--enable-supernode-auth``, ``--database FILE`` (state survives a
  restart), no runtime dependency installation (hospitals and the coordinator have no package index),
  telemetry and the PyPI update check off, bound to loopback by default (the proxy in
  ``deploy/proxy.py`` is what the network sees).
- SuperNode: ``--root-certificates`` (the consortium CA), ``--auth-supernode-private-key`` (its
  registered key), ``--node-config "data-path=<manifest.csv> site-name=..."`` (what client/federated_site.py
  reads) and its own ``--port`` for the local
  runtime API (several SuperNodes on one host would collide on 9094).
- Coordinator: ``$FLWR_HOME/config.toml`` with an absolute ``root-certificates`` path (Flower resolves
  relative paths against the CWD of each `flwr` call).

The ``start``/``stop_all`` helpers run these as child processes and stop them reliably, including
their descendants (SuperExec, ServerApp, ClientApp processes).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from deploy.pki import PkiPaths

SUPERLINK_PORT = 9091  # the one HTTPS port of a 1.42 SuperLink (fleet, control, runtime), loopback only
PROXY_PORT = 9443  # what hospitals and the coordinator reach through the firewall
SUPERNODE_RUNTIME_PORT = 9094  # a SuperNode's local runtime API (ClientApps connect here), loopback only
FEDERATION = "sarcofed"


QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray's own usage telemetry (a local simulation's sites run on Ray)
    "PYTHONUNBUFFERED": "1",  # log lines (and `flwr run --stream`) reach the reader as they are written
}
"""Set in every Flower process we start, deployed or simulated: nothing leaves, nothing is installed."""


def flower_env(
    flwr_home: Path, base: Mapping[str, str] | None = None, *, superexec_poll_s: float | None = 0.2
) -> dict[str, str]:
    """Environment for every Flower process: our FLWR_HOME, QUIET_ENV, this venv's scripts first on PATH.

    ``superexec_poll_s``: how often a SuperExec looks for a message to start an app for (Flower's
    default 1 s; a caller's own value wins). Deployed, every round is five such hand-overs at each
    site, so 0.2 s; a local simulation keeps Flower's default (None): there the polling costs CPU in
    SuperExec and SuperLink for the whole run, taken from the sites' training.
    """
    env = dict(os.environ if base is None else base)
    env.update(QUIET_ENV, FLWR_HOME=str(Path(flwr_home).resolve()))
    if superexec_poll_s is not None:
        env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(superexec_poll_s))
    # The SuperLink and SuperNodes start flower-superexec / flwr-serverapp / flwr-clientapp by name.
    scripts = str(Path(sys.executable).parent)
    if env.get("PATH", "").split(os.pathsep)[0] != scripts:
        env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")]).rstrip(os.pathsep)
    return env


def _bin(name: str) -> str:
    """A Flower console script from this interpreter's environment (tests and venvs need not be on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def superlink_command(
    pki: PkiPaths, database: Path, *, host: str = "127.0.0.1", port: int = SUPERLINK_PORT
) -> list[str]:
    """`flower-superlink` with TLS, SuperNode authentication and a persistent SQLite database."""
    for path in (pki.ca_cert, pki.superlink_cert, pki.superlink_key):
        if not path.is_file():
            raise ConfigError(
                f"the SuperLink needs {path.name}; run `sarcofed pki init {pki.root} --host NAME` first", path
            )
    return [
        _bin("flower-superlink"),
        "--ssl-ca-certfile",
        str(pki.ca_cert),
        "--ssl-certfile",
        str(pki.superlink_cert),
        "--ssl-keyfile",
        str(pki.superlink_key),
        "--enable-supernode-auth",
        "--database",
        str(database),
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
    ]


def insecure_superlink_command(port: int, *, host: str = "127.0.0.1") -> list[str]:
    """`flower-superlink` in plain text with in-memory state: loopback tests of the deployed process model only."""
    return [
        _bin("flower-superlink"),
        "--insecure",
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
    ]


def supernode_command(
    superlink: str,
    ca_cert: Path | None,
    private_key: Path | None,
    data_path: Path,
    *,
    site_name: str | None = None,
    runtime_port: int = SUPERNODE_RUNTIME_PORT,
    insecure: bool = False,
    max_retries: int | None = None,
    cache_dir: Path | None = None,
    extra_node_config: Mapping[str, str | int | float] | None = None,
    max_clientapp_seconds: float | None = None,
) -> list[str]:
    """`flower-supernode` for one hospital: trusts only the consortium CA, signs in with its own key.

    DATA_PATH is the site's manifest.csv (``sarcofed ingest`` output or a synthetic site's manifest);
    CACHE_DIR, where the site keeps resampled slices between rounds (optional); MAX_CLIENTAPP_SECONDS,
    the longest one ClientApp process may work on a message before the node ends it (default: the
    wrapper's, deploy/supernode_main.py).

    ``ca_cert=None`` / ``private_key=None`` / ``insecure=True`` exist for the negative tests (a
    misconfigured SuperNode must be refused); a real deployment passes both files.
    """
    node_config: dict[str, str | int | float] = {"data-path": str(Path(data_path).resolve())}
    if site_name:
        node_config["site-name"] = site_name
    if cache_dir is not None:
        node_config["cache-dir"] = str(Path(cache_dir).resolve())
    node_config.update(extra_node_config or {})
    # Flower's SuperNode, looking for messages every 0.5 s instead of 3 s and ending stale ClientApps
    # (deploy/supernode_main.py)
    command = [sys.executable, "-m", "deploy.supernode_main", "--superlink", superlink]
    if insecure:
        command.append("--insecure")
    if ca_cert is not None:
        command += ["--root-certificates", str(ca_cert)]
    if private_key is not None:
        command += ["--auth-supernode-private-key", str(private_key)]
    command += [
        "--node-config",
        node_config_arg(node_config),
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
    ]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    if max_clientapp_seconds is not None:
        command += ["--max-clientapp-seconds", f"{max_clientapp_seconds:g}"]
    return command


def node_config_arg(values: Mapping[str, str | int | float | bool]) -> str:
    """``key=value`` pairs as Flower parses them (each value a TOML literal: strings quoted)."""

    def literal(value: str | int | float | bool) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if '"' in value or any(c.isspace() for c in value):
            raise ConfigError(f"node-config value {value!r} may not contain quotes or spaces (Flower splits on them)")
        return f'"{value}"'

    return " ".join(f"{key}={literal(value)}" for key, value in values.items())


def toml_value(value: str | int | float | bool) -> str:
    """VALUE as a TOML literal (strings quoted and escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_flower_config(
    flwr_home: Path, connections: Mapping[str, Mapping[str, str | int | float | bool]], comment: str = ""
) -> Path:
    """Write ``$FLWR_HOME/config.toml``: one ``[superlink.NAME]`` table per connection, the first the default.

    Keys are written as given (Flower's dotted ones too, ``options.num-supernodes``). Replaces an
    existing config.toml: the FLWR_HOME is ours.
    """
    if not connections:
        raise ConfigError("a Flower config needs at least one SuperLink connection")
    flwr_home = Path(flwr_home)
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [f"# {comment}"] if comment else []
    lines += ["[superlink]", f"default = {toml_value(next(iter(connections)))}"]
    for name, settings in connections.items():
        lines += ["", f"[superlink.{name}]", *(f"{key} = {toml_value(value)}" for key, value in settings.items())]
    config = flwr_home / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def write_coordinator_config(flwr_home: Path, ca_cert: Path, connections: Mapping[str, str]) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one TLS connection per NAME -> "host:port" (the first is the default).

    ``root-certificates`` is made absolute: Flower reads it relative to the CWD of each `flwr` call.
    """
    if not connections:
        raise ConfigError("the coordinator config needs at least one SuperLink connection (name -> host:port)")
    ca = Path(ca_cert).resolve()
    if not ca.is_file():
        raise ConfigError("the coordinator needs the consortium CA certificate; copy ca.crt from the PKI folder", ca)
    tables = {name: {"address": address, "root-certificates": str(ca)} for name, address in connections.items()}
    return write_flower_config(
        flwr_home,
        tables,
        "Written by SarcoFed deploy/launch.py: the coordinator's connections to the consortium SuperLink.",
    )


# Ports handed out for local processes: above Ray's worker ports (10002-19999 by default) and below the
# kernel's ephemeral range (32768-60999 on Linux), where every outgoing connection takes its source port:
# a port picked there can be taken by some connection before the process it was picked for binds it.
LOCAL_PORTS = range(20000, 32768)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, from LOCAL_PORTS (tests start each process on its own)."""
    pick = random.SystemRandom()
    for _ in range(500):
        port = pick.choice(LOCAL_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # the range is full: any free port
        sock.bind((host, 0))
        return sock.getsockname()[1]


def https_ok(url: str, ca_cert: Path, timeout: float = 2.0, client: tuple[Path, Path] | None = None) -> int | None:
    """HTTP status of a GET on URL over TLS that trusts only CA_CERT (None when nothing answers)."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:  # noqa: S310 (our own URL)
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ssl.SSLError):
        return None


@dataclass
class Managed:
    """One started process, its log file and the descendants seen while it ran."""

    name: str
    popen: subprocess.Popen
    log: Path
    descendants: set[int] = field(default_factory=set)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(
    name: str,
    command: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    cwd: Path | None = None,
    log_path: Path | None = None,
) -> Managed:
    """Start COMMAND in its own process group, stdout+stderr appended to LOG_PATH (default LOG_DIR/NAME.log)."""
    log = log_path or log_dir / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        popen = subprocess.Popen(
            list(command), env=dict(env), stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    return Managed(name, popen, log)


def wait_for_log(process: Managed, text: str, timeout: float) -> bool:
    """Wait until TEXT shows in the process log; False on timeout or if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.log_text():
            return True
        if not process.alive():
            return text in process.log_text()
        time.sleep(0.2)
    return False


def descendants(pid: int) -> set[int]:
    """All live descendants of PID (via /proc; SuperExec/ServerApp/ClientApp start their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def remember_descendants(processes: Sequence[Managed]) -> None:
    """Record the current descendants of each process (call while they run: orphans get re-parented)."""
    for process in processes:
        if process.alive():
            process.descendants |= descendants(process.popen.pid)


def stop_all(processes: Sequence[Managed], grace: float = 5.0) -> None:
    """Stop every process and its descendants: SIGTERM, then SIGINT, then SIGKILL.

    SIGINT matters: a SuperLink with a `flwr run --stream` client attached ignores SIGTERM (uvicorn
    waits for the connection to close) but exits on SIGINT.
    """
    remember_descendants(processes)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGINT, grace), (signal.SIGKILL, 2.0)):
        live = [p for p in processes if p.alive()]
        if not live:
            break
        for process in live:
            _signal(process.popen.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(p.alive() for p in live):
            time.sleep(0.1)
    for process in processes:
        for pid in process.descendants | descendants(process.popen.pid):
            _signal(pid, signal.SIGKILL)
        try:  # orphans re-parented away from the tree but still in the process group start() gave it
            os.killpg(process.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
