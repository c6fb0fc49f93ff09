"""Does a deployed run learn what the simulated run learns? One federation, run both ways, compared.

    python -m simulations.parity --out runs/parity            # tiny preset, 3 sites, SecAgg+ on

The same sites, run configuration and seed go through
- a local simulation (``flwr run`` against a simulation SuperLink: Ray actors that live for the run),
  twice, to see how close two runs of the same thing are;
- a deployment on loopback: a SuperLink and one ``flower-supernode`` process per site, where Flower
  starts a fresh ``flwr-clientapp`` process for every message.

For every global round the update of the global model (the phase's exchanged arrays after the round
minus before it) is compared between runs: cosine similarity and norm ratio. Round times come from
each run's metrics.csv. Prints a table; ``compare_runs`` is what the tests use.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulations.flower_home import PROJECT_ROOT, LocalSuperLink, flwr_run, write_connection

# Two rounds of seg: the second round of a phase is where state kept between messages (a continued
# random stream) would show; one cls round: a classifier round in a fresh process is where a model kept
# between messages (the encoder under the head) would show. SSL messages in fresh processes are
# compared one by one in tests/client/test_app_stateless.py; a deployed round costs a minute on 2 cores.
PARITY_SCHEDULE: dict[str, Any] = {
    "rounds-ssl": 0,
    "rounds-seg": 2,
    "rounds-cls": 1,
    "local-epochs-ssl": 1,
    "local-epochs-seg": 1,
    "local-epochs-cls": 1,
}


@dataclass(frozen=True)
class RoundParity:
    """How the global update of one round in run B compares with run A."""

    global_round: int
    phase: str
    cosine: float
    norm_ratio: float  # |update B| / |update A|
    norm_a: float


def _checkpoints(run_folder: Path) -> list[Path]:
    return sorted(p for p in (run_folder / "checkpoints").glob("round-*.pt"))


def _phase_vector(state: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
    return np.concatenate([state[k].detach().cpu().double().numpy().ravel() for k in keys])


def round_updates(run_folder: Path, preset: str, seed: int) -> list[tuple[int, str, np.ndarray]]:
    """(global round, phase, flat update of the phase's exchanged arrays) for every round of a run.

    The model before round 1 is the seeded initial model the ServerApp builds (``server.session.build_model``).
    """
    import torch

    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel, exchange_keys

    torch.manual_seed(seed)
    model = SarcoModel(get_preset(preset))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = []
    for path in _checkpoints(Path(run_folder)):
        payload = torch.load(path, map_location="cpu", weights_only=True)
        after, phase = payload["state_dict"], str(payload["phase"])
        keys = exchange_keys(model, phase)
        out.append((int(path.name.split("-")[1]), phase, _phase_vector(after, keys) - _phase_vector(before, keys)))
        before = after
    return out


def compare_runs(run_a: Path, run_b: Path, preset: str, seed: int) -> list[RoundParity]:
    """Per round, the cosine and norm ratio of run B's global update against run A's."""
    a, b = round_updates(run_a, preset, seed), round_updates(run_b, preset, seed)
    if [(r, p) for r, p, _ in a] != [(r, p) for r, p, _ in b]:
        raise ValueError(f"the runs have different rounds: {[(r, p) for r, p, _ in a]} vs {[(r, p) for r, p, _ in b]}")
    out = []
    for (r, phase, ua), (_, _, ub) in zip(a, b, strict=True):
        na, nb = float(np.linalg.norm(ua)), float(np.linalg.norm(ub))
        cosine = float(ua @ ub / (na * nb)) if na > 0 and nb > 0 else float("nan")
        out.append(RoundParity(r, phase, cosine, nb / na if na > 0 else float("nan"), na))
    return out


def run_config(manifests: Mapping[str, Path], work: Path, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The run config of a parity run: tiny preset, the sites listed, folders under ``work``, PARITY_SCHEDULE."""
    return {
        "preset": "tiny",
        "site-manifests": ",".join(str(p) for p in manifests.values()),
        "sites-cache": str(work / "cache"),
        "run-dir": str(work / "runs"),
        **PARITY_SCHEDULE,
        **extra,
    }


def run_simulated(manifests: Mapping[str, Path], work: Path, extra: Mapping[str, Any] | None = None) -> Path:
    """One local simulation of the sites; returns its run folder."""
    with LocalSuperLink(work / "flwr_home", num_supernodes=len(manifests)) as link:
        result = link.run(run_config(manifests, work, extra or {}), timeout_s=1800, log_path=work / "flwr-run.log")
    if result.returncode != 0:
        raise RuntimeError(f"simulated run failed (exit {result.returncode}); see {work / 'flwr-run.log'}")
    return (work / "runs" / "latest").resolve()


def run_deployed(manifests: Mapping[str, Path], work: Path, extra: Mapping[str, Any] | None = None) -> Path:
    """The same federation deployed on loopback: a SuperLink and one SuperNode process per site."""
    from deploy.launch import (
        flower_env,
        free_port,
        insecure_superlink_command,
        start,
        stop_all,
        supernode_command,
        wait_for_log,
    )

    env = flower_env(work / "flwr_home")
    port = free_port()
    superlink = start("superlink", insecure_superlink_command(port), env, work / "logs", cwd=PROJECT_ROOT)
    processes = [superlink]
    try:
        if not wait_for_log(superlink, "Uvicorn running", 60):
            raise RuntimeError(f"the SuperLink did not start; see {superlink.log}")
        for name, manifest in manifests.items():
            command = supernode_command(
                f"127.0.0.1:{port}",
                None,
                None,
                manifest,
                site_name=name,
                runtime_port=free_port(),
                insecure=True,
                cache_dir=work / "cache" / name,
            )
            processes.append(start(f"supernode-{name}", command, env, work / "logs", cwd=PROJECT_ROOT))
        write_connection(work / "flwr_home", "parity", f"127.0.0.1:{port}")
        result = flwr_run(
            PROJECT_ROOT,
            "parity",
            env,
            run_config(manifests, work, extra or {}),
            timeout_s=1800,
            log_path=work / "flwr-run.log",
        )
        if result.returncode != 0:
            raise RuntimeError(f"deployed run failed (exit {result.returncode}); see {work / 'flwr-run.log'}")
    finally:
        stop_all(processes)
    return (work / "runs" / "latest").resolve()


def tiny_sites(root: Path) -> dict[str, Path]:
    """The tiny consortium (simulations/consortia/tiny.toml) generated under ``root``."""
    from common.phantom import ensure_consortium

    return dict(ensure_consortium(PROJECT_ROOT / "simulations" / "consortia" / "tiny.toml", root))


def _round_seconds(run_folder: Path) -> dict[str, float]:
    summary = json.loads((run_folder / "summary.json").read_text())
    rounds = {p: r for p, r in summary["rounds"].items() if r}
    return {p: summary["phase_seconds"][p] / rounds[p] for p in rounds if p in summary["phase_seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--plain", action="store_true", help="secure aggregation off (simulation only allows it)")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="sarcofed-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    extra = {"secure-aggregation": not args.plain}
    sites = tiny_sites(work / "sites")
    times, folders = {}, {}
    for name, runner in (("sim-a", run_simulated), ("sim-b", run_simulated), ("deployed", run_deployed)):
        t0 = time.perf_counter()
        folders[name] = runner(sites, work / name, extra)
        times[name] = time.perf_counter() - t0
        print(f"{name}: {times[name]:.0f} s -> {folders[name]}", flush=True)
    seed = 0
    print(f"\n{'round':>5} {'phase':<5} {'sim vs sim cos':>15} {'norm':>6} {'deployed vs sim cos':>20} {'norm':>6}")
    sim = compare_runs(folders["sim-a"], folders["sim-b"], "tiny", seed)
    dep = compare_runs(folders["sim-a"], folders["deployed"], "tiny", seed)
    for s, d in zip(sim, dep, strict=True):
        print(
            f"{s.global_round:>5} {s.phase:<5} {s.cosine:>15.6f} {s.norm_ratio:>6.3f} {d.cosine:>20.6f} "
            f"{d.norm_ratio:>6.3f}"
        )
    per_round = {name: _round_seconds(folder) for name, folder in folders.items()}
    print("\nseconds per round (phase time / rounds):")
    for name, values in per_round.items():
        print(f"  {name:<9} " + "  ".join(f"{p} {v:.1f}" for p, v in values.items()))
    print(
        "  deployed / sim-a: "
        + "  ".join(f"{p} {per_round['deployed'][p] / per_round['sim-a'][p]:.2f}" for p in per_round["sim-a"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
