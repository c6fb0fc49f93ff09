"""L3 location metrics: a site summary from per-series rows, suppressed small cohorts, exact pooling."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from common.metrics.location import location_summary, pooled_location


def _rows(errors, absent=0, missed=0, variant="normal", outside=0):
    rows = []
    for k, e in enumerate(errors):
        rows.append(
            {"present": True, "found": True, "presence_correct": True, "error_mm": e, "error_slices": e / 2.0,
             "inside_l3": k >= outside, "variant": variant}
        )  # fmt: skip
    rows += [{"present": False, "found": False, "presence_correct": True, "variant": variant}] * absent
    rows += [{"present": True, "found": False, "presence_correct": False, "variant": variant}] * missed
    return pd.DataFrame(rows)


def test_site_summary_numbers():
    rows = pd.concat(
        [_rows([1.0, 2.0, 3.0, 4.0, 10.0], absent=2, missed=1, outside=1), _rows([5.0], variant="13 ribs")]
    )
    s = location_summary(rows)
    assert s["l3_n"] == 9
    assert s["l3_presence_accuracy"] == pytest.approx(8 / 9)
    assert s["l3_inside_share"] == pytest.approx(5 / 7) and s["l3_inside_share_n"] == 7  # of series with L3
    assert s["l3_err_mm_median"] == pytest.approx(3.5) and s["l3_err_mm_mean"] == pytest.approx(25 / 6)
    assert s["l3_err_slices_median"] == pytest.approx(1.75)
    assert math.isnan(s["l3_trans_err_mm_median"]) and "l3_trans_err_mm_median" in s["suppressed_metrics"]
    assert math.isnan(s["l3_trans_inside_share_n"])  # a count of 1 is never sent


def test_fewer_than_five_series_send_nothing():
    s = location_summary(_rows([1.0, 2.0, 3.0, 4.0]))
    assert all(math.isnan(v) for k, v in s.items() if k != "suppressed_metrics")
    assert "l3_n" in s["suppressed_metrics"]


def test_pooling_is_exact_for_shares_and_means():
    a, b = _rows([1.0] * 5, outside=1), _rows([3.0] * 10, absent=5)
    pooled = pooled_location([location_summary(a), location_summary(b)])
    both = location_summary(pd.concat([a, b]))
    for name in ("l3_presence_accuracy", "l3_inside_share", "l3_err_mm_mean"):
        assert pooled[name] == pytest.approx(both[name])
    assert pooled["l3_n"] == 20 and "approximate" in pooled["l3_pooling"]
    assert pooled["l3_err_mm_median"] == pytest.approx((5 * 1.0 + 10 * 3.0) / 15)  # weighted, not the true median
