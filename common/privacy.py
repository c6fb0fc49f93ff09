"""Differential privacy of one site's update: the Gaussian mechanism and its exact accountant.

The mechanism runs at the site, before secure aggregation masks the update: the round's update (all
its arrays as one vector) is clipped to L2 norm ``C``, and Gaussian noise of standard deviation
``z * C`` is added to every value. Masking comes after, so whatever a coordinator does to the protocol,
what it can recover of one site is a noised update.

What is protected: the site's whole contribution to a round (site-level privacy; neighbouring
datasets differ by everything the site holds), which is what a coordinator that deviates from SecAgg+
could otherwise read. The accountant: ``T`` releases of a Gaussian mechanism with noise multiplier
``z`` compose to ``mu``-Gaussian DP with ``mu = sqrt(T) / z`` (Dong, Roth and Su 2019, Corollary 3.3),
whose exact (epsilon, delta) curve is ``delta(eps) = Phi(-eps/mu + mu/2) - exp(eps) Phi(-eps/mu - mu/2)``
(their Corollary 2.13; Balle and Wang 2018's analytic Gaussian mechanism); ``gaussian_epsilon``
solves it for epsilon. Every round a site trains in is one release, whether or not its update was
clipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def update_norm(arrays: Sequence[np.ndarray]) -> float:
    """L2 norm of all arrays as one vector (float64 accumulation)."""
    return math.sqrt(sum(float(np.square(np.asarray(a, dtype=np.float64)).sum()) for a in arrays))


def clip_and_noise(
    arrays: Sequence[np.ndarray], clip_norm: float, noise_multiplier: float, rng: np.random.Generator | None = None
) -> tuple[list[np.ndarray], float]:
    """Clip the update to ``clip_norm`` (L2, all arrays together), then add N(0, (noise_multiplier *
    clip_norm)^2) to every value; returns (the noised arrays in their dtypes, the norm before clipping).

    ``rng`` defaults to a generator seeded from the operating system: privacy noise must not be
    predictable, so never pass one seeded from anything the coordinator knows.
    """
    if clip_norm <= 0 or noise_multiplier < 0:
        raise ValueError(
            f"clip_and_noise: need clip_norm > 0 and noise_multiplier >= 0, got {clip_norm}, {noise_multiplier}"
        )
    rng = np.random.default_rng() if rng is None else rng
    norm = update_norm(arrays)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    sigma = noise_multiplier * clip_norm
    out = []
    for a in arrays:
        a = np.asarray(a)
        noised = a.astype(np.float64) * scale + rng.normal(0.0, sigma, a.shape)
        out.append(noised.astype(a.dtype))
    return out, norm


EPSILON_CAP = 1e12
"""Beyond this the accountant reports inf: the noise gives no guarantee worth a number."""


def _delta(eps: float, mu: float) -> float:
    """delta(eps) of mu-GDP; the second term in log space, where exp(eps) alone overflows for eps > 709."""
    from scipy.stats import norm

    return float(norm.cdf(-eps / mu + mu / 2) - math.exp(eps + norm.logcdf(-eps / mu - mu / 2)))


def gaussian_epsilon(releases: int, noise_multiplier: float, delta: float) -> float:
    """Epsilon of ``releases`` Gaussian releases with ``noise_multiplier`` at ``delta`` (exact, via mu-GDP).

    0 releases spend nothing; ``noise_multiplier = 0`` (no noise) gives inf.
    """
    if releases <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    if not 0 < delta < 1:
        raise ValueError(f"gaussian_epsilon: delta must be in (0, 1), got {delta}")
    mu = math.sqrt(releases) / noise_multiplier
    if _delta(0.0, mu) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while _delta(high, mu) > delta:
        high *= 2.0
        if high > EPSILON_CAP:
            return math.inf
    for _ in range(100):  # bisection: delta(eps) falls as eps grows
        mid = (low + high) / 2
        low, high = (mid, high) if _delta(mid, mu) > delta else (low, mid)
    return high
