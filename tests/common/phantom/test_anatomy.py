"""The phantom's geometry step on its own: sized from the patient, in millimetres, before any painting."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from common.phantom import anatomy, synth_case
from common.phantom.anatomy import build_geometry
from common.phantom.patient import sample_patient
from common.phantom.profiles import PROFILES
from common.phantom.shapes import polar_area


def _psoas_area(patient) -> float:
    geometry = build_geometry(np.random.default_rng(5), patient)
    return sum(blob.area for blob in geometry.blobs["psoas"])


def test_the_geometry_is_a_body_around_its_spine() -> None:
    patient = sample_patient(np.random.default_rng(1), PROFILES["general-surgery"])
    g = build_geometry(np.random.default_rng(2), patient)
    assert g.body_width > 4 * g.vw > 0 and g.body_top < g.centre[1] < g.table_y
    assert np.all(g.fascia >= g.r_cav) and np.all(g.body > g.fascia) and np.all(g.sat >= 2.0)
    assert polar_area(g.body) > polar_area(g.fascia) > polar_area(g.r_cav)
    assert {k: len(v) for k, v in g.blobs.items()} == {"psoas": 2, "ql": 2, "es": 2}


def test_muscles_are_sized_from_the_patients_target_sma() -> None:
    patient = sample_patient(np.random.default_rng(3), PROFILES["general-surgery"])
    small, large = replace(patient, sma_target_cm2=100.0), replace(patient, sma_target_cm2=200.0)
    assert abs(_psoas_area(large) / _psoas_area(small) - 2.0) < 1e-6  # same draws, twice the budget


def _cases(n: int, **overrides: object) -> list:
    """Small coarse cases (256 x 256) so the anatomy tests stay fast."""
    profile = PROFILES["general-surgery"].with_overrides(matrix=256, spacing_mm=[1.5, 1.9], **overrides)
    return [synth_case((31, i), profile) for i in range(n)]


def _mean(case, *labels: int) -> float:
    inside = np.isin(case.labels, labels)
    return float(case.hu[inside].mean()) if inside.sum() > 20 else float("nan")


def test_kidney_enhancement_follows_the_phase():
    arterial = _cases(10, contrast_fraction=1.0, arterial_share=1.0)
    portal = _cases(10, contrast_fraction=1.0, arterial_share=0.0)
    plain = _cases(10, contrast_fraction=0.0)
    gap = [_mean(c, anatomy.KIDNEY) - _mean(c, anatomy.KIDNEY_MEDULLA) for c in arterial]
    assert np.nanmedian(gap) > 40.0  # corticomedullary: bright rim, dark pyramids
    assert np.nanmedian([_mean(c, anatomy.KIDNEY) - _mean(c, anatomy.KIDNEY_MEDULLA) for c in portal]) < 30.0
    assert np.nanmedian([_mean(c, anatomy.KIDNEY, anatomy.KIDNEY_MEDULLA) for c in plain]) < 70.0
    assert np.nanmedian([_mean(c, anatomy.VESSEL) for c in arterial]) > np.nanmedian(
        [_mean(c, anatomy.VESSEL) for c in plain]
    )
    assert all(c.patient.phase == "arterial" for c in arterial) and not any(c.contrast for c in plain)


def test_organs_near_l3_depend_on_the_slice_level():
    rng = np.random.default_rng(4)
    profile = PROFILES["general-surgery"].with_overrides(matrix=256, spacing_mm=[1.5, 1.9])
    found: dict[float, list[set[int]]] = {0.0: [], 1.0: []}
    for i in range(24):
        patient = replace(sample_patient(rng, profile), sex="F")
        for level in found:
            canvas = _paint(replace(patient, level=level), seed=i)
            found[level].append(set(np.unique(canvas.label).tolist()))
    upper, lower = found[0.0], found[1.0]
    for label in (anatomy.LIVER, anatomy.CRUS):
        assert sum(label in s for s in upper) > sum(label in s for s in lower)
    assert any(anatomy.SPLEEN in s for s in upper)


def _paint(patient, seed: int):
    from common.phantom.anatomy import Textures, build_and_paint
    from common.phantom.fields import gaussian_transfer
    from common.phantom.shapes import Canvas

    rng = np.random.default_rng(seed)
    shape = (160, 160)

    def canvas_factory(width: float, centre: tuple[float, float]) -> Canvas:
        return Canvas.create(shape, max(width * 1.1 / shape[1], 2.0), centre, None, -1000.0)

    def tex_factory(canvas: Canvas) -> Textures:
        t = gaussian_transfer(shape, canvas.px, 2.5)
        flat = np.zeros(shape, np.float32) + 0 * t
        return Textures(soft=flat, fat=flat, streak=flat + 1.0, stool=flat)

    canvas, _ = build_and_paint(rng, patient, canvas_factory, tex_factory)
    return canvas


def test_arms_hardware_and_organs_never_enter_the_masks():
    cases = _cases(6, arms_down_fraction=1.0, hardware_fraction=1.0, contrast_fraction=1.0)
    outside = [anatomy.ARM, anatomy.ARM_FAT, anatomy.ARM_BONE, anatomy.CRUS, anatomy.METAL]
    outside += [anatomy.KIDNEY, anatomy.KIDNEY_MEDULLA, anatomy.LIVER, anatomy.SPLEEN]
    assert not set(outside) & set(anatomy.MUSCLE_LABELS) and anatomy.ARM_FAT != anatomy.SAT
    for case in cases:
        assert (case.labels == anatomy.ARM).sum() > 50  # the field of view takes in the arms
        assert float(case.hu[case.labels == anatomy.METAL].max()) >= 2000.0
        for mask in (case.muscle, case.imat, case.sat, case.vat):
            assert not np.isin(case.labels[mask > 0], outside).any()
