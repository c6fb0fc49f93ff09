"""`sarcofed predict` on inputs it must refuse: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from common.data.dicom_io import write_ct_dicom

ROOT = Path(__file__).resolve().parents[2]


def run_predict(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sarcofed", "predict", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def _assert_clean_failure(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def no_model(tmp_path_factory) -> Path:
    # The input is checked before any model is loaded, so these cases need no checkpoint; the file
    # exists so that a failure here cannot be blamed on the model path.
    path = tmp_path_factory.mktemp("model") / "model.pt"
    path.write_bytes(b"not used")
    return path


def test_mr_is_refused(tmp_path, no_model):
    result = run_predict(get_testdata_file("MR_small.dcm"), "--model", no_model, "--out", tmp_path / "o")
    _assert_clean_failure(result, "MR_small.dcm", "'Modality'", "'MR'", "CT")
    assert result.returncode == 2
    assert not (tmp_path / "o" / "result.json").exists()


def test_missing_pixel_spacing_is_refused(tmp_path, no_model):
    write_ct_dicom(
        tmp_path / "ct.dcm",
        np.zeros((32, 32), np.float32),
        (0.8, 0.8),
        patient_id="x",
        sex="M",
        height_m=1.8,
        weight_kg=80,
        age_years=50,
    )
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    del ds.PixelSpacing
    ds.save_as(tmp_path / "nospacing.dcm")
    result = run_predict(tmp_path / "nospacing.dcm", "--model", no_model, "--out", tmp_path / "o")
    _assert_clean_failure(result, "nospacing.dcm", "(0028,0030)", "Pixel Spacing")
    assert result.returncode == 2


def test_text_file_is_refused(tmp_path, no_model):
    text = tmp_path / "notes.txt"
    text.write_text("patient 12: L3 slice to follow\n")
    result = run_predict(text, "--model", no_model, "--out", tmp_path / "o")
    _assert_clean_failure(result, "notes.txt", "DICOM")
    assert result.returncode == 2


def test_missing_file_and_bad_options(tmp_path, no_model):
    _assert_clean_failure(
        run_predict(tmp_path / "nope.dcm", "--model", no_model, "--out", tmp_path / "o"), "nope.dcm", "no such file"
    )
    ct = get_testdata_file("CT_small.dcm")
    _assert_clean_failure(
        run_predict(ct, "--model", no_model, "--out", tmp_path / "o", "--cutoff", "baumgartner"), "prado2008"
    )
    _assert_clean_failure(
        run_predict(ct, "--model", no_model, "--out", tmp_path / "o", "--height-m", "172"), "centimetres"
    )
