"""Clinical quantities at L3: SMA, SMI and the named, published sarcopenia cutoffs.

Every verdict names the rule that made it, because published cutoffs disagree by up to 10 cm2/m2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

# Alberta protocol windows (HU, inclusive): skeletal muscle; subcutaneous and intermuscular fat; visceral fat.
MUSCLE_HU_RANGE: tuple[float, float] = (-29.0, 150.0)
FAT_HU_RANGE: tuple[float, float] = (-190.0, -30.0)
VISCERAL_FAT_HU_RANGE: tuple[float, float] = (-150.0, -50.0)

# Body-composition label map values (uint8), as masks on disk hold them; a muscle-only mask holds 0 and 1.
BACKGROUND, MUSCLE, IMAT, VAT, SAT = 0, 1, 2, 3, 4
TISSUES: dict[str, int] = {"muscle": MUSCLE, "imat": IMAT, "vat": VAT, "sat": SAT}
"""Tissue name -> label value; the names are the prefixes of the measurements (``imat_cm2``, ``vat_hu_mean``)."""
TISSUE_HU_RANGES: dict[str, tuple[float, float]] = {
    "muscle": MUSCLE_HU_RANGE,
    "imat": FAT_HU_RANGE,
    "vat": VISCERAL_FAT_HU_RANGE,
    "sat": FAT_HU_RANGE,
}
"""The Alberta window of each tissue: IMAT inside the muscle fascia, VAT inside the abdominal wall, SAT outside it."""


def area_cm2(mask: np.ndarray, spacing_mm: tuple[float, float]) -> float:
    """Area of a binary mask in cm2: pixel count x native pixel area (mm2 / 100)."""
    return float(np.count_nonzero(mask)) * float(spacing_mm[0]) * float(spacing_mm[1]) / 100.0


def smi(sma_cm2: float, height_m: float | None) -> float | None:
    """Skeletal muscle index SMA / height^2 (cm2/m2); None when height is unknown or implausible."""
    if height_m is None or not math.isfinite(height_m) or not 0.5 <= height_m <= 2.6:
        return None
    return float(sma_cm2) / (float(height_m) ** 2)


def bmi(weight_kg: float | None, height_m: float | None) -> float | None:
    """Body-mass index (kg/m2), None when either value is missing."""
    if weight_kg is None or height_m is None or not (height_m > 0) or not math.isfinite(weight_kg):
        return None
    return float(weight_kg) / float(height_m) ** 2


MYOSTEATOSIS_HU = {"bmi_under_25": 41.0, "bmi_25_or_more": 33.0}
"""Martin et al., J Clin Oncol 2013: low muscle attenuation below these mean HU at L3, by BMI (kg/m2)."""


def myosteatosis(muscle_hu: float | None, bmi_value: float | None) -> dict[str, object]:
    """Low muscle attenuation by Martin 2013 (``MYOSTEATOSIS_HU``); no verdict without muscle HU or BMI.

    ``present`` is True, False or None, with ``reason`` saying why it is None; the threshold used and the
    BMI it was picked by are part of the answer, so a reader can check it.
    """
    out: dict[str, object] = {
        "present": None,
        "threshold_hu": None,
        "bmi": None if bmi_value is None else round(bmi_value, 1),
        "rule": "mean muscle HU < 41 if BMI < 25, < 33 if BMI >= 25",
        "citation": "Martin et al., J Clin Oncol 2013",
        "reason": None,
    }
    if muscle_hu is None or not math.isfinite(muscle_hu):
        out["reason"] = "no muscle measured"
    elif bmi_value is None or not math.isfinite(bmi_value):
        out["reason"] = "BMI unknown (height and weight are needed)"
    else:
        threshold = MYOSTEATOSIS_HU["bmi_under_25" if bmi_value < 25.0 else "bmi_25_or_more"]
        out["threshold_hu"], out["present"] = threshold, bool(muscle_hu < threshold)
    return out


@dataclass(frozen=True)
class CutoffRule:
    """A published SMI threshold: sarcopenic when SMI is strictly below it.

    ``men_bmi25`` is the threshold for men with BMI >= 25 where the rule distinguishes (Martin 2013).
    """

    name: str
    citation: str
    men: float
    women: float
    men_bmi25: float | None = None

    def threshold(self, sex: str, bmi_value: float | None = None) -> float:
        """SMI threshold (cm2/m2) for a patient."""
        if normalise_sex(sex) == "F":
            return self.women
        if self.men_bmi25 is not None and bmi_value is not None and bmi_value >= 25.0:
            return self.men_bmi25
        return self.men

    def is_sarcopenic(self, smi_value: float | None, sex: str | None, bmi_value: float | None = None) -> bool | None:
        """Verdict, or None when SMI or sex is unknown (never guessed)."""
        if smi_value is None or sex is None or normalise_sex(sex, strict=False) is None:
            return None
        return bool(smi_value < self.threshold(sex, bmi_value))


CUTOFFS: dict[str, CutoffRule] = {
    "prado2008": CutoffRule("prado2008", "Prado et al., Lancet Oncol 2008", men=52.4, women=38.5),
    "martin2013": CutoffRule("martin2013", "Martin et al., J Clin Oncol 2013", men=43.0, women=41.0, men_bmi25=53.0),
    "derstine2018": CutoffRule("derstine2018", "Derstine et al., Sci Rep 2018", men=45.4, women=34.4),
}
DEFAULT_CUTOFF = "prado2008"


def get_cutoff(name: str) -> CutoffRule:
    """Look a rule up by name; the error lists the names that exist."""
    key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    if key not in CUTOFFS:
        raise ConfigError(f"unknown sarcopenia cutoff {name!r}; choose one of {', '.join(CUTOFFS)}")
    return CUTOFFS[key]


def normalise_sex(value: object, strict: bool = True) -> str | None:
    """'M' or 'F' from the spellings found in manifests and DICOM (M, male, F, female, case-insensitive)."""
    text = str(value).strip().upper() if value is not None else ""
    if text in {"M", "MALE"}:
        return "M"
    if text in {"F", "FEMALE"}:
        return "F"
    if strict:
        raise ConfigError(f"sex must be M or F, got {value!r}")
    return None
