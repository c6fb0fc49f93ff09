"""Evaluate a model on a site's labelled slices: one row per slice, then the site summary.

Used as it is by ``sarcofed evaluate``, by the federated client after every round, and by the
baselines, so that every number in a report is computed one way. Everything is measured on each
image's native grid: the network's mask is resampled back by ``common.train.infer.segment`` and
areas use the image's own pixel spacing.

Reference masks may be body-composition label maps (muscle, IMAT, VAT, SAT): then the fat tissues
are scored too (areas and their errors); a muscle-only reference leaves those columns empty.
Myosteatosis (Martin 2013) is judged from the predicted and the reference mask's muscle attenuation
with the same BMI. The reference verdict is recomputed from the reference mask's SMA with the same cutoff as the
predicted one; the manifest's ``sarcopenic`` column (which may have been made with another rule) is
kept beside it as ``sarcopenic_manifest`` but never scored against.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.clinical import DEFAULT_CUTOFF, MUSCLE, MUSCLE_HU_RANGE, TISSUES, CutoffRule, bmi, get_cutoff, myosteatosis
from common.errors import InputDataError
from common.metrics import (
    MIN_COHORT,
    abs_pct_error,
    count_patients,
    dice,
    keep_muscle_attenuation,
    muscle_hu_mean,
    sarcopenia_verdict,
    shareable_count,
    site_summary,
    sma_cm2,
)

FAT_TISSUES: tuple[str, ...] = tuple(name for name in TISSUES if name != "muscle")

PER_PATIENT_COLUMNS = [
    "patient_id",
    "dice",
    "dice_raw",
    "sma_ref_cm2",
    "sma_pred_cm2",
    "sma_abs_pct_err",
    "smi_ref",
    "smi_pred",
    "muscle_hu_mean",
    "muscle_hu_ref",
    "sex",
    "height_m",
    "sarcopenic_ref",
    "sarcopenic_pred",
    "verdict_unavailable",
    "sarcopenic_manifest",
    "cls_prob",
    *(f"{t}_{kind}" for t in FAT_TISSUES for kind in ("ref_cm2", "pred_cm2", "abs_pct_err")),
    "myosteatosis_ref",
    "myosteatosis_pred",
    "myosteatosis_correct",
]


def evaluate_cases(
    model: Any,
    preset: Any,
    cases: pd.DataFrame | Iterable[pd.Series],
    *,
    cutoff: str = DEFAULT_CUTOFF,
    split: str | None = "holdout",
    with_classifier: bool = False,
    manifest_dir: str | Path | None = None,
    min_cohort: int = MIN_COHORT,
    batch_size: int = 16,
    muscle_hu_range: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Segment (and optionally classify) every labelled case and score it against its reference mask.

    Parameters
    ----------
    model : SarcoModel
        A model trained at least through the ``seg`` phase (``common.models.checkpoint.load_checkpoint``).
    preset : Preset
        The model's preset (input grid and input HU range).
    cases : DataFrame or iterable of rows
        A manifest as returned by ``common.data.manifest.read_manifest`` (or its rows).
    cutoff : str (default: "prado2008")
        Named sarcopenia rule (``common.clinical.CUTOFFS``) used for both the predicted and the
        reference verdict.
    split : str or None (default: "holdout")
        Keep rows whose ``split`` equals this; None or "all" keeps every labelled row.
    with_classifier : bool (default: False)
        Also run the image classifier and report ``cls_prob`` (only for a model trained in ``cls``).
    manifest_dir : path, optional
        Folder that relative paths are relative to, when ``cases`` does not carry it in ``attrs``.
    min_cohort : int (default: 5)
        Aggregates over fewer patients, and counts from 1 to ``min_cohort - 1``, are suppressed in
        the summary (``common.metrics`` states the policy).
    batch_size : int (default: 16)
        Slices per forward pass (and held in memory at once).
    muscle_hu_range : bool (default: True)
        Keep only predicted pixels in the Alberta muscle range (-29..+150 HU) before scoring, as
        reference masks are drawn (``common.metrics.keep_muscle_attenuation``). ``dice_raw`` always scores
        the network's mask as it came, so the effect of this step is visible.

    Returns
    -------
    per_patient : DataFrame
        One row per evaluated manifest row (a slice; a patient may have several), columns
        ``PER_PATIENT_COLUMNS`` (areas in cm2, SMI in cm2/m2, HU; verdicts True/False/None).
    summary : dict
        ``common.metrics.site_summary`` of that table (``n`` in distinct patients) plus ``cutoff``
        (name, citation), ``split``, ``n_without_mask`` (patients of the split none of whose rows
        has a mask; NaN from 1 to ``min_cohort - 1``) and ``seconds``.

    Raises
    ------
    InputDataError
        When no labelled row is left to evaluate, or a row's image or mask cannot be read.
    """
    import torch

    from common.data.manifest import load_case
    from common.data.mask_io import is_tissue_map
    from common.train.infer import classify_batch, segment_tissues_batch

    rule = get_cutoff(cutoff)
    df = cases if isinstance(cases, pd.DataFrame) else pd.DataFrame(list(cases))
    base = manifest_dir if manifest_dir is not None else df.attrs.get("manifest_dir")
    if split not in (None, "all") and "split" in df.columns:
        df = df[df["split"].astype(str) == split]
    has_mask = df.apply(_has_mask, axis=1) if len(df) else pd.Series([], dtype=bool)
    labelled = df[has_mask] if len(df) else df
    if labelled.empty:
        raise InputDataError(
            f"no labelled rows to evaluate (split {split!r}: {len(df)} rows, none with a mask_path); "
            "choose another --split or add reference masks",
            df.attrs.get("manifest_path"),
        )

    start = time.perf_counter()
    model.eval()
    rows: list[dict[str, Any]] = []
    records = [row for _, row in labelled.iterrows()]
    with torch.inference_mode():
        for first in range(0, len(records), batch_size):
            chunk = records[first : first + batch_size]
            cases_ = [load_case(row, base) for row in chunk]
            cts = [ct for ct, _ in cases_]
            segmented = segment_tissues_batch(model, cts, preset)
            probs = classify_batch(model, cts, preset) if with_classifier else [math.nan] * len(cts)
            for row, (ct, ref), (raw, tissues), prob in zip(chunk, cases_, segmented, probs, strict=True):
                final = keep_muscle_attenuation(raw, ct.hu) if muscle_hu_range else raw
                ref = np.asarray(ref)
                record = _score(row, ct, (ref == MUSCLE).astype(np.uint8), final, raw, float(prob), rule)
                record.update(_score_fat(ct, ref, tissues, is_tissue_map(ref), model.seg_classes > 2))
                rows.append(record)
    per_patient = pd.DataFrame(rows, columns=PER_PATIENT_COLUMNS)
    summary: dict[str, Any] = site_summary(per_patient, min_cohort=min_cohort)
    summary.update(
        {
            "cutoff": {
                "name": rule.name,
                "citation": rule.citation,
                "men": rule.men,
                "women": rule.women,
                "men_bmi25": rule.men_bmi25,
            },
            "split": split or "all",
            "n_without_mask": shareable_count(count_patients(df) - count_patients(labelled), min_cohort),
            "classifier_evaluated": with_classifier,
            "muscle_hu_range": list(MUSCLE_HU_RANGE) if muscle_hu_range else None,
            "seconds": round(time.perf_counter() - start, 3),
        }
    )
    return per_patient, summary


def _score(
    row: pd.Series, ct: Any, ref: np.ndarray, pred: np.ndarray, raw: np.ndarray, cls_prob: float, rule: CutoffRule
) -> dict[str, Any]:
    """One patient's row: Dice, areas, SMI, HU and both verdicts, all on the native grid."""
    if pred.shape != ref.shape:  # infer promises the native grid; say so loudly if that ever breaks
        raise ValueError(f"segmentation is {pred.shape} for a {ref.shape} image ({ct.path})")
    sma_ref, sma_pred = sma_cm2(ref, ct.spacing_mm), sma_cm2(pred, ct.spacing_mm)
    v_ref = sarcopenia_verdict(sma_ref, ct.height_m, ct.sex, rule, ct.weight_kg)
    v_pred = sarcopenia_verdict(sma_pred, ct.height_m, ct.sex, rule, ct.weight_kg)
    return {
        "patient_id": str(row.get("patient_id", ct.path.stem if ct.path else "")),
        "dice": dice(pred, ref),
        "dice_raw": dice(raw, ref),
        "sma_ref_cm2": sma_ref,
        "sma_pred_cm2": sma_pred,
        "sma_abs_pct_err": abs_pct_error(sma_pred, sma_ref),
        "smi_ref": v_ref.smi_cm2_m2,
        "smi_pred": v_pred.smi_cm2_m2,
        "muscle_hu_mean": muscle_hu_mean(ct.hu, pred),
        "muscle_hu_ref": muscle_hu_mean(ct.hu, ref),
        "sex": ct.sex,
        "height_m": ct.height_m,
        "sarcopenic_ref": v_ref.sarcopenic,
        "sarcopenic_pred": v_pred.sarcopenic,
        "verdict_unavailable": v_pred.reason,
        "sarcopenic_manifest": _manifest_verdict(row.get("sarcopenic")),
        "cls_prob": cls_prob,
    }


def _score_fat(ct: Any, ref: np.ndarray, pred: np.ndarray, ref_drawn: bool, pred_drawn: bool) -> dict[str, Any]:
    """IMAT, VAT and SAT areas of both label maps and their errors, and both myosteatosis verdicts.

    A tissue missing from either side (a muscle-only reference, a muscle-only model) stays NaN.
    """
    out: dict[str, Any] = {}
    for name in FAT_TISSUES:
        value = TISSUES[name]
        ref_area = sma_cm2(ref == value, ct.spacing_mm) if ref_drawn else math.nan
        pred_area = sma_cm2(pred == value, ct.spacing_mm) if pred_drawn else math.nan
        out[f"{name}_ref_cm2"], out[f"{name}_pred_cm2"] = ref_area, pred_area
        out[f"{name}_abs_pct_err"] = abs_pct_error(pred_area, ref_area)
    body_mass = bmi(ct.weight_kg, ct.height_m)
    verdicts = [
        myosteatosis(muscle_hu_mean(ct.hu, mask) if (mask > 0).any() else None, body_mass)["present"]
        for mask in ((ref == MUSCLE), (pred == MUSCLE))
    ]
    out["myosteatosis_ref"], out["myosteatosis_pred"] = verdicts
    both = None not in verdicts
    out["myosteatosis_correct"] = float(verdicts[0] == verdicts[1]) if both else math.nan
    return out


def _has_mask(row: pd.Series) -> bool:
    for key in ("mask_abspath", "mask_path"):
        value = row.get(key)
        if isinstance(value, (str, Path)) and str(value).strip() and str(value).lower() != "nan":
            return True
    return False


def _manifest_verdict(value: object) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, str):
        return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower())
    return bool(value)
