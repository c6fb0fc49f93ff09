"""Command lines, config files and the nginx config: the hardened flags are there and parse."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from datetime import UTC
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args
from typer.testing import CliRunner

from common.errors import ConfigError
from deploy.commands.launch import deploy_app
from deploy.launch import flower_env, superlink_command, supernode_command, write_coordinator_config
from deploy.pki import PkiPaths, init_pki
from deploy.proxy import nginx_command, write_nginx_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return init_pki(tmp_path_factory.mktemp("pki") / "pki")


def test_superlink_command_has_tls_auth_database_and_no_installs(pki, tmp_path):
    command = superlink_command(pki, tmp_path / "state.db", port=1234)
    joined = " ".join(command)
    for flag in (
        "--ssl-ca-certfile",
        "--ssl-certfile",
        "--ssl-keyfile",
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
    ):
        assert flag in command
    assert f"--database {tmp_path / 'state.db'}" in joined and "--host 127.0.0.1 --port 1234" in joined
    assert "--insecure" not in command
    with pytest.raises(ConfigError, match="pki init"):
        superlink_command(PkiPaths(tmp_path / "none"), tmp_path / "s.db")


def test_supernode_command_node_config_parses_as_flower_does(pki, tmp_path):
    command = supernode_command(
        "link:9443",
        pki.ca_cert,
        pki.root / "sites" / "x",
        tmp_path / "site" / "manifest.csv",
        site_name="hospital_a",
        runtime_port=9111,
    )
    node_config = command[command.index("--node-config") + 1]
    assert parse_config_args([node_config]) == {
        "data-path": str((tmp_path / "site" / "manifest.csv").resolve()),
        "site-name": "hospital_a",
    }
    assert command[command.index("--root-certificates") + 1] == str(pki.ca_cert)
    assert "--port" in command and command[command.index("--port") + 1] == "9111"
    with pytest.raises(ConfigError, match="spaces"):
        supernode_command("l:1", pki.ca_cert, None, tmp_path / "a b" / "manifest.csv")


def test_environment_turns_telemetry_and_installs_off(tmp_path):
    env = flower_env(tmp_path / "home", base={"PATH": "/usr/bin"})
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert env["FLWR_HOME"] == str((tmp_path / "home").resolve())


def test_coordinator_config_has_absolute_ca(pki, tmp_path, monkeypatch):
    monkeypatch.chdir(pki.root.parent)
    config = write_coordinator_config(
        tmp_path / "home", pki.ca_cert.relative_to(pki.root.parent), {"sarcofed": "127.0.0.1:9091"}
    )
    data = tomllib.loads(config.read_text())
    assert data["superlink"]["default"] == "sarcofed"
    assert data["superlink"]["sarcofed"] == {
        "address": "127.0.0.1:9091",
        "root-certificates": str(pki.ca_cert.resolve()),
    }
    with pytest.raises(ConfigError, match="CA certificate"):
        write_coordinator_config(tmp_path / "home", tmp_path / "missing.crt", {"x": "h:1"})


@pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="nginx not installed"
)
def test_nginx_config_is_valid_and_guards_control(pki, tmp_path):
    config = write_nginx_config(pki, tmp_path / "proxy", listen="127.0.0.1:9443", upstream="127.0.0.1:9091")
    text = config.read_text()
    assert "ssl_verify_client optional" in text and "$ssl_client_verify != SUCCESS" in text
    assert "location /v1/runtime/" in text and "proxy_buffering off" in text
    assert f"ssl_crl {pki.crl.resolve()};" in text
    for field in ("$ssl_client_verify", "$ssl_client_s_dn", "$ssl_client_serial"):
        assert field in text.split("log_format sarcofed_audit", 1)[1].split(";", 1)[0]
    assert "access.log sarcofed_audit;" in text
    check = subprocess.run([*nginx_command(config), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert nginx_command(config, reload=True)[-2:] == ["-s", "reload"]


def test_proxy_refuses_to_start_without_a_crl(tmp_path):
    pki = init_pki(tmp_path / "pki")
    pki.crl.unlink()
    with pytest.raises(ConfigError, match="sarcofed pki crl"):
        write_nginx_config(pki, tmp_path / "proxy", listen="127.0.0.1:9443", upstream="127.0.0.1:9091")


def test_deploy_commands_warn_of_certificates_about_to_expire(tmp_path):
    pki = init_pki(tmp_path / "pki", client_days=10)
    runner = CliRunner()
    result = runner.invoke(deploy_app, ["superlink", str(pki.root), "--database", str(tmp_path / "s.db"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "coordinator.crt" in result.stderr and "expires in 10 days" in result.stderr
    assert "flower-superlink" in result.stdout
    result = runner.invoke(deploy_app, ["proxy", str(pki.root), "--state-dir", str(tmp_path / "proxy"), "--container"])
    assert result.exit_code == 0 and "expires in 10 days" in result.stderr
    fresh = init_pki(tmp_path / "fresh")
    result = runner.invoke(
        deploy_app, ["superlink", str(fresh.root), "--database", str(tmp_path / "s.db"), "--dry-run"]
    )
    assert result.exit_code == 0 and result.stderr == ""


def test_the_supernode_wrapper_takes_its_own_option_out_of_flowers_arguments():
    from deploy.supernode_main import split_max_clientapp_seconds

    assert split_max_clientapp_seconds(["--insecure", "--max-clientapp-seconds", "90", "--port", "1"]) == (
        90.0,
        ["--insecure", "--port", "1"],
    )
    assert split_max_clientapp_seconds(["--max-clientapp-seconds=7.5"]) == (7.5, [])
    assert split_max_clientapp_seconds([]) == (3600.0, [])
    for bad in (
        ["--max-clientapp-seconds"],
        ["--max-clientapp-seconds", "0"],
        ["--max-clientapp-seconds=soon"],
        ["--max-clientapp-seconds", "inf"],
    ):
        with pytest.raises(ValueError, match="max-clientapp-seconds"):
            split_max_clientapp_seconds(bad)


def test_the_clientapp_watch_uses_one_nodestate_helper_of_the_installed_flower():
    """The watch answers for an ended ClientApp through NodeState's own error-reply store."""
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    assert callable(getattr(InMemoryNodeState, "_store_error_replies", None))


@pytest.fixture
def node_state(monkeypatch):
    """A real Flower NodeState holding one pulled message of run 42 and its running ClientApp task."""
    import flwr.supernode.start_client_internal as loop
    from flwr.app import Message, RecordDict
    from flwr.supercore.constant import TaskType
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supernode.nodestate import NodeStateFactory

    for name, value in (("_run_id", 42), ("_node_id", 0), ("_task_id", 1)):  # Message() stamps its maker's task
        monkeypatch.setattr(TaskIdentity, name, value)
    state = NodeStateFactory(ObjectStoreFactory()).state()
    state.set_node_id(7)

    def pulled_task() -> tuple[int, str]:
        message = Message(RecordDict(), dst_node_id=7, message_type="train")
        loop._insert_message(message, state, state.object_store)  # as the SuperNode stores what it receives
        task_id = state.create_task(task_type=TaskType.CLIENT_APP, run_id=42, fab_hash="x")
        state.claim_task(task_id)  # the SuperExec
        state.activate_task(task_id)  # the ClientApp's PullTaskInput, then its PullMessages:
        (pulled,) = state.get_messages_legacy(run_ids=[42], is_reply=False)
        state.record_message_processing_start(pulled.metadata.message_id)
        return task_id, message.metadata.message_id

    return state, pulled_task


def _error_replies(state) -> dict[str, str]:
    """Message id -> reason of every error reply waiting to be sent (read without taking them)."""
    replies = [entry.message for entry in state.msg_store.values() if entry.message.metadata.reply_to_message_id]
    return {m.metadata.reply_to_message_id: m.error.reason for m in replies if m.has_error()}


def test_the_watch_ends_a_clientapp_past_the_sites_bound_and_answers_its_message(node_state):
    from datetime import datetime, timedelta

    from deploy.clientapp_watch import ClientAppWatch

    state, pulled_task = node_state
    task_id, message_id = pulled_task()
    watch = ClientAppWatch(60)
    watch.attach(state)
    now = datetime.now(UTC)
    assert watch.check(now + timedelta(seconds=30)) == []
    (ended,) = watch.check(now + timedelta(seconds=61))
    assert f"task {task_id}" in ended and "limit of 60 s" in ended
    assert state.get_tasks(task_ids=[task_id])[0].status.sub_status == "failed"
    assert "limit of 60 s" in _error_replies(state)[message_id]  # the node goes on with its next message
    assert watch.check(now + timedelta(seconds=90)) == []  # ended once


def test_the_watch_ends_a_clientapp_whose_run_is_over(node_state):
    from deploy.clientapp_watch import ClientAppWatch

    state, pulled_task = node_state
    _, message_id = pulled_task()
    watch = ClientAppWatch(3600)
    watch.attach(state)
    watch.mark_over(42, "run 42 is finished, stopped or unknown at the SuperLink")
    assert len(watch.check()) == 1
    assert _error_replies(state)[message_id] == (
        "ClientApp ended by the site: run 42 is finished, stopped or unknown at the SuperLink"
    )


def test_the_watch_answers_for_a_clientapp_stopped_by_a_signal(node_state):
    """Flower's exit handler closes the task of a ClientApp stopped by SIGTERM without a reply; Flower's
    SuperNode would wait for one for ever. A ClientApp that replied gets nothing more."""
    from flwr.app import Message, RecordDict

    from deploy.clientapp_watch import ClientAppWatch

    state, pulled_task = node_state
    watch = ClientAppWatch(3600)
    watch.attach(state)
    answered_task, answered_id = pulled_task()
    (original,) = [m for m in state.msg_store.values() if m.message.metadata.message_id == answered_id]
    reply = Message(RecordDict(), reply_to=original.message)
    reply.metadata.__dict__["_message_id"] = reply.object_id
    assert state.store_message(reply)  # its own reply, as the ClientApp's PushMessages stores it
    watch.check()
    state.finish_task(answered_task, "completed", "")
    watch.check()
    assert _error_replies(state) == {}
    for message in state.get_messages_legacy(is_reply=True):  # sent by the main loop, as after a normal reply
        state.delete_messages(message_ids=[message.metadata.message_id, message.metadata.reply_to_message_id])
    watch.check()
    assert _error_replies(state) == {}

    killed_task, killed_id = pulled_task()
    watch.check()
    state.finish_task(killed_task, "failed", "ClientApp task failed due to unknown reason")  # SIGTERM's exit handler
    assert _error_replies(state) == {}
    watch.check()
    assert _error_replies(state) == {killed_id: "ClientApp ended without a reply"}


WATCH_PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "watchprobe"
version = "1.0.0"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "sarcofed"

[tool.flwr.app.components]
serverapp = "watch_probe:server"
clientapp = "watch_probe:client"

[tool.flwr.app.config]
out = ""
"""

WATCH_PROBE = '''
"""Every ClientApp sleeps as long as its message says. The ServerApp asks both nodes for a long sleep; a
node whose ClientApp is ended replies with an error, and is then asked for a short one (is it free?)."""
import time
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

client = ClientApp()
server = ServerApp()


@client.train()
def train(msg, context):
    Path(msg.content["config"]["started"]).write_text("sleeping")
    time.sleep(float(msg.content["config"]["sleep"]))
    return Message(RecordDict({"config": ConfigRecord({"slept": 1})}), reply_to=msg)


@server.main()
def main(grid, context):
    out = Path(str(context.run_config["out"]))

    def ask(node, seconds):
        config = ConfigRecord({"sleep": seconds, "started": str(out / f"started-{node}-{seconds:g}")})
        return list(grid.push_messages([Message(RecordDict({"config": config}), \
dst_node_id=node, message_type="train")]))

    nodes = []
    while len(nodes) < 2:
        nodes = sorted(grid.get_node_ids())
        time.sleep(0.2)
    pending = {mid: (node, 600.0) for node in nodes for mid in ask(node, 600.0)}
    while pending:
        for reply in grid.pull_messages(list(pending)):
            node, seconds = pending.pop(reply.metadata.reply_to_message_id)
            result = reply.error.reason if reply.has_error() else "ok"
            (out / f"reply-{node}-{seconds:g}").write_text(result)
            if reply.has_error():
                pending.update({mid: (node, 0.0) for mid in ask(node, 0.0)})
        time.sleep(0.2)
'''


@pytest.mark.slow
def test_stuck_clientapps_end_at_the_bound_and_when_their_run_is_over(tmp_path):
    """Two SuperNodes, each ClientApp asleep: node A's ends at its 15 s bound, and A takes its next message at
    once; node B's (bound 600 s) ends once the SuperLink says its run is over (here `flwr stop`; after a
    SuperLink restart the same GetRun answer comes once the SuperLink has marked the run finished:failed).
    (15 s: a ClientApp's start alone, Flower imports and app install, took 6-8 s on a loaded 2-core machine.)"""
    import json
    import re
    import sys
    import time

    from deploy.launch import Managed, descendants, free_port, insecure_superlink_command, start, stop_all, wait_for_log
    from simulations.flower_home import write_connection

    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(WATCH_PYPROJECT)
    (app / "watch_probe.py").write_text(WATCH_PROBE)
    out = tmp_path / "out"
    out.mkdir()
    env = flower_env(tmp_path / "flwr_home")
    flwr = str(Path(sys.executable).parent / "flwr")
    port = free_port()
    superlink = start("superlink", insecure_superlink_command(port), env, tmp_path / "logs")
    processes: list[Managed] = [superlink]
    nodes: dict[str, Managed] = {}

    def clientapps(node: Managed) -> set[int]:
        live = set()
        for pid in descendants(node.popen.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"flwr-clientapp" in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":  # a zombie is gone
                live.add(pid)
        return live

    phases: dict[str, float] = {}
    started = time.monotonic()

    def wait(what: str, condition, timeout: float) -> float:
        t0 = time.monotonic()
        while not condition():
            assert time.monotonic() - t0 < timeout, f"{what} not within {timeout:.0f} s\n" + "\n".join(
                f"--- {p.name}\n{p.log_text()[-2500:]}" for p in processes
            )
            time.sleep(0.3)
        phases[what] = time.monotonic() - started
        return time.monotonic() - t0

    try:
        assert wait_for_log(superlink, "Uvicorn running", 60), superlink.log_text()[-2000:]
        for name, bound in (("a", 15), ("b", 600)):
            command = supernode_command(
                f"127.0.0.1:{port}",
                None,
                None,
                tmp_path / "manifest.csv",
                runtime_port=free_port(),
                insecure=True,
                max_clientapp_seconds=bound,
            )
            nodes[name] = start(f"supernode-{name}", command, env, tmp_path / "logs")
            processes.append(nodes[name])
        ids = {}
        for name, node in nodes.items():
            assert wait_for_log(node, "SuperNode ID:", 60), node.log_text()[-2000:]
            ids[name] = int(re.search(r"SuperNode ID: (\d+)", node.log_text()).group(1))
        write_connection(tmp_path / "flwr_home", "watch", f"127.0.0.1:{port}")
        submitted = subprocess.run(
            [flwr, "run", str(app), "watch", "--format", "json", "--run-config", f"out='{out}'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        run_id = json.loads(submitted.stdout)["run-id"]

        wait("both ClientApps asleep", lambda: all((out / f"started-{ids[n]}-600").exists() for n in nodes), 60)
        wait("A's ClientApp ended by its bound", lambda: (out / f"reply-{ids['a']}-600").exists(), 40)
        assert "limit of 15 s" in (out / f"reply-{ids['a']}-600").read_text()
        wait("A free for its next message", lambda: (out / f"reply-{ids['a']}-0").exists(), 40)
        assert (out / f"reply-{ids['a']}-0").read_text() == "ok"
        assert clientapps(nodes["b"]), "B's ClientApp should still be asleep"

        stopped = subprocess.run(
            [flwr, "stop", str(run_id), "watch"], env=env, capture_output=True, text=True, timeout=60
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        waited = wait("B's ClientApp ended once its run was stopped", lambda: not clientapps(nodes["b"]), 30)
        print(
            f"\nB's ClientApp of run {run_id} ended {waited:.1f} s after `flwr stop`; at "
            + ", ".join(f"{what} {t:.0f} s" for what, t in phases.items())
        )
        assert f"run {run_id} is finished, stopped or unknown at the SuperLink" in nodes["b"].log_text()
        assert all(node.alive() for node in nodes.values())
    finally:
        stop_all(processes)


def test_free_ports_lie_outside_the_ephemeral_and_ray_ranges():
    """A port from the kernel's ephemeral range can be taken by an outgoing connection's source port
    before the process it was picked for binds it (seen in CI: "address already in use")."""
    import socket

    from deploy.launch import LOCAL_PORTS, free_port

    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {free_port() for _ in range(50)}
    assert all(p in LOCAL_PORTS and not low <= p <= high and p >= 20000 for p in ports) and len(ports) > 40
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))  # free when handed out
