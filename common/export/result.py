"""The per-slice result record (result.json): the measurements, the rule that judged them, and provenance.

A result must be readable on its own months later: it names the input, its pixel spacing, the model
file by SHA-256, the cutoff with its citation and threshold, and the software versions. Values that
could not be computed are null with a reason beside them, never a guess.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from common.clinical import MUSCLE_HU_RANGE, TISSUE_HU_RANGES, CutoffRule, bmi, myosteatosis
from common.metrics import muscle_hu_mean, sarcopenia_verdict, sma_cm2
from common.metrics.composition import composition


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (model checkpoints: which exact weights produced a result)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def measurements(
    hu: np.ndarray,
    mask: np.ndarray,
    spacing_mm: tuple[float, float],
    *,
    height_m: float | None,
    sex: str | None,
    weight_kg: float | None,
    cutoff: CutoffRule,
    tissue_map: np.ndarray | None = None,
) -> dict[str, Any]:
    """SMA (cm2), SMI (cm2/m2), muscle HU, the verdict of ``cutoff`` and myosteatosis (Martin 2013) for one
    (H, W) muscle mask on its native grid, and the fat tissues (IMAT, VAT, SAT: area and mean HU) of its
    ``tissue_map`` (a 0-4 label map; None from a muscle-only model: those values are null with the reason)."""
    sma = sma_cm2(mask, spacing_mm)
    hu_mean = muscle_hu_mean(hu, mask)
    verdict = sarcopenia_verdict(sma, height_m, sex, cutoff, weight_kg)
    return {
        "sma_cm2": round(sma, 3),
        "smi_cm2_m2": None if verdict.smi_cm2_m2 is None else round(verdict.smi_cm2_m2, 3),
        "muscle_hu_mean": None if math.isnan(hu_mean) else round(hu_mean, 2),
        "muscle_hu_range": list(MUSCLE_HU_RANGE),
        "muscle_pixels": int(np.count_nonzero(mask)),
        "sarcopenic": verdict.sarcopenic,
        "unavailable_reason": verdict.reason,
        "cutoff": {
            "name": cutoff.name,
            "citation": cutoff.citation,
            "threshold_cm2_m2": verdict.threshold,
            "rule": "sarcopenic when SMI < threshold",
        },
        **_fat_tissues(hu, tissue_map, spacing_mm),
        "myosteatosis": myosteatosis(None if math.isnan(hu_mean) else hu_mean, bmi(weight_kg, height_m)),
        "patient": {"height_m": height_m, "sex": sex, "weight_kg": weight_kg},
    }


def _fat_tissues(hu: np.ndarray, tissue_map: np.ndarray | None, spacing_mm: tuple[float, float]) -> dict[str, Any]:
    """``imat_cm2``, ``imat_hu_mean``, ``vat_...``, ``sat_...`` (rounded), their HU windows, and why not measured."""
    values = composition(tissue_map if tissue_map is not None else np.zeros(hu.shape, np.uint8), hu, spacing_mm)
    out: dict[str, Any] = {}
    for name in ("imat", "vat", "sat"):
        area, mean = values[f"{name}_cm2"], values[f"{name}_hu_mean"]
        drawn = tissue_map is not None
        out[f"{name}_cm2"] = round(area, 3) if drawn and area is not None else None
        out[f"{name}_hu_mean"] = round(mean, 2) if drawn and mean is not None else None
    out["tissue_hu_ranges"] = {name: list(window) for name, window in TISSUE_HU_RANGES.items()}
    out["composition_unavailable_reason"] = (
        None if tissue_map is not None else "the model segments muscle only (trained before body composition)"
    )
    return out


def versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes a result (a copy: the caller may change it)."""
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str]:
    """Looked up once per process: importlib.metadata scans site-packages, about 10 ms for these seven."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in ("sarcofed", "torch", "monai", "pydicom", "highdicom", "nibabel", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def write_result_json(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as indented JSON; NaN and numpy scalars become null / plain numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(record), indent=2, allow_nan=False) + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
