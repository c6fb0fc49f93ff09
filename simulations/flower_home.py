"""Run the Flower app as a local simulation with processes we own: FLWR_HOME, SuperLink, `flwr run`.

Why not plain ``flwr run .`` with the default ``:local:`` connection: that starts a *detached*
SuperLink on fixed ports (39091/39093) that outlives the command. Here the SuperLink is our child
(its own process group, a free port, in-memory state), ``$FLWR_HOME/config.toml`` names it
(``[tool.flwr.federations]`` in pyproject.toml is legacy and would be rewritten by ``flwr run``),
and ``LocalSuperLink.stop`` ends it and everything it started (SuperExec, ServerApp, Ray).
Telemetry (Flower's and Ray's), the update check and runtime dependency installation are off: runs use
this venv.

What a run costs besides the sites' compute, and what this module does about it:
``flwr run`` builds the app bundle by walking *every* file under the app folder before filtering it
(``flwr.cli.utils.collect_files``); in a checkout that holds ``.venv`` and ``.cache`` that is ~50k
files and ~5 s per run, so ``LocalSuperLink.run`` hands ``flwr run`` a copy of only the files the bundle
would contain (same names, same bytes, same FAB hash; see ``stage_app``). Ray prestarts ``num-cpus``
idle workers that the ClientApp actor cannot use (Flower starts it with its own ``runtime_env``): on
2 cores they only slow ``ray.init`` down (``RAY_prestart_worker_first_driver=0``, about -1 s). The
ServerApp removes the simulation's polling between a round's message exchanges itself (``server.app``).

``python -m simulations.flower_home`` writes ``<checkout>/.flwr_home/config.toml`` (connection
``sarcofed-sim`` = Flower's own ``:local:`` simulation with 3 supernodes) for people who type
``FLWR_HOME=.flwr_home flwr run .`` themselves; Flower then leaves its detached SuperLink running.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deploy import launch
from deploy.launch import free_port
from flower_compat.bundle import bundle_files

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONNECTION = "sarcofed-sim"

# Latency settings of a local simulation; a value already in the caller's environment wins.
FAST_ENV = {
    "RAY_prestart_worker_first_driver": "0",  # idle workers the ClientApp actor (own runtime_env) never uses
}


def flower_env(flwr_home: Path) -> dict[str, str]:
    """The environment for a local simulation's Flower processes: deploy.launch's (our FLWR_HOME, telemetry
    and installs off, this venv first on PATH) with Flower's own SuperExec poll, FAST_ENV, and the checkout
    importable."""
    env = launch.flower_env(flwr_home, superexec_poll_s=None)
    for key, value in FAST_ENV.items():
        env.setdefault(key, value)
    env.setdefault("PYTHONPATH", str(PROJECT_ROOT))
    return env


def write_config(flwr_home: Path, port: int | None, num_supernodes: int, cpus_per_client: int = 2) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one connection, ``sarcofed-sim``, to a simulation SuperLink.

    ``cpus_per_client`` is Ray's reservation per simulated site (an integer): with 2 on a 2-core
    machine the sites train one after another, which is what keeps memory flat. ``port=None`` writes
    Flower's ``:local:`` address: ``flwr run`` then starts its own detached SuperLink (stop it with
    ``kill`` on the ``flower-superlink`` process, see README).
    """
    address: dict[str, str | int | float | bool] = (
        {"address": f"127.0.0.1:{port}", "insecure": True} if port is not None else {"address": ":local:"}
    )
    options = {
        "options.num-supernodes": int(num_supernodes),
        "options.backend.client-resources.num-cpus": int(cpus_per_client),
        "options.backend.client-resources.num-gpus": 0.0,
    }
    return launch.write_flower_config(flwr_home, {CONNECTION: {**address, **options}})


class LocalSuperLink:
    """A simulation SuperLink on 127.0.0.1 owned by this process; use as a context manager.

    Parameters
    ----------
    flwr_home : Path
        FLWR_HOME for the SuperLink and the CLI (apps are installed under it).
    num_supernodes : int
        Simulated sites (one partition-id each).
    log_path : Path, optional
        SuperLink log (default ``<flwr_home>/superlink.log``).
    """

    def __init__(self, flwr_home: Path, num_supernodes: int, log_path: Path | None = None) -> None:
        self.flwr_home = Path(flwr_home).absolute()
        self.port = free_port()
        self.num_supernodes = num_supernodes
        self.log_path = log_path or self.flwr_home / "superlink.log"
        self.env = flower_env(self.flwr_home)
        self.process: launch.Managed | None = None

    def start(self, timeout_s: float = 60.0) -> LocalSuperLink:
        write_config(self.flwr_home, self.port, self.num_supernodes)
        command = ["flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(self.port),
                   "--disable-runtime-dependency-installation"]  # fmt: skip
        self.process = launch.start(
            "superlink", command, self.env, self.log_path.parent, cwd=PROJECT_ROOT, log_path=self.log_path
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"flower-superlink exited with {self.process.popen.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as response:
                    if response.status == 200:
                        launch.remember_descendants([self.process])
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"flower-superlink did not answer /health within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the SuperLink and every process it started (SuperExec, ServerApp, Ray), as deploy.launch does."""
        if self.process is not None:
            launch.stop_all([self.process], grace=grace_s)

    def __enter__(self) -> LocalSuperLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(
        self,
        run_config: Mapping[str, Any] | Path,
        *,
        app_dir: Path = PROJECT_ROOT,
        timeout_s: float = 3600.0,
        log_path: Path | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``flwr run`` of ``app_dir`` on this SuperLink (see :func:`flwr_run`); returns when the run ends."""
        return flwr_run(
            app_dir, CONNECTION, self.env, run_config, timeout_s=timeout_s, log_path=log_path, on_line=on_line
        )


def write_connection(flwr_home: Path, name: str, address: str) -> Path:
    """``$FLWR_HOME/config.toml`` with one plain-text (loopback) connection NAME -> ADDRESS, the default."""
    return launch.write_flower_config(flwr_home, {name: {"address": address, "insecure": True}})


def flwr_run_command(app_dir: Path, connection: str, run_config: Mapping[str, Any] | Path) -> list[str]:
    """``flwr run APP CONNECTION --stream --run-config ...``: a profile TOML path, or key=value pairs
    (values as TOML literals: strings quoted, booleans lower-case)."""
    cmd = ["flwr", "run", str(app_dir), connection, "--stream"]
    if isinstance(run_config, Path):
        return [*cmd, "--run-config", str(run_config)]
    overrides = " ".join(f"{k}={launch.toml_value(v)}" for k, v in run_config.items())
    return [*cmd, "--run-config", overrides] if overrides else cmd


def flwr_run(
    app_dir: Path,
    connection: str,
    env: Mapping[str, str],
    run_config: Mapping[str, Any] | Path,
    *,
    timeout_s: float = 3600.0,
    log_path: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``flwr_run_command`` in ``app_dir`` until the run ends; each output line also goes to ``on_line``.

    ``flwr run`` is given a temporary copy of the files it would bundle from ``app_dir`` (the same
    FAB, built without walking ``.venv`` and the caches; see ``stage_app``). The whole output (stdout
    and stderr together) is returned and written to ``log_path``.
    """
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sarcofed-fab-") as staging:
        cmd = flwr_run_command(stage_app(Path(app_dir), Path(staging)), connection, run_config)
        with subprocess.Popen(
            cmd, env=dict(env), cwd=app_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as process:
            timer = threading.Timer(timeout_s, process.kill)
            timer.start()
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    lines.append(line)
                    if on_line is not None:
                        on_line(line.rstrip("\n"))
            finally:
                timer.cancel()
            returncode = process.wait()
    output = "".join(lines)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(output)
    return subprocess.CompletedProcess(cmd, returncode, output, "")


def stage_app(app_dir: Path, staging: Path) -> Path:
    """Copy the bundle's files of ``app_dir`` into ``staging/<app_dir name>`` (the name ``flwr run`` checks)."""
    target = Path(staging) / Path(app_dir).expanduser().resolve().name
    for rel, src in bundle_files(app_dir).items():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return target


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Write <checkout>/.flwr_home/config.toml: connection sarcofed-sim, "
        "Flower's own detached local simulation SuperLink."
    )
    parser.add_argument("--num-supernodes", type=int, default=4, help="simulated sites (demo consortium: 4, tiny: 3)")
    print(write_config(PROJECT_ROOT / ".flwr_home", port=None, num_supernodes=parser.parse_args().num_supernodes))
