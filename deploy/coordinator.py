"""The coordinator's client for the SuperLink Control API, through the gate that wants its certificate.

Why: the gate (``deploy/proxy.py``) opens ``/v1/control/*`` only to a client certificate of the
consortium CA, and the `flwr` CLI cannot present one. This module speaks the same protocol with
Flower's own ``ControlHttpClient`` (protobuf over HTTPS), given an ``ssl.SSLContext`` that trusts only
``ca.crt`` and presents ``coordinator.crt``/``coordinator.key``. Without a certificate it also works
where no gate stands (the SuperLink's loopback port, or an SSH tunnel to it).

What it adds to Flower's answers:

- run status in words (running, completed, failed, stopped, ...);
- node status you can trust (``node_status``): Flower keeps a node "online" until
  ``online_until`` = last heartbeat + 2 x heartbeat interval (60 s), and a restarted SuperLink reads
  that from its database, so a node that died shows online for up to a minute. Here a node is
  **online** only when Flower says so *and* its last heartbeat (``online_until`` - 2 x interval) is
  at most one heartbeat interval (30 s) old by the SuperLink's clock; SuperNodes send one every
  17.5-22.5 s. Otherwise Flower's "online" is shown as **silent**;
- the hospital's site name: the name the node was registered with (``register``), else this
  coordinator's registry (``<state-dir>/sites.json``, node id -> site), else the PKI folder's
  ``sites/<name>.pub`` whose key the node signs in with.

Every failure a person can fix becomes a ``ConfigError`` with one line that names the address and
the certificate: the gate refused it, the server is not vouched for by ``ca.crt``, nothing answers.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import ConfigError

if TYPE_CHECKING:
    from flwr.supercore.control import ControlHttpClient

ADDRESS_ENV = "SARCOFED_COORDINATOR_ADDRESS"
PKI_ENV = "SARCOFED_PKI"
STATE_DIR_ENV = "SARCOFED_STATE_DIR"
REGISTRY_FILE = "sites.json"
HEARTBEAT_PATIENCE = 2  # flwr.common.constant.HEARTBEAT_PATIENCE: online_until = last heartbeat + 2 x interval
PROGRESS_LINE = re.compile(r"sarcofed \[(?P<phase>[\w-]+) (?P<round>\d+)/(?P<rounds>\d+)\]")
RUN_WORDS = {"completed": "completed", "failed": "failed", "stopped": "stopped"}  # finished:<sub-status>


@dataclass(frozen=True)
class Credentials:
    """What the coordinator shows the gate: the CA it trusts, and its client certificate (optional)."""

    ca_cert: Path
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def resolve(
        cls, pki: Path | None = None, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
    ) -> Credentials:
        """Explicit files win over the PKI folder's ca.crt / coordinator.crt / coordinator.key."""
        if pki is not None:
            ca = ca or pki / "ca.crt"
            if cert is None and key is None and (pki / "coordinator.crt").is_file():
                cert, key = pki / "coordinator.crt", pki / "coordinator.key"
        if ca is None:
            raise ConfigError(f"no CA certificate: pass --pki FOLDER (with ca.crt) or --ca FILE, or set {PKI_ENV}")
        if (cert is None) != (key is None):
            raise ConfigError("--cert and --key go together: the coordinator certificate and its private key")
        for path, what in ((ca, "CA certificate"), (cert, "coordinator certificate"), (key, "coordinator key")):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{what} not found (copy it from the PKI folder made by `sarcofed pki init`)", path)
        return cls(Path(ca), Path(cert) if cert else None, Path(key) if key else None)

    def describe(self) -> str:
        """The certificate as the messages name it."""
        if self.cert is None:
            return "no client certificate"
        return f"certificate {self.cert} ({_subject(self.cert)})"

    def ssl_context(self) -> ssl.SSLContext:
        """TLS that trusts only the consortium CA and presents the coordinator certificate, if any."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_cert))
        except ssl.SSLError as error:
            raise ConfigError(
                f"not a PEM CA certificate ({error.reason or error}): use the consortium's ca.crt", self.ca_cert
            ) from None
        if self.cert is not None:
            try:
                context.load_cert_chain(str(self.cert), str(self.key))
            except ssl.SSLError as error:
                raise ConfigError(
                    f"cannot use {self.cert} with {self.key} ({error.reason or error}): "
                    "the key must be the certificate's own, unencrypted (coordinator.crt/.key)"
                ) from None
        return context


def _subject(cert: Path) -> str:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(Path(cert).read_bytes()).subject.rfc4514_string()
    except ValueError:
        return "not a PEM certificate"


@dataclass(frozen=True)
class RunInfo:
    """One Flower run as the coordinator reads it; times are UTC, durations in seconds."""

    run_id: int
    app: str  # publisher/name==version
    status: str  # pending | starting | running | completed | failed | stopped
    details: str
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    run_config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeState:
    """One registered SuperNode: its hospital, whether it is really there, and when it was last heard."""

    node_id: int
    site: str | None
    status: str  # online | silent | offline | registered | unregistered
    flower_status: str  # what `flwr supernode list` says
    last_heard: datetime | None  # last heartbeat or activation, SuperLink clock
    silent_s: float | None  # seconds since last heard, SuperLink clock
    registered_at: datetime | None


def run_status(status: str, sub_status: str) -> str:
    """Flower's "finished" + sub-status as one word; pending/starting/running stay as they are."""
    return RUN_WORDS.get(sub_status, sub_status or "finished") if status == "finished" else status


def node_status(
    flower_status: str,
    online_until: float | None,
    heartbeat_interval: float,
    now: datetime,
    offline_at: datetime | None = None,
) -> tuple[str, datetime | None, float | None]:
    """(status, last heard, seconds since) by the rule in the module docstring.

    ``online_until`` (epoch seconds) is what Flower stores for a node it calls online: last heartbeat
    or activation + 2 x interval. An offline node was last heard when it signed off (``offline_at``,
    Flower's last_deactivated_at; for a node Flower timed out, that is up to 2 x interval late).
    """
    if flower_status == "offline" and offline_at is not None:
        return "offline", offline_at, max(0.0, (now - offline_at).total_seconds())
    if flower_status != "online" or online_until is None or heartbeat_interval <= 0:
        return flower_status, None, None
    last = datetime.fromtimestamp(online_until - HEARTBEAT_PATIENCE * heartbeat_interval, tz=UTC)
    since = max(0.0, (now - last).total_seconds())
    return ("online" if since <= heartbeat_interval else "silent"), last, since


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- the coordinator's registry: node id -> site name ------------------------------------------------


def read_registry(state_dir: Path | None) -> dict[int, str]:
    """``<state-dir>/sites.json`` as {node id: site}; {} when there is none yet."""
    if state_dir is None or not (Path(state_dir) / REGISTRY_FILE).is_file():
        return {}
    path = Path(state_dir) / REGISTRY_FILE
    try:
        return {int(k): str(v) for k, v in json.loads(path.read_text())["nodes"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError('not a SarcoFed site registry: expected {"nodes": {"<node id>": "<site>"}}', path) from None


def record_site(state_dir: Path, node_id: int, site: str) -> Path:
    """Remember that NODE_ID is hospital SITE (written atomically; replaces an earlier name of that node)."""
    nodes = read_registry(state_dir)
    nodes[int(node_id)] = site
    path = Path(state_dir) / REGISTRY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"nodes": {str(k): v for k, v in sorted(nodes.items())}}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def public_key_bytes(path: Path) -> bytes:
    """An OpenSSH EC public key (``sites/NAME.pub``) as the SuperLink stores it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    if not Path(path).is_file():
        raise ConfigError("public key not found (sites/NAME.pub from `sarcofed pki add-site`)", path)
    try:
        key = serialization.load_ssh_public_key(Path(path).read_bytes())
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ConfigError(f"not an OpenSSH public key ({error})", path) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("not an EC public key: SuperNode keys are EC P-384 (`sarcofed pki add-site`)", path)
    return public_key_to_bytes(key)


def pki_site_keys(pki: Path | None) -> dict[bytes, str]:
    """{stored public key: site} for each ``sites/<site>.pub`` of a PKI folder (empty without one)."""
    if pki is None or not (Path(pki) / "sites").is_dir():
        return {}
    keys: dict[bytes, str] = {}
    for pub in sorted((Path(pki) / "sites").glob("*.pub")):
        try:
            keys[public_key_bytes(pub)] = pub.stem
        except ConfigError:
            continue
    return keys


# -- the client ---------------------------------------------------------------------------------------


class Coordinator:
    """Control API calls through the gate at ADDRESS ("host:port") with CREDENTIALS.

    Use as a context manager (closes the HTTP connection pool). Site names come from
    ``state_dir``'s registry and the PKI folder's ``sites/*.pub`` (``pki``), after the SuperLink's own.
    """

    def __init__(
        self,
        address: str,
        credentials: Credentials,
        *,
        state_dir: Path | None = None,
        pki: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not address or address.startswith(("http://", "https://")) or ":" not in address:
            raise ConfigError(
                f"--address {address!r}: give the gate as HOST:PORT (e.g. link.consortium.example:9443), "
                f"or set {ADDRESS_ENV}"
            )
        self.address = address
        self.credentials = credentials
        self.state_dir = state_dir
        self.pki = pki
        self._timeout = timeout
        self._client: ControlHttpClient | None = None

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> ControlHttpClient:
        """Flower's Control API client, with the client and version headers the `flwr` CLI sends."""
        if self._client is None:
            os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
            from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
            from flwr.supercore.control import ControlHttpClient
            from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

            self._client = ControlHttpClient(
                f"https://{self.address}",
                interceptors=[
                    CliClientHttpInterceptor(),
                    RuntimeVersionHttpInterceptor(component_name="sarcofed coordinator"),
                ],
                verify=self.credentials.ssl_context(),
                timeout=self._timeout,
            )
        return self._client

    # one verb per Control API call

    def list_runs(self, run_id: int | None = None) -> list[RunInfo]:
        """Every run the SuperLink knows (newest first), or just RUN_ID."""
        from flwr.common.serde import run_from_proto
        from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=E0611

        request = ListRunsRequest(run_id=run_id) if run_id is not None else ListRunsRequest()
        with self._translated():
            reply = self.client.ListRuns(request)
        now = _time(reply.now) or datetime.now(UTC)
        runs = [_run_info(run_from_proto(proto), now) for proto in reply.run_dict.values()]
        return sorted(runs, key=lambda r: r.submitted_at or now, reverse=True)

    def list_nodes(self) -> list[NodeState]:
        """Every SuperNode registered at the SuperLink, in registration order, with its site and trusted status."""
        return [state for _key, state in self._nodes()]

    def _nodes(self) -> list[tuple[bytes, NodeState]]:
        """(stored public key, state) of every node, in registration order."""
        from flwr.proto.control_pb2 import ListNodesRequest  # pylint: disable=E0611

        with self._translated():
            reply = self.client.ListNodes(ListNodesRequest())
        now = _time(reply.now) or datetime.now(UTC)
        registry, keys = read_registry(self.state_dir), pki_site_keys(self.pki)
        nodes = []
        for info in reply.nodes_info:
            until = info.online_until if info.HasField("online_until") else None
            offline_at = _time(info.last_deactivated_at) if info.HasField("last_deactivated_at") else None
            status, last, since = node_status(info.status, until, info.heartbeat_interval, now, offline_at)
            key = bytes(info.public_key)
            named = info.name if info.HasField("name") else ""
            site = named or registry.get(info.node_id) or keys.get(key)
            nodes.append(
                (key, NodeState(info.node_id, site, status, info.status, last, since, _time(info.registered_at)))
            )
        return sorted(nodes, key=lambda pair: pair[1].registered_at or now)

    def stream_log(self, run_id: int, follow: bool = False) -> Iterator[str]:
        """The run's log as it comes: all of it so far, then (FOLLOW) more until the run finishes."""
        from flwr.proto.control_pb2 import StreamLogsRequest  # pylint: disable=E0611

        with self._translated():
            stream = self.client.StreamLogs(StreamLogsRequest(run_id=run_id, after_timestamp=0.0))
            try:
                for reply in stream:
                    yield reply.log_output
                    if not follow:
                        break
            finally:
                stream.close()

    def stop_run(self, run_id: int) -> bool:
        """Ask the SuperLink to stop RUN_ID; True when it accepted."""
        from flwr.proto.control_pb2 import StopRunRequest  # pylint: disable=E0611

        with self._translated():
            return bool(self.client.StopRun(StopRunRequest(run_id=run_id)).success)

    def submit_run(self, app_dir: Path, run_config: Sequence[str] | None = None, federation: str = "") -> int:
        """Build APP_DIR into a Flower App Bundle (as `flwr run` does) and start it; returns the run id.

        RUN_CONFIG: ``key=value`` strings as ``flwr run --run-config`` takes them (TOML values).
        """
        import hashlib

        from flwr.cli.build import build_fab_from_disk
        from flwr.cli.config_utils import load_and_validate
        from flwr.common.config import get_metadata_from_config, parse_config_args
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest  # pylint: disable=E0611
        from flwr.supercore.fab import Fab

        app = Path(app_dir).expanduser().resolve()
        try:
            config, _warnings = load_and_validate(app / "pyproject.toml")
            overrides = parse_config_args(list(run_config) if run_config else None)
            fab_bytes = build_fab_from_disk(app)
        except Exception as error:  # Flower reports bad apps and run configs as ValueError / ClickException
            raise ConfigError(f"cannot build the app: {_one_line(error)}", app) from None
        fab_id, fab_version = get_metadata_from_config(config)
        fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
        request = StartRunRequest(
            fab=fab_to_proto(fab), override_config=user_config_to_proto(overrides), federation=federation
        )
        with self._translated():
            reply = self.client.StartRun(request)
        if not reply.HasField("run_id"):
            raise ConfigError(f"the SuperLink at {self.address} did not start {fab_id}=={fab_version}")
        return int(reply.run_id)

    def register(self, public_key: Path, site: str) -> tuple[int, bool]:
        """Admit hospital SITE's SuperNode key and record its site name; (node id, newly registered).

        A key the SuperLink already knows keeps its node id: only the site name is recorded.
        """
        from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611

        from deploy.pki import validate_site_name

        validate_site_name(site)
        key = public_key_bytes(public_key)
        known = [(k, n) for k, n in self._nodes() if n.status != "unregistered"]
        taken = [n for _k, n in known if n.site == site]
        node = next((n for k, n in known if k == key), None)
        if taken and (node is None or taken[0].node_id != node.node_id):
            raise ConfigError(
                f"site name {site!r} already belongs to node {taken[0].node_id}: every hospital needs its own name"
            )
        if node is None:
            with self._translated():
                reply = self.client.RegisterNode(RegisterNodeRequest(public_key=key, name=site))
            if not reply.node_id:
                raise ConfigError(f"the SuperLink at {self.address} did not register {public_key}")
            node_id, new = int(reply.node_id), True
        else:
            node_id, new = node.node_id, False
        if self.state_dir is not None:
            record_site(self.state_dir, node_id, site)
        return node_id, new

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """httpx / TLS / Flower errors as one-line ConfigErrors that say what to do."""
        import httpx

        try:
            yield
        except httpx.HTTPStatusError as error:
            raise ConfigError(_refusal(error.response, self.address, self.credentials)) from None
        except httpx.TransportError as error:
            raise ConfigError(_transport(error, self.address, self.credentials)) from None
        except ValueError as error:  # Flower: a body that is not the Control API's protobuf
            raise ConfigError(
                f"{self.address} did not answer as a SuperLink Control API ({_one_line(error)}): "
                "check --address (the gate's HOST:PORT)"
            ) from None


def _run_info(run: Any, now: datetime) -> RunInfo:
    started, finished = _time(run.running_at), _time(run.finished_at)
    duration = ((finished or now) - started).total_seconds() if started else None
    return RunInfo(
        run_id=run.run_id,
        app=f"{run.fab_id}=={run.fab_version}" if run.fab_id else "",
        status=run_status(run.status.status, run.status.sub_status),
        details=run.status.details or "",
        submitted_at=_time(run.pending_at),
        started_at=started,
        finished_at=finished,
        duration_s=duration,
        run_config=dict(run.override_config),
    )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(getattr(error, "message", "") or error).split())
    return text[:300]


def _refusal(response: Any, address: str, credentials: Credentials) -> str:
    """The message for an HTTP error answer: the gate's refusal, or the SuperLink's own error."""
    from flwr.supercore.error import FlowerError

    body = response.text if response.content else ""
    code = response.status_code
    if flower := FlowerError.from_json(body):
        detail = f" {flower.public_details}" if flower.public_details else ""
        return f"the SuperLink at {address} refused: {flower.message}{detail}"
    if code == 403 and "certificate" in body:
        if credentials.cert is None:
            return (
                f"the gate at {address} refused the control call (403): no client certificate was presented; "
                f"pass --pki FOLDER or --cert/--key with coordinator.crt/.key"
            )
        return (
            f"the gate at {address} refused {credentials.describe()} (403): "
            "it is not a coordinator certificate of this consortium"
        )
    if code == 400 and "SSL certificate" in body:
        return (
            f'the gate at {address} refused {credentials.describe()} (400 "The SSL certificate error"): '
            "it is revoked, not issued by the consortium CA, or not a client (coordinator) certificate"
        )
    if code == 401:
        return f"the SuperLink at {address} wants an account login (401), which a SarcoFed consortium does not use"
    first = body.strip().splitlines()[0][:200] if body.strip() else response.reason_phrase
    return f"{address} answered HTTP {code}: {first}"


def _transport(error: Any, address: str, credentials: Credentials) -> str:
    """The message for a failed connection: TLS trust, a refused certificate, or nobody there."""
    import httpx

    text = _one_line(error)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        if "mismatch" in text:
            return (
                f"the server at {address} has a certificate of the consortium CA that is not made out to "
                f"that name or address: use the host name or IP the PKI was made with (`sarcofed pki init --host/--ip`)"
            )
        return (
            f"the server at {address} is not vouched for by {credentials.ca_cert}: wrong CA certificate "
            "(use the consortium's ca.crt) or wrong address"
        )
    if "ALERT" in text.upper() and "CERTIFICATE" in text.upper():
        return f"the gate at {address} refused {credentials.describe()} during the TLS handshake ({text})"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return f"{address} does not speak TLS: check --address (the gate's HTTPS port)"
    if isinstance(error, httpx.TimeoutException):
        return f"{address} did not answer in time: check --address and the firewall (TCP to the gate's port)"
    return f"cannot reach {address} ({text}): check --address (the gate's HOST:PORT) and that the gate is running"


def progress(line: str) -> Mapping[str, str] | None:
    """The ``sarcofed [phase i/N]`` part of a ServerApp log line, or None."""
    match = PROGRESS_LINE.search(line)
    return match.groupdict() if match else None
