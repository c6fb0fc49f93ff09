"""Stochastic quantisation for SecAgg+, vectorised in float32, returning uint32.

Why: Flower 1.42's ``quantize`` (flwr/common/secure_aggregation/quantization.py) clips, shifts and
scales in float32, rounds up, draws a float64 ``np.random.rand`` array of the model's size and
compares it with ``ceil(x) - x`` in float64, then returns int32; the int32 values plus the masks
then widen to int64 for every later step. On the demo model that was about a fifth of a site's
SecAgg+ CPU time (cProfile of simulations/bench_secagg.py). Here the same rule runs in the input's
precision: ``floor(y)``, plus one where ``u < y - floor(y)`` with ``u`` uniform in [0, 1) (float32 from numpy's
PCG64), so up with probability ``frac(y)``: unbiased, and the fraction is exact in floating point
(unlike ``y + u``). The scaled value ``y`` stays centred on 0 (``clip(x) * q``; the shift
``quantization_range / 2`` is added after rounding, exactly), so float32 resolves small weight deltas
far finer than Flower's float32 value shifted up by ``2**21`` first. The result is uint32: with
uint32 masks (``common.secagg.mask_prg``) Flower's mask additions then run in uint32, whose
wrap-around at 2**32 is exact modulo any power-of-two modulus up to 2**32.

Like the other modules here this one does not import Flower; ``common.secagg.transport`` installs it
into Flower's client mod.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def stochastic_quantize(
    parameters: Sequence[np.ndarray], clipping_range: float, target_range: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Flower's ``quantize``: each value to an integer in ``[0, target_range]``, rounded stochastically.

    Parameters
    ----------
    parameters : sequence of np.ndarray
        Floating arrays (float32 stays float32, anything else is computed in float64).
    clipping_range : float
        Values are clipped to ``[-clipping_range, clipping_range]`` first (> 0).
    target_range : int
        ``-clipping_range`` maps to 0 and ``+clipping_range`` to ``target_range`` (0 < target_range < 2**32).
    rng : np.random.Generator or None (default: None)
        Source of the rounding noise; None draws a fresh generator seeded from the OS.

    Returns
    -------
    list of np.ndarray
        uint32 arrays with the input shapes; ``E[q] = (clip(x) + c) * target_range / (2 c)``.
    """
    if clipping_range <= 0:
        raise ValueError(f"stochastic_quantize: clipping_range must be > 0, got {clipping_range}")
    if not 0 < target_range < 2**32:
        raise ValueError(f"stochastic_quantize: target_range must be in (0, 2**32), got {target_range}")
    rng = np.random.default_rng() if rng is None else rng
    scale = target_range / (2 * clipping_range)
    # (clip(x) + c) * scale = clip(x * scale, -target_range / 2, target_range / 2) + target_range / 2.
    # Clipping after scaling bounds y exactly (target_range / 2 is exact in float32 up to 2**24 and
    # in float64), so floor(y) + up stays in [-target_range / 2, target_range / 2] with no second clip.
    # The integer part of the shift is added after rounding (exact), the half of an odd range before.
    int_shift, half = divmod(target_range, 2)
    bound = target_range / 2
    out: list[np.ndarray] = []
    for arr in parameters:
        arr = np.asarray(arr)
        dtype = np.float32 if arr.dtype == np.float32 and target_range <= 2**24 else np.float64
        # Flat: numpy returns scalars, not arrays, for 0-d inputs. The product is a new array.
        y = np.multiply(arr.reshape(-1), scale, dtype=dtype)
        if not np.isfinite(y).all():  # NaN cast to uint32 is undefined: 0 on one run, 2**31 on the next
            raise ValueError("stochastic_quantize: NaN or infinite values cannot be quantised; the update is refused")
        np.clip(y, -bound, bound, out=y)
        if half:
            y += dtype(0.5)
        low = np.floor(y)
        y -= low  # the fraction, exact in floating point (no rounding as in y + u)
        low += rng.random(y.shape, dtype=dtype) < y  # up with probability frac(y): Flower's rule
        low += dtype(int_shift)
        out.append(low.astype(np.uint32).reshape(arr.shape))
    return out


def reproducible_quantize(
    parameters: Sequence[np.ndarray], clipping_range: float, target_range: int
) -> list[np.ndarray]:
    """:func:`stochastic_quantize` with its rounding noise seeded by the content of ``parameters``.

    The same update always rounds the same way, so a run repeated with the same configuration and seed
    (a simulation, or the same federation deployed) gives the same global model, and runs can be compared
    round by round. Each value still rounds up with probability ``frac(y)`` (SHA-256 of the values seeds
    PCG64), so the sum stays unbiased; the rounding noise was never what protects an update (the masks
    are), and anything meant to be secret noise (differential privacy) must not use this.
    """
    digest = hashlib.sha256()
    for arr in parameters:
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # ndarray is a buffer; numpy's stubs do not say so
    rng = np.random.default_rng(int.from_bytes(digest.digest(), "little"))
    return stochastic_quantize(parameters, clipping_range, target_range, rng=rng)
