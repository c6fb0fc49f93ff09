"""Sites on disk: DICOM + NIfTI + manifest that ingestion's readers accept, deterministic, consortia cached."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from common.clinical import area_cm2
from common.data.dicom_io import read_ct_slice
from common.data.manifest import MANIFEST_COLUMNS, load_case, read_manifest
from common.data.mask_io import read_mask
from common.errors import ConfigError, MaskGeometryError
from common.phantom import PROFILES, ensure_consortium, synth_case, write_consortium, write_site
from common.phantom.site import load_consortium, summarise_site


def test_manifest_has_design_columns_splits_and_reference_values(trauma_site):
    df = read_manifest(trauma_site)
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS and "site" in df.columns
    assert sorted(df["split"].value_counts().items()) == [("holdout", 2), ("train", 4), ("unlabelled", 2)]
    unlabelled = df[df["split"] == "unlabelled"]
    assert (unlabelled["mask_path"] == "").all() and unlabelled["sma_cm2"].isna().all()
    labelled = df[df["split"] != "unlabelled"]
    assert labelled["sma_cm2"].notna().all() and labelled["sarcopenic"].notna().all()
    assert (df["site"] == "trauma").all()
    assert df["patient_id"].str.startswith("SYN-trauma-").all()


def test_round_trip_gives_same_hu_and_sma(trauma_site):
    """DICOM (stored bottom-up) + NIfTI read back through the ingestion readers = the generated case."""
    df = read_manifest(trauma_site)
    for index, row in df[df["split"] != "unlabelled"].iterrows():
        ct, mask = load_case(row)
        case = synth_case((9, int(index)), PROFILES["young-trauma"])
        assert ct.geometry.flip_rows  # this profile's scanner stores rows bottom-up
        np.testing.assert_array_equal(ct.hu, case.hu)
        np.testing.assert_array_equal(mask, case.tissue_map)  # the full label map: muscle, IMAT, VAT, SAT
        assert ct.spacing_mm == pytest.approx(case.spacing_mm)
        assert area_cm2(mask == 1, ct.spacing_mm) == pytest.approx(row["sma_cm2"], abs=1e-3)
        assert ct.sex == case.sex and ct.height_m == pytest.approx(case.height_m)
        assert ct.age_years == pytest.approx(round(case.age_years), abs=0.5)


def test_same_seed_same_pixel_data(trauma_site, tmp_path):
    again = write_site(tmp_path / "again", "trauma", "young-trauma", 6, 2, seed=9)
    first, second = read_manifest(trauma_site), read_manifest(again)
    for a, b in zip(first["image_abspath"], second["image_abspath"], strict=True):
        np.testing.assert_array_equal(read_ct_slice(a).hu, read_ct_slice(b).hu)
    pd.testing.assert_series_equal(first["sma_cm2"], second["sma_cm2"])
    other = read_manifest(write_site(tmp_path / "other", "trauma", "young-trauma", 1, 0, seed=10))
    assert not np.array_equal(read_ct_slice(other["image_abspath"][0]).hu, read_ct_slice(first["image_abspath"][0]).hu)


def test_mask_of_another_patient_is_refused(trauma_site):
    """Patients get their own field of view, so a mask swapped between patients does not fit."""
    df = read_manifest(trauma_site)
    labelled = df[df["split"] != "unlabelled"].reset_index(drop=True)
    cts = [read_ct_slice(p) for p in labelled["image_abspath"]]
    i, j = next((i, j) for i in range(len(cts)) for j in range(len(cts)) if cts[i].spacing_mm != cts[j].spacing_mm)
    with pytest.raises(MaskGeometryError):
        read_mask(labelled["mask_abspath"][i], cts[j])


def test_site_json_and_summary(trauma_site):
    info = json.loads((trauma_site.parent / "site.json").read_text())
    assert info["profile"]["name"] == "young-trauma" and info["seed"] == 9 and info["patients"] == 6
    summary = summarise_site(trauma_site)
    assert summary["train"] == 4 and summary["holdout"] == 2 and summary["unlabelled"] == 2


def test_bad_sizes_raise_config_error(tmp_path):
    with pytest.raises(ConfigError):
        write_site(tmp_path / "x", "x", "young-trauma", 0, 0, seed=1)
    with pytest.raises(ConfigError):
        write_site(tmp_path / "x", "x", "nope", 2, 0, seed=1)


CONFIG = {
    "sites": {
        "a": {"profile": "geriatric-oncology", "patients": 2, "unlabelled": 1, "seed": 1},
        "b": {
            "profile": "young-trauma",
            "patients": 2,
            "unlabelled": 0,
            "seed": 2,
            "overrides": {"noise_hu": [12, 13]},
        },
    }
}


def test_ensure_consortium_regenerates_only_what_changed(tmp_path):
    first = ensure_consortium(CONFIG, tmp_path)
    assert set(first) == {"a", "b"}
    stamp = {k: v.stat().st_mtime_ns for k, v in first.items()}
    again = ensure_consortium(CONFIG, tmp_path)
    assert {k: v.stat().st_mtime_ns for k, v in again.items()} == stamp
    changed = {"sites": {**CONFIG["sites"], "b": {**CONFIG["sites"]["b"], "seed": 3}}}
    third = ensure_consortium(changed, tmp_path)
    assert third["a"].stat().st_mtime_ns == stamp["a"]
    assert third["b"].stat().st_mtime_ns != stamp["b"]
    assert json.loads((tmp_path / "b" / "site.json").read_text())["seed"] == 3
    assert not list(tmp_path.glob(".*.partial"))


def test_consortium_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "precious.dcm").write_text("hospital data")
    with pytest.raises(ConfigError, match="not written by the phantom"):
        write_consortium(CONFIG, tmp_path)
    assert (tmp_path / "a" / "precious.dcm").read_text() == "hospital data"


def test_consortium_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="lacks 'seed'"):
        ensure_consortium({"sites": {"a": {"profile": "young-trauma", "patients": 1}}}, tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("[sites.a\nprofile = 1")
    with pytest.raises(ConfigError, match="TOML"):
        ensure_consortium(bad, tmp_path / "out")
    with pytest.raises(ConfigError, match="not found"):
        ensure_consortium(tmp_path / "missing.toml", tmp_path / "out")


def test_mask_written_ignoring_bottom_up_rows_is_refused(trauma_site, tmp_path):
    """A tool that ignores ImageOrientationPatient takes ImagePositionPatient (the posterior row of a
    bottom-up file) as the origin of row 0: its mask is flipped against the DICOM and must not load."""
    from common.data.ctslice import SliceGeometry
    from common.data.mask_io import write_mask_nifti

    row = read_manifest(trauma_site).iloc[0]
    ct, mask = load_case(row)
    assert ct.geometry.flip_rows
    naive = SliceGeometry(ct.spacing_mm, ct.geometry.stored_position(), ct.shape)
    write_mask_nifti(tmp_path / "naive.nii.gz", mask[::-1], naive)
    with pytest.raises(MaskGeometryError):
        read_mask(tmp_path / "naive.nii.gz", ct)


def test_a_muscle_only_site_writes_muscle_masks_and_a_wrong_kind_is_refused(tmp_path):
    manifest = read_manifest(write_site(tmp_path / "legacy", "legacy", "young-trauma", 2, 0, seed=9, masks="muscle"))
    for index, row in manifest.iterrows():
        _, mask = load_case(row)
        np.testing.assert_array_equal(mask, synth_case((9, int(index)), PROFILES["young-trauma"]).muscle)
    sites = load_consortium({"sites": {"a": {"profile": "young-trauma", "patients": 2, "seed": 1, "masks": "muscle"}}})
    assert sites["a"]["masks"] == "muscle"
    plain = load_consortium({"sites": {"a": {"profile": "young-trauma", "patients": 2, "seed": 1}}})
    assert "masks" not in plain["a"]  # the default leaves a site's fingerprint as it was
    with pytest.raises(ConfigError, match="masks must be one of tissues, muscle"):
        load_consortium({"sites": {"a": {"profile": "young-trauma", "patients": 2, "seed": 1, "masks": "fat"}}})
