"""What a site sends through secure aggregation: float weight deltas, never absolute weights or counters.

Why deltas: SecAgg+ clips every value to ``[-clipping_range, clipping_range]`` before quantising, so
absolute weights (or a LayerNorm gain near 1, or an embedding of 3) would be damaged by a small
clipping range, while a round's change of a weight is small. Why no integers: a counter (for example
a BatchNorm ``num_batches_tracked``) is not a quantity to average; it stays at the global value.
The server keeps the full array list of a phase; sites send one delta per floating array, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def float_positions(arrays: Sequence[np.ndarray]) -> list[int]:
    """Indices of the floating-point arrays in ``arrays`` (the ones that are averaged)."""
    return [i for i, array in enumerate(arrays) if np.issubdtype(np.asarray(array).dtype, np.floating)]


def weight_delta(local: Sequence[np.ndarray], global_: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``local - global`` for each floating array (same order as :func:`float_positions`), float32.

    Raises ``ValueError`` when the two lists do not describe the same model (length or shapes).
    """
    if len(local) != len(global_):
        raise ValueError(f"weight_delta: {len(local)} local arrays but {len(global_)} global arrays")
    out = []
    for i in float_positions(global_):
        if np.shape(local[i]) != np.shape(global_[i]):
            raise ValueError(f"weight_delta: array {i} has shape {np.shape(local[i])} locally, {np.shape(global_[i])} globally")
        out.append((np.asarray(local[i], dtype=np.float64) - np.asarray(global_[i], dtype=np.float64)).astype(np.float32))
    return out


def apply_delta(global_: Sequence[np.ndarray], delta: Sequence[np.ndarray]) -> list[np.ndarray]:
    """New global arrays: ``global + delta`` on the floating arrays, others unchanged, dtypes kept."""
    positions = float_positions(global_)
    if len(positions) != len(delta):
        raise ValueError(f"apply_delta: {len(positions)} floating arrays but {len(delta)} deltas")
    out = [np.array(a, copy=True) for a in global_]
    for i, d in zip(positions, delta, strict=True):
        if np.shape(d) != np.shape(out[i]):
            raise ValueError(f"apply_delta: delta {i} has shape {np.shape(d)}, expected {np.shape(out[i])}")
        out[i] = (out[i].astype(np.float64) + np.asarray(d, dtype=np.float64)).astype(out[i].dtype)
    return out
