"""Flower's SecAgg+ with SarcoFed's guards, run in-process: a malformed masked vector drops its site (not
the ServerApp), and a round that secure aggregation halts is reported as aborted."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

import flower_compat
from common.secagg import pack, unpack
from server.secure_workflow import GuardedSecAggPlusWorkflow
from server.strategy import make_strategy


@pytest.fixture(autouse=True)
def _sarcofed_secagg() -> None:
    """SarcoFed's mask generator and uint32 transport on both ends, as the apps install them in a run."""
    flower_compat.install_secagg_client()
    flower_compat.install_secagg_server()


SHAPES = [(40, 25), (25,), (3, 3, 4)]
CLIP = 0.5


def _deltas(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.01, s).astype(np.float32) for s in SHAPES]


class _Site(NumPyClient):
    def __init__(self, pid: int, n: int) -> None:
        self.pid, self.n = pid, n

    def fit(self, parameters, config):
        return [pack(_deltas(self.pid))], self.n, {"site": f"s{self.pid}", "loss": 0.1}


def _client_fn(pid: int, n: int):
    """The client_fn of site PID with N training examples (a function of its own, so each site keeps its PID)."""
    return lambda ctx: _Site(pid, n).to_client()


def _truncate_masked_vector(msg: Message, ctxt: Context, call_next) -> Message:
    """A hostile or broken node: its masked vector is one value short."""
    from flwr.common import bytes_to_ndarray, ndarray_to_bytes

    reply = call_next(msg, ctxt)
    configs = reply.content.config_records.get(RECORD_KEY_CONFIGS) if reply.has_content() else None
    if configs is not None and Key.MASKED_PARAMETERS in configs:
        *head, last = list(configs[Key.MASKED_PARAMETERS])
        configs[Key.MASKED_PARAMETERS] = [*head, ndarray_to_bytes(bytes_to_ndarray(last)[:-1])]
    return reply


class _Recorder:
    """Keeps what the strategy reports (server.strategy.RoundRecorder)."""

    def __init__(self) -> None:
        self.fits: list[tuple] = []
        self.aborts: list[tuple] = []

    def after_fit(self, phase, phase_round, arrays, fits, failures):
        self.fits.append((phase_round, fits, failures))

    def after_evaluate(self, phase, phase_round, summaries, failures):
        return {}

    def after_abort(self, phase, phase_round, reason, failures):
        self.aborts.append((phase_round, reason, failures))


def _run(grid_cls, counts: list[int], hostile: set[int], threshold: int):
    apps = {}
    for pid, n in enumerate(counts):
        mods = [_truncate_masked_vector, secaggplus_mod] if pid in hostile else [secaggplus_mod]
        apps[1000 + pid] = ClientApp(client_fn=_client_fn(pid, n), mods=mods)
    grid = grid_cls(apps)
    recorder = _Recorder()
    strategy = make_strategy(
        "fedavg",
        phase="ssl",
        first_round=1,
        local_epochs=1,
        seed=0,
        arrays=[np.zeros(s, np.float32) for s in SHAPES],
        recorder=recorder,
        min_sites=len(counts),
        proximal_mu=0.0,
        min_sites_wait_s=5,
    )
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(ctx, config=ServerConfig(num_rounds=1), strategy=strategy)
    workflow = GuardedSecAggPlusWorkflow(
        num_shares=len(counts), reconstruction_threshold=threshold, clipping_range=CLIP, max_weight=1000.0
    )
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
    return legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays(), recorder, strategy


def test_a_malformed_masked_vector_drops_its_site_not_the_round(loopback_grid) -> None:
    counts = [30, 80, 12, 25]
    got, recorder, _ = _run(loopback_grid, counts, hostile={1}, threshold=3)
    [(_, fits, failures)] = recorder.fits
    assert sorted(f["site"] for f in fits) == ["s0", "s2", "s3"]
    assert any("dropped by the server" in f and "shapes" in f for f in failures)
    got = unpack(got[0], SHAPES)
    total = 30 + 12 + 25
    want = [sum(counts[i] * _deltas(i)[k].astype(np.float64) for i in (0, 2, 3)) / total for k in range(len(SHAPES))]
    step = 2 * CLIP / 4194304 * 1000.0 / total
    for g, w in zip(got, want, strict=True):
        assert np.max(np.abs(g - w)) < 3 * step  # the global update is the others' weighted mean


def test_a_round_that_secure_aggregation_halts_is_reported(loopback_grid) -> None:
    got, recorder, strategy = _run(loopback_grid, [30, 80, 12], hostile={0, 1}, threshold=2)
    assert recorder.fits == []
    [(round_, reason, failures)] = recorder.aborts
    assert round_ == 1 and "halted at the collect masked vectors stage" in reason
    assert len(failures) == 2 and 1 in strategy.aborted
    for g in got:  # the global model is unchanged
        assert not np.any(g)


def _gone_at_setup(msg: Message, ctxt: Context, call_next) -> Message:
    raise ConnectionError("node lost before it sent its keys")


def test_a_site_lost_before_sharing_its_keys_does_not_end_the_round(loopback_grid) -> None:
    """Flower 1.42 listed such a node as dropped at unmasking, where no site holds a share of its key."""
    counts = [30, 80, 12, 25]
    apps = {}
    for pid, n in enumerate(counts):
        mods = [_gone_at_setup] if pid == 3 else [secaggplus_mod]
        apps[1000 + pid] = ClientApp(client_fn=_client_fn(pid, n), mods=mods)
    grid = loopback_grid(apps)
    recorder = _Recorder()
    strategy = make_strategy(
        "fedavg",
        phase="ssl",
        first_round=1,
        local_epochs=1,
        seed=0,
        arrays=[np.zeros(s, np.float32) for s in SHAPES],
        recorder=recorder,
        min_sites=4,
        proximal_mu=0.0,
        min_sites_wait_s=5,
    )
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(ctx, config=ServerConfig(num_rounds=1), strategy=strategy)
    DefaultWorkflow(
        fit_workflow=GuardedSecAggPlusWorkflow(
            num_shares=4, reconstruction_threshold=3, clipping_range=CLIP, max_weight=1000.0
        )
    )(grid, legacy)
    assert recorder.aborts == []
    [(_, fits, failures)] = recorder.fits
    assert sorted(f["site"] for f in fits) == ["s0", "s1", "s2"]
    assert any("node 1003" in f and "node lost" in f for f in failures), failures
    got = unpack(legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()[0], SHAPES)
    want = [sum(counts[i] * _deltas(i)[k].astype(np.float64) for i in range(3)) / 122 for k in range(len(SHAPES))]
    for g, w in zip(got, want, strict=True):
        assert np.max(np.abs(g - w)) < 3 * (2 * CLIP / 4194304 * 1000.0 / 122)


def test_a_site_lost_at_setup_and_another_lost_at_training_still_make_the_round(loopback_grid) -> None:
    """One site gone before sharing keys, one gone after: the dropped one's masks are rebuilt without the first."""
    counts = [30, 80, 12, 25, 40]
    apps = {}
    for pid, n in enumerate(counts):
        mods = [_gone_at_setup] if pid == 3 else [secaggplus_mod]
        apps[1000 + pid] = ClientApp(client_fn=_client_fn(pid, n), mods=mods)
    apps[1004] = ClientApp(client_fn=lambda ctx: _Failing().to_client(), mods=[secaggplus_mod])
    grid = loopback_grid(apps)
    recorder = _Recorder()
    strategy = make_strategy(
        "fedavg",
        phase="ssl",
        first_round=1,
        local_epochs=1,
        seed=0,
        arrays=[np.zeros(s, np.float32) for s in SHAPES],
        recorder=recorder,
        min_sites=5,
        proximal_mu=0.0,
        min_sites_wait_s=5,
    )
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(ctx, config=ServerConfig(num_rounds=1), strategy=strategy)
    DefaultWorkflow(
        fit_workflow=GuardedSecAggPlusWorkflow(
            num_shares=5, reconstruction_threshold=3, clipping_range=CLIP, max_weight=1000.0
        )
    )(grid, legacy)
    assert recorder.aborts == []
    [(_, fits, _)] = recorder.fits
    assert sorted(f["site"] for f in fits) == ["s0", "s1", "s2"]
    got = unpack(legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()[0], SHAPES)
    want = [sum(counts[i] * _deltas(i)[k].astype(np.float64) for i in range(3)) / 122 for k in range(len(SHAPES))]
    for g, w in zip(got, want, strict=True):
        assert np.max(np.abs(g - w)) < 3 * (2 * CLIP / 4194304 * 1000.0 / 122)


class _Failing(NumPyClient):
    def fit(self, parameters, config):
        raise RuntimeError("training failed at this site")


class _Hostile(NumPyClient):
    """A site running altered code: its update is a million times too large (its own guards are gone)."""

    def fit(self, parameters, config):
        return [pack(_deltas(9)) * np.float32(1e6)], 40, {"site": "hostile", "loss": 0.1}


def test_a_hostile_huge_update_aborts_the_round_instead_of_moving_the_model(loopback_grid) -> None:
    """SecAgg+ hides which site it was, but clips each value it adds: the sum's norm gives it away."""
    apps = {1000 + pid: ClientApp(client_fn=_client_fn(pid, 30), mods=[secaggplus_mod]) for pid in range(3)}
    apps[1003] = ClientApp(client_fn=lambda ctx: _Hostile().to_client(), mods=[secaggplus_mod])
    grid = loopback_grid(apps)
    recorder = _Recorder()
    strategy = make_strategy(
        "fedavg",
        phase="ssl",
        first_round=1,
        local_epochs=1,
        seed=0,
        arrays=[np.zeros(s, np.float32) for s in SHAPES],
        recorder=recorder,
        min_sites=4,
        proximal_mu=0.0,
        min_sites_wait_s=5,
        max_update_norm=10.0,
    )
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(ctx, config=ServerConfig(num_rounds=1), strategy=strategy)
    DefaultWorkflow(
        fit_workflow=GuardedSecAggPlusWorkflow(
            num_shares=4, reconstruction_threshold=3, clipping_range=CLIP, max_weight=1000.0
        )
    )(grid, legacy)
    [(round_, reason, _)] = recorder.aborts
    assert "above max-update-norm 10" in reason and recorder.fits == []
    assert not np.any(strategy.global_arrays[0])  # the global model did not move
