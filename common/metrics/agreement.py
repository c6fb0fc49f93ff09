"""Bland-Altman agreement of estimated and reference SMA."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

Z_95 = 1.96
"""Normal quantile for Bland-Altman 95% limits of agreement."""


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
