"""The Gaussian mechanism on a site's update and its exact accountant."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.privacy import _delta, clip_and_noise, gaussian_epsilon, update_norm


def test_clipping_bounds_the_norm_and_keeps_small_updates() -> None:
    big = [np.full((10, 10), 1.0, np.float32), np.full(5, 2.0, np.float32)]
    clipped, norm = clip_and_noise(big, clip_norm=1.0, noise_multiplier=0.0)
    assert norm == pytest.approx(math.sqrt(100 + 20)) and update_norm(clipped) == pytest.approx(1.0, rel=1e-6)
    assert clipped[0].dtype == np.float32
    small = [np.full(4, 0.1, np.float32)]
    same, _ = clip_and_noise(small, clip_norm=1.0, noise_multiplier=0.0)
    np.testing.assert_allclose(same[0], small[0])


def test_noise_has_the_promised_spread_and_is_fresh_each_time() -> None:
    zeros = [np.zeros(200_000, np.float32)]
    a, _ = clip_and_noise(zeros, clip_norm=0.5, noise_multiplier=2.0)
    b, _ = clip_and_noise(zeros, clip_norm=0.5, noise_multiplier=2.0)
    assert float(a[0].std()) == pytest.approx(1.0, rel=0.01)  # z * C
    assert not np.array_equal(a[0], b[0])


def test_epsilon_solves_the_exact_gaussian_curve() -> None:
    eps = gaussian_epsilon(releases=4, noise_multiplier=2.0, delta=1e-5)  # mu = sqrt(4) / 2 = 1
    assert _delta(eps, 1.0) == pytest.approx(1e-5, rel=1e-3)
    rdp_bound = 4 / (2 * 2.0**2) + math.sqrt(2 * 4 * math.log(1e5)) / 2.0  # Renyi-DP conversion: looser
    assert 0 < eps < rdp_bound


def test_epsilon_grows_with_rounds_and_falls_with_noise() -> None:
    assert gaussian_epsilon(0, 1.0, 1e-5) == 0.0
    assert gaussian_epsilon(1, 0.0, 1e-5) == math.inf
    by_rounds = [gaussian_epsilon(t, 1.0, 1e-5) for t in (1, 2, 8)]
    assert by_rounds == sorted(by_rounds)
    assert gaussian_epsilon(8, 4.0, 1e-5) < gaussian_epsilon(8, 1.0, 1e-5)


@pytest.mark.parametrize("noise_multiplier", [1e-4, 1e-3, 1e-2])
def test_little_noise_gives_a_large_epsilon_not_an_overflow(noise_multiplier: float) -> None:
    """exp(eps) overflows a float past eps = 709: the accountant must still answer (as the demo's DP policy needs)."""
    eps = [gaussian_epsilon(t, noise_multiplier, 1e-5) for t in (1, 6)]
    assert 709 < eps[0] < eps[1] < math.inf
    assert _delta(eps[1], math.sqrt(6) / noise_multiplier) == pytest.approx(1e-5, rel=1e-2)
