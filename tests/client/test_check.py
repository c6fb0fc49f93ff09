"""`sarcofed check`: a clean manifest passes; a wrong reference SMA, a missing file or a NaN pixel fails with exit 2."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import typer
from typer.testing import CliRunner

from client.commands.check import check as check_command
from common.data.dicom_io import write_ct_dicom
from common.data.mask_io import write_mask_nifti

runner = CliRunner(env={"COLUMNS": "400"})  # rich wraps at 80 columns otherwise, splitting long temp paths


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("check")(check_command)
    app.command("noop")(lambda: None)
    return app


def _manifest(tmp_path, body, sma: float | None = None) -> tuple:
    hu, mask = body()
    ct = write_ct_dicom(
        tmp_path / "a.dcm", hu, (1.0, 1.0), patient_id="SF-a", sex="F", height_m=1.6, weight_kg=60, age_years=50
    )
    write_mask_nifti(tmp_path / "a.nii.gz", mask, ct.geometry)
    area = mask.sum() / 100
    rows = [
        dict(
            patient_id="SF-a",
            image_path="a.dcm",
            mask_path="a.nii.gz",
            sex="F",
            height_m=1.6,
            weight_kg=60,
            age=50,
            split="train",
            sma_cm2=area if sma is None else sma,
            smi_cm2_m2=area / 1.6**2,
            sarcopenic=True,
        ),
        dict(
            patient_id="SF-b",
            image_path="a.dcm",
            mask_path="",
            sex="",
            height_m="",
            weight_kg="",
            age="",
            split="unlabelled",
            sma_cm2="",
            smi_cm2_m2="",
            sarcopenic="",
        ),
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv", area


def test_check_passes_clean_manifest(tmp_path, body):
    path, _ = _manifest(tmp_path, body)
    result = runner.invoke(_app(), ["check", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"bad": []' in result.output and '"with_mask": 1' in result.output


def test_check_flags_wrong_sma_and_missing_file(tmp_path, body):
    path, area = _manifest(tmp_path, body, sma=1.2 * (body()[1].sum() / 100))
    df = pd.read_csv(path)
    df.loc[1, "image_path"] = "gone.dcm"
    df.to_csv(path, index=False)
    result = runner.invoke(_app(), ["check", str(path)])
    assert result.exit_code == 2
    assert "line 2" in result.output and "differs from the mask's area" in result.output
    assert "line 3" in result.output and "gone.dcm" in result.output


def test_check_flags_nifti_image_with_one_nan_voxel(tmp_path, body):
    """The row stays in the table as bad, with the file and the count: nothing reaches training."""
    path, _ = _manifest(tmp_path, body)
    hu, _ = body()
    stored = hu.T[:, :, None].copy()
    stored[7, 11, 0] = np.nan
    nib.save(nib.Nifti1Image(stored, np.eye(4)), tmp_path / "nan.nii.gz")
    df = pd.read_csv(path)
    df.loc[1, "image_path"] = "nan.nii.gz"
    df.to_csv(path, index=False)
    result = runner.invoke(_app(), ["check", str(path), "--format", "json"])
    assert result.exit_code == 2, result.output
    bad = json.loads(result.output)["bad"]
    assert [item["line"] for item in bad] == [3]
    assert "nan.nii.gz" in bad[0]["problem"]
    assert f"non-finite pixels: 1 of {hu.size} (1 NaN, 0 infinite)" in bad[0]["problem"]
