"""Manifest validation lists every bad line; load_case resolves paths and overrides header values."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest

from common.data.dicom_io import write_ct_dicom
from common.data.manifest import MANIFEST_COLUMNS, load_case, read_manifest, write_manifest
from common.data.mask_io import write_mask_nifti
from common.data.pseudonym import Pseudonymiser, load_or_create_salt
from common.errors import InputDataError


def _row(**kw):
    row = dict(
        patient_id="SF-a",
        image_path="img/a.dcm",
        mask_path="",
        sex="F",
        height_m="1.6",
        weight_kg="60",
        age="70",
        split="unlabelled",
        sma_cm2="",
        smi_cm2_m2="",
        sarcopenic="",
    )
    row.update(kw)
    return row


def test_read_manifest_reports_every_bad_line(tmp_path):
    rows = [
        _row(),
        _row(patient_id="SF-b", height_m="172"),
        _row(patient_id="SF-c", split="test", sex="X"),
        _row(patient_id="", weight_kg="abc"),
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InputDataError) as info:
        read_manifest(tmp_path / "m.csv")
    text = str(info.value)
    assert "3 bad row(s)" in text and "line 2" not in text
    assert "line 3: height_m 172 outside 0.5..2.6 metres" in text
    assert "line 4: split 'test' not one of train|holdout|unlabelled; sex 'X' not M/F" in text
    assert "line 5: patient_id empty; weight_kg 'abc' is not a number" in text


def test_missing_columns_named(tmp_path):
    pd.DataFrame([{"patient_id": "a", "image_path": "x"}]).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InputDataError, match=r"lacks column\(s\) \['mask_path'"):
        read_manifest(tmp_path / "m.csv")


def test_round_trip_and_load_case(tmp_path, body):
    hu, mask = body()
    ct = write_ct_dicom(
        tmp_path / "img" / "a.dcm",
        hu,
        (0.8, 0.8),
        patient_id="SF-a",
        sex="M",
        height_m=1.9,
        weight_kg=90,
        age_years=50,
        rows_bottom_up=True,
    )
    write_mask_nifti(tmp_path / "masks" / "a.nii.gz", mask, ct.geometry)
    df = pd.DataFrame(
        [
            _row(mask_path="masks/a.nii.gz", split="train", sma_cm2="1.5", sarcopenic="true"),
            _row(patient_id="SF-z", image_path=str(tmp_path / "img" / "a.dcm"), sex="", height_m=""),
        ]
    )
    write_manifest(df, tmp_path / "manifest.csv")
    read = read_manifest(tmp_path / "manifest.csv")
    assert list(read.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert read.attrs["manifest_dir"] == str(tmp_path.resolve())
    assert read.loc[0, "image_abspath"] == str(tmp_path.resolve() / "img" / "a.dcm")
    assert read.loc[0, "sarcopenic"] is True and read.loc[1, "sex"] is None and np.isnan(read.loc[1, "height_m"])
    image, loaded = load_case(read.iloc[0])
    assert np.array_equal(loaded, mask) and np.array_equal(image.hu, ct.hu)
    assert (image.sex, image.height_m, image.age_years) == ("F", 1.6, 70.0)  # manifest overrides header
    image, loaded = load_case(read.iloc[1])
    assert loaded is None and (image.sex, image.height_m) == ("M", 1.9)  # header used where manifest is empty
    write_manifest(read, tmp_path / "again.csv")
    assert "image_abspath" not in pd.read_csv(tmp_path / "again.csv").columns


def test_pseudonyms_stable_salted_and_private(tmp_path):
    salt_file = tmp_path / "site" / "salt"
    first = Pseudonymiser(salt_file)
    assert stat.S_IMODE(os.stat(salt_file).st_mode) == 0o600
    again = Pseudonymiser(salt_file)
    assert first("12345") == again("12345") != first("12346")
    assert first("12345").startswith("SF-") and "12345" not in first("12345")
    other = Pseudonymiser(tmp_path / "other")
    assert other("12345") != first("12345")
    assert load_or_create_salt(salt_file) == load_or_create_salt(salt_file)
