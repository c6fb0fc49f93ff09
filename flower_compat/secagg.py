"""SecAgg+ in Flower 1.42 with SarcoFed's mask generator and uint32 masked vectors, on both ends.

Masks (``pseudo_rand_gen``, both ends): Flower's generator XORs the 32-byte shared secret down to a
32-bit seed for ``numpy.random.RandomState``, so anyone holding a masked vector can try all 2**32 seeds
and strip a mask (upstream: flwr issue #7522). ``common.secagg.mask_prg.mask_arrays`` expands the whole
secret through HKDF-SHA256 and ChaCha20. Flower binds the name into each module that calls it
(``from ... import pseudo_rand_gen``), so it is replaced in the client mod and the server workflow.

Transport (``common.secagg.transport``): Flower's client mod serialises every masked array as int64
although each value lies in [0, 2**32); the client builds and sends them as uint32 (``quantize``,
``ndarray_to_bytes``; ``parameters_to_ndarrays`` reads without copies), and the server reads any
integer width and sums in int64 (``bytes_to_ndarray``, ``parameters_addition``,
``parameters_subtraction``, ``dequantize``), writing its float aggregate as float32
(``ndarrays_to_parameters``). No upstream report: Flower's choice is valid, only twice the bytes.

Both ends must run the same generator: ``MASK_PRG_CONFIG_KEY`` carries the server's in the setup stage.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from common.secagg.arithmetic import dequantize, exact_addition, exact_subtraction
from common.secagg.mask_prg import MASK_PRG_INFO, mask_arrays
from common.secagg.quantize import reproducible_quantize
from common.secagg.transport import compact_float, load_ndarray, load_ndarrays, narrow_masked
from flower_compat.version import require_flower

CLIENT_MODULE = "flwr.client.mod.secure_aggregation.secaggplus_mod"
SERVER_MODULE = "flwr.server.workflow.secure_aggregation.secaggplus_workflow"
CLIENT_NAMES = ("pseudo_rand_gen", "quantize", "parameters_to_ndarrays", "ndarray_to_bytes")
SERVER_NAMES = (
    "pseudo_rand_gen",
    "bytes_to_ndarray",
    "parameters_addition",
    "parameters_subtraction",
    "dequantize",
    "ndarrays_to_parameters",
)
MASK_PRG_CONFIG_KEY = "sarcofed-mask-prg"
"""Key of the server's mask generator version in the SecAgg+ setup stage's config record."""


def mask_prg_version() -> str:
    """The mask generator this node runs, as the setup stage carries it."""
    return MASK_PRG_INFO.decode()


def _require_names(module: ModuleType, names: tuple[str, ...]) -> None:
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        raise AttributeError(
            f"{module.__name__} has no {', '.join(missing)}: Flower changed; see flower_compat/secagg.py"
        )


def install_secagg_client(module: ModuleType | None = None) -> ModuleType:
    """Replace CLIENT_NAMES in Flower's SecAgg+ client mod (MODULE: that module, for tests); idempotent."""
    require_flower("install_secagg_client")
    module = module or importlib.import_module(CLIENT_MODULE)
    _require_names(module, CLIENT_NAMES)
    replacements: dict[str, object] = {
        "pseudo_rand_gen": mask_arrays,
        "quantize": reproducible_quantize,
        "parameters_to_ndarrays": load_ndarrays,
    }
    original_send = module.ndarray_to_bytes
    if not getattr(original_send, "sarcofed_compact", False):

        def send(arr: np.ndarray) -> Any:
            return original_send(narrow_masked(arr))

        send.sarcofed_compact = True  # type: ignore[attr-defined]  # marks the wrapper, so a second install keeps one
        replacements["ndarray_to_bytes"] = send
    for name, value in replacements.items():
        setattr(module, name, value)
    return module


def install_secagg_server(module: ModuleType | None = None) -> ModuleType:
    """Replace SERVER_NAMES in Flower's SecAgg+ server workflow (MODULE: that module, for tests); idempotent."""
    require_flower("install_secagg_server")
    module = module or importlib.import_module(SERVER_MODULE)
    _require_names(module, SERVER_NAMES)
    replacements: dict[str, object] = {
        "pseudo_rand_gen": mask_arrays,
        "bytes_to_ndarray": load_ndarray,
        "parameters_addition": exact_addition,
        "parameters_subtraction": exact_subtraction,
        "dequantize": dequantize,
    }
    if not getattr(module.ndarrays_to_parameters, "sarcofed_compact", False):
        replacements["ndarrays_to_parameters"] = compact_float(module.ndarrays_to_parameters)
    for name, value in replacements.items():
        setattr(module, name, value)
    return module
