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
            raise ValueError(
                f"weight_delta: array {i} has shape {np.shape(local[i])} locally, {np.shape(global_[i])} globally"
            )
        out.append(
            (np.asarray(local[i], dtype=np.float64) - np.asarray(global_[i], dtype=np.float64)).astype(np.float32)
        )
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


def pack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """All arrays as one float32 vector, in order: what a federated message carries.

    Flower moves every array of a message as separate objects, one request each between SuperNode and
    SuperLink (a tiny-preset segmentation model is 72 arrays: about 8 s per message on a busy 2-core
    host); one vector is one object, whatever the model. ``unpack`` with the same shapes undoes it.
    """
    if not arrays:
        return np.zeros(0, np.float32)
    return np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1) for a in arrays])


def unpack(flat: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """The arrays of ``shapes`` read in order from one vector made by :func:`pack` (ValueError on a size mismatch)."""
    flat = np.asarray(flat).reshape(-1)
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    if flat.size != sum(sizes):
        raise ValueError(f"unpack: a vector of {flat.size} values for arrays of {sum(sizes)} values")
    out, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out
