"""Learning rate across rounds: the server decays it, and a resumed run continues the same curve."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from server.strategy import make_strategy, round_lr_scale


class _NullRecorder:
    def after_fit(self, *args, **kwargs) -> None: ...

    def after_evaluate(self, *args, **kwargs) -> None: ...


def _strategy(first_round: int, last_round: int):
    return make_strategy(
        "fedavg",
        phase="seg",
        first_round=first_round,
        local_epochs=2,
        seed=0,
        arrays=[np.zeros(3, np.float32)],
        recorder=_NullRecorder(),
        min_sites=2,
        proximal_mu=0.0,
        last_round=last_round,
    )


def test_scale_falls_from_one_to_the_floor_monotonically() -> None:
    scales = [round_lr_scale(r, 8) for r in range(1, 9)]
    assert scales[0] == pytest.approx(1.0) and scales[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(scales))
    assert round_lr_scale(1, 1) == 1.0  # a one-round phase trains at the preset's rate


def test_sites_are_sent_the_round_scale_and_a_resume_continues_it() -> None:
    fresh, resumed = _strategy(1, 8), _strategy(5, 8)  # resumed after round 4 of 8
    sent = [fresh.on_fit_config_fn(r)["lr-scale"] for r in range(1, 9)]
    assert sent == [round_lr_scale(r, 8) for r in range(1, 9)]
    assert [resumed.on_fit_config_fn(r)["lr-scale"] for r in range(1, 5)] == sent[4:]
    assert fresh.on_fit_config_fn(3)["round"] == 3 and resumed.on_fit_config_fn(1)["round"] == 5
