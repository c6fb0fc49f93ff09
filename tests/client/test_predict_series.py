"""`sarcofed predict` on series: the L3 block, slice numbering per format, no L3, single-slice level check.

The checkpoint is a tiny model whose locator is really trained (briefly) on two phantom series, one
covering T10-S1 and one stopping above L3; its segmentation is untrained, as in test_predict.py, so
only the locating and the files are checked here, not the muscle area.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.clinical import get_cutoff
from common.errors import CheckpointError, NoMeasurementError
from common.export.predict import predict_slice
from common.export.predict_series import is_series, predict_series

ROOT = Path(__file__).resolve().parents[2]
REAL_SERIES = ROOT / "tests" / "data" / "real-ct-upper-abdomen"
CUTOFF = get_cutoff("prado2008")


def test_nifti_volume_gives_the_l3_block_with_its_own_slice_index(series_inputs, tmp_path):
    full = series_inputs["full"]
    record = predict_series(series_inputs["root"] / "full.nii.gz", series_inputs["model"], tmp_path, cutoff=CUTOFF)
    l3 = record["l3"]
    assert record["measured"] is True and l3["found"] is True and l3["method"] == "series level regression"
    n = len(full.z_mm)
    k = n - 1 - l3["slice_index"]  # the file stores slices head first: index i is z-order n-1-i
    assert abs(l3["z_mm"] - full.z_mm[k]) <= 2.5  # the slice nearest the estimate, by its file index
    assert abs(l3["z_mm"] - np.mean(full.l3_scanner)) < 60.0  # a tiny, briefly trained locator: within L2-L4
    assert 0 <= l3["confidence"] <= 1 and l3["series"]["slices"] == n and l3["series"]["grouped_by"] == "NIfTI volume"
    for name in ("result.json", "series.png", "overlay.png", "mask.nii.gz"):
        assert (tmp_path / name).stat().st_size > 100
    from PIL import Image

    with Image.open(tmp_path / "overlay.png") as both, Image.open(tmp_path / "series.png") as view:
        assert both.width > view.width * both.height / view.height + 400  # the axial overlay, then the sagittal view
    assert json.loads((tmp_path / "result.json").read_text())["l3"] == json.loads(json.dumps(l3))
    assert record["files"]["series_view"] == "series.png"


def test_dicom_folder_numbers_slices_in_sorted_order(series_inputs, tmp_path):
    nifti = predict_series(series_inputs["root"] / "full.nii.gz", series_inputs["model"], tmp_path / "n", cutoff=CUTOFF)
    dicom = predict_series(series_inputs["root"] / "full_dicom", series_inputs["model"], tmp_path / "d", cutoff=CUTOFF)
    n = len(series_inputs["full"].z_mm)
    assert dicom["l3"]["slice_index"] == n - 1 - nifti["l3"]["slice_index"]
    assert dicom["l3"]["series"]["grouped_by"] == "SeriesInstanceUID"
    assert dicom["files"]["seg"] == "seg.dcm"  # a slice of a DICOM series keeps its UIDs


def test_series_without_l3_measures_nothing_and_says_why(series_inputs, tmp_path):
    with pytest.raises(NoMeasurementError, match="L3 not in this series") as error:
        predict_series(series_inputs["root"] / "upper.nii.gz", series_inputs["model"], tmp_path, cutoff=CUTOFF)
    assert error.value.exit_code == 5
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["measured"] is False and record["l3"]["found"] is False and "sma_cm2" not in record
    assert (tmp_path / "series.png").is_file() and not (tmp_path / "mask.nii.gz").exists()


def test_cli_on_the_real_series(series_inputs, tmp_path):
    """The real upper-abdomen export (blank UIDs) goes through: a located slice or a reason, never a traceback."""
    real = tmp_path / "real"
    shutil.copytree(REAL_SERIES, real)
    out = tmp_path / "out_real"
    cli = [sys.executable, "-m", "sarcofed.cli", "predict"]
    done = subprocess.run(
        [*cli, str(real), "-m", str(series_inputs["model"]), "-o", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert "Traceback" not in done.stderr and done.returncode in (0, 5), done.stderr
    record = json.loads((out / "result.json").read_text())
    assert record["l3"]["series"]["grouped_by"] == "frame of reference, orientation and spacing"
    assert record["measured"] is (done.returncode == 0)


def test_model_without_a_locator_is_refused_for_series(series_inputs, tmp_path):
    with pytest.raises(CheckpointError, match="no trained L3 locator"):
        predict_series(
            series_inputs["root"] / "full.nii.gz", series_inputs["root"] / "tiny-no-l3.pt", tmp_path, cutoff=CUTOFF
        )


def test_single_slice_far_from_l3_is_flagged_and_its_verdict_withheld(series_inputs, tmp_path):
    from common.data.dicom_io import write_ct_dicom

    full = series_inputs["full"]
    top = int(np.argmin(np.abs(full.z_mm - (full.spine.level("T10").z_mid + full.offset_mm))))
    write_ct_dicom(
        tmp_path / "t10.dcm", full.hu[top], (full.pixel_mm, full.pixel_mm), patient_id="p", sex="M", height_m=1.8,
        weight_kg=80.0, age_years=60, slice_z_mm=float(full.z_mm[top]),
    )  # fmt: skip
    record = predict_slice(tmp_path / "t10.dcm", series_inputs["model"], tmp_path / "o", cutoff=CUTOFF)
    check = record["slice_check"]
    assert check["at_l3"] is False and check["level_value"] > 1.5
    assert record["sarcopenic"] is None and "verdict withheld" in record["unavailable_reason"]
    insisted = predict_slice(tmp_path / "t10.dcm", series_inputs["model"], tmp_path / "i", cutoff=CUTOFF, insist=True)
    assert insisted["level_flag"] and insisted["sarcopenic"] is not None
    assert not is_series(tmp_path / "t10.dcm") and is_series(series_inputs["root"] / "full.nii.gz")
