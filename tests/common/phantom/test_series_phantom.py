"""The synthetic T10-S1 series: spine variants, what each level shows, and the series written to disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.data.series import read_series
from common.phantom import anatomy as A
from common.phantom.patient import sample_patient
from common.phantom.profiles import get_profile
from common.phantom.series_site import synth_series, write_series_site
from common.phantom.spine import VARIANTS, build_spine
from common.phantom.volume import ARM, DISC, GLUTEAL, LUNG, build_body, paint_series


def _ribbed(spine) -> list[str]:
    return [v.name for v in spine.vertebrae if v.rib_reach > 0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_spine_variants_break_one_count_each(variant):
    spine = build_spine(np.random.default_rng(3), 1.72, variant)
    zs = [v.z_hi for v in spine.vertebrae]
    assert zs == sorted(zs, reverse=True)  # head first
    free = [v.name for v in spine.vertebrae if not v.fused]
    last_rib = _ribbed(spine)[-1]
    free_below_rib = free[free.index(last_rib) + 1 :]
    expected = {  # (last rib-bearing vertebra, free vertebrae between it and the sacrum)
        "normal": ("T12", ["L1", "L2", "L3", "L4", "L5"]),
        "11 ribs": ("T11", ["T12", "L1", "L2", "L3", "L4", "L5"]),
        "13 ribs": ("L1", ["L2", "L3", "L4", "L5"]),
        "lumbarised S1": ("T12", ["L1", "L2", "L3", "L4", "L5", "S1"]),
        "sacralised L5": ("T12", ["L1", "L2", "L3", "L4"]),
    }[variant]
    assert (last_rib, free_below_rib) == expected
    l3 = spine.level("L3")
    assert spine.l3 == (l3.z_lo, l3.z_hi) and 20 < l3.z_hi - l3.z_lo < 35
    assert spine.level_coordinate(l3.z_mid) == pytest.approx(0.0)
    assert spine.level_coordinate(spine.level("T12").z_mid) == pytest.approx(3.0)
    assert spine.level("L5").z_hi < spine.crest_z + 15 < spine.level("L4").z_lo + 30  # the intercristal line


def _painted(variant="normal", arms_down=False, thickness=2.0):
    rng = np.random.default_rng(11)
    patient = sample_patient(rng, get_profile("general-surgery"))
    spine = build_spine(rng, patient.height_m, variant)
    body = build_body(rng, patient, spine, "portal venous", arms_down)
    return spine, body, rng


def _at(spine, body, rng, z, thickness=2.0):
    hu, labels, px = paint_series(rng, body, np.array([z]), thickness, 10.0, 0.7)
    return hu[0], labels[0], px


def test_levels_show_what_belongs_there():
    spine, body, rng = _painted(arms_down=True)
    l1, l3, l4 = spine.level("L1"), spine.level("L3"), spine.level("L4")
    _, lab_l3, px = _at(spine, body, rng, l3.z_mid + 4)
    _, lab_l1, _ = _at(spine, body, rng, l1.z_mid + 4)
    bone_width = [np.ptp(np.flatnonzero((lab == A.CORTICAL_BONE).any(axis=0))) * px for lab in (lab_l3, lab_l1)]
    assert bone_width[0] > bone_width[1]  # transverse processes are longest at L3
    assert np.isin(lab_l3, (A.PSOAS, A.ERECTOR, A.WALL_MUSCLE)).sum() > 0 and (lab_l3 == A.CANCELLOUS_BONE).any()
    assert (lab_l3 == ARM).any()
    _, disc, _ = _at(spine, body, rng, 0.5 * (l3.z_lo + l4.z_hi))
    assert (disc == DISC).any() and not (disc == A.CANCELLOUS_BONE).any()
    _, top, _ = _at(spine, body, rng, spine.level("T10").z_mid)
    assert (
        (top == LUNG).any()
        and (top == A.LIVER).any()
        and (top == A.CORTICAL_BONE).sum() > (lab_l1 == A.CORTICAL_BONE).sum()
    )
    _, low, _ = _at(spine, body, rng, spine.crest_z - 40)
    assert (low == GLUTEAL).any() and not (low == LUNG).any()


def test_thick_slices_average_across_their_thickness():
    spine, body, rng = _painted()
    z = spine.level("L3").z_lo  # the endplate: a thin slice is bone or disc, a thick one a mixture
    thin = [_at(spine, body, np.random.default_rng(0), z + dz, 1.0)[0] for dz in (-2.0, 2.0)]
    thick, _, _ = _at(spine, body, np.random.default_rng(0), z, 6.0)
    centre = (slice(None), slice(None))
    ref = 0.5 * (thin[0] + thin[1])
    assert np.corrcoef(thick[centre].ravel(), ref[centre].ravel())[0, 1] > 0.9


@pytest.mark.parametrize("fmt", ["dicom", "nifti"])
def test_series_site_written_read_back_with_the_truth(tmp_path, fmt):
    table = write_series_site(tmp_path, "h1", "obesity-clinic", 2, seed=4, fmt=fmt)
    series = pd.read_csv(table)
    vertebrae = pd.read_csv(tmp_path / "vertebrae.csv")
    assert sorted(series["split"]) == ["holdout", "train"]
    for row in series.itertuples():
        volume = read_series(tmp_path / row.path)
        assert volume.n_slices == row.n_slices
        assert volume.z_mm[0] == pytest.approx(row.z_first_mm, abs=0.01)
        assert volume.z_mm[-1] == pytest.approx(row.z_last_mm, abs=0.01)
        l3 = vertebrae[(vertebrae.series_id == row.series_id) & (vertebrae.name == "L3")].iloc[0]
        assert (l3.z_lo_mm, l3.z_hi_mm) == pytest.approx((row.l3_z_lo_mm, row.l3_z_hi_mm))
        inside = (volume.z_mm >= row.l3_z_lo_mm) & (volume.z_mm <= row.l3_z_hi_mm)
        assert inside.any() == row.has_l3
        if fmt == "nifti":
            assert volume.file_index[0] == row.n_slices - 1  # stored head first
        assert -1100 < volume.hu.min() and volume.hu.max() > 300


def test_upper_abdomen_series_misses_l3():
    case = synth_series(np.random.default_rng(2), get_profile("obesity-clinic"), coverage="upper")
    assert not case.has_l3 and case.z_mm[0] > case.l3_scanner[1]


def test_consortium_sites_get_series_when_asked(tmp_path):
    from common.phantom import ensure_consortium, load_consortium

    spec = {"profile": "obesity-clinic", "patients": 2, "seed": 3}
    config = {
        "sites": {"plain": dict(spec), "scans": {**spec, "series": 2, "series_grid": 48, "series_format": "nifti"}}
    }
    assert set(load_consortium(config)["plain"]) == {"profile", "patients", "unlabelled", "seed", "holdout_fraction"}
    manifests = ensure_consortium(config, tmp_path)
    assert not (manifests["plain"].parent / "series.csv").exists()
    table = pd.read_csv(manifests["scans"].parent / "series.csv")
    assert len(table) == 2 and (table["format"] == "nifti").all()
    assert all((manifests["scans"].parent / p).is_file() for p in table["path"])
