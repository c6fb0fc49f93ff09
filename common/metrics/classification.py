"""Binary verdicts: sarcopenia from SMA against a cutoff rule, confusion counts and AUROC."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from common.clinical import CutoffRule, bmi, normalise_sex, smi
from common.metrics._values import (
    _as_bool,
    _finite,
    _ratio,
)


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

    return float(np.asarray(compute_roc_auc(torch.as_tensor(s), torch.as_tensor(y))))
