"""Mask generator for Flower's SecAgg+ that uses the whole shared secret (closes flwr issue #7522).

Why: Flower 1.42's ``pseudo_rand_gen`` (flwr/common/secure_aggregation/secaggplus_utils.py) XORs the
32-byte secret down to a 32-bit integer and seeds ``numpy.random.RandomState`` with it. Anyone holding
a masked vector can try all 2**32 seeds and strip a pairwise or private mask. Here the secret goes
through HKDF-SHA256 into a 256-bit ChaCha20 key, and the masks are read from the ChaCha20 keystream:
every bit of the secret matters and the stream is cryptographic.

Why a function that takes modules (and not ``import flwr`` here): ``common/`` has no Flower. Flower
binds ``pseudo_rand_gen`` by name into the modules that call it (``from ... import pseudo_rand_gen``),
so the ClientApp passes ``flwr.client.mod.secure_aggregation.secaggplus_mod`` and the ServerApp passes
``flwr.server.workflow.secure_aggregation.secaggplus_workflow``; both then draw masks from this one
function, so client and server agree. Drop this module (and the two calls) when upstream fixes #7522;
the protocol messages do not change, only how masks are expanded from secrets, so every node of one
federation must run the same choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Domain separation: a different use of the same secret must never produce the same keystream.
MASK_PRG_INFO = b"sarcofed/secaggplus-mask/chacha20/v1"
_NONCE = bytes(16)  # fresh key per secret and use, so a fixed nonce is safe


def _keystream(seed: bytes, n_bytes: int) -> bytes:
    """``n_bytes`` of ChaCha20 keystream under a key derived by HKDF-SHA256 from all of ``seed``."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MASK_PRG_INFO).derive(seed)
    encryptor = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
    return encryptor.update(bytes(n_bytes))


def mask_arrays(seed: bytes, num_range: int, dimensions_list: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Masks for SecAgg+, same signature and output type as Flower's ``pseudo_rand_gen``.

    Parameters
    ----------
    seed : bytes
        The shared secret (a pairwise key or a private mask seed), any length > 0; all of it is used.
    num_range : int
        Masks are uniform integers in ``[0, num_range)`` (Flower's modulus range, a power of two <= 2**32,
        so taking 64-bit words modulo it is exactly uniform).
    dimensions_list : sequence of tuple of int
        One shape per model array; ``()`` gives a 0-d array.

    Returns
    -------
    list of np.ndarray
        int64 arrays with the given shapes, read in order from one keystream.
    """
    if not seed:
        raise ValueError("mask_arrays: the seed is empty; SecAgg+ secrets are at least 32 bytes")
    if num_range <= 1:
        raise ValueError(f"mask_arrays: num_range must be > 1, got {num_range}")
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in dimensions_list]
    words = np.frombuffer(_keystream(seed, 8 * sum(sizes)), dtype="<u8")
    words = (words % np.uint64(num_range)).astype(np.int64)
    out: list[np.ndarray] = []
    start = 0
    for shape, size in zip(dimensions_list, sizes, strict=True):
        out.append(words[start : start + size].reshape(shape).copy())
        start += size
    return out


def override_flower_prg(*modules: ModuleType) -> None:
    """Make each given Flower module generate SecAgg+ masks with :func:`mask_arrays`.

    Each module must already have a ``pseudo_rand_gen`` attribute (the Flower modules that use it);
    passing anything else raises ``AttributeError`` so an upstream rename cannot silently skip the fix.
    """
    for module in modules:
        if not hasattr(module, "pseudo_rand_gen"):
            raise AttributeError(
                f"{module.__name__} has no pseudo_rand_gen: Flower changed; check whether issue #7522 is fixed "
                "upstream and drop common/secagg/mask_prg.py"
            )
        module.pseudo_rand_gen = mask_arrays
