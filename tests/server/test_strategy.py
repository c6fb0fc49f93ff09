"""The phase strategy: what a training message carries, sites that share a name, the per-round line."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.common import Code, EvaluateRes, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager

from common.secagg import pack, unpack
from server.recorder import Recorder
from server.run_folder import RunFolder
from server.strategy import make_strategy


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel

    torch.manual_seed(0)
    return SarcoModel(get_preset("tiny"))


def _strategy(model, phase: str, tmp_path: Path):
    from common.models.checkpoint import save_checkpoint
    from common.models.sarco import context_keys, get_arrays, get_weights

    recorder = Recorder(
        RunFolder.create(tmp_path / "runs", "tiny"), model, lambda m, path, ph, r: save_checkpoint(path, m, phase=ph)
    )
    strategy = make_strategy(
        "fedavg",
        phase=phase,
        first_round=1,
        local_epochs=1,
        seed=0,
        arrays=get_weights(model, phase),
        recorder=recorder,
        min_sites=2,
        proximal_mu=0.0,
        last_round=3,
        context_arrays=get_arrays(model, context_keys(model, phase)),
    )
    return strategy, recorder


def _fit(site: str, arrays: list[np.ndarray], n: int = 10) -> tuple[SimpleNamespace, FitRes]:
    deltas = [pack([np.full_like(a, 0.01) for a in arrays])]
    return SimpleNamespace(node_id=hash(site) % 1000), FitRes(
        Status(Code.OK, ""), ndarrays_to_parameters(deltas), n, {"site": site, "loss": 0.5}
    )


def test_a_classifier_round_carries_the_encoder_it_trains_on(tiny_model, tmp_path: Path) -> None:
    from common.models.sarco import context_keys, exchange_keys

    strategy, _ = _strategy(tiny_model, "cls", tmp_path)
    manager = SimpleClientManager()
    manager.register(SimpleNamespace(cid="a", node_id=1))  # type: ignore[arg-type]  # a stand-in with the two fields used
    manager.register(SimpleNamespace(cid="b", node_id=2))  # type: ignore[arg-type]  # a stand-in with the two fields used
    [(_, fit_ins), *_] = strategy.configure_fit(1, ndarrays_to_parameters([]), manager)
    [sent] = parameters_to_ndarrays(fit_ins.parameters)  # one vector: Flower moves each array separately
    state = tiny_model.state_dict()
    keys = [*context_keys(tiny_model, "cls"), *exchange_keys(tiny_model, "cls")]
    assert len(context_keys(tiny_model, "cls")) > 0
    for key, array in zip(keys, unpack(sent, [tuple(state[k].shape) for k in keys]), strict=True):
        np.testing.assert_array_equal(array, state[key].numpy())


def test_two_sites_with_one_name_fail_the_round(tiny_model, tmp_path: Path, caplog) -> None:
    strategy, recorder = _strategy(tiny_model, "seg", tmp_path)
    before = [a.copy() for a in strategy.global_arrays]
    results = [_fit("hospital", before), _fit("hospital", before), _fit("other", before)]
    with caplog.at_level(logging.ERROR, logger="flwr"):
        params, _ = strategy.aggregate_fit(1, results, [])
    assert params is None
    for a, b in zip(strategy.global_arrays, before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any("share a name (hospital)" in f["reason"] for f in recorder.folder.failures)
    assert "share a name (hospital)" in caplog.text


def test_evaluations_under_one_name_are_not_merged(tiny_model, tmp_path: Path) -> None:
    strategy, recorder = _strategy(tiny_model, "seg", tmp_path)
    strategy.aggregate_fit(1, [_fit("a", strategy.global_arrays), _fit("b", strategy.global_arrays)], [])
    summary = {"n": 5, "dice_mean": 0.9, "dice_mean_n": 5, "site": "a"}
    results = [(SimpleNamespace(node_id=i), EvaluateRes(Status(Code.OK, ""), 0.1, 5, dict(summary))) for i in (1, 2)]
    strategy.aggregate_evaluate(1, results, [])
    rows = {r["site"] for r in recorder.last_rows}
    assert rows == {"a", "b", "pooled"}
    pooled = next(r for r in recorder.last_rows if r["site"] == "pooled")
    assert pooled.get("n", 0) in (0, None) or np.isnan(pooled.get("dice_mean", np.nan))
    assert any(f["stage"] == "evaluate" and "share a name (a)" in f["reason"] for f in recorder.folder.failures)


def test_a_round_whose_every_count_is_hidden_is_recorded_not_a_crash(tiny_model, tmp_path: Path) -> None:
    """Sites with fewer than 5 holdout cases send n = 0 (a hidden count weighs nothing): Flower's weighted
    loss would divide by zero."""
    strategy, recorder = _strategy(tiny_model, "l3", tmp_path)
    strategy.aggregate_fit(1, [_fit("a", strategy.global_arrays), _fit("b", strategy.global_arrays)], [])
    hidden = {"l3_n": float("nan"), "suppressed_metrics": "l3_n"}
    results = [
        (SimpleNamespace(node_id=i), EvaluateRes(Status(Code.OK, ""), 0.0, 0, {**hidden, "site": s}))
        for i, s in enumerate("ab")
    ]
    assert strategy.aggregate_evaluate(1, results, []) == (None, {})
    assert {r["site"] for r in recorder.last_rows} == {"a", "b", "pooled"}


def test_each_round_logs_one_progress_line(tiny_model, tmp_path: Path, caplog) -> None:
    strategy, _ = _strategy(tiny_model, "seg", tmp_path)
    strategy.aggregate_fit(
        2, [_fit("a", strategy.global_arrays), _fit("b", strategy.global_arrays)], [RuntimeError("x")]
    )
    results = [
        (
            SimpleNamespace(node_id=i),
            EvaluateRes(
                Status(Code.OK, ""),
                0.1,
                5,
                {
                    "n": 5,
                    "dice_mean": 0.8 + i / 100,
                    "dice_mean_n": 5,
                    "sma_abs_pct_err_mean": 4.0,
                    "sma_abs_pct_err_mean_n": 5,
                    "site": s,
                },
            ),
        )
        for i, s in enumerate("ab")
    ]
    with caplog.at_level(logging.INFO, logger="flwr"):
        strategy.aggregate_evaluate(2, results, [])
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sarcofed [")]
    assert line.startswith("sarcofed [seg 2/3] 2 sites trained, 1 failed, 2 evaluated, ")
    assert line.endswith("| pooled Dice 0.805, SMA error 4.0%")


def test_too_few_sites_is_a_clear_error_after_the_configured_wait(tiny_model, tmp_path: Path) -> None:
    import time

    from server.strategy import TooFewSitesError

    strategy, _ = _strategy(tiny_model, "seg", tmp_path)
    strategy.min_sites_wait_s = 0.5
    manager = SimpleClientManager()
    manager.register(SimpleNamespace(cid="a", node_id=1))  # type: ignore[arg-type]  # a stand-in with the two fields used
    t0 = time.monotonic()
    with pytest.raises(TooFewSitesError, match=r"1 sites connected after waiting 0.5 s; run config min-sites is 2"):
        strategy.configure_fit(1, ndarrays_to_parameters([]), manager)
    assert time.monotonic() - t0 < 5


def test_a_full_disk_stops_the_round_and_keeps_the_last_good_checkpoint(tiny_model, tmp_path: Path) -> None:
    """The kernel's own ENOSPC (/dev/full) under the checkpoint being written."""
    from common.errors import CheckpointError
    from common.models.checkpoint import load_checkpoint

    strategy, recorder = _strategy(tiny_model, "seg", tmp_path)
    strategy.aggregate_fit(1, [_fit("a", strategy.global_arrays), _fit("b", strategy.global_arrays)], [])
    good = recorder.folder.checkpoint_path(1, "seg", 1)
    assert good.is_file()
    full = recorder.folder.checkpoint_path(2, "seg", 2)
    full.with_name(full.name + ".tmp").symlink_to("/dev/full")
    with pytest.raises(CheckpointError, match="earlier checkpoints are intact"):
        strategy.aggregate_fit(2, [_fit("a", strategy.global_arrays), _fit("b", strategy.global_arrays)], [])
    assert not full.exists() and not full.with_name(full.name + ".tmp").exists()
    load_checkpoint(good)  # intact
