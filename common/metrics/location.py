"""How well L3 is found in a site's holdout series: per-series rows in, one site summary out, then pooled.

Per series (``score_location`` in common.train.locate): whether L3 is present (some slice inside the
true L3 body), whether the locator found it, and where it is found, the distance from the estimate
to the body's centre (mm, and in slices of that series) and whether the chosen slice lies inside the
body. The transitional-anatomy subset is scored on its own as well (``l3_trans_*``), since that is
where counting vertebrae fails.

Site summary keys (all NaN, named in ``suppressed_metrics``, over fewer than ``min_cohort`` series):
``l3_n`` (series), ``l3_presence_accuracy``, ``l3_inside_share`` (of series with L3), ``l3_err_mm_mean``,
``l3_err_mm_median``, ``l3_err_mm_p95``, ``l3_err_slices_median``, ``l3_err_slices_p95``, and
``l3_trans_err_mm_median``, ``l3_trans_inside_share`` over the transitional series; each with ``_n``.

Pooling: shares and the mean error pool exactly (weighted by their ``_n``); medians and percentiles do
not, and the pooled row carries their ``_n``-weighted mean, flagged in ``l3_pooling``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from common.metrics.summary import MIN_COHORT

EXACT = ("l3_presence_accuracy", "l3_inside_share", "l3_err_mm_mean", "l3_trans_inside_share")
APPROXIMATE = (
    "l3_err_mm_median",
    "l3_err_mm_p95",
    "l3_err_slices_median",
    "l3_err_slices_p95",
    "l3_trans_err_mm_median",
)
LOCATION_METRICS: tuple[str, ...] = ("l3_n", *EXACT, *APPROXIMATE)


def location_summary(rows: pd.DataFrame, min_cohort: int = MIN_COHORT) -> dict[str, object]:
    """One site's L3 metrics from its per-series rows (columns of ``score_location`` plus ``variant``)."""
    out: dict[str, object] = {"l3_n": float(len(rows))}
    present = rows[rows["present"].astype(bool)] if len(rows) else rows
    hit = present[present["found"].astype(bool)] if len(present) else present
    trans = (
        present[present.get("variant", pd.Series("normal", index=present.index)) != "normal"]
        if len(present)
        else present
    )

    def put(name: str, value: float, n: int) -> None:
        out[name], out[f"{name}_n"] = value, float(n)

    put("l3_presence_accuracy", _mean(rows.get("presence_correct")), len(rows))
    put("l3_inside_share", _inside(present), len(present))
    put("l3_trans_inside_share", _inside(trans), len(trans))
    err = _values(hit, "error_mm")
    put("l3_err_mm_mean", float(err.mean()) if err.size else math.nan, err.size)
    put("l3_err_mm_median", float(np.median(err)) if err.size else math.nan, err.size)
    put("l3_err_mm_p95", float(np.percentile(err, 95)) if err.size else math.nan, err.size)
    slices = _values(hit, "error_slices")
    put("l3_err_slices_median", float(np.median(slices)) if slices.size else math.nan, slices.size)
    put("l3_err_slices_p95", float(np.percentile(slices, 95)) if slices.size else math.nan, slices.size)
    trans_hit = trans[trans["found"].astype(bool)] if len(trans) else trans
    t_err = _values(trans_hit, "error_mm")
    put("l3_trans_err_mm_median", float(np.median(t_err)) if t_err.size else math.nan, t_err.size)
    suppressed: list[str] = []
    if len(rows) < min_cohort:  # too few series to say anything
        suppressed = list(LOCATION_METRICS)
        out = {name: math.nan for name in out}
    for name in (*EXACT, *APPROXIMATE):
        n = float(out[f"{name}_n"])  # type: ignore[arg-type]  # every _n above is a float
        if 0 < n < min_cohort:
            suppressed.append(name)
            out[name] = out[f"{name}_n"] = math.nan
    out["suppressed_metrics"] = suppressed
    return out


def pooled_location(summaries: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """The pooled L3 metrics of several site summaries (module docstring)."""
    out: dict[str, object] = {"l3_n": float(sum(_n(s.get("l3_n")) for s in summaries))}
    for name in (*EXACT, *APPROXIMATE):
        pairs = [(_n(s.get(f"{name}_n")), _num(s.get(name))) for s in summaries]
        pairs = [(n, v) for n, v in pairs if n > 0 and math.isfinite(v)]
        total = sum(n for n, _ in pairs)
        out[name] = sum(n * v for n, v in pairs) / total if total else math.nan
        out[f"{name}_n"] = float(total)
    out["l3_pooling"] = "medians and 95th percentiles: n-weighted mean of the sites' values (approximate)"
    return out


def _mean(values: pd.Series | None) -> float:
    return float(values.astype(float).mean()) if values is not None and len(values) else math.nan


def _inside(rows: pd.DataFrame) -> float:
    if not len(rows):
        return math.nan
    inside = rows["inside_l3"] if "inside_l3" in rows else pd.Series(False, index=rows.index)
    return float((rows["found"].astype(bool) & inside.fillna(False).astype(bool)).mean())


def _values(rows: pd.DataFrame, column: str) -> np.ndarray:
    if not len(rows) or column not in rows:
        return np.array([])
    values = rows[column].to_numpy(float)
    return values[np.isfinite(values)]


def _num(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]  # anything else is "not a number"
    except (TypeError, ValueError):
        return math.nan


def _n(value: object) -> float:
    v = _num(value)
    return v if math.isfinite(v) else 0.0
