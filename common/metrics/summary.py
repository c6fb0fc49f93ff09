"""A site's per-patient table as the numbers it may share (suppressed by the module policy of
``common.metrics``), and their pooling across sites."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from common.metrics._values import (
    _class_patients,
    _column_objects,
    _count,
    _distinct,
    _num,
    _patient_ids,
)
from common.metrics.agreement import Z_95, bland_altman
from common.metrics.classification import auroc, binary_counts

MIN_COHORT = 5
"""Smallest number of patients an aggregate may be computed over before it is suppressed."""


# ----------------------------------------------------------------------------- per-site summary
MEANS: tuple[tuple[str, str], ...] = (
    ("dice_mean", "dice"),
    ("dice_raw_mean", "dice_raw"),
    ("sma_abs_pct_err_mean", "sma_abs_pct_err"),
    ("sma_ref_mean_cm2", "sma_ref_cm2"),
    ("sma_pred_mean_cm2", "sma_pred_cm2"),
    ("muscle_hu_mean", "muscle_hu_mean"),
    ("imat_abs_pct_err_mean", "imat_abs_pct_err"),
    ("vat_abs_pct_err_mean", "vat_abs_pct_err"),
    ("sat_abs_pct_err_mean", "sat_abs_pct_err"),
    ("myosteatosis_accuracy", "myosteatosis_correct"),
)
"""(summary name, per-patient column) of each plain mean in a site summary. ``myosteatosis_accuracy`` is
the mean of 1/0 agreement of the predicted with the reference verdict (Martin 2013), over rows with both."""

BLAND_ALTMAN: tuple[str, ...] = ("sma_bias_cm2", "sma_sd_diff_cm2", "sma_loa_low", "sma_loa_high")
"""The Bland-Altman aggregates of SMA (cm2), all over the same pairs."""

VERDICT_BLOCK: tuple[str, ...] = ("sarcopenia_accuracy", "sensitivity", "specificity", "balanced_accuracy")
"""The SMA verdict against the reference: shown or suppressed as a whole, values and counts."""

CLASSIFIER_BLOCK: tuple[str, ...] = ("cls_accuracy", "cls_sensitivity", "cls_specificity", "cls_auroc")
"""The image classifier against the reference: shown or suppressed as a whole, values and counts."""

_BLOCKS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (VERDICT_BLOCK, "sensitivity_n", "specificity_n"),
    (CLASSIFIER_BLOCK, "cls_sensitivity_n", "cls_specificity_n"),
)
"""Each block with the keys of its reference classes' counts (sarcopenic, not sarcopenic)."""

_BARE_COUNTS: tuple[str, ...] = ("n", "dice_n_both_empty")
"""Counts a summary sends that are not the ``_n`` of an aggregate."""


def site_summary(per_patient: pd.DataFrame, min_cohort: int = MIN_COHORT) -> dict[str, object]:
    """Aggregate a site's per-patient table into the numbers a site may share, suppressed by the module policy.

    Parameters
    ----------
    per_patient : DataFrame
        One row per evaluated case (a slice; one patient may have several), with any of the
        columns written by ``common.train.evaluate``: ``patient_id, dice, dice_raw, sma_ref_cm2,
        sma_pred_cm2, sma_abs_pct_err, muscle_hu_mean, sarcopenic_ref, sarcopenic_pred, cls_prob``.
        Missing columns give NaN aggregates over 0 rows; without ``patient_id`` each row counts
        as a patient.
    min_cohort : int (default: MIN_COHORT = 5)
        Fewest patients an aggregate, and each reference class of a binary-verdict block, may rest
        on; smaller ones are suppressed (NaN, named in ``suppressed_metrics``), as is any count
        from 1 to ``min_cohort - 1``.

    Returns
    -------
    dict
        ``n`` (distinct patients), and for every aggregate ``name`` its value and ``name_n`` (the
        rows it is over: for ``sensitivity`` the sarcopenic references, for ``specificity`` the
        others, for ``balanced_accuracy`` the smaller of the two), plus ``dice_n_both_empty``,
        ``suppressed`` (bool) and ``suppressed_metrics`` (sorted names whose values are hidden).
        ``sarcopenia_accuracy``, ``sensitivity`` and ``specificity`` judge the verdict from the
        predicted SMA (``sarcopenic_pred``); ``cls_accuracy``, ``cls_sensitivity``,
        ``cls_specificity`` judge the image classifier (``cls_prob >= 0.5``) and ``cls_auroc`` its
        probability, all against ``sarcopenic_ref``, with the same denominators.
    """
    df = per_patient
    ids = _patient_ids(df)
    out: dict[str, object] = {"n": _distinct(ids, np.ones(len(df), dtype=bool))}
    patients: dict[str, int] = {}  # distinct patients behind each aggregate outside the blocks

    def col(name: str) -> np.ndarray:
        if name not in df.columns:
            return np.full(len(df), np.nan)
        return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)

    for name, column in MEANS:
        values = col(column)
        keep = np.isfinite(values)
        out[name] = float(values[keep].mean()) if keep.any() else math.nan
        out[f"{name}_n"] = int(keep.sum())
        patients[name] = _distinct(ids, keep)
    out["dice_n_both_empty"] = int(np.isnan(col("dice")).sum()) if "dice" in df.columns else 0

    sma_pred, sma_ref = col("sma_pred_cm2"), col("sma_ref_cm2")
    ba = bland_altman(sma_pred, sma_ref)
    for name, value in zip(BLAND_ALTMAN, (ba.bias, ba.sd, ba.loa_low, ba.loa_high), strict=True):
        out[name], out[f"{name}_n"] = value, ba.n
        patients[name] = _distinct(ids, np.isfinite(sma_pred) & np.isfinite(sma_ref))

    refs = _column_objects(df, "sarcopenic_ref")
    preds = _column_objects(df, "sarcopenic_pred")
    verdict = binary_counts(preds, refs)
    out["sarcopenia_accuracy"], out["sarcopenia_accuracy_n"] = verdict.accuracy, verdict.n
    out["sensitivity"], out["sensitivity_n"] = verdict.sensitivity, verdict.n_pos
    out["specificity"], out["specificity_n"] = verdict.specificity, verdict.n_neg
    out["balanced_accuracy"] = verdict.balanced_accuracy
    out["balanced_accuracy_n"] = min(verdict.n_pos, verdict.n_neg)

    probs = col("cls_prob")
    cls_verdicts = [None if not math.isfinite(p) else bool(p >= 0.5) for p in probs]
    cls = binary_counts(cls_verdicts, refs)
    out["cls_accuracy"], out["cls_accuracy_n"] = cls.accuracy, cls.n
    out["cls_sensitivity"], out["cls_sensitivity_n"] = cls.sensitivity, cls.n_pos
    out["cls_specificity"], out["cls_specificity_n"] = cls.specificity, cls.n_neg
    out["cls_auroc"], out["cls_auroc_n"] = auroc(probs, refs), cls.n

    classes = {
        VERDICT_BLOCK: _class_patients(preds, refs, ids),
        CLASSIFIER_BLOCK: _class_patients(cls_verdicts, refs, ids),
    }
    suppressed = _suppress(out, patients, classes, min_cohort)
    out["suppressed"] = bool(suppressed)
    out["suppressed_metrics"] = suppressed
    return out


def count_patients(table: pd.DataFrame) -> int:
    """Distinct patients of a table by ``patient_id``; a row without an id, or a table without the column, counts once.

    Parameters
    ----------
    table : DataFrame
        Rows of cases (slices), e.g. a manifest or a per-patient table.

    Returns
    -------
    int
        Distinct non-empty ``patient_id`` values (compared as stripped strings) plus the rows without one.
    """
    return _distinct(_patient_ids(table), np.ones(len(table), dtype=bool))


def shareable_count(count: int, min_cohort: int = MIN_COHORT) -> int | float:
    """A count as it may be sent: itself when 0 or at least ``min_cohort``, NaN (hidden) in between."""
    return int(count) if count == 0 or count >= min_cohort else math.nan


def _suppress(
    summary: dict[str, object],
    patients: Mapping[str, int],
    classes: Mapping[tuple[str, ...], tuple[int, int]],
    min_cohort: int,
) -> list[str]:
    """Apply the module's suppression policy to ``summary`` in place; return the sorted names hidden.

    ``patients`` holds the distinct patients behind each aggregate outside the two blocks, and
    ``classes`` the patients in each block's reference classes (sarcopenic, not sarcopenic). Hiding
    an aggregate sets its value and its ``_n`` to NaN.
    """
    hidden: set[str] = set()

    def hide(name: str) -> None:
        summary[name] = math.nan
        if f"{name}_n" in summary:
            summary[f"{name}_n"] = math.nan
        hidden.add(name)

    n = _num(summary["n"])
    if 0 < n < min_cohort:
        for name in [*patients, *VERDICT_BLOCK, *CLASSIFIER_BLOCK, *_BARE_COUNTS]:
            if name in summary:
                hide(name)
        return sorted(hidden)

    shown: list[tuple[str, str]] = []
    for block, pos_key, neg_key in _BLOCKS:
        n_pos, n_neg = classes[block]
        if n_pos + n_neg == 0:
            continue  # not evaluated: NaN values over 0 rows, nothing to hide
        if min(n_pos, n_neg) < min_cohort:
            for name in block:
                hide(name)
        else:
            shown.append((pos_key, neg_key))
    if len(shown) == 2:
        # Both blocks' class counts are sent: a small difference would count one class among the
        # rows only one block scored. The classifier block gives way.
        (verdict_pos, verdict_neg), (cls_pos, cls_neg) = shown
        for a, b in ((verdict_pos, cls_pos), (verdict_neg, cls_neg)):
            if 0 < abs(_num(summary[a]) - _num(summary[b])) < min_cohort:
                for name in CLASSIFIER_BLOCK:
                    hide(name)
                break

    for name, count in patients.items():
        if 0 < count < min_cohort:
            hide(name)

    for key in [k for k in summary if k in _BARE_COUNTS or (k.endswith("_n") and k[:-2] in summary)]:
        number = _num(summary[key])
        if math.isfinite(number) and math.isnan(shareable_count(int(number), min_cohort)):
            summary[key] = math.nan
            if key in _BARE_COUNTS:
                hidden.add(key)
    return sorted(hidden)


# ----------------------------------------------------------------------------- pooling across sites
def pooled_summary(summaries: Sequence[Mapping[str, object]], min_cohort: int = MIN_COHORT) -> dict[str, object]:
    """Combine site summaries (``site_summary`` output) into one, each mean weighted by its ``_n``.

    Exact for means and proportions (a proportion weighted by its denominator is the pooled
    proportion); the Bland-Altman SD is pooled from the sites' SDs and biases (between- plus
    within-site variance). AUROC cannot be pooled exactly from site values: ``cls_auroc`` is the
    n-weighted mean of the site AUROCs, an approximation, flagged in ``cls_auroc_pooling``. A site's
    suppressed (NaN) value or count contributes nothing, to the means, their ``_n`` or ``n``. The
    pooled result is suppressed by the same policy, its counts standing in for patients.

    Parameters
    ----------
    summaries : sequence of mappings
        Site summaries as sent (``site_summary`` or ``numeric_summary`` of it).
    min_cohort : int (default: MIN_COHORT = 5)
        As in ``site_summary``.

    Returns
    -------
    dict
        The keys of ``site_summary`` (less ``dice_n_both_empty``), plus ``n_sites`` and
        ``cls_auroc_pooling``.
    """
    out: dict[str, object] = {"n": sum(_count(s.get("n")) for s in summaries), "n_sites": len(summaries)}
    for name, _ in MEANS:
        out[name], out[f"{name}_n"] = _weighted(summaries, name)
    for name in (
        "sarcopenia_accuracy",
        "sensitivity",
        "specificity",
        "cls_accuracy",
        "cls_sensitivity",
        "cls_specificity",
    ):
        out[name], out[f"{name}_n"] = _weighted(summaries, name)
    # Bland-Altman: pooled bias, then pooled variance of differences.
    bias, n_ba = _weighted(summaries, "sma_bias_cm2")
    ss, dof = 0.0, 0
    for s in summaries:
        b, sd, n = _num(s.get("sma_bias_cm2")), _num(s.get("sma_sd_diff_cm2")), _count(s.get("sma_bias_cm2_n"))
        if n > 0 and math.isfinite(b):
            ss += n * (b - bias) ** 2 + ((n - 1) * sd**2 if n > 1 and math.isfinite(sd) else 0.0)
            dof += n
    sd_pooled = math.sqrt(ss / (dof - 1)) if dof > 1 else math.nan
    for name, value in zip(
        BLAND_ALTMAN, (bias, sd_pooled, bias - Z_95 * sd_pooled, bias + Z_95 * sd_pooled), strict=True
    ):
        out[name], out[f"{name}_n"] = value, n_ba
    sens, spec = _num(out["sensitivity"]), _num(out["specificity"])
    out["balanced_accuracy"] = (sens + spec) / 2.0
    out["balanced_accuracy_n"] = min(_count(out["sensitivity_n"]), _count(out["specificity_n"]))
    out["cls_auroc"], out["cls_auroc_n"] = _weighted(summaries, "cls_auroc")
    out["cls_auroc_pooling"] = "n-weighted mean of site AUROCs (approximate)"

    patients = {name: _count(out[f"{name}_n"]) for name in [*(m for m, _ in MEANS), *BLAND_ALTMAN]}
    classes = {block: (_count(out[pos_key]), _count(out[neg_key])) for block, pos_key, neg_key in _BLOCKS}
    suppressed = _suppress(out, patients, classes, min_cohort)
    out["suppressed"] = bool(suppressed)
    out["suppressed_metrics"] = suppressed
    return out


def numeric_summary(summary: Mapping[str, object]) -> dict[str, float]:
    """The numbers of a summary only (bools as 0/1; names, lists and dicts dropped), as floats.

    What a federated client can put in a Flower ``MetricRecord``; ``pooled_summary`` accepts it back.
    Suppressed values stay NaN, so the server can tell "hidden" from "zero".
    """
    out: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float, np.integer, np.floating)):
            out[key] = float(value)
    return out


def _weighted(summaries: Sequence[Mapping[str, object]], name: str) -> tuple[float, int]:
    """Mean of the sites' ``name`` weighted by ``name_n``; sites whose value or count is missing or NaN left out."""
    total, weight = 0.0, 0
    for s in summaries:
        value, n = _num(s.get(name)), _count(s.get(f"{name}_n"))
        if n > 0 and math.isfinite(value):
            total += value * n
            weight += n
    return (total / weight if weight else math.nan), weight
