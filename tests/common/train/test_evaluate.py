"""evaluate_cases on a small phantom site: every per-patient number traced back to its definition."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from common import metrics
from common.clinical import get_cutoff
from common.data.dicom_io import write_ct_dicom
from common.data.manifest import load_case, read_manifest, write_manifest
from common.data.mask_io import write_mask_nifti
from common.errors import InputDataError
from common.models.presets import get_preset
from common.models.sarco import SarcoModel
from common.phantom.case import synth_case
from common.phantom.profiles import PROFILES, get_profile
from common.train.evaluate import PER_PATIENT_COLUMNS, evaluate_cases
from common.train.infer import segment


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """8 phantom patients: 2 train, 5 holdout with masks (one stored bottom-up), 1 holdout without."""
    root = tmp_path_factory.mktemp("site")
    profile = get_profile(next(iter(PROFILES)))
    rows = []
    drawn = [synth_case((5, i), profile) for i in range(24)]
    sarcopenic = [c for c in drawn if c.sarcopenic()]
    others = [c for c in drawn if not c.sarcopenic()]
    # one sarcopenic patient among the holdout (p4), whatever the phantom draws
    cases = [*others[:2], others[2], others[3], sarcopenic[0], *others[4:7]]
    for i, case in enumerate(cases):
        ct = write_ct_dicom(
            root / f"img/p{i}.dcm",
            case.hu,
            case.spacing_mm,
            patient_id=f"p{i}",
            sex=case.sex,
            height_m=case.height_m,
            weight_kg=case.weight_kg,
            age_years=case.age_years,
            rows_bottom_up=(i == 3),
        )
        labelled = i != 7
        if labelled:
            write_mask_nifti(root / f"mask/p{i}.nii.gz", case.muscle, ct.geometry)
        rows.append(
            {
                "patient_id": f"p{i}",
                "image_path": f"img/p{i}.dcm",
                "mask_path": f"mask/p{i}.nii.gz" if labelled else "",
                "sex": case.sex,
                "height_m": case.height_m,
                "weight_kg": case.weight_kg,
                "age": case.age_years,
                "split": "train" if i < 2 else "holdout",
                "sma_cm2": case.sma_cm2 if labelled else None,
                "smi_cm2_m2": case.sma_cm2 / case.height_m**2 if labelled else None,
                # Deliberately wrong: evaluate must recompute the reference verdict, not trust this column.
                "sarcopenic": True if labelled else None,
            }
        )
    write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    torch.manual_seed(0)
    model = SarcoModel(get_preset("tiny")).eval()
    return read_manifest(root / "manifest.csv"), model


def test_per_patient_rows(site):
    manifest, model = site
    df, summary = evaluate_cases(model, model.preset, manifest, min_cohort=1)  # 1 of 5 sarcopenic: shown
    assert list(df.columns) == PER_PATIENT_COLUMNS
    assert list(df["patient_id"]) == ["p2", "p3", "p4", "p5", "p6"]  # holdout with a mask
    rule = get_cutoff("prado2008")
    for _, row in manifest[manifest["patient_id"].isin(["p3", "p5"])].iterrows():
        ct, ref = load_case(row)
        raw = segment(model, ct, model.preset)
        pred = metrics.keep_muscle_attenuation(raw, ct.hu)  # the Alberta window, as the reference masks are drawn
        got = df.set_index("patient_id").loc[row["patient_id"]]
        assert got["dice"] == pytest.approx(metrics.dice(pred, ref))
        assert got["dice_raw"] == pytest.approx(metrics.dice(raw, ref))
        assert got["sma_ref_cm2"] == pytest.approx(row["sma_cm2"], rel=1e-6)  # the phantom's own area
        assert got["sma_pred_cm2"] == pytest.approx(pred.sum() * np.prod(ct.spacing_mm) / 100)
        assert got["sma_abs_pct_err"] == pytest.approx(
            abs(got["sma_pred_cm2"] - got["sma_ref_cm2"]) / got["sma_ref_cm2"] * 100
        )
        assert got["smi_ref"] == pytest.approx(got["sma_ref_cm2"] / ct.height_m**2)
        assert got["sarcopenic_ref"] == (got["smi_ref"] < rule.threshold(ct.sex))
        assert got["sarcopenic_pred"] == (got["smi_pred"] < rule.threshold(ct.sex))
        assert got["muscle_hu_mean"] == pytest.approx(metrics.muscle_hu_mean(ct.hu, pred))
    assert df["sarcopenic_manifest"].all()  # kept for reference, but not scored against:
    agree = (df["sarcopenic_pred"] == df["sarcopenic_ref"]).mean()
    assert summary["sarcopenia_accuracy"] == pytest.approx(agree)
    assert df["cls_prob"].isna().all()


def test_summary_and_cutoff(site):
    manifest, model = site
    df, summary = evaluate_cases(model, model.preset, manifest, cutoff="derstine2018")
    assert summary["n"] == 5 and summary["split"] == "holdout"
    assert math.isnan(summary["n_without_mask"])  # one patient (p7): a count under 5 is not sent
    assert summary["cutoff"]["name"] == "derstine2018" and "Derstine" in summary["cutoff"]["citation"]
    assert summary["dice_mean"] == pytest.approx(df["dice"].mean()) and summary["dice_mean_n"] == 5
    ba = metrics.bland_altman(df["sma_pred_cm2"], df["sma_ref_cm2"])
    assert summary["sma_bias_cm2"] == pytest.approx(ba.bias)
    assert summary["sma_loa_low"] == pytest.approx(ba.loa_low) and summary["sma_loa_high"] == pytest.approx(ba.loa_high)
    for key in (
        "n",
        "dice_mean",
        "sma_abs_pct_err_mean",
        "sma_bias_cm2",
        "sarcopenia_accuracy",
        "sensitivity",
        "specificity",
        "balanced_accuracy",
        "cls_accuracy",
        "cls_auroc",
        "cutoff",
        "suppressed",
    ):
        assert key in summary
    # Five patients cannot fill two reference classes of five: the verdict block is hidden, counts too.
    for key in metrics.VERDICT_BLOCK:
        assert math.isnan(summary[key]) and math.isnan(summary[f"{key}_n"]) and key in summary["suppressed_metrics"]
    rule = get_cutoff("derstine2018")
    expected = [
        s / h**2 < rule.threshold(x) for s, h, x in zip(df["sma_ref_cm2"], df["height_m"], df["sex"], strict=True)
    ]
    assert list(df["sarcopenic_ref"]) == expected


def test_the_muscle_hu_range_can_be_switched_off(site):
    manifest, model = site
    df, summary = evaluate_cases(model, model.preset, manifest, muscle_hu_range=False)
    assert summary["muscle_hu_range"] is None
    np.testing.assert_allclose(df["dice"], df["dice_raw"])
    windowed, _ = evaluate_cases(model, model.preset, manifest)
    assert (windowed["sma_pred_cm2"] <= df["sma_pred_cm2"] + 1e-9).all()
    # Reference masks lie inside the window, so the window can only remove false positives.
    assert (windowed["dice"] >= windowed["dice_raw"] - 1e-12).all()


def test_small_split_is_suppressed_and_empty_split_refused(site):
    manifest, model = site
    df, summary = evaluate_cases(model, model.preset, manifest, split="train")
    assert len(df) == 2 and math.isnan(summary["n"]) and math.isnan(summary["dice_mean_n"])
    assert math.isnan(summary["dice_mean"]) and {"n", "dice_mean"} <= set(summary["suppressed_metrics"])
    assert summary["n_without_mask"] == 0
    with pytest.raises(InputDataError, match="no labelled rows"):
        evaluate_cases(model, model.preset, manifest, split="unlabelled")


def test_classifier_probabilities(site):
    manifest, model = site
    df, summary = evaluate_cases(model, model.preset, manifest, split="all", with_classifier=True)
    assert len(df) == 7 and df["cls_prob"].between(0, 1).all() and summary["classifier_evaluated"] is True
    refs = df["sarcopenic_ref"].astype(bool)
    # Seven patients cannot fill two classes of five: the classifier block goes out hidden.
    assert math.isnan(summary["cls_accuracy_n"]) and "cls_auroc" in summary["suppressed_metrics"]
    unsuppressed = metrics.site_summary(df, min_cohort=1)
    assert unsuppressed["cls_accuracy_n"] == 7
    if refs.nunique() == 2:
        assert unsuppressed["cls_auroc"] == pytest.approx(metrics.auroc(df["cls_prob"], refs))


def test_n_counts_patients_not_rows(site):
    manifest, model = site
    second_slice = manifest[manifest["patient_id"] == "p2"]  # p2 has two labelled slices
    unlabelled_slice = manifest[manifest["patient_id"] == "p3"].assign(mask_path="", mask_abspath="")
    cases = pd.concat([manifest, second_slice, unlabelled_slice], ignore_index=True)

    df, summary = evaluate_cases(model, model.preset, cases, manifest_dir=manifest.attrs["manifest_dir"], min_cohort=1)

    assert len(df) == 6 and summary["dice_mean_n"] == 6  # p2, p2, p3, p4, p5, p6: values over rows
    assert summary["n"] == 5
    assert summary["n_without_mask"] == 1  # p7; p3 has a labelled slice


def test_label_map_references_score_every_tissue_and_myosteatosis(site, tmp_path):
    """A reference label map adds IMAT, VAT and SAT areas and errors; a muscle-only one leaves them empty."""
    from common.clinical import bmi, myosteatosis
    from common.train.infer import segment_tissues_batch

    manifest, model = site
    holdout = manifest[manifest["split"] == "holdout"].iloc[:2].copy()
    full_paths = []
    for _, row in holdout.iterrows():
        ct, _ = load_case(row)
        case = next(
            c
            for c in (synth_case((5, i), get_profile(next(iter(PROFILES)))) for i in range(24))
            if np.array_equal(c.hu, ct.hu)
        )
        path = tmp_path / f"{row['patient_id']}-labels.nii.gz"
        write_mask_nifti(path, case.tissue_map, ct.geometry)
        full_paths.append((path, case))
    holdout["mask_abspath"] = [str(p) for p, _ in full_paths]

    df, _ = evaluate_cases(model, model.preset, holdout, split=None, min_cohort=1)

    for (_, got), (_, case), (_, row) in zip(df.iterrows(), full_paths, holdout.iterrows(), strict=True):
        ct, _ = load_case(row)
        ((_, pred),) = segment_tissues_batch(model, [ct])
        pixel = ct.spacing_mm[0] * ct.spacing_mm[1] / 100
        assert got["sma_ref_cm2"] == pytest.approx(case.sma_cm2)  # SMA is the muscle label, not the whole map
        for name, value, ref in (("imat", 2, case.imat_cm2), ("vat", 3, case.vat_cm2), ("sat", 4, case.sat_cm2)):
            assert got[f"{name}_ref_cm2"] == pytest.approx(ref)
            assert got[f"{name}_pred_cm2"] == pytest.approx((pred == value).sum() * pixel, abs=1e-3)
            assert got[f"{name}_abs_pct_err"] == pytest.approx(metrics.abs_pct_error(got[f"{name}_pred_cm2"], ref))
        reference = myosteatosis(metrics.muscle_hu_mean(ct.hu, case.muscle), bmi(ct.weight_kg, ct.height_m))
        assert got["myosteatosis_ref"] == reference["present"] is not None
        assert got["myosteatosis_correct"] == float(got["myosteatosis_ref"] == got["myosteatosis_pred"])
    muscle_only, _ = evaluate_cases(model, model.preset, manifest, min_cohort=1)
    assert muscle_only["vat_ref_cm2"].isna().all() and muscle_only["vat_abs_pct_err"].isna().all()
    assert muscle_only["myosteatosis_correct"].notna().all()  # muscle attenuation needs the muscle mask only
