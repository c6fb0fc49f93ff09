"""`sarcofed coordinator` against a real consortium: the coordinator certificate through the gate (nginx),
the refusals a person must be able to read, site names, node status after a SuperNode dies, a probe
run's lifecycle, and `flwr` through the local forwarder.

The rule and formatting helpers are checked first without any process; the rest uses this module's
own consortium (conftest.py). The killed-node test is the module's last: it leaves that node dead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.errors import ConfigError
from deploy.coordinator import (
    Coordinator,
    Credentials,
    node_status,
    progress,
    read_registry,
    record_site,
    run_status,
)
from deploy.launch import FEDERATION, descendants, free_port, https_ok, start, stop_all
from deploy.pki import add_site, init_pki
from deploy.proxy import forwarder_config
from tests.deploy.runbook import default_sigint

SITES = ("onco", "general", "trauma")  # the sites of simulations/consortia/tiny.toml
NOW = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


# -- without processes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heard_s_ago", "expected"),
    [
        pytest.param(5.0, "online", id="heard-5s-ago"),
        pytest.param(29.0, "online", id="heard-29s-ago"),
        pytest.param(31.0, "silent", id="flower-online-but-silent-31s"),
        pytest.param(59.0, "silent", id="flower-online-but-silent-59s"),
    ],
)
def test_node_is_online_only_when_heard_within_one_heartbeat_interval(heard_s_ago, expected):
    online_until = (NOW - timedelta(seconds=heard_s_ago)).timestamp() + 2 * 30.0  # as Flower stores it
    status, last, since = node_status("online", online_until, 30.0, NOW)
    assert status == expected
    assert last == NOW - timedelta(seconds=heard_s_ago) and since == pytest.approx(heard_s_ago)


def test_other_statuses_are_flowers():
    signed_off = NOW - timedelta(seconds=100)
    assert node_status("offline", signed_off.timestamp(), 30.0, NOW, signed_off) == ("offline", signed_off, 100.0)
    assert node_status("registered", None, 30.0, NOW) == ("registered", None, None)
    assert node_status("unregistered", NOW.timestamp(), 30.0, NOW) == ("unregistered", None, None)


@pytest.mark.parametrize(
    ("status", "sub", "word"),
    [
        ("running", "", "running"),
        ("pending", "", "pending"),
        ("finished", "completed", "completed"),
        ("finished", "failed", "failed"),
        ("finished", "stopped", "stopped"),
    ],
)
def test_run_status_in_words(status, sub, word):
    assert run_status(status, sub) == word


def test_progress_lines_are_recognised():
    assert progress("INFO :      sarcofed [seg 2/3] 3 sites trained") == {"phase": "seg", "round": "2", "rounds": "3"}
    assert progress("INFO :      [ROUND 2]") is None


def test_site_registry_round_trip(tmp_path):
    assert read_registry(tmp_path) == {}
    record_site(tmp_path, 17, "onco")
    record_site(tmp_path, 18, "trauma")
    record_site(tmp_path, 17, "oncology")
    assert read_registry(tmp_path) == {17: "oncology", 18: "trauma"}
    (tmp_path / "sites.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a SarcoFed site registry"):
        read_registry(tmp_path)


def test_credentials_name_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="no CA certificate"):
        Credentials.resolve()
    with pytest.raises(ConfigError, match="CA certificate not found"):
        Credentials.resolve(tmp_path)
    pki = init_pki(tmp_path / "pki")
    assert Credentials.resolve(pki.root) == Credentials(pki.ca_cert, pki.coordinator_cert, pki.coordinator_key)
    with pytest.raises(ConfigError, match="--cert and --key go together"):
        Credentials.resolve(ca=pki.ca_cert, cert=pki.coordinator_cert)
    with pytest.raises(ConfigError, match="not a PEM CA certificate"):
        Credentials(pki.coordinator_key).ssl_context()
    with pytest.raises(ConfigError, match="cannot use .*superlink.key"):
        Credentials(pki.ca_cert, pki.coordinator_cert, pki.superlink_key).ssl_context()


def test_forwarder_listens_on_loopback_only(tmp_path):
    pki = init_pki(tmp_path / "pki")
    files = (pki.ca_cert, pki.coordinator_cert, pki.coordinator_key, tmp_path / "fw")
    with pytest.raises(ConfigError, match="loopback only"):
        forwarder_config(*files, listen="0.0.0.0:9092", gate="link.example:9443")
    text = forwarder_config(*files, listen="127.0.0.1:9092", gate="203.0.113.10:9443")
    assert "proxy_ssl_verify on;" in text and "proxy_ssl_name localhost;" in text  # nginx matches DNS names only
    assert f"proxy_ssl_certificate {pki.coordinator_cert.resolve()};" in text
    assert "proxy_ssl_name link.example;" in forwarder_config(*files, listen="127.0.0.1:9092", gate="link.example:9443")


# -- against the consortium ----------------------------------------------------------------------------


@pytest.fixture
def gate(consortium):
    """The consortium, for tests that go through its gate with the coordinator certificate."""
    return consortium


def _address(consortium) -> str:
    return f"127.0.0.1:{consortium.proxy_port}"


def _coordinator(consortium, **kwargs) -> Coordinator:
    """The library the commands call, through the gate with the coordinator certificate."""
    return Coordinator(
        _address(consortium), Credentials.resolve(consortium.pki.root), pki=consortium.pki.root, **kwargs
    )


def sarcofed(
    consortium, *args: str, timeout: float = 120, color: bool = False, pki: bool = True
) -> subprocess.CompletedProcess:
    """`sarcofed coordinator ARGS` as a coordinator types it, with the gate and (PKI) the PKI folder set in
    the environment."""
    env = {
        **consortium.env,
        "COLUMNS": "200",
        "SARCOFED_COORDINATOR_ADDRESS": _address(consortium),
        "SARCOFED_PKI": str(consortium.pki.root),
        "SARCOFED_STATE_DIR": str(consortium.work / "coordinator"),
    }
    if not pki:
        del env["SARCOFED_PKI"]
    env.pop("NO_COLOR", None)
    if color:
        env["FORCE_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "sarcofed.cli", "coordinator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=consortium.work,
    )


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    """The CLI failed with exit code 3 and said why in one line, without a traceback."""
    assert out.returncode == 3, out.stdout + out.stderr
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    print(f"\n{lines[0]}")
    return lines[0]


def test_nodes_through_the_gate_name_the_three_sites(gate):
    out = sarcofed(gate, "nodes")
    assert out.returncode == 0, out.stdout + out.stderr
    print("\n" + out.stdout)
    for site in SITES:
        row = next(line for line in out.stdout.splitlines() if f" {site} " in line)
        assert str(gate.node_ids[site]) in row and " online " in row, out.stdout
    with _coordinator(gate) as coordinator:
        nodes = coordinator.list_nodes()
    assert {n.site: (n.node_id, n.status) for n in nodes} == {s: (gate.node_ids[s], "online") for s in SITES}
    assert all(0 <= n.silent_s <= 30 and n.flower_status == "online" for n in nodes)
    access = gate.access_log.read_text()
    assert '"POST /v1/control/list-nodes HTTP/1.1" 200' in access and 'client_verify="SUCCESS"' in access


def test_ls_through_the_gate(gate):
    out = sarcofed(gate, "ls")
    assert out.returncode == 0, out.stdout + out.stderr
    with _coordinator(gate) as coordinator:
        runs = coordinator.list_runs()
    assert f"no runs at {_address(gate)}" in out.stdout if not runs else "run id" in out.stdout, out.stdout


def test_without_a_client_certificate_the_gate_refuses(gate):
    line = _one_error_line(sarcofed(gate, "ls", "--ca", str(gate.pki.ca_cert), pki=False))
    assert f"the gate at {_address(gate)} refused the control call (403): no client certificate" in line


def test_the_superlink_server_certificate_is_refused(gate):
    line = _one_error_line(
        sarcofed(gate, "nodes", "--cert", str(gate.pki.superlink_cert), "--key", str(gate.pki.superlink_key))
    )
    assert f"the gate at {_address(gate)} refused certificate {gate.pki.superlink_cert}" in line, line
    assert "CN=" in line


def test_a_wrong_ca_is_named(gate, tmp_path):
    other = init_pki(tmp_path / "other")
    line = _one_error_line(sarcofed(gate, "ls", "--ca", str(other.ca_cert)))
    assert f"the server at {_address(gate)} is not vouched for by {other.ca_cert}" in line, line


def test_an_unreachable_address_is_named(gate):
    nobody = f"127.0.0.1:{free_port()}"
    line = _one_error_line(sarcofed(gate, "nodes", "--address", nobody))
    assert f"cannot reach {nobody}" in line, line


def test_the_superlink_loopback_port_needs_no_certificate(consortium):
    with Coordinator(f"127.0.0.1:{consortium.superlink_port}", Credentials(consortium.pki.ca_cert)) as direct:
        assert {n.node_id for n in direct.list_nodes()} >= set(consortium.node_ids.values())


def test_register_names_nodes(gate, tmp_path):
    """The runbook registered each site with its name: the SuperLink itself names them (no PKI, an empty
    registry). A key admitted without a name (`flwr supernode register`) is named from the registry once
    `register` is given it; a name cannot be taken twice; a new key is admitted with its name."""
    credentials = Credentials(gate.pki.ca_cert, gate.pki.coordinator_cert, gate.pki.coordinator_key)
    state = tmp_path / "state"
    legacy = add_site(gate.pki.root, "legacy")
    out = gate.flwr("supernode", "register", str(legacy.public_key), FEDERATION, "--format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    legacy_id = int(json.loads(out.stdout)["node-id"])
    with Coordinator(_address(gate), credentials, state_dir=state) as coordinator:
        named = {n.node_id: n.site for n in coordinator.list_nodes()}
        assert named == {**{gate.node_ids[s]: s for s in SITES}, legacy_id: None}
        assert coordinator.register(legacy.public_key, "legacy") == (legacy_id, False)
        assert coordinator.register(gate.pki.site_pub("onco"), "onco") == (gate.node_ids["onco"], False)
        with pytest.raises(ConfigError, match="site name 'onco' already belongs to node"):
            coordinator.register(gate.pki.site_pub("trauma"), "onco")
        newcomer = add_site(gate.pki.root, "newcomer")
        node_id, new = coordinator.register(newcomer.public_key, "newcomer")
        nodes = {n.node_id: n for n in coordinator.list_nodes()}
    assert new and read_registry(state) == {legacy_id: "legacy", gate.node_ids["onco"]: "onco", node_id: "newcomer"}
    assert nodes[legacy_id].site == "legacy" and nodes[gate.node_ids["general"]].site == "general"
    assert (nodes[node_id].site, nodes[node_id].status) == ("newcomer", "registered")
    # the CLI names the newcomer from the SuperLink's own record, wherever it runs
    out = sarcofed(
        gate, "register", str(newcomer.public_key), "--site", "newcomer", "--state-dir", str(tmp_path / "other")
    )
    assert out.returncode == 0 and f"node {node_id} was already registered" in out.stdout, out.stdout + out.stderr


PROBE_PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "probe"
version = "1.0.0"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "sarcofed"

[tool.flwr.app.components]
serverapp = "probe_app:server"
clientapp = "probe_app:client"

[tool.flwr.app.config]
rounds = 1
pause = 0.0
"""

PROBE_APP = """
import time
from logging import INFO

from flwr.clientapp import ClientApp
from flwr.common import log
from flwr.serverapp import ServerApp

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid, context):
    rounds = int(context.run_config["rounds"])
    for r in range(1, rounds + 1):
        log(INFO, "sarcofed [probe %d/%d] nothing sent", r, rounds)
        time.sleep(float(context.run_config["pause"]))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    """A Flower app whose ServerApp only logs `sarcofed [probe i/N]` lines: no code reaches a hospital."""
    app = tmp_path_factory.mktemp("probe")
    (app / "pyproject.toml").write_text(PROBE_PYPROJECT)
    (app / "probe_app.py").write_text(PROBE_APP)
    return app


def _wait_status(coordinator: Coordinator, run_id: int, wanted: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = "missing"
    while time.monotonic() < deadline:
        status = coordinator.list_runs(run_id)[0].status
        if status in wanted:
            return status
        time.sleep(0.5)
    return status


def test_a_run_submitted_followed_and_listed(gate, probe):
    out = sarcofed(gate, "run", str(probe), "-c", "rounds=3 pause=0.1", "--follow", color=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = int(out.stdout.split("started run ", 1)[1].split()[0])
    assert f"run {run_id} completed" in out.stderr
    for r in (1, 2, 3):
        line = next(line for line in out.stdout.splitlines() if f"sarcofed [probe {r}/3]" in line)
        assert "\x1b[1;32m" in line, repr(line)  # progress lines stand out (bold green)
    with _coordinator(gate) as coordinator:
        (run,) = coordinator.list_runs(run_id)
        shown = "".join(coordinator.stream_log(run_id))
    assert (run.status, run.run_config) == ("completed", {"rounds": 3, "pause": 0.1})
    assert run.started_at and run.duration_s >= 0.3
    assert "sarcofed [probe 3/3] nothing sent" in shown


def test_a_running_run_is_stopped(gate, probe):
    with _coordinator(gate) as coordinator:
        run_id = coordinator.submit_run(probe, ["rounds=1 pause=120"])
        assert _wait_status(coordinator, run_id, {"running"}, 90) == "running"
        out = sarcofed(gate, "stop", str(run_id))
        assert out.returncode == 0 and f"run {run_id} stopping" in out.stdout, out.stdout + out.stderr
        assert _wait_status(coordinator, run_id, {"stopped"}, 30) == "stopped"
        followed = sarcofed(gate, "log", str(run_id), "--follow", timeout=90)
        assert followed.returncode == 1 and f"run {run_id} stopped" in followed.stderr, (
            followed.stdout + followed.stderr
        )
        with pytest.raises(ConfigError, match=f"the SuperLink at {_address(gate)} refused: .*"):
            coordinator.stop_run(run_id)


def test_ctrl_c_leaves_a_followed_log_at_once_while_the_run_goes_on(gate, probe, tmp_path):
    """The runbook follows a run and presses Ctrl-C: the follower leaves quietly (exit 0) within seconds,
    while the stream waits for the next line, and the run is not touched."""
    with _coordinator(gate) as coordinator:
        run_id = coordinator.submit_run(probe, ["rounds=1 pause=120"])
        assert _wait_status(coordinator, run_id, {"running"}, 90) == "running"
        env = {
            **gate.env,
            "SARCOFED_COORDINATOR_ADDRESS": _address(gate),
            "SARCOFED_PKI": str(gate.pki.root),
            "SARCOFED_STATE_DIR": str(gate.work / "coordinator"),
        }
        log = tmp_path / "follow.log"
        with log.open("w") as handle:
            follower = subprocess.Popen(
                [sys.executable, "-m", "sarcofed.cli", "coordinator", "log", str(run_id), "--follow"],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=gate.work,
                preexec_fn=default_sigint,
            )
        try:
            deadline = time.monotonic() + 60
            while "sarcofed [probe 1/1]" not in log.read_text():  # the ServerApp now sleeps: the stream is idle
                assert follower.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            time.sleep(1.0)
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=15) == 0, log.read_text()
        finally:
            if follower.poll() is None:
                follower.kill()
        (run,) = coordinator.list_runs(run_id)
        assert run.status == "running"
        coordinator.stop_run(run_id)


def test_flwr_through_the_forwarder(gate, tmp_path):
    """`flwr` without a client certificate, via the loopback forwarder that presents coordinator.crt."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "sarcofed.cli",
        "coordinator",
        "forwarder",
        "--address",
        _address(gate),
        "--pki",
        str(gate.pki.root),
        "--listen",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(tmp_path),
    ]
    forwarder = start("forwarder", command, gate.env, tmp_path / "logs")  # the CLI becomes nginx (exec)
    try:
        deadline = time.monotonic() + 20
        while https_ok(f"http://127.0.0.1:{port}/", gate.pki.ca_cert) != 404:
            assert time.monotonic() < deadline and forwarder.alive(), forwarder.log_text()
            time.sleep(0.2)
        home = tmp_path / "flwr_home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "gate"\n\n[superlink.gate]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
        )
        env = {**gate.env, "FLWR_HOME": str(home)}
        flwr = str(Path(sys.executable).parent / "flwr")
        runs = subprocess.run(
            [flwr, "ls", "gate", "--format", "json"], env=env, capture_output=True, text=True, timeout=120
        )
        assert json.loads(runs.stdout)["success"] is True, runs.stdout + runs.stderr
    finally:
        stop_all([forwarder])
    assert '"POST /v1/control/list-runs HTTP/1.1" 200' in (tmp_path / "forwarder" / "access.log").read_text()
    gate_log = gate.access_log.read_text().splitlines()
    assert any("/v1/control/list-runs" in line and 'client_verify="SUCCESS"' in line for line in gate_log)


def test_the_live_view_shows_the_hospitals_from_the_gate(gate, tmp_path):
    """`sarcofed coordinator view` serves the run-dir's page and asks the SuperLink (through the gate) for
    node health at each refresh: the three hospitals, by name, online."""
    import urllib.request

    port = free_port()
    (tmp_path / "runs").mkdir()
    command = [
        sys.executable,
        "-m",
        "sarcofed.cli",
        "coordinator",
        "view",
        str(tmp_path / "runs"),
        "--port",
        str(port),
        "--address",
        _address(gate),
        "--pki",
        str(gate.pki.root),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    view = start("live-view", command, gate.env, tmp_path / "logs")
    try:
        deadline, state = time.monotonic() + 60, None
        while state is None:
            assert time.monotonic() < deadline and view.alive(), view.log_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10) as reply:
                    state = json.loads(reply.read())
            except OSError:
                time.sleep(0.3)
    finally:
        stop_all([view])
    print("\n" + json.dumps(state["nodes"], indent=1))
    assert state["nodes"]["error"] == ""
    nodes = {n["site"]: n for n in state["nodes"]["rows"]}
    assert {site: nodes[site]["status"] for site in SITES} == {site: "online" for site in SITES}, state["nodes"]


@pytest.mark.slow
def test_a_killed_supernode_is_not_shown_online(gate):
    """SIGKILL one SuperNode (no goodbye to the SuperLink): `nodes` stops calling it online within one
    heartbeat interval of its last heartbeat, while Flower (same answer) still calls it online for
    another 30 s. Leaves that node dead: keep this test last in the module."""
    victim = "trauma"
    process = gate.supernodes[victim]
    for pid in descendants(process.popen.pid) | {process.popen.pid}:
        os.kill(pid, signal.SIGKILL)
    process.popen.wait(timeout=10)
    killed = time.monotonic()
    with _coordinator(gate) as coordinator:
        node = None
        while time.monotonic() < killed + 45:
            node = next(n for n in coordinator.list_nodes() if n.site == victim)
            if node.status != "online":
                break
            time.sleep(1)
        others = {n.site: n.status for n in coordinator.list_nodes() if n.site in SITES and n.site != victim}
    print(
        f"\n{victim} shown {node.status} {time.monotonic() - killed:.0f} s after the kill; Flower: {node.flower_status}"
    )
    assert node.status == "silent" and node.flower_status == "online", node
    assert node.silent_s > 30
    assert others == {"onco": "online", "general": "online"}
    row = next(line for line in sarcofed(gate, "nodes").stdout.splitlines() if f" {victim} " in line)
    assert " online " not in row and (" silent " in row or " offline " in row), row  # offline once Flower times it out
