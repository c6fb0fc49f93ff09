"""Small value helpers the metrics modules share (NaN-aware numbers, booleans, patient ids)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd


# ----------------------------------------------------------------------------- helpers
def _binary_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_b, ref_b = np.asarray(pred) > 0, np.asarray(ref) > 0
    if pred_b.shape != ref_b.shape:
        raise ValueError(f"dice: prediction shape {pred_b.shape} differs from reference shape {ref_b.shape}")
    return pred_b, ref_b


def _finite(x: object) -> bool:
    try:
        return x is not None and math.isfinite(float(x))  # type: ignore[arg-type]  # any object; rejects caught
    except (TypeError, ValueError):
        return False


def _num(x: object) -> float:
    return float(x) if _finite(x) else math.nan  # type: ignore[arg-type]  # _finite(x): float(x) works


def _count(x: object) -> int:
    """A count as sent, 0 when missing or hidden (NaN)."""
    return int(float(x)) if _finite(x) else 0  # type: ignore[arg-type]  # _finite(x): float(x) works


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _as_bool(x: object) -> bool | None:
    """A verdict as bool; None for unknown (None, NaN, empty string, 'nan')."""
    if x is None or x is pd.NA:
        return None
    if isinstance(x, str):
        text = x.strip().lower()
        if text in {"true", "1", "yes", "y"}:
            return True
        if text in {"false", "0", "no", "n"}:
            return False
        return None
    try:
        value = float(x)  # type: ignore[arg-type]  # any object: what float() rejects gives None
    except (TypeError, ValueError):
        return None
    if math.isnan(value):
        return None
    return bool(value)


def _column_objects(df: pd.DataFrame, name: str) -> list[object]:
    return list(df[name]) if name in df.columns else [None] * len(df)


def _patient_ids(df: pd.DataFrame) -> list[object]:
    """Each row's patient: its ``patient_id`` as a stripped string, or the row itself when it has none."""
    if "patient_id" not in df.columns:
        return [("row", i) for i in range(len(df))]
    ids: list[object] = []
    for i, value in enumerate(df["patient_id"]):
        missing = value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
        text = "" if missing else str(value).strip()
        ids.append(text if text else ("row", i))
    return ids


def _distinct(ids: Sequence[object], keep: np.ndarray) -> int:
    """Distinct patients among the rows where ``keep`` is True."""
    return len({ids[int(i)] for i in np.flatnonzero(keep)})


def _class_patients(pred: Sequence[object], ref: Sequence[object], ids: Sequence[object]) -> tuple[int, int]:
    """Distinct patients among the rows with both verdicts known: (sarcopenic reference, not sarcopenic reference)."""
    pos: set[object] = set()
    neg: set[object] = set()
    for p, r, patient in zip(pred, ref, ids, strict=True):
        p_b, r_b = _as_bool(p), _as_bool(r)
        if p_b is not None and r_b is not None:
            (pos if r_b else neg).add(patient)
    return len(pos), len(neg)
