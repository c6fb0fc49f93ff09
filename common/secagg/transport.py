"""Masked SecAgg+ vectors as uint32 instead of int64: on the wire (half the bytes) and on the site.

Why: Flower 1.42's SecAgg+ client mod serialises each masked, quantised array as int64 although
every value lies in [0, modulus) with the default modulus 2**32, so a site sends twice the float32
model's size every round. The client narrows such arrays to uint32; the server computes on whatever
arrives in int64 (``common.secagg.arithmetic``: no wrap at 2**32, whatever the modulus), so its
results are exactly Flower's. Arrays that do not fit (a larger modulus) travel as int64, as before.

On the site the masked vector is also built in uint32: the client mod's ``quantize`` is replaced by
``common.secagg.quantize.reproducible_quantize`` (uint32 out; the same update always rounds the same way)
and the masks of ``common.secagg.mask_prg`` are uint32 for a power-of-two modulus up to 2**32, so
Flower's ``quantized + mask - mask ...`` and its final ``& (modulus - 1)`` run in uint32 (wrap-around at 2**32
is exact modulo such a modulus) and
the result is sent as it is, without the int64 copies and the range scan of ``narrow_masked``.

Reading arrays: Flower's ``bytes_to_ndarray`` is ``np.load`` on a ``BytesIO``, which parses each
array's header with ``ast.literal_eval`` and copies the data in chunks; a model's update is a few
hundred arrays, read once on the site (its own update, back from Flower's FitRes) and once on the
server (the masked vector) per site and round on the SecAgg+ path alone. ``load_ndarray`` reads the same
``.npy`` bytes (no pickles, as Flower) as a view, parsing each distinct header once. The server's
aggregate leaves Flower's workflow in float64 (``dequantize``); ``compact_float`` serialises it as
float32, the sites' dtype, which halves what the strategy then reads back once per site (its
quantisation step, ``2 * clipping_range / quantization_range``, is far above float32's resolution).

Like ``mask_prg``, this module does not import Flower: ``flower_compat.secagg`` puts these functions
in place of Flower's, in the client mod and the server workflow (both ends together).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_UINT32_LIMIT = 2**32
_NPY_MAGIC = b"\x93NUMPY"


@functools.lru_cache(maxsize=4096)
def _npy_header(prefix: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the magic, version and header of a ``.npy`` file."""
    fp = io.BytesIO(prefix)
    version = np.lib.format.read_magic(fp)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(fp)
    if dtype.hasobject:
        raise ValueError("load_ndarray: object arrays need pickles, which SecAgg+ messages never carry")
    return shape, fortran_order, dtype


def load_ndarray(data: bytes) -> np.ndarray:
    """Flower's ``bytes_to_ndarray`` (``.npy`` bytes, no pickles) as a read-only view of ``data``.

    Versions 1.0 and 2.0 of the format (what ``np.save`` writes); anything else goes to ``np.load``.
    """
    if data[:6] != _NPY_MAGIC or data[6] not in (1, 2) or data[7] != 0:
        return np.load(io.BytesIO(data), allow_pickle=False)
    start = 10 if data[6] == 1 else 12
    header_len = int.from_bytes(data[8:start], "little")
    shape, fortran_order, dtype = _npy_header(bytes(data[: start + header_len]))
    count = int(np.prod(shape, dtype=np.int64))
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=start + header_len)
    return arr.reshape(shape[::-1]).T if fortran_order else arr.reshape(shape)


def load_ndarrays(parameters: Any) -> list[np.ndarray]:
    """Flower's ``parameters_to_ndarrays`` with :func:`load_ndarray`."""
    return [load_ndarray(tensor) for tensor in parameters.tensors]


def compact_float(save: Callable[[Sequence[np.ndarray]], Any]) -> Callable[[Sequence[np.ndarray]], Any]:
    """Wrap Flower's ``ndarrays_to_parameters``: float64 arrays are serialised as float32."""

    def to_parameters(ndarrays: Sequence[np.ndarray]) -> Any:
        return save([a.astype(np.float32) if a.dtype == np.float64 else a for a in ndarrays])

    to_parameters.sarcofed_compact = True  # type: ignore[attr-defined]  # a mark on the wrapper: installed once
    return to_parameters


def narrow_masked(arr: np.ndarray) -> np.ndarray:
    """int64 array with all values in [0, 2**32) -> the same values as uint32; anything else unchanged."""
    if arr.dtype == np.int64 and (arr.size == 0 or (int(arr.min()) >= 0 and int(arr.max()) < _UINT32_LIMIT)):
        return arr.astype(np.uint32)
    return arr
