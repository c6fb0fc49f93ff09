"""Secure-aggregation helpers shared by the ClientApp and the ServerApp (pure numpy + cryptography, no Flower).

- ``mask_prg``: a cryptographic replacement for Flower's SecAgg+ mask generator (32-bit seed hole,
  flwr issue #7522).
- ``quantize``: Flower's stochastic quantisation vectorised, into uint32.
- ``transport``: masked vectors built and sent as uint32 rather than int64 (half the bytes, same
  values), arrays read without copies.
- ``delta``: what crosses SecAgg+: float weight deltas (local - global), never integer counters,
  packed into one vector per message.

``flower_compat.secagg`` installs them into Flower.
"""

from common.secagg.delta import apply_delta, float_positions, pack, unpack, weight_delta
from common.secagg.mask_prg import MASK_PRG_INFO, mask_arrays
from common.secagg.quantize import stochastic_quantize

__all__ = [
    "MASK_PRG_INFO",
    "apply_delta",
    "float_positions",
    "mask_arrays",
    "pack",
    "stochastic_quantize",
    "unpack",
    "weight_delta",
]
