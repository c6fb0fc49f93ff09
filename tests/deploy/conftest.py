"""A real consortium on loopback: SuperLink (TLS + SuperNode auth + database), the mTLS proxy in front
of it and three registered SuperNodes, each with its own site folder. Started once per test module
that asks for it, and always stopped (children included), even when a test fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.launch import (
    FEDERATION,
    Managed,
    flower_env,
    free_port,
    https_ok,
    remember_descendants,
    start,
    stop_all,
    superlink_command,
    supernode_command,
    wait_for_log,
    write_coordinator_config,
)
from deploy.pki import PkiPaths, add_site, init_pki
from deploy.proxy import nginx_command, write_nginx_config

CONSORTIUM_TOML = Path(__file__).resolve().parents[2] / "simulations" / "consortia" / "tiny.toml"
SITES = ("onco", "general", "trauma")  # the sites of tiny.toml (test_consortium.py names them too)
HOLDOUT_FRACTION = 0.5  # >= 5 holdout patients per tiny site, so no site's metrics are suppressed
PROXY_CONNECTION = "proxy"  # the coordinator connection through nginx (no client certificate; same name in the tests)


@dataclass
class Consortium:
    """Handles to a running loopback consortium, plus helpers the tests share."""

    work: Path
    pki: PkiPaths
    env: dict[str, str]
    superlink: Managed
    superlink_port: int
    proxy_port: int | None
    fleet_address: str  # what SuperNodes dial: the proxy when nginx is installed, else the SuperLink
    sites: dict[str, Path] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)
    supernodes: dict[str, Managed] = field(default_factory=dict)
    processes: list[Managed] = field(default_factory=list)

    def flwr(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run the `flwr` CLI as the coordinator (our FLWR_HOME, telemetry off)."""
        binary = str(Path(sys.executable).parent / "flwr")
        return subprocess.run([binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd or self.work)

    def start_supernode(self, name: str, key: Path | None, *, ca: Path | None = None, use_ca: bool = True,
                        insecure: bool = False, max_retries: int | None = None, address: str | None = None) -> Managed:
        manifest = self.sites.get(name, self.work / "sites" / name / "manifest.csv")
        command = supernode_command(
            address or self.fleet_address, (ca or self.pki.ca_cert) if use_ca else None, key, manifest,
            site_name=name, runtime_port=free_port(), insecure=insecure, max_retries=max_retries,
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


def _wait_online(consortium: Consortium, node_ids: Sequence[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status: dict[int, str] = {}
    while time.monotonic() < deadline:
        status = consortium.node_status()
        if all(status.get(n) == "online" for n in node_ids):
            return
        dead = [p.name for p in consortium.supernodes.values() if not p.alive()]
        assert not dead, f"SuperNodes exited: {dead}\n" + "\n".join(consortium.supernodes[n.split('-', 1)[1]].log_text()[-3000:] for n in dead)
        time.sleep(2)
    raise AssertionError(f"SuperNodes not online after {timeout:.0f} s: {status}")


@pytest.fixture(scope="module")
def consortium(tmp_path_factory) -> Iterator[Consortium]:
    """SuperLink + proxy + three registered, online SuperNodes; torn down after the module."""
    import tomllib

    import torch

    from common.phantom import ensure_consortium

    work = tmp_path_factory.mktemp("consortium")
    t0 = time.monotonic()
    spec = tomllib.loads(CONSORTIUM_TOML.read_text())
    for site in spec["sites"].values():
        site["holdout_fraction"] = HOLDOUT_FRACTION
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        manifests = ensure_consortium(spec, work / "sites")
    finally:
        torch.set_num_threads(threads)
    assert tuple(manifests) == SITES
    sites_s = time.monotonic() - t0
    pki = init_pki(work / "pki")
    for name in (*SITES, "intruder"):
        add_site(pki.root, name)
    env = flower_env(work / "flwr_home")
    sl_port = free_port()
    superlink = start("superlink", superlink_command(pki, work / "state.db", port=sl_port), env, work / "logs")
    timings: dict[str, float] = {"sites_s": sites_s}
    c = Consortium(work, pki, env, superlink, sl_port, None, f"127.0.0.1:{sl_port}", processes=[superlink])
    t0 = time.monotonic()
    try:
        assert wait_for_log(superlink, "Uvicorn running", 60), superlink.log_text()[-3000:]
        timings["superlink_ready_s"] = time.monotonic() - t0
        connections = {FEDERATION: f"127.0.0.1:{sl_port}"}
        if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
            c.proxy_port = free_port()
            conf = write_nginx_config(pki, work / "nginx", listen=f"127.0.0.1:{c.proxy_port}", upstream=f"127.0.0.1:{sl_port}")
            proxy = start("nginx", nginx_command(conf), env, work / "logs")
            c.processes.append(proxy)
            c.fleet_address = f"127.0.0.1:{c.proxy_port}"
            connections[PROXY_CONNECTION] = c.fleet_address
            deadline = time.monotonic() + 15
            while https_ok(f"https://{c.fleet_address}/health", pki.ca_cert) != 200:
                assert time.monotonic() < deadline and proxy.alive(), proxy.log_text() + (work / "nginx" / "error.log").read_text()
                time.sleep(0.2)
        write_coordinator_config(work / "flwr_home", pki.ca_cert, connections)

        t1 = time.monotonic()
        for name in SITES:
            out = c.flwr("supernode", "register", str(pki.site_pub(name)), FEDERATION, "--format", "json")
            assert out.returncode == 0, out.stdout + out.stderr
            c.node_ids[name] = int(json.loads(out.stdout)["node-id"])
        timings["register_3_s"] = time.monotonic() - t1
        c.sites.update(manifests)
        for name in SITES:
            c.supernodes[name] = c.start_supernode(name, pki.site_key(name))
        t2 = time.monotonic()
        _wait_online(c, list(c.node_ids.values()), timeout=90)
        timings["supernodes_online_s"] = time.monotonic() - t2
        remember_descendants(c.processes)
        print(f"\nconsortium up: {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
        yield c
    finally:
        stop_all(c.processes)
