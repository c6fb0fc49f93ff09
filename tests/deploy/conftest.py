"""A real consortium on loopback, built by executing deploy/README.md's trial section (tests/deploy/runbook.py):
SuperLink (TLS + SuperNode auth + database), the gate (nginx, mTLS for the control route) in front of it,
and three registered SuperNodes with their own synthetic sites. Started once per test module that asks
for it, and always stopped (children included), even when a test fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.coordinator import Coordinator, Credentials
from deploy.launch import (
    FEDERATION,
    Managed,
    flower_env,
    free_port,
    https_ok,
    remember_descendants,
    start,
    stop_all,
    supernode_command,
    wait_for_log,
    write_coordinator_config,
)
from deploy.pki import PkiPaths, add_site
from tests.deploy.runbook import Runbook

SITES = (
    "onco",
    "general",
    "trauma",
)  # the trial's hospitals (simulations/consortia/tiny.toml); the tests name them too
PORTS = ("LINK_PORT", "GATE_PORT", "ONCO_PORT", "GENERAL_PORT", "TRAUMA_PORT")  # the runbook's, free ones here
PROXY_CONNECTION = "proxy"  # the coordinator connection through nginx (no client certificate; same name in the tests)


@dataclass
class Consortium:
    """Handles to a running loopback consortium, plus helpers the tests share."""

    work: Path  # the runbook's TRIAL folder
    runbook: Runbook
    pki: PkiPaths
    env: dict[str, str]  # for `flwr` as the coordinator (its own FLWR_HOME, telemetry off)
    superlink: Managed
    superlink_port: int
    proxy_port: int
    fleet_address: str  # what SuperNodes dial: the gate
    sites: dict[str, Path] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)
    supernodes: dict[str, Managed] = field(default_factory=dict)
    processes: list[Managed] = field(default_factory=list)

    def flwr(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run the `flwr` CLI as the coordinator (our FLWR_HOME, telemetry off)."""
        binary = str(Path(sys.executable).parent / "flwr")
        return subprocess.run(
            [binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd or self.work
        )

    def start_supernode(
        self,
        name: str,
        key: Path | None,
        *,
        ca: Path | None = None,
        use_ca: bool = True,
        insecure: bool = False,
        max_retries: int | None = None,
        address: str | None = None,
    ) -> Managed:
        manifest = self.sites.get(name, self.work / "sites" / name / "manifest.csv")
        command = supernode_command(
            address or self.fleet_address,
            (ca or self.pki.ca_cert) if use_ca else None,
            key,
            manifest,
            site_name=name,
            runtime_port=free_port(),
            insecure=insecure,
            max_retries=max_retries,
            cache_dir=self.work / "cache" / name,
        )
        process = start(f"supernode-{name}", command, self.env, self.work / "logs")
        self.processes.append(process)
        return process

    def node_status(self) -> dict[int, str]:
        """node id -> status ('registered', 'online', ...) from `flwr supernode list --format json`."""
        out = self.flwr("supernode", "list", FEDERATION, "--format", "json")
        assert out.returncode == 0, out.stdout + out.stderr
        return {int(n["node-id"]): n["status"] for n in json.loads(out.stdout)["nodes"]}

    @property
    def access_log(self) -> Path:
        """The gate's audit trail (the proxy's --state-dir in the runbook)."""
        return self.work / "proxy" / "access.log"


def _wait_online(consortium: Consortium, timeout: float) -> dict[str, int]:
    """site -> node id once `sarcofed coordinator nodes` would call all three online (asked through the gate)."""
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    credentials = Credentials.resolve(consortium.pki.root)
    with Coordinator(consortium.fleet_address, credentials, pki=consortium.pki.root) as coordinator:
        while time.monotonic() < deadline:
            nodes = coordinator.list_nodes()
            found = {n.site or str(n.node_id): n.status for n in nodes}
            if all(found.get(site) == "online" for site in SITES):
                return {n.site: n.node_id for n in nodes if n.site in SITES}
            dead = [name for name, p in consortium.supernodes.items() if not p.alive()]
            assert not dead, f"SuperNodes exited: {dead}\n" + "\n".join(
                consortium.supernodes[n].log_text()[-3000:] for n in dead
            )
            time.sleep(2)
    raise AssertionError(f"SuperNodes not online after {timeout:.0f} s: {found}")


def _nginx_installed() -> bool:
    return bool(shutil.which("nginx")) or Path("/usr/sbin/nginx").exists()


@pytest.fixture(scope="module")
def consortium(tmp_path_factory) -> Iterator[Consortium]:
    """deploy/README.md's trial, executed: credentials, sites, SuperLink + gate, three registered SuperNodes online."""
    if not _nginx_installed():
        pytest.skip("nginx is not installed (apt-get install -y nginx-light): the runbook's gate cannot start")
    work = tmp_path_factory.mktemp("trial")
    ports = {name: free_port() for name in PORTS}
    book = Runbook.prepare({"TRIAL": str(work), **{k: str(v) for k, v in ports.items()}}, work / "logs")
    timings: dict[str, float] = {}
    processes: list[Managed] = []
    t0 = time.monotonic()
    try:
        book.run("credentials")
        timings["credentials_and_sites_s"] = time.monotonic() - t0
        coordinator_host = book.start("coordinator")
        processes += coordinator_host.values()
        superlink, proxy = coordinator_host["superlink"], coordinator_host["proxy"]
        pki = PkiPaths(work / "pki")
        t0 = time.monotonic()
        assert wait_for_log(superlink, "Uvicorn running", 60), superlink.log_text()[-3000:]
        gate = f"127.0.0.1:{ports['GATE_PORT']}"
        while https_ok(f"https://{gate}/health", pki.ca_cert) != 200:
            assert time.monotonic() < t0 + 75 and proxy.alive(), proxy.log_text() + superlink.log_text()[-2000:]
            time.sleep(0.2)
        timings["gate_ready_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        book.run("register")
        timings["register_3_s"] = time.monotonic() - t0
        env = flower_env(work / "flwr_cli")
        write_coordinator_config(
            work / "flwr_cli", pki.ca_cert, {FEDERATION: f"127.0.0.1:{ports['LINK_PORT']}", PROXY_CONNECTION: gate}
        )
        c = Consortium(
            work, book, pki, env, superlink, ports["LINK_PORT"], ports["GATE_PORT"], gate, processes=processes
        )
        c.sites.update({name: work / "data" / name / "manifest.csv" for name in SITES})
        t0 = time.monotonic()
        c.supernodes.update(book.start("hospitals"))
        processes += c.supernodes.values()
        c.node_ids.update(_wait_online(c, timeout=90))
        [listing] = book.run("nodes")
        assert all(
            f" {site} " in line and " online " in line
            for site in SITES
            for line in listing.stdout.splitlines()
            if f" {site} " in line
        ), listing.stdout
        timings["supernodes_online_s"] = time.monotonic() - t0
        add_site(pki.root, "intruder")  # a key nobody registered, for the tests of who gets in
        remember_descendants(c.processes)
        print(f"\ntrial consortium up (deploy/README.md): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
        yield c
    finally:
        stop_all(processes)
