"""Clinical and segmentation metrics at L3: pure functions, accumulators and per-site summaries.

Every function here takes plain arrays or numbers and returns plain numbers, so that the local
evaluation loop, the federated client and the server's report all compute the same thing.

Policies (stated once, used everywhere):

- Dice of two empty masks is undefined: NaN, left out of means and counted separately
  (``DiceAccumulator.n_empty``). A reference that is empty while the prediction is not (or the
  reverse) is a Dice of 0. MONAI's ``compute_dice(ignore_empty=True)`` returns NaN whenever the
  reference is empty; the two agree wherever the reference has at least one pixel.
- Ratios whose denominator is zero (sensitivity without a sarcopenic patient, AUROC with one class)
  are NaN, never 0 or 1.
- SMA is the area of muscle-attenuation tissue inside the muscle outline: evaluation and predict
  pass a network's mask through ``apply_hu_window`` (Alberta, -29..+150 HU) before measuring it,
  as reference L3 masks are drawn; ``dice_raw`` keeps the score of the mask as the network gave it.

Patients and rows. A per-patient table has one row per evaluated case (a slice; a patient may have
several). ``n`` counts distinct patients by ``patient_id`` (a row without an id, or a table without
the column, counts as one patient). Values are computed over rows, as a patient's slices are
scored one by one; each ``<name>_n`` counts the rows its value is over, which is the weight that
makes pooling exact. The suppression thresholds below count distinct patients.

Suppression (``MIN_COHORT`` = 5; ``site_summary`` applies it, ``pooled_summary`` again to its own
output). A hidden number is NaN, never 0, and its name is in ``suppressed_metrics``; 0 means that
nothing was evaluated, and NaN with a count of 0 that the value is undefined or was not evaluated.

1. A summary of fewer than ``MIN_COHORT`` patients sends no number: ``n``, every aggregate and every
   count are NaN.
2. An aggregate over fewer than ``MIN_COHORT`` patients is hidden together with its ``_n``.
3. A binary-verdict block, the verdict from SMA (``sarcopenia_accuracy, sensitivity, specificity,
   balanced_accuracy``) or the classifier (``cls_accuracy, cls_sensitivity, cls_specificity,
   cls_auroc``), is shown or hidden as a whole, values and counts. It is shown only when each
   reference class, sarcopenic and not sarcopenic, holds at least ``MIN_COHORT`` patients (an empty
   class hides it too: it would say every patient is in the other). So a block's confusion table
   can be recomputed from what is sent (TP = accuracy x n - specificity x n_neg) only when both of
   its classes are that large. When both blocks are shown and their class counts (rows) differ by 1
   to ``MIN_COHORT - 1``, the classifier block is hidden: the difference would count a reference
   class among the rows that one block scored and the other did not.
4. No count from 1 to ``MIN_COHORT - 1`` is sent (``shareable_count``), including
   ``dice_n_both_empty`` and ``n_without_mask`` (``common.train.evaluate``).
5. The pooled summary is computed only from what the sites sent, and a site's hidden value or count
   contributes nothing: pooled summaries of two site sets (two rounds, a site dropping out) differ
   only by numbers the sites sent themselves. Its counts stand in for patients (a site count is 0
   or at least ``MIN_COHORT`` patients' rows).

Not protected:

- The cells of a shown block's confusion table: TP = sensitivity x sensitivity_n may be 1 to 4. The
  threshold is on the reference classes a proportion is over, not on its numerator.
- Differences between counts over nested sets of the same rows, which count rows lacking an input:
  ``n - dice_mean_n`` (both masks empty), ``n - sma_bias_cm2_n`` (an SMA missing),
  ``n - sarcopenia_accuracy_n`` (no verdict: height, sex or, for a BMI-dependent rule, weight
  unknown). They may be 1 to 4 (rule 4 keeps ``dice_n_both_empty`` out of the message, not out of
  reach); they say how many cases lack an input, not their values or classes (a class count over
  such rows is rule 3's cross-block case). ``n`` is in patients and the ``_n`` in rows, so these
  differences are exact only with one row per patient.
- Summaries of two different tables of one site (a holdout changed between runs) can be
  differenced; the rules hold per table, and a site's holdout is fixed within a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from common.clinical import MUSCLE_HU_RANGE, CutoffRule, area_cm2, bmi, normalise_sex, smi

MIN_COHORT = 5
"""Smallest number of patients an aggregate may be computed over before it is suppressed."""

Z_95 = 1.96
"""Normal quantile for Bland-Altman 95% limits of agreement."""


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
    """Skeletal muscle area (cm2) of an (H, W) mask on its native grid (``spacing_mm`` = row, col in mm)."""
    return area_cm2(np.asarray(mask) > 0, spacing_mm)


def apply_hu_window(
    mask: np.ndarray, hu: np.ndarray, hu_range: tuple[float, float] = MUSCLE_HU_RANGE
) -> np.ndarray:
    """(H, W) uint8 mask keeping only pixels whose HU lies in ``hu_range`` (Alberta muscle window).

    L3 reference masks are drawn this way (outline, then the -29..+150 HU threshold), so SMA is the
    area of muscle-attenuation tissue inside the outline; a network's mask gets the same treatment
    before it is measured or compared. Intermuscular fat and bone at the edges fall out.
    """
    hu = np.asarray(hu)
    mask_b = np.asarray(mask) > 0
    if hu.shape != mask_b.shape:
        raise ValueError(f"apply_hu_window: image shape {hu.shape} differs from mask shape {mask_b.shape}")
    return (mask_b & (hu >= hu_range[0]) & (hu <= hu_range[1])).astype(np.uint8)


def muscle_hu_mean(
    hu: np.ndarray, mask: np.ndarray, hu_range: tuple[float, float] = MUSCLE_HU_RANGE
) -> float:
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


@dataclass(frozen=True)
class Verdict:
    """The quantitative sarcopenia verdict of one patient, with the reason whenever it is unavailable.

    ``smi_cm2_m2``, ``threshold`` and ``sarcopenic`` are None (never guessed) when height, sex or,
    for a rule that depends on it, BMI is unknown; ``reason`` then says which.
    """

    smi_cm2_m2: float | None
    threshold: float | None
    sarcopenic: bool | None
    reason: str | None


def sarcopenia_verdict(
    sma: float,
    height_m: float | None,
    sex: str | None,
    cutoff: CutoffRule,
    weight_kg: float | None = None,
) -> Verdict:
    """SMI (cm2/m2) from SMA (cm2) and height (m), and the verdict of a named cutoff rule.

    A rule with a BMI-dependent threshold for men (Martin 2013) needs weight for men; without it the
    verdict is None with a reason rather than the lower threshold picked silently.
    """
    index = smi(sma, height_m) if _finite(sma) and _finite(height_m) else None
    sex_n = normalise_sex(sex, strict=False)
    reasons = []
    if not _finite(height_m):
        height_m = None
        reasons.append("height unknown")
    elif index is None and _finite(sma):
        reasons.append(f"height {height_m} m is not plausible (0.5-2.6 m)")
    if not _finite(sma):
        reasons.append("SMA unknown")
    if sex_n is None:
        reasons.append("sex unknown")
    bmi_value = bmi(weight_kg, height_m)
    threshold = None
    if sex_n == "M" and cutoff.men_bmi25 is not None and bmi_value is None:
        reasons.append(f"{cutoff.name} needs BMI for men and weight is unknown")
    elif sex_n is not None:
        threshold = cutoff.threshold(sex_n, bmi_value)
    if reasons:
        return Verdict(index, threshold, None, "; ".join(reasons))
    return Verdict(index, threshold, cutoff.is_sarcopenic(index, sex_n, bmi_value), None)


# ----------------------------------------------------------------------------- agreement
@dataclass(frozen=True)
class BlandAltman:
    """Agreement of paired measurements (pred - ref): bias, SD of the differences, 95% limits, n pairs."""

    bias: float
    sd: float
    loa_low: float
    loa_high: float
    n: int


def bland_altman(pred: Iterable[float], ref: Iterable[float]) -> BlandAltman:
    """Bland-Altman bias (mean of pred - ref) and 95% limits (bias -/+ 1.96 SD, SD with ddof=1).

    Pairs with a missing value are dropped. With one pair the SD and limits are NaN; with none, all are.
    """
    pred_a = np.asarray(list(pred), dtype=np.float64)
    ref_a = np.asarray(list(ref), dtype=np.float64)
    if pred_a.shape != ref_a.shape:
        raise ValueError(f"bland_altman: {pred_a.size} predictions for {ref_a.size} references")
    keep = np.isfinite(pred_a) & np.isfinite(ref_a)
    diff = pred_a[keep] - ref_a[keep]
    n = int(diff.size)
    if n == 0:
        return BlandAltman(math.nan, math.nan, math.nan, math.nan, 0)
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if n > 1 else math.nan
    return BlandAltman(bias, sd, bias - Z_95 * sd, bias + Z_95 * sd, n)


# ----------------------------------------------------------------------------- binary verdicts
@dataclass
class BinaryCounts:
    """Confusion counts of a binary verdict (positive = sarcopenic) against a reference; an accumulator.

    ``add`` skips pairs where either side is unknown (None or NaN) and counts them in ``n_skipped``.
    """

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    n_skipped: int = 0

    def add(self, pred: object, ref: object) -> None:
        """Count one patient's (predicted, reference) verdict."""
        p, r = _as_bool(pred), _as_bool(ref)
        if p is None or r is None:
            self.n_skipped += 1
        elif p and r:
            self.tp += 1
        elif p:
            self.fp += 1
        elif r:
            self.fn += 1
        else:
            self.tn += 1

    def reset(self) -> None:
        self.tp = self.fp = self.tn = self.fn = self.n_skipped = 0

    @property
    def n(self) -> int:
        """Pairs with both verdicts known."""
        return self.tp + self.fp + self.tn + self.fn

    @property
    def n_pos(self) -> int:
        """Reference positives (sarcopenic)."""
        return self.tp + self.fn

    @property
    def n_neg(self) -> int:
        """Reference negatives."""
        return self.tn + self.fp

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def sensitivity(self) -> float:
        return _ratio(self.tp, self.n_pos)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.n_neg)

    @property
    def balanced_accuracy(self) -> float:
        """Mean of sensitivity and specificity; NaN unless both classes are present in the reference."""
        return (self.sensitivity + self.specificity) / 2.0


def binary_counts(pred: Iterable[object], ref: Iterable[object]) -> BinaryCounts:
    """Confusion counts of two sequences of verdicts (bool, 0/1, None/NaN for unknown)."""
    counts = BinaryCounts()
    pred_l, ref_l = list(pred), list(ref)
    if len(pred_l) != len(ref_l):
        raise ValueError(f"binary_counts: {len(pred_l)} predictions for {len(ref_l)} references")
    for p, r in zip(pred_l, ref_l, strict=True):
        counts.add(p, r)
    return counts


def auroc(scores: Iterable[float], labels: Iterable[object]) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely sarcopenic) against 0/1 labels.

    Rank-based (tied scores count one half), computed by MONAI's ``compute_roc_auc``. Pairs with a
    missing score or label are dropped; NaN unless both classes remain.
    """
    s = np.asarray(list(scores), dtype=np.float64)
    lab = [_as_bool(x) for x in labels]
    if s.size != len(lab):
        raise ValueError(f"auroc: {s.size} scores for {len(lab)} labels")
    keep = np.array([x is not None for x in lab], dtype=bool) & np.isfinite(s)
    y = np.array([1.0 if x else 0.0 for x in lab], dtype=np.float64)[keep]
    s = s[keep]
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    import torch
    from monai.metrics import compute_roc_auc

    return float(compute_roc_auc(torch.as_tensor(s), torch.as_tensor(y)))


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


# ----------------------------------------------------------------------------- per-site summary
MEANS: tuple[tuple[str, str], ...] = (
    ("dice_mean", "dice"), ("dice_raw_mean", "dice_raw"), ("sma_abs_pct_err_mean", "sma_abs_pct_err"),
    ("sma_ref_mean_cm2", "sma_ref_cm2"), ("sma_pred_mean_cm2", "sma_pred_cm2"), ("muscle_hu_mean", "muscle_hu_mean"),
)
"""(summary name, per-patient column) of each plain mean in a site summary."""

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


def _suppress(summary: dict[str, object], patients: Mapping[str, int],
              classes: Mapping[tuple[str, ...], tuple[int, int]], min_cohort: int) -> list[str]:
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
        count = _num(summary[key])
        if math.isfinite(count) and math.isnan(shareable_count(int(count), min_cohort)):
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
    for name in ("sarcopenia_accuracy", "sensitivity", "specificity", "cls_accuracy", "cls_sensitivity",
                 "cls_specificity"):
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
    for name, value in zip(BLAND_ALTMAN, (bias, sd_pooled, bias - Z_95 * sd_pooled, bias + Z_95 * sd_pooled),
                           strict=True):
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


# ----------------------------------------------------------------------------- helpers
def _binary_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_b, ref_b = np.asarray(pred) > 0, np.asarray(ref) > 0
    if pred_b.shape != ref_b.shape:
        raise ValueError(f"dice: prediction shape {pred_b.shape} differs from reference shape {ref_b.shape}")
    return pred_b, ref_b


def _finite(x: object) -> bool:
    try:
        return x is not None and math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _num(x: object) -> float:
    return float(x) if _finite(x) else math.nan  # type: ignore[arg-type]


def _count(x: object) -> int:
    """A count as sent, 0 when missing or hidden (NaN)."""
    return int(float(x)) if _finite(x) else 0  # type: ignore[arg-type]


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
        value = float(x)  # type: ignore[arg-type]
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
    return len({ids[i] for i in np.flatnonzero(keep)})


def _class_patients(pred: Sequence[object], ref: Sequence[object], ids: Sequence[object]) -> tuple[int, int]:
    """Distinct patients among the rows with both verdicts known: (sarcopenic reference, not sarcopenic reference)."""
    pos, neg = set(), set()
    for p, r, patient in zip(pred, ref, ids, strict=True):
        p_b, r_b = _as_bool(p), _as_bool(r)
        if p_b is not None and r_b is not None:
            (pos if r_b else neg).add(patient)
    return len(pos), len(neg)
