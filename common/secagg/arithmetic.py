"""The server's SecAgg+ unmasking arithmetic without model-sized int64 and float64 copies.

Why: with uint32 on the wire (``common.secagg.transport``), Flower 1.42's workflow would add the
sites' uint32 vectors in uint32, which wraps at 2**32 and is exact only for a modulus that divides
2**32. Widening each site's vector to int64 on receipt is exact for any modulus but copies every
vector once more (at 91 M parameters, about 1 s of the server's 5 s per round). Here Flower's
``parameters_addition`` / ``parameters_subtraction`` compute integer operands in int64 as numpy reads
them (``np.add(a, b, dtype=np.int64)``): the same exact sums, with no copy first. ``dequantize`` is
Flower's, with the scaling done in place (one float64 array per model array instead of three); the
values are bit-for-bit Flower's.

Pure numpy; ``flower_compat.secagg`` installs these into Flower's
``secaggplus_workflow`` module, where they are only ever applied to masked vectors and masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _exact(ufunc: np.ufunc, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return ufunc(a, b, dtype=np.int64)
    return ufunc(a, b)


def exact_addition(parameters1: Sequence[np.ndarray], parameters2: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Flower's ``parameters_addition``; integer arrays are added in int64 (no wrap at 2**32)."""
    return [_exact(np.add, a, b) for a, b in zip(parameters1, parameters2, strict=True)]


def exact_subtraction(parameters1: Sequence[np.ndarray], parameters2: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Flower's ``parameters_subtraction``; integer arrays are subtracted in int64."""
    return [_exact(np.subtract, a, b) for a, b in zip(parameters1, parameters2, strict=True)]


def dequantize(
    quantized_parameters: Sequence[np.ndarray], clipping_range: float, target_range: int
) -> list[np.ndarray]:
    """Flower's ``dequantize``: ``q * 2 c / target_range - c`` in float64, scaled in place."""
    quantizer = (2 * clipping_range) / target_range
    out = []
    for arr in quantized_parameters:
        recon = np.asarray(arr).astype(np.float64)
        recon *= quantizer
        recon -= clipping_range
        out.append(recon)
    return out
