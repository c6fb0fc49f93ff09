"""Benchmark 3: what SecAgg+ costs per round: seconds on the sites and the server, and bytes each site sends.

The protocol runs in-process (the way tests/server/test_secagg_protocol.py drives it): Flower's
``DefaultWorkflow`` with ``SecAggPlusWorkflow`` and our ClientApp mod / mask generator, over a
loopback Grid that hands each message to a ClientApp object (no Ray, no network). Each site returns
fixed float32 deltas of the model's size, so the numbers are the protocol's cost alone, without
training. The same round without SecAgg+ (plain FedAvg messages) is the reference. Bytes are the
protobuf size of every reply a site sends in the round (``flwr.common.serde.message_to_proto``).

Stock Flower sends each masked value as int64 although it lies in [0, 2**32); SarcoFed's apps send
uint32 and widen on receipt (``common.secagg.transport``), which is what "as shipped" measures.
"""

from __future__ import annotations

import copy
import importlib
import time
from collections.abc import Iterable

import numpy as np


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
            self.contexts = {nid: Context(run_id=1, node_id=nid, node_config={"partition-id": i}, state=RecordDict(),
                                          run_config={}) for i, nid in enumerate(apps)}
            self.client_seconds = 0.0
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
                delivered = copy.deepcopy(msg)
                t0 = time.perf_counter()
                try:
                    reply = self.apps[nid](delivered, self.contexts[nid])
                except Exception as error:
                    reply = Message(Error(code=0, reason=f"{type(error).__name__}: {error}"), reply_to=msg)
                self.client_seconds += time.perf_counter() - t0
                if reply.has_content():
                    self.sent_bytes[nid] += self._to_proto(reply).ByteSize()
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


def one_round(shapes: list[tuple[int, ...]], n_sites: int, secure: bool) -> dict[str, float]:
    """One fit round; returns wall, client and server seconds and bytes sent per site."""
    from flwr.app import Context, RecordDict
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    import client.app  # noqa: F401  installs our mask generator in the client mod
    import server.app  # noqa: F401  and in the server workflow

    class Site(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters, config):
            rng = np.random.default_rng(self.pid)
            return [rng.normal(0, 1e-3, s).astype(np.float32) for s in shapes], 20 + self.pid, {}

    apps = {1000 + pid: ClientApp(client_fn=(lambda pid: lambda ctx: Site(pid).to_client())(pid), mods=[secaggplus_mod])
            for pid in range(n_sites)}
    grid = _loopback_grid_cls()(apps)
    strategy = FedAvg(initial_parameters=ndarrays_to_parameters([np.zeros(s, np.float32) for s in shapes]),
                      fraction_evaluate=0.0, min_fit_clients=n_sites, min_available_clients=n_sites)
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(ctx, config=ServerConfig(num_rounds=1), strategy=strategy)
    fit_wf = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.66, clipping_range=0.5,
                                quantization_range=4194304, max_weight=1000.0) if secure else None
    t0 = time.perf_counter()
    DefaultWorkflow(fit_workflow=fit_wf)(grid, legacy)
    wall = time.perf_counter() - t0
    return {"wall": wall, "client_per_site": grid.client_seconds / n_sites, "server": wall - grid.client_seconds,
            "bytes_per_site": float(np.mean(list(grid.sent_bytes.values())))}


def run(quick: bool = False, n_sites: int = 3) -> list:
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
        full = SarcoModel(get_preset("full"))
    for ph in full_params:
        keys = set(full.exchange_keys(ph))
        full_params[ph] = sum(v.numel() for k, v in full.state_dict().items() if k in keys)

    results = {}
    sizes = {"demo ssl": demo_shapes}
    if not quick:
        sizes["4x demo (26.7 M)"] = _shapes(4 * p_demo)
    for label, shapes in sizes.items():
        plain = one_round(shapes, n_sites, secure=False)
        secure = one_round(shapes, n_sites, secure=True)
        results[label] = (sum(int(np.prod(s)) for s in shapes), plain, secure)
    n, plain, secure = results["demo ssl"]
    model_bytes = 4 * n
    rows.append(Row("3", f"SecAgg+ round / plain round, protocol only ({n_sites} sites, demo ssl {n / 1e6:.1f} M params)",
                    f"{secure['wall']:.2f} s vs {plain['wall']:.2f} s", "<= 1.3", secure["wall"] / plain["wall"],
                    "no training in either: the ratio of a whole round is item 2"))
    rows.append(Row("3", "SecAgg+ seconds per round: per site / server (demo ssl)",
                    f"{secure['client_per_site']:.2f} s / {secure['server']:.2f} s "
                    f"(plain {plain['client_per_site']:.2f} s / {plain['server']:.2f} s)"))
    rows.append(Row("3", "bytes sent per site per round / float32 model (demo ssl, SecAgg+ as shipped)",
                    f"{secure['bytes_per_site'] / 1e6:.1f} MB / {model_bytes / 1e6:.1f} MB", "<= 1.0",
                    secure["bytes_per_site"] / model_bytes,
                    "masked values as uint32 (common/secagg/transport.py); the rest is protobuf framing"))
    rows.append(Row("3", "plain round bytes sent per site / float32 model (demo ssl)",
                    f"{plain['bytes_per_site'] / 1e6:.1f} MB", "", plain["bytes_per_site"] / model_bytes))
    # Full model: the protocol's cost is linear in the parameter count (measured at two sizes when not quick).
    per_param = secure["wall"] / n
    per_site_pp = secure["client_per_site"] / n
    server_pp = secure["server"] / n
    scale_note = "extrapolated linearly from demo ssl"
    if "4x demo (26.7 M)" in results:
        n4, _, s4 = results["4x demo (26.7 M)"]
        per_param, per_site_pp, server_pp = s4["wall"] / n4, s4["client_per_site"] / n4, s4["server"] / n4
        scale_note = (f"extrapolated from a measured {n4 / 1e6:.1f} M-param round ({s4['wall']:.1f} s; "
                      f"{s4['wall'] / n4 * n / secure['wall']:.2f}x the per-param cost of demo ssl)")
    for ph, count in full_params.items():
        rows.append(Row("3", f"full {ph} ({count / 1e6:.0f} M params): SecAgg+ seconds per round, per site / server",
                        f"~{per_site_pp * count:.0f} s / ~{server_pp * count:.0f} s (round ~{per_param * count:.0f} s); "
                        f"sends ~{secure['bytes_per_site'] / model_bytes * 4 * count / 1e9:.2f} GB "
                        f"(float32 {4 * count / 1e9:.2f} GB)", "", None, scale_note))
    _profile_secagg(demo_shapes, n_sites, bench_dir() / "secagg_profile.txt")
    return rows


def _profile_secagg(shapes, n_sites: int, out) -> None:
    """cProfile of one SecAgg+ round (demo ssl size), top functions by own time, into ``out``."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    one_round(shapes, n_sites, secure=True)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    out.write_text(buf.getvalue())


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(r.what, "|", r.measured, "|", r.target, "|", f"{r.ratio:.3f}" if r.ratio is not None else "", "|", r.note)
