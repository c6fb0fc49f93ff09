"""deploy/README.md's trial consortium on loopback (conftest.py executes the guide): who gets in and who
does not, then the guide's own run, stopped mid-phase and resumed from its run folder, against a
simulation of the same sites, and a SuperLink restart mid-run.

The door tests need no app. Each SuperNode started here is a separate process against the module's
one SuperLink.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from deploy.launch import FEDERATION, Managed, https_ok

SITES = ("onco", "general", "trauma")  # the sites of simulations/consortia/tiny.toml, one SuperNode each
PROXY_CONNECTION = "proxy"  # the coordinator connection through nginx, without a client certificate


def _wait_exit(process: Managed, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.alive():
        time.sleep(0.2)
    return process.popen.poll()


def test_three_registered_sites_are_online(consortium):
    status = consortium.node_status()
    assert {status[consortium.node_ids[s]] for s in SITES} == {"online"}
    for name in SITES:
        assert consortium.supernodes[name].alive(), consortium.supernodes[name].log_text()[-2000:]


def test_unregistered_key_is_refused(consortium):
    intruder = consortium.start_supernode("intruder", consortium.pki.site_key("intruder"))
    rc = _wait_exit(intruder, 30)
    assert rc not in (None, 0), intruder.log_text()[-2000:]
    assert "Failed to activate SuperNode" in intruder.log_text()
    assert "online" not in {v for k, v in consortium.node_status().items() if k not in consortium.node_ids.values()}


def test_supernode_without_the_ca_cannot_connect(consortium):
    stranger = consortium.start_supernode("no_ca", consortium.pki.site_key(SITES[0]), use_ca=False)
    rc = _wait_exit(stranger, 30)
    assert rc not in (None, 0), stranger.log_text()[-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" in stranger.log_text()


def test_plain_text_cannot_connect(consortium):
    plain = consortium.start_supernode("plain", None, use_ca=False, insecure=True, max_retries=1)
    rc = _wait_exit(plain, 45)
    assert rc not in (None, 0), plain.log_text()[-2000:]
    assert "Giving up reconnection" in plain.log_text() or "Exit Code: 305" in plain.log_text()
    # And a raw plain-HTTP request to the SuperLink port gets no HTTP answer at all.
    with socket.create_connection(("127.0.0.1", consortium.superlink_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        try:
            reply = sock.recv(100)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert not reply.startswith(b"HTTP/1.1 200")


def test_registered_sites_still_online_after_the_intruders(consortium):
    status = consortium.node_status()
    assert [status[consortium.node_ids[s]] for s in SITES] == ["online"] * 3


@pytest.fixture
def proxy(consortium):
    """The consortium, for tests of its gate (the proxy in front of the SuperLink)."""
    return consortium


def test_proxy_routes(proxy):
    base = f"https://127.0.0.1:{proxy.proxy_port}"
    ca, client = proxy.pki.ca_cert, (proxy.pki.coordinator_cert, proxy.pki.coordinator_key)
    assert https_ok(f"{base}/health", ca) == 200
    assert https_ok(f"{base}/v1/control/list-runs", ca) == 403
    # With the coordinator certificate the request reaches the SuperLink (which wants POST: 405).
    assert https_ok(f"{base}/v1/control/list-runs", ca, client=client) == 405
    # The server certificate is not a client certificate (EKU serverAuth only).
    assert https_ok(f"{base}/v1/control/list-runs", ca, client=(proxy.pki.superlink_cert, proxy.pki.superlink_key)) in (
        None,
        400,
        403,
    )
    assert https_ok(f"{base}/v1/runtime/get-nodes", ca, client=client) == 403
    assert https_ok(f"{base}/docs", ca, client=client) == 404


def test_control_routes_refuse_a_caller_without_client_certificate(proxy):
    before = proxy.node_status()
    out = proxy.flwr("supernode", "register", str(proxy.pki.site_pub("intruder")), PROXY_CONNECTION)
    assert out.returncode != 0
    assert proxy.node_status() == before
    out = proxy.flwr("ls", PROXY_CONNECTION, "--format", "json")
    assert json.loads(out.stdout)["success"] is False and "403" in out.stdout


def _runs(consortium) -> list:
    out = consortium.flwr("ls", FEDERATION, "--format", "json")
    reply = json.loads(out.stdout)
    assert reply["success"], out.stdout
    return reply["runs"]


def test_a_caller_without_client_certificate_cannot_submit_a_run(proxy, tmp_path):
    """`flwr run` through the proxy is refused before any code reaches a hospital."""
    app = tmp_path / "probe"
    app.mkdir()
    (app / "pyproject.toml").write_text(PROBE_PYPROJECT)
    (app / "probe_app.py").write_text(PROBE_APP)
    before = _runs(proxy)
    out = proxy.flwr("run", str(app), PROXY_CONNECTION)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "403" in out.stdout + out.stderr
    assert _runs(proxy) == before


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
"""

PROBE_APP = """
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

server = ServerApp()
client = ClientApp()
"""


def test_the_three_sites_reach_the_superlink_through_the_proxy(proxy):
    assert proxy.fleet_address == f"127.0.0.1:{proxy.proxy_port}"
    access = proxy.access_log.read_text()
    assert "POST /v1/fleet/activate-node" in access and "POST /v1/fleet/pull-messages" in access


# -- the runbook's run: stopped mid-phase, resumed from its run folder (after the negative tests) -----

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished_run(consortium) -> dict:
    """deploy/README.md's trial run, as its last two blocks say: submitted, followed until its first
    segmentation round, stopped; then resumed from its run folder and followed to the end."""
    book = consortium.runbook
    started = time.monotonic()
    book.run("run", timeout=900)
    stopped_id = book.run_ids[-1]
    folder = (consortium.work / "runs" / "latest").resolve()
    kept = sorted(p.name for p in (folder / "checkpoints").glob("round-*.pt"))
    stopped_after = time.monotonic() - started
    resume, listing = book.run("resume", timeout=1500)
    wall = time.monotonic() - started
    print(
        f"\ntrial run (tiny, SecAgg+, 3 SuperNodes behind the gate): stopped after {stopped_after:.0f} s "
        f"keeping {kept}; resumed and completed, {wall:.0f} s wall in all"
    )
    return {
        "folder": folder,
        "kept": kept,
        "stopped": stopped_id,
        "resumed": book.run_ids[-1],
        "wall_s": wall,
        "output": resume.stdout + resume.stderr,
        "listing": listing.stdout,
    }


@pytest.mark.slow
def test_federated_run_over_tls_ends_with_metrics_for_all_three_sites(consortium, finished_run):
    import pandas as pd

    runs = {int(r["run-id"]): r["status"] for r in _runs(consortium)}
    assert runs[finished_run["resumed"]] == "finished:completed", runs
    folder = finished_run["folder"]
    metrics = pd.read_csv(folder / "metrics.csv")
    assert list(metrics["phase"].unique()) == ["l3", "seg", "cls"]
    for phase in ("l3", "seg", "cls"):
        assert set(metrics.loc[metrics["phase"] == phase, "site"]) == {*SITES, "pooled"}
    cls = metrics[metrics["phase"] == "cls"].set_index("site")
    assert (cls.loc[list(SITES), "n"] >= 5).all()
    assert cls.loc[list(SITES), "dice_mean"].between(0, 1).all()
    for site in SITES:  # the classifier's numbers, or their names among the suppressed (< 5 patients per class)
        row = cls.loc[site]
        assert row["cls_accuracy"] == row["cls_accuracy"] or "cls_accuracy" in str(row["suppressed_metrics"]), site
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["secure_aggregation"] is True and summary["failures"] == [] and summary["outcome"] == "completed"
    assert (folder / "report.html").is_file()
    assert "sarcofed [seg 2/2] 3 sites trained, 3 evaluated" in finished_run["output"]  # progress in the stream
    assert f"run {finished_run['resumed']} completed" in finished_run["output"]  # --follow's last word, exit 0


@pytest.mark.slow
def test_a_run_stopped_mid_phase_goes_on_at_the_right_round_in_its_folder(consortium, finished_run):
    """The stop came during segmentation round 2: the L3 locator round and segmentation round 1 were kept,
    and the resumed run (phase and round read from the folder) ran round 2 and the classifier round, each
    once, in the same folder."""
    import pandas as pd

    folder, stopped, resumed = finished_run["folder"], finished_run["stopped"], finished_run["resumed"]
    assert finished_run["kept"] == ["round-001-l3-01.pt", "round-002-seg-01.pt"]
    assert (consortium.work / "runs" / "latest").resolve() == folder and len(
        list(folder.parent.iterdir())
    ) == 2  # + latest
    after = sorted(p.name for p in (folder / "checkpoints").glob("round-*.pt"))
    assert after == ["round-001-l3-01.pt", "round-002-seg-01.pt", "round-003-seg-02.pt", "round-004-cls-01.pt"]
    pooled = pd.read_csv(folder / "metrics.csv").query("site == 'pooled'")
    assert pooled["global_round"].tolist() == [1, 2, 3, 4] and (pooled["status"] == "ok").all()  # every round once
    assert "sarcofed [seg 1/2]" not in finished_run["output"]  # the resumed run began at round 2
    run_ids = [r["run_id"] for r in json.loads((folder / "run.json").read_text())["flower_runs"]]
    assert [int(r) for r in run_ids] == [stopped, resumed]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["resumed_from"]["same_folder"] is True and [int(r) for r in summary["flower_run_ids"]] == [
        stopped,
        resumed,
    ]
    runs = {int(r["run-id"]): r["status"] for r in _runs(consortium)}
    assert (runs[stopped], runs[resumed]) == ("finished:stopped", "finished:completed"), runs
    lines = finished_run["listing"].splitlines()  # `sarcofed coordinator ls`, the runbook's last command
    assert any(f" {stopped} " in line and " stopped " in line for line in lines), finished_run["listing"]
    assert any(f" {resumed} " in line and " completed " in line for line in lines), finished_run["listing"]
    assert set(consortium.runbook.executed) == set(consortium.runbook.blocks)  # no block of the guide left out


@pytest.mark.slow
def test_the_deployed_run_learns_what_the_simulated_run_learns(consortium, finished_run, tmp_path):
    """Every round's global update of the trial run (stopped and resumed) against a local simulation of
    the same sites and run config.

    Deployed, Flower starts a fresh ClientApp process per message; the simulation keeps one for the run.
    Two simulated runs agree exactly (SecAgg+ rounding is seeded by the update); the deployed one must
    agree to a cosine >= 0.99 and a norm ratio of 1 +/- 0.05 in every round, the rounds after the resume
    included (a classifier trained on a random encoder, as before the messages carried it, gave cosines
    near 0).
    """
    from simulations.flower_home import LocalSuperLink
    from simulations.parity import compare_runs

    deployed = json.loads((finished_run["folder"] / "run.json").read_text())["run_config"]
    config = {k: v for k, v in deployed.items() if not k.startswith("resume-")}
    config.update(
        {
            "site-manifests": ",".join(str(consortium.sites[s]) for s in SITES),
            "sites-cache": str(tmp_path / "cache"),
            "run-dir": str(tmp_path / "runs"),
        }
    )
    with LocalSuperLink(tmp_path / "flwr_home", num_supernodes=len(SITES)) as link:
        out = link.run(config, timeout_s=1500, log_path=tmp_path / "flwr-run.log")
    assert out.returncode == 0, out.stdout[-4000:]
    rounds = compare_runs(
        (tmp_path / "runs" / "latest").resolve(), finished_run["folder"], config["preset"], seed=int(config["seed"])
    )
    print(
        "\n"
        + "\n".join(
            f"round {r.global_round} {r.phase}: cosine {r.cosine:.6f}, norm ratio {r.norm_ratio:.4f}" for r in rounds
        )
    )
    assert [r.phase for r in rounds] == ["l3", "seg", "seg", "cls"]
    for r in rounds:
        assert r.norm_a > 0 and r.cosine >= 0.99 and abs(r.norm_ratio - 1.0) <= 0.05, r


@pytest.mark.slow
def test_superlink_restart_mid_run(consortium, tmp_path):
    """Restart the SuperLink (the runbook's own command: same database, same port) while a run is in flight.

    Survives: the registered nodes (same IDs, back online by themselves), the run history, and every
    round finished before the restart (its checkpoint, from which ``resume-from`` goes on, as the trial
    run's test shows). Does not: the round in flight; the run ends finished:failed.
    """
    from deploy.launch import stop_all, wait_for_log

    before = {r["run-id"]: r["status"] for r in _runs(consortium)}
    config = f"preset='tiny' rounds-ssl=2 rounds-seg=0 rounds-cls=0 local-epochs-ssl=1 run-dir='{tmp_path / 'runs'}'"
    out = consortium.flwr("run", str(REPO), FEDERATION, "--format", "json", "--run-config", config, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = str(json.loads(out.stdout)["run-id"])
    deadline = time.monotonic() + 300
    first = tmp_path / "runs" / "latest" / "checkpoints" / "round-001-ssl-01.pt"
    while time.monotonic() < deadline and not first.is_file():  # restart once the first round is done
        time.sleep(1)
    assert first.is_file() and _status(consortium, run_id) == "running"

    stop_all([consortium.superlink])
    restarted = consortium.runbook.start("coordinator", only="superlink")["superlink"]
    consortium.processes.append(restarted)
    consortium.superlink = restarted
    assert wait_for_log(restarted, "Uvicorn running", 60), restarted.log_text()[-3000:]
    started = time.monotonic()

    history = {r["run-id"]: r["status"] for r in _runs(consortium)}
    assert history.keys() == before.keys() | {run_id}, history  # every run, finished or not, is still listed
    assert all(history[k] == v for k, v in before.items() if v.startswith("finished")), (before, history)
    status: dict[int, str] = {}
    while time.monotonic() < started + 120:
        status = consortium.node_status()
        if all(status.get(consortium.node_ids[s]) == "online" for s in SITES) and _status(
            consortium, run_id
        ).startswith("finished"):
            break
        time.sleep(3)
    print(
        f"\nafter restart: nodes {status}, interrupted run {_status(consortium, run_id)}, "
        f"{time.monotonic() - started:.0f} s"
    )
    assert [status.get(consortium.node_ids[s]) for s in SITES] == ["online"] * 3, status
    assert _status(consortium, run_id) == "finished:failed"
    assert first.is_file()  # the finished round is kept for resume-from


def _status(consortium, run_id: str) -> str:
    return {r["run-id"]: r["status"] for r in _runs(consortium)}.get(run_id, "missing")
