"""Metrics against hand-computed cases and MONAI's own implementations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import DiceMetric, compute_dice

from common import metrics
from common.clinical import MUSCLE_HU_RANGE


def _square(shape: tuple[int, int], top: int, left: int, size: int = 10) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + size, left : left + size] = 1
    return mask


def test_dice_hand_computed_overlap():
    # Two 10x10 squares shifted by 5 columns overlap in 10x5 = 50 pixels: Dice = 2*50 / 200 = 0.5.
    ref = _square((32, 32), 5, 5)
    pred = _square((32, 32), 5, 10)
    assert metrics.dice(pred, ref) == pytest.approx(0.5)
    assert metrics.dice(ref, ref) == 1.0
    assert metrics.dice(_square((32, 32), 20, 20), ref) == 0.0


def test_dice_empty_policy():
    empty = np.zeros((8, 8), np.uint8)
    assert math.isnan(metrics.dice(empty, empty))
    assert metrics.dice(_square((8, 8), 0, 0, 2), empty) == 0.0
    assert metrics.dice(empty, _square((8, 8), 0, 0, 2)) == 0.0
    acc = metrics.DiceAccumulator()
    acc.add(empty, empty)
    acc.add(_square((32, 32), 5, 5), _square((32, 32), 5, 10))
    acc.add(_square((32, 32), 5, 5), _square((32, 32), 5, 5))
    mean, n = acc.aggregate()
    assert (mean, n, acc.n_empty) == (pytest.approx(0.75), 2, 1)
    acc.reset()
    assert math.isnan(acc.aggregate()[0])


def test_dice_matches_monai():
    rng = np.random.default_rng(0)
    preds = (rng.random((6, 40, 40)) > 0.6).astype(np.uint8)
    refs = (rng.random((6, 40, 40)) > 0.5).astype(np.uint8)
    ours = [metrics.dice(p, r) for p, r in zip(preds, refs, strict=True)]
    y_pred = torch.as_tensor(preds[:, None].astype(np.float32))
    y = torch.as_tensor(refs[:, None].astype(np.float32))
    theirs = compute_dice(y_pred, y, include_background=True).flatten().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    metric = DiceMetric(include_background=True, reduction="mean")
    metric(y_pred=y_pred, y=y)
    assert float(metric.aggregate()) == pytest.approx(np.mean(ours), rel=1e-6)


def test_sma_from_native_pixel_area():
    # 10x10 pixels at 0.8 x 0.7 mm = 100 * 0.56 mm2 = 56 mm2 = 0.56 cm2.
    assert metrics.sma_cm2(_square((20, 20), 0, 0), (0.8, 0.7)) == pytest.approx(0.56)
    # A 150 x 200 block at 0.78 mm: 30000 * 0.6084 / 100 = 182.52 cm2.
    big = np.zeros((512, 512), np.uint8)
    big[100:250, 100:300] = 1
    assert metrics.sma_cm2(big, (0.78, 0.78)) == pytest.approx(182.52)


def test_muscle_hu_mean_uses_alberta_window():
    hu = np.array([[40.0, 60.0, -100.0], [200.0, -29.0, 150.0]], np.float32)
    mask = np.ones_like(hu, dtype=np.uint8)
    mask[0, 1] = 0  # 60 HU outside the mask
    # In the mask and in -29..150: 40, -29, 150 -> mean 161/3.
    assert metrics.muscle_hu_mean(hu, mask) == pytest.approx((40 - 29 + 150) / 3)
    assert MUSCLE_HU_RANGE == (-29.0, 150.0)
    assert math.isnan(metrics.muscle_hu_mean(hu, np.zeros_like(mask)))


def test_abs_pct_error():
    assert metrics.abs_pct_error(110.0, 100.0) == pytest.approx(10.0)
    assert metrics.abs_pct_error(90.0, 100.0) == pytest.approx(10.0)
    assert math.isnan(metrics.abs_pct_error(5.0, 0.0))
    assert math.isnan(metrics.abs_pct_error(float("nan"), 10.0))


def test_bland_altman_by_hand():
    # differences 2, -1, 3, 0 -> mean 1, sample SD sqrt((1+4+4+1)/3) = sqrt(10/3)
    ba = metrics.bland_altman([102, 99, 103, 100, np.nan], [100, 100, 100, 100, 100])
    sd = math.sqrt(10 / 3)
    assert ba.n == 4
    assert ba.bias == pytest.approx(1.0)
    assert ba.sd == pytest.approx(sd)
    assert ba.loa_low == pytest.approx(1 - 1.96 * sd)
    assert ba.loa_high == pytest.approx(1 + 1.96 * sd)
    one = metrics.bland_altman([5.0], [3.0])
    assert one.bias == 2.0 and math.isnan(one.sd) and one.n == 1


def test_binary_counts_by_hand():
    #            tp   tp   fn     fp    tn    tn    tn   skipped
    pred = [True, 1, False, True, False, 0, False, None]
    ref = [True, True, True, False, False, False, 0, True]
    c = metrics.binary_counts(pred, ref)
    assert (c.tp, c.fn, c.fp, c.tn, c.n_skipped) == (2, 1, 1, 3, 1)
    assert c.accuracy == pytest.approx(5 / 7)
    assert c.sensitivity == pytest.approx(2 / 3)
    assert c.specificity == pytest.approx(3 / 4)
    assert c.balanced_accuracy == pytest.approx((2 / 3 + 3 / 4) / 2)
    no_pos = metrics.binary_counts([False, True], [False, False])
    assert math.isnan(no_pos.sensitivity) and no_pos.specificity == 0.5 and math.isnan(no_pos.balanced_accuracy)


def _auroc_by_pairs(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_hand_values_and_ties():
    assert metrics.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert metrics.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # One tie between a positive and a negative: 3.5 of 4 pairs won.
    assert metrics.auroc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert metrics.auroc([0.5] * 4, [0, 1, 0, 1]) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 40) / 4.0  # many ties
    labels = rng.integers(0, 2, 40)
    assert metrics.auroc(scores, labels) == pytest.approx(_auroc_by_pairs(scores, labels))
    assert math.isnan(metrics.auroc([0.2, 0.3], [1, 1]))
    assert metrics.auroc([0.2, np.nan, 0.9], [0, 1, 1]) == 1.0


def _table(n: int, n_pos: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ref = rng.uniform(90, 180, n)
    pred = ref + rng.normal(2, 3, n)
    sarc = np.array([True] * n_pos + [False] * (n - n_pos))
    return pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "dice": rng.uniform(0.85, 0.95, n),
            "sma_ref_cm2": ref,
            "sma_pred_cm2": pred,
            "sma_abs_pct_err": np.abs(pred - ref) / ref * 100,
            "muscle_hu_mean": rng.uniform(30, 50, n),
            "sarcopenic_ref": sarc,
            "sarcopenic_pred": sarc,
            "cls_prob": np.where(sarc, 0.8, 0.3),
        }
    )


def test_site_summary_values_and_n():
    df = _table(12, 6)
    s = metrics.site_summary(df)
    assert s["n"] == 12 and s["dice_mean_n"] == 12
    assert s["dice_mean"] == pytest.approx(df["dice"].mean())
    ba = metrics.bland_altman(df["sma_pred_cm2"], df["sma_ref_cm2"])
    assert s["sma_bias_cm2"] == pytest.approx(ba.bias) and s["sma_loa_high"] == pytest.approx(ba.loa_high)
    assert s["sensitivity"] == 1.0 and s["sensitivity_n"] == 6 and s["specificity_n"] == 6
    assert s["cls_auroc"] == 1.0 and s["cls_accuracy"] == 1.0
    assert s["suppressed"] is False and s["suppressed_metrics"] == []


def _classifier_table() -> pd.DataFrame:
    # Reference: 5 sarcopenic, 5 not, 1 unknown; classifier probability thresholded at 0.5 (inclusive).
    return pd.DataFrame(
        {
            "sarcopenic_ref": [True] * 5 + [False] * 5 + [None, True],
            #                  tp   tp   tp   fn   fn    tn   tn   tn   tn    fp   ref?  no prob
            "cls_prob": [0.9, 0.8, 0.5, 0.4, 0.1, 0.2, 0.3, 0.1, 0.05, 0.6, 0.9, np.nan],
        }
    )


def test_site_summary_classifier_sensitivity_and_specificity_by_hand():
    s = metrics.site_summary(_classifier_table())
    assert s["cls_sensitivity"] == pytest.approx(3 / 5) and s["cls_sensitivity_n"] == 5
    assert s["cls_specificity"] == pytest.approx(4 / 5) and s["cls_specificity_n"] == 5
    assert s["cls_accuracy"] == pytest.approx(7 / 10) and s["cls_accuracy_n"] == 10
    assert "cls_sensitivity" not in s["suppressed_metrics"]
    # Four sarcopenic references left: the whole classifier block is hidden, values and counts.
    fewer = metrics.site_summary(_classifier_table().iloc[1:])
    for name in metrics.CLASSIFIER_BLOCK:
        assert math.isnan(fewer[name]) and math.isnan(fewer[f"{name}_n"]), name
        assert name in fewer["suppressed_metrics"]
    # No classifier output (a seg round): NaN over 0 patients, not suppressed.
    seg = metrics.site_summary(_table(10, 5).drop(columns="cls_prob"))
    assert math.isnan(seg["cls_sensitivity"]) and seg["cls_sensitivity_n"] == 0
    assert "cls_sensitivity" not in seg["suppressed_metrics"]


def test_pooled_summary_classifier_sensitivity_and_specificity():
    a, b = _classifier_table(), _table(10, 5, seed=6)
    b.loc[0, "cls_prob"] = 0.2  # one sarcopenic patient missed at site b
    pooled = metrics.pooled_summary([metrics.site_summary(a), metrics.site_summary(b)])
    # a: 3/5 sarcopenic found, 4/5 others cleared; b: 4/5 and 5/5.
    assert pooled["cls_sensitivity"] == pytest.approx((3 + 4) / 10) and pooled["cls_sensitivity_n"] == 10
    assert pooled["cls_specificity"] == pytest.approx((4 + 5) / 10) and pooled["cls_specificity_n"] == 10


def _counts(summary: dict) -> dict[str, float]:
    """Every count a summary sends: ``n``, the ``_n`` of each aggregate, ``dice_n_both_empty``."""
    flat = metrics.numeric_summary(summary)
    return {k: v for k, v in flat.items() if k in ("n", "dice_n_both_empty") or (k.endswith("_n") and k[:-2] in flat)}


def _attack_table() -> pd.DataFrame:
    # 12 patients, 3 sarcopenic. SMA verdict: tp tp fn | fp, then 8 tn. Classifier (>= 0.5): the same cells.
    sarc = [True] * 3 + [False] * 9
    return pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(12)],
            "dice": [0.9] * 12,
            "sarcopenic_ref": sarc,
            "sarcopenic_pred": [True, True, False, True] + [False] * 8,
            "cls_prob": [0.9, 0.8, 0.2, 0.6] + [0.1] * 8,
        }
    )


def test_differencing_cannot_recover_the_confusion_table():
    table = _attack_table()
    # Without suppression the attack works: TP = accuracy x n - specificity x n_neg = 10 - 8 = 2.
    open_ = metrics.numeric_summary(metrics.site_summary(table, min_cohort=1))
    assert open_["sarcopenia_accuracy"] * open_["sarcopenia_accuracy_n"] - open_["specificity"] * open_[
        "specificity_n"
    ] == pytest.approx(2)

    sent = metrics.numeric_summary(s := metrics.site_summary(table))

    for name in (*metrics.VERDICT_BLOCK, *metrics.CLASSIFIER_BLOCK):
        assert math.isnan(sent[name]) and math.isnan(sent[f"{name}_n"]), name
    assert {*metrics.VERDICT_BLOCK, *metrics.CLASSIFIER_BLOCK} <= set(s["suppressed_metrics"])
    for acc, spec in (("sarcopenia_accuracy", "specificity"), ("cls_accuracy", "cls_specificity")):
        assert math.isnan(sent[acc] * sent[f"{acc}_n"] - sent[spec] * sent[f"{spec}_n"])
    assert sent["n"] == 12 and sent["dice_mean"] == pytest.approx(0.9) and sent["dice_mean_n"] == 12


def test_counts_from_one_to_four_are_never_sent():
    table = _attack_table()
    table.loc[[0, 1], "dice"] = np.nan  # two cases with both masks empty
    table["muscle_hu_mean"] = [40.0, 41.0, 42.0] + [np.nan] * 9  # measured on three patients only

    s = metrics.site_summary(table)

    assert s["dice_mean_n"] == 10 and s["dice_mean"] == pytest.approx(0.9)
    assert math.isnan(s["dice_n_both_empty"]) and "dice_n_both_empty" in s["suppressed_metrics"]
    assert math.isnan(s["muscle_hu_mean"]) and math.isnan(s["muscle_hu_mean_n"])
    assert "muscle_hu_mean" in s["suppressed_metrics"]
    assert math.isnan(s["sensitivity_n"]) and math.isnan(s["specificity_n"])  # 3 and 9
    # Any table: every count sent is hidden, 0 or at least 5, at each site and pooled.
    sites = [metrics.site_summary(_table(n, n_pos, seed=n)) for n in range(0, 13) for n_pos in range(0, n + 1)]
    sites.append(s)
    pooled = [metrics.pooled_summary([a, b]) for a, b in itertools.pairwise(sites)]
    for summary in (*sites, *pooled):
        for key, count in _counts(summary).items():
            assert math.isnan(count) or count == 0 or count >= metrics.MIN_COHORT, (key, count)


def test_a_patient_with_two_rows_counts_once():
    table = pd.DataFrame({"patient_id": ["p0", "p0", "p1", "p2", "p3", "p4"], "dice": [0.9, 0.7, 0.8, 0.6, 0.5, 0.4]})

    s = metrics.site_summary(table)

    assert s["n"] == 5
    # Values stay over rows: (0.9 + 0.7 + 0.8 + 0.6 + 0.5 + 0.4) / 6 = 0.65, over 6 rows.
    assert s["dice_mean"] == pytest.approx(0.65) and s["dice_mean_n"] == 6
    # Five rows of four patients: not enough, though five rows are.
    fewer = metrics.site_summary(table[table["patient_id"] != "p4"])
    assert math.isnan(fewer["n"]) and math.isnan(fewer["dice_mean"]) and math.isnan(fewer["dice_mean_n"])
    # Without patient_id, rows count.
    assert metrics.site_summary(table.drop(columns="patient_id"))["n"] == 6
    assert metrics.count_patients(pd.DataFrame({"patient_id": ["a", " a", None, None, "b"]})) == 4


def test_block_threshold_counts_patients_not_rows():
    # Five sarcopenic rows but four sarcopenic patients (p0 twice); five patients not sarcopenic.
    table = pd.DataFrame(
        {
            "patient_id": ["p0", "p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"],
            "sarcopenic_ref": [True] * 5 + [False] * 5,
            "sarcopenic_pred": [True] * 5 + [False] * 5,
        }
    )

    s = metrics.site_summary(table)

    assert s["n"] == 9
    for name in metrics.VERDICT_BLOCK:
        assert math.isnan(s[name]) and math.isnan(s[f"{name}_n"]), name
    table.loc[0, "patient_id"] = "p9"  # now five sarcopenic patients
    shown = metrics.site_summary(table)
    assert shown["sensitivity"] == 1.0 and shown["sensitivity_n"] == 5 and shown["sarcopenia_accuracy_n"] == 10


def test_blocks_with_a_small_difference_in_class_counts_hide_the_classifier():
    # 7 sarcopenic, 5 not, every verdict right; the classifier scored only 5 of the 7 sarcopenic.
    table = pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(12)],
            "sarcopenic_ref": [True] * 7 + [False] * 5,
            "sarcopenic_pred": [True] * 7 + [False] * 5,
            "cls_prob": [0.9] * 5 + [np.nan] * 2 + [0.1] * 5,
        }
    )

    s = metrics.site_summary(table)

    assert s["sensitivity"] == 1.0 and s["sensitivity_n"] == 7 and s["specificity_n"] == 5
    for name in metrics.CLASSIFIER_BLOCK:  # 7 - 5 = 2 sarcopenic rows without a probability
        assert math.isnan(s[name]) and math.isnan(s[f"{name}_n"]) and name in s["suppressed_metrics"], name
    table["cls_prob"] = table["cls_prob"].fillna(0.7)
    assert metrics.site_summary(table)["cls_sensitivity_n"] == 7


def test_site_with_four_patients_sends_nothing_but_nan():
    s = metrics.site_summary(_table(4, 2))

    sent = metrics.numeric_summary(s)

    assert sent.pop("suppressed") == 1.0
    assert sent and all(math.isnan(v) for v in sent.values()), {k: v for k, v in sent.items() if not math.isnan(v)}
    assert set(s["suppressed_metrics"]) == {
        "n",
        "dice_n_both_empty",
        "dice_mean",
        "dice_raw_mean",
        "sma_abs_pct_err_mean",
        "sma_ref_mean_cm2",
        "sma_pred_mean_cm2",
        "muscle_hu_mean",
        "imat_abs_pct_err_mean",
        "vat_abs_pct_err_mean",
        "sat_abs_pct_err_mean",
        "myosteatosis_accuracy",
        "sma_bias_cm2",
        "sma_sd_diff_cm2",
        "sma_loa_low",
        "sma_loa_high",
        "sarcopenia_accuracy",
        "sensitivity",
        "specificity",
        "balanced_accuracy",
        "cls_accuracy",
        "cls_sensitivity",
        "cls_specificity",
        "cls_auroc",
    }


def test_site_summary_block_edges():
    five_each = metrics.site_summary(_table(10, 5))
    assert five_each["sensitivity_n"] == 5 and five_each["specificity_n"] == 5 and five_each["suppressed"] is False
    # Every patient sarcopenic: the empty class hides the block (its count would say so); the rest is shown.
    all_sarcopenic = metrics.site_summary(_table(5, 5))
    assert all_sarcopenic["dice_mean_n"] == 5 and not math.isnan(all_sarcopenic["dice_mean"])
    assert math.isnan(all_sarcopenic["specificity_n"]) and math.isnan(all_sarcopenic["sarcopenia_accuracy"])
    # No verdicts at all (a seg round has no classifier): NaN over 0 rows, not suppressed.
    seg = metrics.site_summary(_table(10, 5).drop(columns="cls_prob"))
    assert seg["cls_accuracy_n"] == 0 and "cls_accuracy" not in seg["suppressed_metrics"]


def test_pooled_summary_equals_pooled_data():
    a, b = _table(10, 5, seed=1), _table(15, 7, seed=2)
    a.loc[0, "sarcopenic_pred"] = False  # one miss at site a
    pooled = metrics.pooled_summary([metrics.site_summary(a), metrics.site_summary(b)])
    everyone = metrics.site_summary(pd.concat([a, b], ignore_index=True))
    for key in (
        "dice_mean",
        "sma_abs_pct_err_mean",
        "sma_bias_cm2",
        "sma_sd_diff_cm2",
        "sma_loa_low",
        "sma_loa_high",
        "sarcopenia_accuracy",
        "sensitivity",
        "specificity",
        "balanced_accuracy",
    ):
        assert pooled[key] == pytest.approx(everyone[key]), key
    assert pooled["n"] == 25 and pooled["n_sites"] == 2 and pooled["sensitivity_n"] == 12


def _site(n: int, n_pos: int, tp: int, dice: float) -> pd.DataFrame:
    """n patients of Dice ``dice``: n_pos sarcopenic of whom tp found, the others all cleared."""
    ref = [True] * n_pos + [False] * (n - n_pos)
    return pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "dice": [dice] * n,
            "sarcopenic_ref": ref,
            "sarcopenic_pred": [True] * tp + [False] * (n - tp),
        }
    )


def test_pooled_summary_skips_suppressed_sites():
    shown = metrics.numeric_summary(metrics.site_summary(_site(10, 5, 4, 0.9)))  # sens 4/5, spec 5/5
    no_block = metrics.numeric_summary(metrics.site_summary(_site(12, 3, 3, 0.6)))  # 3 sarcopenic: block hidden
    tiny = metrics.numeric_summary(metrics.site_summary(_site(4, 2, 2, 0.1)))  # 4 patients: all hidden

    pooled = metrics.pooled_summary([shown, no_block, tiny])

    assert pooled["n"] == 22 and pooled["n_sites"] == 3  # 10 + 12; the 4 are not known
    assert pooled["dice_mean"] == pytest.approx((10 * 0.9 + 12 * 0.6) / 22) and pooled["dice_mean_n"] == 22
    assert pooled["sensitivity"] == pytest.approx(0.8) and pooled["sensitivity_n"] == 5
    assert pooled["specificity"] == 1.0 and pooled["specificity_n"] == 5
    assert pooled["sarcopenia_accuracy"] == pytest.approx(0.9) and pooled["sarcopenia_accuracy_n"] == 10
    assert pooled["balanced_accuracy"] == pytest.approx(0.9) and pooled["suppressed_metrics"] == []
    without = metrics.pooled_summary([no_block, tiny])
    assert without["dice_mean"] == pytest.approx(0.6) and without["n"] == 12
    assert math.isnan(without["sensitivity"]) and without["sensitivity_n"] == 0
    alone = metrics.pooled_summary([tiny])
    assert math.isnan(alone["dice_mean"]) and alone["dice_mean_n"] == 0 and alone["n"] == 0


def test_pooled_summary_is_suppressed_like_a_site():
    # Sites that did not suppress (min_cohort=1): the pooling applies the policy itself.
    two, two_more = (metrics.site_summary(_site(2, 1, 1, 0.8), min_cohort=1) for _ in range(2))
    pooled = metrics.pooled_summary([two, two_more])
    assert math.isnan(pooled["n"]) and math.isnan(pooled["dice_mean"]) and math.isnan(pooled["dice_mean_n"])
    assert {"n", "dice_mean", "sensitivity"} <= set(pooled["suppressed_metrics"])
    open_site = metrics.site_summary(_site(12, 3, 3, 0.6), min_cohort=1)
    assert open_site["sensitivity_n"] == 3
    pooled = metrics.pooled_summary([open_site])
    assert pooled["dice_mean"] == pytest.approx(0.6) and pooled["n"] == 12
    for name in metrics.VERDICT_BLOCK:
        assert math.isnan(pooled[name]) and math.isnan(pooled[f"{name}_n"]) and name in pooled["suppressed_metrics"]


def test_sarcopenia_verdict_rules():
    from common.clinical import get_cutoff

    prado = get_cutoff("prado2008")
    # SMA 150 cm2, 1.75 m -> SMI 48.98 < 52.4 for a man: sarcopenic.
    v = metrics.sarcopenia_verdict(150.0, 1.75, "M", prado)
    assert v.smi_cm2_m2 == pytest.approx(150 / 1.75**2) and v.threshold == 52.4 and v.sarcopenic is True
    assert metrics.sarcopenia_verdict(150.0, 1.75, "F", prado).sarcopenic is False
    none = metrics.sarcopenia_verdict(150.0, None, "M", prado)
    assert none.smi_cm2_m2 is None and none.sarcopenic is None and none.reason == "height unknown"
    assert metrics.sarcopenia_verdict(150.0, float("nan"), "M", prado).reason == "height unknown"
    assert metrics.sarcopenia_verdict(150.0, 1.75, None, prado).reason == "sex unknown"
    assert "plausible" in metrics.sarcopenia_verdict(150.0, 175.0, "M", prado).reason
    martin = get_cutoff("martin2013")
    # A man with BMI >= 25 has threshold 53, below it 43: SMI 48.98 flips the verdict.
    assert metrics.sarcopenia_verdict(150.0, 1.75, "M", martin, weight_kg=90).sarcopenic is True
    assert metrics.sarcopenia_verdict(150.0, 1.75, "M", martin, weight_kg=60).sarcopenic is False
    unknown_bmi = metrics.sarcopenia_verdict(150.0, 1.75, "M", martin)
    assert unknown_bmi.sarcopenic is None and "BMI" in unknown_bmi.reason


def test_numeric_summary_round_trips_through_pooling():
    s = metrics.site_summary(_table(8, 5))
    flat = metrics.numeric_summary(s)
    assert all(isinstance(v, float) for v in flat.values()) and "suppressed_metrics" not in flat
    assert flat["suppressed"] == 1.0  # 3 patients not sarcopenic: both blocks hidden
    assert math.isnan(flat["specificity"]) and math.isnan(flat["specificity_n"])
    pooled = metrics.pooled_summary([flat, metrics.numeric_summary(metrics.site_summary(_table(10, 5, seed=5)))])
    assert pooled["specificity_n"] == 5 and pooled["specificity"] == 1.0  # only the second site's 5 count
    assert pooled["dice_mean_n"] == 18 and pooled["n"] == 18


def test_keep_muscle_attenuation():
    hu = np.array([[-30.0, -29.0, 150.0, 151.0], [40.0, 40.0, -100.0, 300.0]])
    mask = np.array([[1, 1, 1, 1], [1, 0, 1, 1]])
    np.testing.assert_array_equal(metrics.keep_muscle_attenuation(mask, hu), [[0, 1, 1, 0], [1, 0, 0, 0]])
