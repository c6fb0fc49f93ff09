"""Benchmark 3: what SecAgg+ costs per round: seconds on the sites and the server, and bytes each site sends.

The protocol runs in-process (the way tests/server/test_secagg_protocol.py drives it): Flower's
``DefaultWorkflow`` with ``SecAggPlusWorkflow`` and our ClientApp mod / mask generator, over a
loopback Grid that hands each message to a ClientApp object (no Ray, no network). Each site returns
fixed float32 deltas of the model's size (drawn before the clock starts), so the numbers are the
protocol's cost alone, without training. The same round without SecAgg+ (plain FedAvg messages, to
sites without the SecAgg+ mod, which refuses them) is the reference. Bytes are the protobuf size of
every reply a site sends in the round (``flwr.common.serde.message_to_proto``).

Where the seconds go: a site's seconds are its ClientApp calls plus serialising its replies (what a
SuperNode does before sending); the server's are the rest of the round's wall time, less the copy of
each delivered message that stands in for the network (timed apart, counted on neither side). Each
size runs plain and SecAgg+ rounds alternating and keeps the fastest of each: others' jobs on a
shared machine only ever add time.

Stock Flower quantises to int32, masks in int64 and sends each masked value as int64 although it
lies in [0, 2**32); SarcoFed's apps quantise, mask and send uint32, and the server sums them in int64
as it reads them (``common.secagg.quantize``, ``mask_prg``, ``transport``, ``arithmetic``), which is
what "as shipped" measures. ``runs/bench/secagg_profile.txt`` has a cProfile of one demo-size round.

    python -m simulations.bench_secagg            # demo size, and a 4x demo size to extrapolate from
    python -m simulations.bench_secagg --quick    # demo size only
    python -m simulations.bench_secagg --full     # also one measured round at the full seg size (~91 M)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flwr.clientapp.typing import Mod


def _loopback_grid_cls():
    from flwr.app import Context, Message, RecordDict
    from flwr.app.error import Error
    from flwr.serverapp import Grid
    from flwr.supercore.run import Run

    class LoopbackGrid(Grid):
        """Messages go straight to ``apps[node_id]``; times client calls and sizes every reply."""

        def __init__(self, apps) -> None:
            from flwr.common.serde import message_to_proto
            from flwr.supercore.task_identity import TaskIdentity

            self._to_proto = message_to_proto
            self.apps = apps
            self.contexts = {
                nid: Context(run_id=1, node_id=nid, node_config={"partition-id": i}, state=RecordDict(), run_config={})
                for i, nid in enumerate(apps)
            }
            self.client_seconds = self.client_cpu = 0.0
            self.transport_seconds = self.transport_cpu = 0.0
            self.sent_bytes = {nid: 0 for nid in apps}
            self._replies: dict[str, Message] = {}
            self._counter = 0
            TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0

        def set_run(self, run: Run) -> None:
            pass

        @property
        def run(self) -> Run:
            return Run.create_empty(1)

        def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
            return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

        def get_node_ids(self) -> Iterable[int]:
            return list(self.apps)

        def push_messages(self, messages):
            ids = []
            for msg in messages:
                self._counter += 1
                msg.metadata.__dict__["_message_id"] = str(self._counter)
                nid = msg.metadata.dst_node_id
                t0, c0 = time.perf_counter(), time.process_time()
                delivered = copy.deepcopy(msg)  # stands in for the network: timed apart, counted nowhere
                t1, c1 = time.perf_counter(), time.process_time()
                try:
                    reply = self.apps[nid](delivered, self.contexts[nid])
                except Exception as error:
                    reply = Message(Error(code=0, reason=f"{type(error).__name__}: {error}"), reply_to=msg)
                if not reply.has_content():  # a failed site must not pass for a cheap one
                    raise RuntimeError(f"bench_secagg: site {nid} failed: {reply.error.reason}")
                self.sent_bytes[nid] += self._to_proto(reply).ByteSize()  # the site serialises what it sends
                self.transport_seconds += t1 - t0
                self.transport_cpu += c1 - c0
                self.client_seconds += time.perf_counter() - t1
                self.client_cpu += time.process_time() - c1
                self._replies[str(self._counter)] = reply
                ids.append(str(self._counter))
            return ids

        def pull_messages(self, message_ids):
            return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

        def send_and_receive(self, messages, *, timeout=None):
            return self.pull_messages(self.push_messages(messages))

    return LoopbackGrid


def _shapes(num_params: int, chunk: int = 1_000_000) -> list[tuple[int, ...]]:
    """A model's worth of arrays: ``num_params`` values in (1000, k) matrices plus a remainder."""
    shapes = [(1000, chunk // 1000)] * (num_params // chunk)
    rest = num_params - sum(a * b for a, b in shapes)
    return shapes + ([(rest,)] if rest else [])


def one_round(shapes: list[tuple[int, ...]], n_sites: int, secure: bool, profiler=None) -> dict[str, float]:
    """One fit round: wall, client (per site) and server seconds, the same in CPU seconds (``*_cpu``:
    this process's CPU time, which others' jobs on the machine inflate far less), bytes sent per site.
    ``profiler`` (a ``cProfile.Profile``) is enabled around the round itself, not its set-up and checks."""
    from flwr.app import Context, RecordDict
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    import client.app  # noqa: F401  installs our mask generator and uint32 path in the client mod
    import server.app  # noqa: F401  and in the server workflow

    deltas = {
        pid: [np.random.default_rng(pid).normal(0, 1e-3, s).astype(np.float32) for s in shapes]
        for pid in range(n_sites)
    }

    class Site(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters, config):
            return deltas[self.pid], 20 + self.pid, {}

    def client_fn_of(pid: int):
        return lambda ctx: Site(pid).to_client()

    mods: list[Mod] = [secaggplus_mod] if secure else []
    apps = {1000 + pid: ClientApp(client_fn=client_fn_of(pid), mods=mods) for pid in range(n_sites)}
    grid = _loopback_grid_cls()(apps)
    strategy = FedAvg(
        initial_parameters=ndarrays_to_parameters([np.zeros(s, np.float32) for s in shapes]),
        fraction_evaluate=0.0,
        min_fit_clients=n_sites,
        min_available_clients=n_sites,
    )
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(ctx, config=ServerConfig(num_rounds=1), strategy=strategy)
    fit_wf = (
        SecAggPlusWorkflow(
            num_shares=1.0,
            reconstruction_threshold=0.66,
            clipping_range=0.5,
            quantization_range=4194304,
            max_weight=1000.0,
        )
        if secure
        else None
    )
    t0, c0 = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    DefaultWorkflow(fit_workflow=fit_wf)(grid, legacy)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - t0 - grid.transport_seconds
    cpu = time.process_time() - c0 - grid.transport_cpu
    # The aggregate must still be the weighted mean of the deltas (the global model starts at 0), within
    # SecAgg+'s quantisation step (2 * clip / quantization_range, scaled by max_weight / sum of weights).
    got = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    weights = {pid: 20 + pid for pid in deltas}
    error = max(
        float(
            np.max(
                np.abs(
                    g - sum(w * deltas[pid][k].astype(np.float64) for pid, w in weights.items()) / sum(weights.values())
                ),
                initial=0.0,
            )
        )
        for k, g in enumerate(got)
    )
    step = 2 * 0.5 / 4194304 * 1000.0 / sum(weights.values()) if secure else float("nan")
    return {
        "wall": wall,
        "client_per_site": grid.client_seconds / n_sites,
        "server": wall - grid.client_seconds,
        "cpu": cpu,
        "client_per_site_cpu": grid.client_cpu / n_sites,
        "server_cpu": cpu - grid.client_cpu,
        "bytes_per_site": float(np.mean(list(grid.sent_bytes.values()))),
        "error_in_steps": error / step,
    }


def compare(shapes: list[tuple[int, ...]], n_sites: int, repeats: int = 2) -> tuple[dict, dict]:
    """Plain and SecAgg+ rounds, alternating, ``repeats`` of each; the fastest of each by wall time."""
    plain, secure = [], []
    for _ in range(repeats):
        plain.append(one_round(shapes, n_sites, secure=False))
        secure.append(one_round(shapes, n_sites, secure=True))
    return min(plain, key=lambda r: r["wall"]), min(secure, key=lambda r: r["wall"])


def run(quick: bool = False, n_sites: int = 3, full: bool = False) -> list:
    """Rows of item 3; ``full`` also measures a round at the full preset's seg size (1-2 min, about 6 GB)."""
    import logging

    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel, get_weights
    from simulations.bench_common import Row, bench_dir

    logging.getLogger("flwr").setLevel(logging.WARNING)
    rows: list[Row] = []
    demo = SarcoModel(get_preset("demo"))
    demo_shapes = [a.shape for a in get_weights(demo, "ssl")]
    p_demo = sum(int(np.prod(s)) for s in demo_shapes)
    full_params = {ph: 0 for ph in ("ssl", "seg")}
    # Full-preset parameter counts without building the 750 MB model: scale by layer (cheap meta-device build).
    import torch

    with torch.device("meta"):
        full_model = SarcoModel(get_preset("full"))
    for ph in full_params:
        keys = set(full_model.exchange_keys(ph))
        full_params[ph] = sum(v.numel() for k, v in full_model.state_dict().items() if k in keys)

    results = {}
    sizes = {"demo ssl": (demo_shapes, 1 if quick else 3)}
    if not quick:
        sizes["4x demo (26.7 M)"] = (_shapes(4 * p_demo), 1)
    if full:
        keys = set(full_model.exchange_keys("seg"))
        sizes["full seg"] = ([tuple(v.shape) for k, v in full_model.state_dict().items() if k in keys], 1)
    for label, (shapes, repeats) in sizes.items():
        plain, secure = compare(shapes, n_sites, repeats)
        results[label] = (sum(int(np.prod(s)) for s in shapes), plain, secure)
    n, plain, secure = results["demo ssl"]
    model_bytes = 4 * n
    rows.append(
        Row(
            "3",
            f"SecAgg+ round / plain round, protocol only ({n_sites} sites, demo ssl {n / 1e6:.1f} M params)",
            f"{secure['wall']:.2f} s vs {plain['wall']:.2f} s",
            "<= 1.3",
            secure["wall"] / plain["wall"],
            "no training in either: the ratio of a whole round is item 2",
        )
    )
    rows.append(
        Row(
            "3",
            "SecAgg+ seconds per round: per site / server (demo ssl)",
            f"{secure['client_per_site']:.2f} s / {secure['server']:.2f} s "
            f"(plain {plain['client_per_site']:.2f} s / {plain['server']:.2f} s)",
        )
    )
    rows.append(
        Row(
            "3",
            "SecAgg+ CPU seconds per round: per site / server (demo ssl)",
            f"{secure['client_per_site_cpu']:.2f} s / {secure['server_cpu']:.2f} s "
            f"(plain {plain['client_per_site_cpu']:.2f} s / {plain['server_cpu']:.2f} s)",
            "",
            secure["cpu"] / plain["cpu"],
            "ratio: SecAgg+ / plain CPU seconds of the round; steadier than wall time on a shared machine",
        )
    )
    rows.append(
        Row(
            "3",
            "bytes sent per site per round / float32 model (demo ssl, SecAgg+ as shipped)",
            f"{secure['bytes_per_site'] / 1e6:.1f} MB / {model_bytes / 1e6:.1f} MB",
            "<= 1.0",
            secure["bytes_per_site"] / model_bytes,
            "masked values as uint32 (common/secagg/transport.py); the rest is protobuf framing",
        )
    )
    rows.append(
        Row(
            "3",
            "SecAgg+ aggregate vs plain weighted mean: largest error / quantisation step (demo ssl)",
            f"{secure['error_in_steps']:.2f} steps",
            f"<= {n_sites}",
            secure["error_in_steps"] / n_sites,
            "step = 2 clip / quantization range x max weight / sum of weights; each site's stochastic "
            "rounding moves a value by less than one step, so the bound is the number of sites",
        )
    )
    rows.append(
        Row(
            "3",
            "plain round bytes sent per site / float32 model (demo ssl)",
            f"{plain['bytes_per_site'] / 1e6:.1f} MB",
            "",
            plain["bytes_per_site"] / model_bytes,
        )
    )
    # Full model: the protocol's cost is linear in the parameter count; extrapolate from the largest
    # measured size (full seg with --full, else 4x demo, else demo ssl).
    label = next(k for k in ("full seg", "4x demo (26.7 M)", "demo ssl") if k in results)
    n_ref, plain_ref, secure_ref = results[label]
    if label == "full seg":
        rows.append(
            Row(
                "3",
                f"full seg ({n_ref / 1e6:.0f} M params), measured: SecAgg+ seconds per round, per site / server",
                f"{secure_ref['client_per_site']:.1f} s / {secure_ref['server']:.1f} s (round "
                f"{secure_ref['wall']:.1f} s; plain {plain_ref['client_per_site']:.1f} s / "
                f"{plain_ref['server']:.1f} s, round {plain_ref['wall']:.1f} s; CPU seconds: SecAgg+ "
                f"{secure_ref['client_per_site_cpu']:.1f} s / {secure_ref['server_cpu']:.1f} s, plain "
                f"{plain_ref['client_per_site_cpu']:.1f} s / {plain_ref['server_cpu']:.1f} s)",
                "",
                secure_ref["wall"] / plain_ref["wall"],
                "ratio: SecAgg+ round / plain round",
            )
        )
    scale_note = (
        f"extrapolated linearly from a measured {n_ref / 1e6:.1f} M-param round ({label}, "
        f"{secure_ref['wall']:.1f} s; {secure_ref['wall'] / n_ref * n / secure['wall']:.2f}x the "
        "per-param cost of demo ssl)"
    )
    for ph, count in full_params.items():
        if label == "full seg" and ph == "seg":
            continue
        scale = count / n_ref
        rows.append(
            Row(
                "3",
                f"full {ph} ({count / 1e6:.0f} M params): SecAgg+ seconds per round, per site / server",
                f"~{secure_ref['client_per_site'] * scale:.0f} s / ~{secure_ref['server'] * scale:.0f} s "
                f"(round ~{secure_ref['wall'] * scale:.0f} s, plain ~{plain_ref['wall'] * scale:.0f} s); "
                f"sends ~{secure['bytes_per_site'] / model_bytes * 4 * count / 1e9:.2f} GB "
                f"(float32 {4 * count / 1e9:.2f} GB)",
                "",
                None,
                scale_note,
            )
        )
    _profile_secagg(demo_shapes, n_sites, bench_dir() / "secagg_profile.txt")
    return rows


def _profile_secagg(shapes, n_sites: int, out) -> None:
    """cProfile of one SecAgg+ round (demo ssl size), top 25 functions by own time, into ``out``."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    one_round(shapes, n_sites, secure=True, profiler=prof)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    out.write_text(buf.getvalue())


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv, full="--full" in sys.argv):
        print(r.what, "|", r.measured, "|", r.target, "|", f"{r.ratio:.3f}" if r.ratio is not None else "", "|", r.note)
