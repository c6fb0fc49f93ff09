"""The vectorised SecAgg+ quantiser rounds like Flower's: to a neighbouring integer, unbiased, in range."""

import numpy as np
import pytest
from flwr.common.secure_aggregation.quantization import quantize as flower_quantize

from common.secagg.quantize import stochastic_quantize

CLIP, Q = 0.5, 4194304


def _exact(x: np.ndarray, clip: float, q: int) -> np.ndarray:
    return (np.clip(x.astype(np.float64), -clip, clip) + clip) * (q / (2 * clip))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target_range", [Q, 1001])
def test_values_are_a_neighbouring_integer_in_range(dtype, target_range: int) -> None:
    rng = np.random.default_rng(0)
    x = [
        rng.normal(0, 0.2, (300, 7)).astype(dtype),
        np.array(0.3, dtype=dtype),
        np.array([-9.0, 9.0, -CLIP, CLIP], dtype),
    ]
    got = stochastic_quantize(x, CLIP, target_range, rng=np.random.default_rng(1))
    for g, a in zip(got, x, strict=True):
        assert g.dtype == np.uint32 and g.shape == a.shape
        exact = _exact(a, CLIP, target_range)
        # float32 input: the scaled value carries float32 rounding (as in Flower's own float32 path).
        slack = 1e-6 * target_range if dtype == np.float32 else 1e-9
        assert np.all(g >= np.floor(exact - slack)) and np.all(g <= np.ceil(exact + slack))
        assert g.min() >= 0 and g.max() <= target_range
    assert list(got[2]) == [0, target_range, 0, target_range]


def test_rounding_is_unbiased_like_flowers() -> None:
    # 0.3 of the way between two quantisation levels: both quantisers round up 30% of the time.
    step = 2 * CLIP / Q
    x = np.full(400_000, 1e-3 + 0.3 * step - (1e-3 % step), dtype=np.float64)
    exact = _exact(x, CLIP, Q)[0]
    ours = stochastic_quantize([x], CLIP, Q, rng=np.random.default_rng(2))[0].astype(np.float64)
    np.random.seed(2)
    theirs = flower_quantize([x], CLIP, Q)[0].astype(np.float64)
    for got in (ours, theirs):
        assert set(np.unique(got)) <= {np.floor(exact), np.ceil(exact)}
        assert abs(got.mean() - exact) < 0.005


def test_float32_deltas_quantise_without_bias() -> None:
    # Typical weight deltas: the mean of the dequantised values matches the mean of the deltas.
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1e-3, 1_000_000).astype(np.float32)
    q = stochastic_quantize([x], CLIP, Q, rng=np.random.default_rng(5))[0].astype(np.float64)
    back = q * (2 * CLIP / Q) - CLIP
    step = 2 * CLIP / Q
    assert np.max(np.abs(back - x)) <= step * (1 + 1e-3)
    assert abs(np.mean(back - x)) < 0.01 * step


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="clipping_range"):
        stochastic_quantize([np.zeros(2)], 0.0, Q)
    with pytest.raises(ValueError, match="target_range"):
        stochastic_quantize([np.zeros(2)], CLIP, 2**32)


def test_the_same_update_rounds_the_same_way_and_stays_unbiased() -> None:
    """Repeated runs with one seed give one model; the rounding is still up with probability frac(y)."""
    from common.secagg.quantize import reproducible_quantize

    x = [np.random.default_rng(6).normal(0, 1e-3, 200_000).astype(np.float32), np.float32(0.1) * np.ones((3, 3))]
    a, b = reproducible_quantize(x, CLIP, Q), reproducible_quantize([v.copy() for v in x], CLIP, Q)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    other = reproducible_quantize([x[0] + np.float32(1e-4), x[1]], CLIP, Q)
    assert not np.array_equal(other[1], a[1]) or not np.array_equal(other[0], a[0])
    scale = Q / (2 * CLIP)
    mean_error = float((a[0].astype(np.float64) - Q / 2 - x[0].astype(np.float64) * scale).mean())
    assert abs(mean_error) < 0.01  # unbiased: E[q] = y (the error of 200k values averages out)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_not_wrapped(bad: float) -> None:
    x = np.zeros(10, np.float32)
    x[3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        stochastic_quantize([x], CLIP, Q)
