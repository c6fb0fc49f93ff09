"""Body composition at L3 by the Alberta protocol: compartments from the network, tissues from HU windows.

The network labels three compartments: inside the muscle fascia, visceral fat (inside the abdominal
wall) and subcutaneous fat (outside it). The protocol's windows then split them into tissues on the
image's own grid: muscle (-29..+150 HU) and IMAT (-190..-30) inside the muscle fascia, VAT
(-150..-50) in the visceral compartment, SAT (-190..-30) in the subcutaneous one. Intermuscular fat
streaks are 1-3 mm wide, at or under the network's pixel; drawn by the window at native resolution,
they are split off exactly as an annotator's window splits them, instead of being guessed by the net.
"""

from __future__ import annotations

import numpy as np

from common.clinical import BACKGROUND, IMAT, MUSCLE, SAT, TISSUE_HU_RANGES, TISSUES, VAT, area_cm2

COMPARTMENTS: tuple[str, ...] = ("other", "muscle fascia", "visceral fat", "subcutaneous fat")
"""The segmentation network's classes, in channel order."""
OTHER, FASCIA, VISCERAL, SUBCUTANEOUS = range(len(COMPARTMENTS))

_TISSUE_COMPARTMENT = {MUSCLE: FASCIA, IMAT: FASCIA, VAT: VISCERAL, SAT: SUBCUTANEOUS}
_COMPARTMENT_TISSUES = {
    FASCIA: (("muscle", MUSCLE), ("imat", IMAT)),
    VISCERAL: (("vat", VAT),),
    SUBCUTANEOUS: (("sat", SAT),),
}


def compartments_of(label_map: np.ndarray) -> np.ndarray:
    """(H, W) tissue label map -> (H, W) uint8 compartment index (the network's training target)."""
    label_map = np.asarray(label_map)
    out = np.full(label_map.shape, OTHER, np.uint8)
    for tissue, compartment in _TISSUE_COMPARTMENT.items():
        out[label_map == tissue] = compartment
    return out


def tissues_from_compartments(compartments: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """(H, W) compartment indices and HU -> (H, W) uint8 tissue label map (0 where no window holds)."""
    compartments, hu = np.asarray(compartments), np.asarray(hu)
    out = np.full(compartments.shape, BACKGROUND, np.uint8)
    for compartment, tissues in _COMPARTMENT_TISSUES.items():
        inside = compartments == compartment
        for name, value in tissues:
            low, high = TISSUE_HU_RANGES[name]
            out[inside & (hu >= low) & (hu <= high)] = value
    return out


def composition(
    label_map: np.ndarray, hu: np.ndarray, spacing_mm: tuple[float, float], tissues: bool = True
) -> dict[str, float | None]:
    """Area (cm2) and mean HU of every tissue: ``muscle_cm2``, ``muscle_hu_mean``, ``imat_cm2`` ... ``sat_hu_mean``.

    ``tissues=False`` says the fat tissues were not drawn (a muscle-only mask): their values are
    None then, not 0. A mean HU over no pixels is None.
    """
    label_map, hu = np.asarray(label_map), np.asarray(hu, dtype=np.float64)
    out: dict[str, float | None] = {}
    for name, value in TISSUES.items():
        if value != MUSCLE and not tissues:
            out[f"{name}_cm2"], out[f"{name}_hu_mean"] = None, None
            continue
        mask = label_map == value
        out[f"{name}_cm2"] = area_cm2(mask, spacing_mm)
        out[f"{name}_hu_mean"] = float(hu[mask].mean()) if mask.any() else None
    return out
