"""Body composition at L3 by the Alberta protocol: compartments from the network, tissues from HU windows.

The network labels three compartments: inside the muscle fascia, visceral fat (inside the abdominal
wall) and subcutaneous fat (outside it), with two heads: a muscle head (other, muscle fascia) that
is read as the muscle-only networks always were (fascia where its probability is at least 0.5), and
a fat head (other, visceral, subcutaneous) for the rest. The protocol's windows then split them into
tissues on the image's own grid: muscle (-29..+150 HU) and IMAT (-190..-30) inside the muscle fascia, VAT
(-150..-50) in the visceral compartment, SAT (-190..-30) in the subcutaneous one. Intermuscular fat
streaks are 1-3 mm wide, at or under the network's pixel; drawn by the window at native resolution,
they are split off exactly as an annotator's window splits them, instead of being guessed by the net.
"""

from __future__ import annotations

import numpy as np

from common.clinical import BACKGROUND, IMAT, MUSCLE, SAT, TISSUE_HU_RANGES, TISSUES, VAT, area_cm2

COMPARTMENTS: tuple[str, ...] = ("other", "muscle fascia", "visceral fat", "subcutaneous fat")
"""The compartments of a slice (values of a compartment map)."""
OTHER, FASCIA, VISCERAL, SUBCUTANEOUS = range(len(COMPARTMENTS))

MUSCLE_HEAD, FAT_HEAD = slice(0, 2), slice(2, 5)
"""The network's output channels: (other, muscle fascia), then (other, visceral fat, subcutaneous fat),
each head a softmax of its own. Muscle does not compete with fat for probability, so it trains and
reads as a muscle-only network does, and a site whose masks are muscle only trains the muscle head alone."""
SEG_CHANNELS = FAT_HEAD.stop
MUSCLE_ONLY_CHANNELS = MUSCLE_HEAD.stop

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


def compartments_from_probs(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(C, H, W) head probabilities -> (compartment map, fat map), each (H, W) uint8.

    The compartment map has muscle fascia where the muscle head gives it at least 0.5 and the fat
    head's most probable class elsewhere; the fat map is the fat head's class everywhere (OTHER,
    VISCERAL or SUBCUTANEOUS), which ``tissues_from_compartments`` uses to tell IMAT from fat just
    outside the fascia. A muscle-only network (C = 2) gives fascia or other, and no fat map.
    """
    probs = np.asarray(probs)
    fascia = probs[1] >= 0.5
    if probs.shape[0] == MUSCLE_ONLY_CHANNELS:
        return np.where(fascia, FASCIA, OTHER).astype(np.uint8), None
    fat = np.array([OTHER, VISCERAL, SUBCUTANEOUS], np.uint8)[probs[FAT_HEAD].argmax(axis=0)]
    return np.where(fascia, np.uint8(FASCIA), fat).astype(np.uint8), fat


def tissues_from_compartments(
    compartments: np.ndarray,
    hu: np.ndarray,
    fat: np.ndarray | None = None,
    spacing_mm: tuple[float, float] | None = None,
) -> np.ndarray:
    """(H, W) compartment indices and HU -> (H, W) uint8 tissue label map (0 where no window holds).

    For a network's compartments, pass its fat map (``compartments_from_probs``) and the pixel
    spacing. A predicted fascia is about a network pixel wider or narrower than the true outline, and
    every fat pixel it takes in at the border would count as IMAT. So IMAT is kept only where muscle
    surrounds it (``imat_bed``: holes in the muscle, and gaps up to ``IMAT_GAP_MM`` wide); the rest of
    the fascia's fat is the fat head's visceral or subcutaneous fat, or nothing.
    """
    compartments, hu = np.asarray(compartments), np.asarray(hu)
    if fat is not None and spacing_mm is not None:
        low, high = TISSUE_HU_RANGES["muscle"]
        muscle = (compartments == FASCIA) & (hu >= low) & (hu <= high)
        low, high = TISSUE_HU_RANGES["imat"]
        border = (compartments == FASCIA) & (hu >= low) & (hu <= high) & ~imat_bed(muscle, spacing_mm)
        compartments = np.where(border, np.asarray(fat), compartments)
    out = np.full(compartments.shape, BACKGROUND, np.uint8)
    for compartment, tissues in _COMPARTMENT_TISSUES.items():
        inside = compartments == compartment
        for name, value in tissues:
            low, high = TISSUE_HU_RANGES[name]
            out[inside & (hu >= low) & (hu <= high)] = value
    return out


IMAT_GAP_MM = 2.0
"""Fat within this distance of muscle on both sides (a streak up to about twice as wide) is intermuscular."""


def imat_bed(muscle: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """(H, W) bool: where IMAT can lie: the muscle's holes and its gaps up to ``2 x IMAT_GAP_MM`` wide.

    A morphological closing with a disc of radius ``IMAT_GAP_MM`` fills streaks between and within
    muscles but adds nothing at a convex outer border, where fat belongs to SAT or VAT.
    """
    from scipy import ndimage

    muscle = np.asarray(muscle, bool)
    radius = np.maximum(np.round(IMAT_GAP_MM / np.asarray(spacing_mm, float)), 1).astype(int)
    yy, xx = np.ogrid[-radius[0] : radius[0] + 1, -radius[1] : radius[1] + 1]
    disc = (yy / radius[0]) ** 2 + (xx / radius[1]) ** 2 <= 1.0
    closed = ndimage.binary_closing(np.pad(muscle, radius.max()), structure=disc)[
        radius.max() : -radius.max(), radius.max() : -radius.max()
    ]
    return closed | ndimage.binary_fill_holes(muscle)


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
