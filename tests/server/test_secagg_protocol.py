"""Flower's SecAgg+ with our mask generator, run in-process: the aggregate is the weighted mean of the
sites' deltas within quantisation error, the server only sees masked vectors, and one site can drop.

The ServerApp's and ClientApp's modules are imported so that their mask-generator override is the
one in force (as in a real run); the transport is tests/server/loopback.py.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import LegacyContext, ServerConfig
from flwr.server.compat.app_utils import start_update_client_manager_thread  # noqa: F401  (used by the workflow)
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

import flower_compat
from common.secagg import mask_arrays


@pytest.fixture(autouse=True)
def _sarcofed_secagg() -> None:
    """SarcoFed's mask generator and uint32 transport on both ends, as the apps install them in a run."""
    flower_compat.install_secagg_client()
    flower_compat.install_secagg_server()


SHAPES = [(40, 25), (25,), (3, 3, 4)]
CLIP = 0.5


def _deltas(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 0.01, s)).astype(np.float32) for s in SHAPES]


class _Site(NumPyClient):
    def __init__(self, pid: int, n: int, fail: bool) -> None:
        self.pid, self.n, self.fail = pid, n, fail

    def fit(self, parameters, config):
        if self.fail:
            raise RuntimeError("out of memory at this site")
        return _deltas(self.pid), self.n, {"site": f"s{self.pid}"}


def _client_fn(pid: int, n: int, failing: bool, context):
    return _Site(pid, n, failing).to_client()


def _run(grid_cls, counts: list[int], failing: set[int]):
    apps = {}
    for pid, n in enumerate(counts):
        fn = partial(_client_fn, pid, n, pid in failing)
        apps[1000 + pid] = ClientApp(client_fn=fn, mods=[secaggplus_mod])
    grid = grid_cls(apps)
    strategy = FedAvg(
        initial_parameters=ndarrays_to_parameters([np.zeros(s, np.float32) for s in SHAPES]),
        fraction_evaluate=0.0,
        min_fit_clients=len(counts),
        min_available_clients=len(counts),
    )
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(ctx, config=ServerConfig(num_rounds=1), strategy=strategy)
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=len(counts), reconstruction_threshold=2, clipping_range=CLIP, max_weight=1000.0
        )
    )
    workflow(grid, legacy)
    out = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    return out, grid


def _weighted_mean(counts: list[int], sites: list[int]) -> list[np.ndarray]:
    total = sum(counts[i] for i in sites)
    return [sum(counts[i] * _deltas(i)[k].astype(np.float64) for i in sites) / total for k in range(len(SHAPES))]


def test_secagg_aggregate_equals_weighted_mean_within_quantisation(loopback_grid) -> None:
    counts = [30, 80, 12]
    got, _ = _run(loopback_grid, counts, failing=set())
    want = _weighted_mean(counts, [0, 1, 2])
    # Quantisation step of the mean: 2*clip/quantization_range, scaled by max_weight/sum(n) (see secaggplus_mod).
    step = 2 * CLIP / 4194304 * 1000.0 / sum(counts)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert np.max(np.abs(g - w)) < 3 * step


def test_server_receives_only_masked_vectors(loopback_grid) -> None:
    counts = [30, 80, 12]
    _, grid = _run(loopback_grid, counts, failing=set())
    masked = [
        m.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
        for m in grid.seen
        if m.has_content() and Key.MASKED_PARAMETERS in m.content.config_records.get(RECORD_KEY_CONFIGS, {})
    ]
    assert len(masked) == 3
    from flwr.common import bytes_to_ndarray

    for pid, blobs in enumerate(masked):
        vector = np.concatenate([bytes_to_ndarray(b).ravel().astype(np.float64) for b in blobs])
        # Payload carries [weight factor, arrays...]; compare the arrays part with the site's own delta.
        update = np.concatenate([d.ravel() for d in _deltas(pid)]).astype(np.float64)
        corr = max(abs(np.corrcoef(vector[-update.size :], update)[0, 1]) for _ in [0])
        assert corr < 0.1, f"masked vector of site {pid} correlates with its update ({corr:.3f})"
        # Uniform over the modulus: nothing of the small deltas' structure is left.
        assert vector.min() >= 0 and vector.max() < 2**32 and vector.std() > 1e9
        # On the wire as uint32 (common.secagg.transport): 4 bytes per value, not Flower's int64.
        assert all(bytes_to_ndarray(b).dtype == np.uint32 for b in blobs)
        assert sum(len(b) for b in blobs) < 4 * vector.size + 200 * len(blobs)
    # No reply carries the clear-text arrays of a fit.
    for m in grid.seen:
        if m.has_content():
            assert all(len(rec) == 0 for rec in m.content.array_records.values())


def test_secagg_tolerates_one_failing_site(loopback_grid) -> None:
    counts = [30, 80, 12, 25]
    got, _ = _run(loopback_grid, counts, failing={1})
    want = _weighted_mean(counts, [0, 2, 3])
    step = 2 * CLIP / 4194304 * 1000.0 / (30 + 12 + 25)
    for g, w in zip(got, want, strict=True):
        assert np.max(np.abs(g - w)) < 3 * step


def test_masks_use_every_bit_of_the_secret_and_match_client_and_server() -> None:
    import importlib

    from flwr.client.mod.secure_aggregation import secaggplus_mod as _  # noqa: F401

    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    wf = importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")
    assert mod.pseudo_rand_gen is mask_arrays and wf.pseudo_rand_gen is mask_arrays
    seed = bytes(range(32))
    base = mask_arrays(seed, 2**32, [(64,)])[0]
    for bit in range(256):
        flipped = bytearray(seed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        other = mask_arrays(bytes(flipped), 2**32, [(64,)])[0]
        assert np.mean(other == base) < 0.05, f"bit {bit} of the secret does not change the mask"
    # Flower's stock generator collapses these two different secrets onto one 32-bit seed: ours does not.
    a = bytes(4) * 8
    b = (b"\x01\x00\x00\x00" * 2) + bytes(4) * 6
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen as stock

    assert np.array_equal(stock(a, 2**32, [(8,)])[0], stock(b, 2**32, [(8,)])[0])
    assert not np.array_equal(mask_arrays(a, 2**32, [(8,)])[0], mask_arrays(b, 2**32, [(8,)])[0])


@pytest.mark.parametrize("num_range", [2**16, 2**32, 10**6])
def test_mask_values_are_uniform_in_range(num_range: int) -> None:
    m = mask_arrays(b"k" * 32, num_range, [(20000,), ()])
    # uint32 for a power-of-two modulus up to 2**32 (wrap-around arithmetic stays exact), else Flower's int64.
    assert m[1].shape == () and m[0].dtype == (np.uint32 if num_range in (2**16, 2**32) else np.int64)
    assert m[0].min() >= 0 and m[0].max() < num_range
    assert abs(m[0].mean() / num_range - 0.5) < 0.02


def test_uint32_masks_cancel_modulo_the_modulus() -> None:
    # Flower's arithmetic on the site (x + private + pairwise, & (mod - 1)) and on the server
    # (sum of sites - masks, & (mod - 1)) with uint32 operands gives back the plain sum.
    mod = 2**32
    rng = np.random.default_rng(3)
    x = [rng.integers(0, 2**22, 1000, dtype=np.int64) for _ in range(3)]
    private = [mask_arrays(bytes([i]) * 32, mod, [(1000,)])[0] for i in range(3)]
    pair = {(0, 1): b"a" * 32, (0, 2): b"b" * 32, (1, 2): b"c" * 32}
    sent = []
    for i in range(3):
        v = x[i].astype(np.uint32) + private[i]
        for (a, b), key in pair.items():
            if i in (a, b):
                pm = mask_arrays(key, mod, [(1000,)])[0]
                v = v + pm if i == max(a, b) else v - pm
        assert v.dtype == np.uint32
        sent.append(v & (mod - 1))
    total = (sent[0].astype(np.int64) + sent[1] + sent[2] - private[0] - private[1] - private[2]) & (mod - 1)
    assert np.array_equal(total, x[0] + x[1] + x[2])
