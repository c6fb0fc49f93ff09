"""Deltas: what a site sends is local - global on float arrays only; the server adds the mean back."""

from __future__ import annotations

import numpy as np
import pytest

from common.secagg import apply_delta, float_positions, weight_delta


def test_delta_roundtrip_keeps_counters() -> None:
    glob = [np.ones((2, 2), np.float32), np.array(7, np.int64), np.zeros(3, np.float32)]
    local = [np.full((2, 2), 1.5, np.float32), np.array(9, np.int64), np.arange(3, dtype=np.float32)]
    delta = weight_delta(local, glob)
    assert float_positions(glob) == [0, 2] and len(delta) == 2
    new = apply_delta(glob, delta)
    np.testing.assert_allclose(new[0], local[0])
    np.testing.assert_allclose(new[2], local[2])
    assert new[1] == 7 and new[1].dtype == np.int64  # counters stay at the global value


def test_mismatched_models_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        weight_delta([np.zeros(3, np.float32)], [np.zeros(4, np.float32)])
