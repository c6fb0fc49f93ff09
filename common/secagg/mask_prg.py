"""Mask generator for Flower's SecAgg+ that uses the whole shared secret (flwr issue #7522).

Why: Flower 1.42's ``pseudo_rand_gen`` (flwr/common/secure_aggregation/secaggplus_utils.py) XORs the
32-byte secret down to a 32-bit integer and seeds ``numpy.random.RandomState`` with it. Anyone holding
a masked vector can try all 2**32 seeds and strip a pairwise or private mask. Here the secret goes
through HKDF-SHA256 into a 256-bit ChaCha20 key, and the masks are read from the ChaCha20 keystream:
every bit of the secret matters and the stream is cryptographic.

``flower_compat.secagg`` puts ``mask_arrays`` in place of Flower's generator in the client mod and
the server workflow (``common/`` has no Flower), and the setup stage carries ``MASK_PRG_INFO`` so that
a node running another generator refuses the round instead of producing a garbage sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Domain separation: a different use of the same secret must never produce the same keystream.
# v2: 32-bit keystream words for moduli that divide 2**32 (v1 read 64-bit words), so v1 and v2 nodes
# draw different masks: every node of one federation must run the same version.
MASK_PRG_INFO = b"sarcofed/secaggplus-mask/chacha20/v2"
_NONCE = bytes(16)  # fresh key per secret and use, so a fixed nonce is safe
_CHUNK = 1 << 20  # bytes of keystream per call: the zero input stays in cache, OpenSSL's lengths small


def _keystream_into(seed: bytes, arrays: Sequence[np.ndarray]) -> None:
    """Fill ``arrays`` (C-contiguous), in order, with one ChaCha20 keystream under HKDF-SHA256(``seed``).

    Encrypting a small zero buffer into each array gives the keystream without a model-sized input
    or output copy. One array at a time, not one model-sized buffer: arrays of a layer's size come
    back from the allocator's free list, while a model-sized buffer is fresh memory from the kernel
    (page faults on every mask; docs/performance.md).
    """
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MASK_PRG_INFO).derive(seed)
    encryptor = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
    zeros = memoryview(bytes(_CHUNK))
    for arr in arrays:
        view = memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # ndarray is a buffer; stubs lack it
        for start in range(0, len(view), _CHUNK):
            chunk = view[start : start + _CHUNK]
            encryptor.update_into(zeros[: len(chunk)], chunk)


def mask_arrays(seed: bytes, num_range: int, dimensions_list: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Masks for SecAgg+, same signature as Flower's ``pseudo_rand_gen``.

    Parameters
    ----------
    seed : bytes
        The shared secret (a pairwise key or a private mask seed), any length > 0; all of it is used.
    num_range : int
        Masks are uniform integers in ``[0, num_range)``. Flower's modulus range is a power of two
        (checked by ``SecAggPlusWorkflow``), 2**32 by default: up to 2**32 each mask value is one
        little-endian 32-bit keystream word with its high bits cleared, exactly uniform. Any other
        value > 1 reads 64-bit words modulo ``num_range`` (bias below ``num_range / 2**64``).
    dimensions_list : sequence of tuple of int
        One shape per model array; ``()`` gives a 0-d array.

    Returns
    -------
    list of np.ndarray
        Arrays with the given shapes, read in order from one keystream. dtype uint32 when
        ``num_range`` is a power of two <= 2**32, int64 otherwise (Flower's type). uint32 is
        deliberate: numpy's uint32 arithmetic wraps modulo 2**32, a multiple of ``num_range``, so
        Flower's ``masked + mask`` / ``- mask`` followed by its ``& (num_range - 1)`` stays exact, with
        half the memory traffic of int64; mixed with int64 operands numpy widens to int64, also exact.
    """
    if not seed:
        raise ValueError("mask_arrays: the seed is empty; SecAgg+ secrets are at least 32 bytes")
    if num_range <= 1:
        raise ValueError(f"mask_arrays: num_range must be > 1, got {num_range}")
    words32 = num_range <= 2**32 and num_range & (num_range - 1) == 0
    out = [np.empty(tuple(shape), dtype="<u4" if words32 else "<u8") for shape in dimensions_list]
    _keystream_into(seed, out)
    for i, arr in enumerate(out):
        if not words32:
            out[i] = (arr % np.uint64(num_range)).astype(np.int64)
            continue
        if num_range < 2**32:
            arr &= np.uint32(num_range - 1)
        out[i] = arr.astype(np.uint32, copy=False)  # native byte order (a no-op on little-endian hosts)
    return out
