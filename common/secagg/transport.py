"""Masked SecAgg+ vectors on the wire as uint32 instead of int64: half the bytes, same values.

Why: Flower 1.42's SecAgg+ client mod serialises each masked, quantised array as int64 although
every value lies in [0, modulus) with the default modulus 2**32, so a site sends twice the float32
model's size every round. The client narrows such arrays to uint32; the server widens whatever
arrives as uint32 back to int64 before its own arithmetic, which is then exactly Flower's. Arrays
that do not fit (a larger modulus) travel as int64, as before.

Like ``mask_prg``, this module does not import Flower: the apps hand it the two Flower modules to
patch (``secaggplus_mod`` on the client, ``secaggplus_workflow`` on the server). Both ends must be
patched together; SarcoFed's ClientApp and ServerApp do so at import.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

_UINT32_LIMIT = 2**32


def narrow_masked(arr: np.ndarray) -> np.ndarray:
    """int64 array with all values in [0, 2**32) -> the same values as uint32; anything else unchanged."""
    if arr.dtype == np.int64 and (arr.size == 0 or (int(arr.min()) >= 0 and int(arr.max()) < _UINT32_LIMIT)):
        return arr.astype(np.uint32)
    return arr


def widen_masked(arr: np.ndarray) -> np.ndarray:
    """uint32 array -> int64 (what Flower's server arithmetic expects); anything else unchanged."""
    return arr.astype(np.int64) if arr.dtype == np.uint32 else arr


def compact_masked_transport(client_mod: ModuleType | None = None, server_workflow: ModuleType | None = None) -> None:
    """Patch Flower's SecAgg+ client mod to send uint32 and its server workflow to widen on receipt.

    Raises ``AttributeError`` if Flower renamed the functions, so an upstream change cannot silently
    drop the patch. Patching twice is harmless.
    """
    if client_mod is not None:
        original_send = client_mod.ndarray_to_bytes
        if not getattr(original_send, "sarcofed_compact", False):

            def send(arr: np.ndarray) -> bytes:
                return original_send(narrow_masked(arr))

            send.sarcofed_compact = True  # type: ignore[attr-defined]
            client_mod.ndarray_to_bytes = send
    if server_workflow is not None:
        original_receive = server_workflow.bytes_to_ndarray
        if not getattr(original_receive, "sarcofed_compact", False):

            def receive(data: bytes) -> np.ndarray:
                return widen_masked(original_receive(data))

            receive.sarcofed_compact = True  # type: ignore[attr-defined]
            server_workflow.bytes_to_ndarray = receive
