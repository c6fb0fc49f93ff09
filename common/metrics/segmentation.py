"""Per-case segmentation values at L3: Dice, skeletal muscle area and attenuation, and their accumulator.

The module policy of ``common.metrics`` (empty masks, the Alberta muscle range) applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from common.clinical import MUSCLE, MUSCLE_HU_RANGE, area_cm2
from common.metrics._values import (
    _binary_pair,
    _finite,
)


# ----------------------------------------------------------------------------- per-patient values
def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|P & R| / (|P| + |R|) of two binary masks of the same (H, W) shape.

    Returns NaN when both masks are empty (undefined; see the module policy), 0.0 when only one is.
    """
    pred_b, ref_b = _binary_pair(pred, ref)
    total = int(pred_b.sum()) + int(ref_b.sum())
    if total == 0:
        return float("nan")
    return 2.0 * float(np.logical_and(pred_b, ref_b).sum()) / float(total)


def sma_cm2(mask: np.ndarray, spacing_mm: tuple[float, float]) -> float:
    """Skeletal muscle area (cm2) of an (H, W) mask on its native grid (``spacing_mm`` = row, col in mm).

    A body-composition label map (values up to 4) counts its muscle label only; any other mask its nonzero pixels.
    """
    mask = np.asarray(mask)
    return area_cm2(mask == MUSCLE if mask.max(initial=0) > MUSCLE else mask > 0, spacing_mm)


def keep_muscle_attenuation(
    mask: np.ndarray, hu: np.ndarray, hu_range: tuple[float, float] = MUSCLE_HU_RANGE
) -> np.ndarray:
    """(H, W) uint8 mask keeping only pixels whose HU lies in ``hu_range`` (the Alberta muscle range).

    L3 reference masks are drawn this way (outline, then the -29..+150 HU threshold), so SMA is the
    area of muscle-attenuation tissue inside the outline; a network's mask gets the same treatment
    before it is measured or compared. Intermuscular fat and bone at the edges fall out.
    """
    hu = np.asarray(hu)
    mask_b = np.asarray(mask) > 0
    if hu.shape != mask_b.shape:
        raise ValueError(f"keep_muscle_attenuation: image shape {hu.shape} differs from mask shape {mask_b.shape}")
    return (mask_b & (hu >= hu_range[0]) & (hu <= hu_range[1])).astype(np.uint8)


def muscle_hu_mean(hu: np.ndarray, mask: np.ndarray, hu_range: tuple[float, float] = MUSCLE_HU_RANGE) -> float:
    """Mean attenuation (HU) of the masked pixels that lie in the muscle window (Alberta, -29..+150).

    Pixels of the mask outside the window (intermuscular fat, bone at the edge) are left out, as in
    the usual L3 body-composition protocol. NaN when no masked pixel lies in the window.
    """
    hu = np.asarray(hu, dtype=np.float64)
    mask_b = np.asarray(mask) > 0
    if hu.shape != mask_b.shape:
        raise ValueError(f"muscle_hu_mean: image shape {hu.shape} differs from mask shape {mask_b.shape}")
    values = hu[mask_b]
    values = values[(values >= hu_range[0]) & (values <= hu_range[1])]
    return float(values.mean()) if values.size else float("nan")


def abs_pct_error(pred: float, ref: float) -> float:
    """|pred - ref| / ref x 100 (%); NaN when the reference is zero, missing or not finite."""
    if not (_finite(pred) and _finite(ref)) or ref == 0:
        return float("nan")
    return abs(float(pred) - float(ref)) / abs(float(ref)) * 100.0


# ----------------------------------------------------------------------------- accumulators
@dataclass
class DiceAccumulator:
    """Per-patient Dice collected case by case, like MONAI's DiceMetric (``add``, ``aggregate``, ``reset``).

    ``n_empty`` counts cases where both masks were empty: they are NaN and left out of the mean.
    """

    values: list[float] = field(default_factory=list)

    def add(self, pred: np.ndarray, ref: np.ndarray) -> float:
        """Score one case and keep it; returns its Dice."""
        value = dice(pred, ref)
        self.values.append(value)
        return value

    def reset(self) -> None:
        self.values.clear()

    @property
    def n_empty(self) -> int:
        return sum(1 for v in self.values if math.isnan(v))

    def aggregate(self) -> tuple[float, int]:
        """(mean Dice over defined cases, number of defined cases); mean is NaN when none is defined."""
        valid = [v for v in self.values if not math.isnan(v)]
        return (float(np.mean(valid)) if valid else float("nan"), len(valid))
