"""One synthetic slice: determinism, ground truth consistent with the pixels, realistic physiology."""

from __future__ import annotations

import numpy as np
import pytest

from common.clinical import MUSCLE_HU_RANGE, area_cm2
from common.phantom import PROFILES, anatomy, synth_case


def test_same_seed_same_arrays_different_seed_differs():
    profile = PROFILES["general-surgery"]
    a, b, c = synth_case((1, 2), profile), synth_case((1, 2), profile), synth_case((1, 3), profile)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.muscle, b.muscle)
    assert a.spacing_mm == b.spacing_mm and a.sex == b.sex and a.age_years == b.age_years
    assert not np.array_equal(a.hu, c.hu)
    assert not np.array_equal(a.muscle, c.muscle)


def test_arrays_are_canonical_512_with_integer_hu(cohort):
    case = cohort["geriatric-oncology"][0]
    assert case.hu.shape == case.muscle.shape == (512, 512)
    assert case.hu.dtype == np.float32 and case.muscle.dtype == np.uint8
    np.testing.assert_array_equal(case.hu, np.rint(case.hu))  # what a DICOM file can hold
    assert 0.6 <= case.spacing_mm[0] == case.spacing_mm[1] <= 0.98
    # anterior at the top: the body's first row is anterior to the vertebra, the table is below the body
    rows_body = np.where((case.labels == anatomy.SKIN).any(axis=1))[0]
    rows_bone = np.where((case.labels == anatomy.CANCELLOUS_BONE).any(axis=1))[0]
    rows_table = np.where((case.labels == anatomy.TABLE).any(axis=1))[0]
    assert rows_body.min() < rows_bone.min() and rows_bone.max() < rows_table.max()
    assert rows_body.max() <= rows_table.max()


def test_reference_sma_is_mask_pixels_times_pixel_area(cohort):
    for case in cohort["general-surgery"][:4]:
        expected = int(case.muscle.sum()) * case.spacing_mm[0] * case.spacing_mm[1] / 100.0
        assert case.sma_cm2 == pytest.approx(expected, rel=1e-9)
        assert case.sma_cm2 == pytest.approx(area_cm2(case.muscle, case.spacing_mm))
        assert case.smi_cm2_m2 == pytest.approx(case.sma_cm2 / case.height_m**2)


def test_mask_follows_alberta_window_and_mean_hu_is_realistic(cohort):
    means = []
    for cases in cohort.values():
        for case in cases:
            values = case.hu[case.muscle.astype(bool)]
            assert values.min() >= MUSCLE_HU_RANGE[0] and values.max() <= MUSCLE_HU_RANGE[1]
            means.append(float(values.mean()))
            # the mask is muscle tissue: every mask pixel lies inside a muscle outline
            assert np.isin(case.labels[case.muscle.astype(bool)], anatomy.MUSCLE_LABELS).all()
    assert 20.0 <= min(means) and max(means) <= 62.0
    assert 30.0 <= float(np.mean(means)) <= 50.0


def test_muscle_attenuation_falls_with_age_and_bmi(cohort):
    cases = [c for cs in cohort.values() for c in cs]
    mean_hu = np.array([c.hu[c.muscle.astype(bool)].mean() - c.hu_offset for c in cases])
    age = np.array([c.age_years for c in cases])
    bmi = np.array([c.weight_kg / c.height_m**2 for c in cases])
    assert np.corrcoef(mean_hu, age)[0, 1] < -0.2
    assert np.corrcoef(mean_hu, bmi)[0, 1] < -0.2


def test_sma_ranges_by_sex(cohort):
    cases = [c for cs in cohort.values() for c in cs]
    men = np.array([c.sma_cm2 for c in cases if c.sex == "M"])
    women = np.array([c.sma_cm2 for c in cases if c.sex == "F"])
    assert len(men) >= 8 and len(women) >= 8
    assert 135.0 <= men.mean() <= 200.0 and 85.0 <= women.mean() <= 135.0
    assert men.min() > 80.0 and women.max() < 200.0
    assert men.mean() > women.mean() + 30.0


def test_prevalence_differs_by_site_as_profiled():
    # 40 patients each, without the image (the physiology alone is cheap)
    def prevalence(name: str) -> float:
        return float(np.mean([synth_case((77, i), PROFILES[name]).sarcopenic() for i in range(30)]))

    onco, trauma = prevalence("geriatric-oncology"), prevalence("young-trauma")
    assert 0.35 <= onco <= 0.9
    assert trauma <= 0.45
    assert onco > trauma + 0.2


def test_hu_threshold_alone_does_not_find_the_muscle(cohort):
    """Kidneys, bowel walls, collapsed loops and fluid share muscle HU and touch the muscles."""
    dices = []
    for cases in cohort.values():
        for case in cases:
            body = ~np.isin(case.labels, [anatomy.AIR, anatomy.TABLE])
            guess = body & (case.hu >= MUSCLE_HU_RANGE[0]) & (case.hu <= MUSCLE_HU_RANGE[1])
            truth = case.muscle.astype(bool)
            dices.append(2.0 * (guess & truth).sum() / (guess.sum() + truth.sum()))
    assert float(np.mean(dices)) < 0.78
    assert float(np.median(dices)) < 0.8


def test_muscle_like_organs_touch_the_muscle(cohort):
    """At least some kidney or bowel-wall pixels sit within 2 pixels of muscle in most patients."""
    from scipy.ndimage import binary_dilation

    touching = 0
    cases = cohort["general-surgery"]
    for case in cases:
        near = binary_dilation(np.isin(case.labels, anatomy.MUSCLE_LABELS), iterations=2)
        organs = np.isin(case.labels, [anatomy.KIDNEY, anatomy.BOWEL_WALL, anatomy.LIVER])
        touching += bool((near & organs).any())
    assert touching >= 0.7 * len(cases)


def test_intermuscular_fat_lies_inside_the_outline(cohort):
    case = max(cohort["obesity-clinic"], key=lambda c: c.patient.fat_infiltration)
    outline = np.isin(case.labels, anatomy.MUSCLE_LABELS)
    fat_in_outline = outline & (case.hu < MUSCLE_HU_RANGE[0])
    assert fat_in_outline.sum() > 0.005 * outline.sum()


def test_noise_is_correlated_and_scanner_level(cohort):
    from common.phantom.fields import ct_noise_transfer, field_pair

    noise, _ = field_pair(np.random.default_rng(0), ct_noise_transfer((512, 512), 0.8, 1.2))
    assert noise.std() == pytest.approx(1.0, abs=0.05)
    lag1 = float(np.mean(noise[:, 1:] * noise[:, :-1]) / noise.var())
    assert abs(lag1) > 0.1  # white noise would give ~0
    for case in cohort["young-trauma"][:4]:
        corner = case.hu[:40, :40]
        assert (case.labels[:40, :40] == anatomy.AIR).all()
        # air sits near -1000 and the file clips at -1024: estimate SD from the unclipped upper half
        upper = corner[corner > np.median(corner)] - np.median(corner)
        sd = float(upper.mean() / np.sqrt(2.0 / np.pi))
        assert 10.0 <= sd <= 35.0


def test_fat_areas_plausible(cohort):
    for cases in cohort.values():
        for case in cases:
            assert 20.0 <= case.sat_cm2 <= 900.0
            assert 5.0 <= case.vat_cm2 <= 500.0
    obese = np.mean([c.sat_cm2 for c in cohort["obesity-clinic"]])
    lean = np.mean([c.sat_cm2 for c in cohort["young-trauma"]])
    assert obese > 1.5 * lean


def test_coarse_matrix_is_drawn_natively_at_its_spacing():
    fine = PROFILES["obesity-clinic"]
    coarse = fine.with_overrides(matrix=256, spacing_mm=[1.2, 1.9])
    for i in range(3):
        a, b = synth_case((8, i), fine), synth_case((8, i), coarse)
        assert b.hu.shape == b.muscle.shape == b.labels.shape == (256, 256)
        assert 1.2 <= b.spacing_mm[0] == b.spacing_mm[1] <= 1.96
        assert a.patient == b.patient  # same patient, another scanner
        assert b.sma_cm2 == pytest.approx(a.sma_cm2, rel=0.15)


def test_arms_down_puts_the_arms_in_the_field_of_view():
    base = PROFILES["general-surgery"].with_overrides(hardware_fraction=0.0)
    down, up = base.with_overrides(arms_down_fraction=1.0), base.with_overrides(arms_down_fraction=0.0)
    for i in range(3):
        a, b = synth_case((6, i), down), synth_case((6, i), up)
        assert a.spacing_mm[0] >= b.spacing_mm[0] - 0.02  # a wider field of view for the arms
        assert (a.labels == anatomy.ARM).any() and not (b.labels == anatomy.ARM).any()
