"""`sarcofed predict` end to end on a tiny checkpoint and real DICOM / NIfTI phantom slices.

The checkpoint is an untrained tiny model saved by C1's ``save_checkpoint``: its masks are poor, but
every I/O and geometry property checked here (shapes, affines, stored orientation, SEG references,
the same SMA whichever way a scanner stores rows) holds for any mask.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
import torch

from common.clinical import get_cutoff
from common.data.dicom_io import read_ct_slice, write_ct_dicom
from common.data.mask_io import read_mask
from common.export.predict import predict_slice
from common.models.checkpoint import save_checkpoint
from common.models.presets import get_preset
from common.models.sarco import SarcoModel
from common.phantom.case import synth_case
from common.phantom.profiles import PROFILES, get_profile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """One phantom slice written top-down, bottom-up and as NIfTI, plus a tiny seg checkpoint."""
    root = tmp_path_factory.mktemp("predict")
    case = synth_case((11, 0), get_profile(next(iter(PROFILES))))
    meta = dict(
        patient_id="sf-0001", sex=case.sex, height_m=case.height_m, weight_kg=case.weight_kg, age_years=case.age_years
    )
    top = write_ct_dicom(root / "top.dcm", case.hu, case.spacing_mm, rows_bottom_up=False, **meta)
    write_ct_dicom(root / "bottom.dcm", case.hu, case.spacing_mm, rows_bottom_up=True, **meta)
    nib.save(
        nib.Nifti1Image(case.hu.T[:, :, None].astype(np.float32), top.geometry.nifti_affine()),
        str(root / "slice.nii.gz"),
    )
    # The same slice as most NIfTI tools write it (RAS+): voxel i runs toward the patient's right, j
    # toward anterior, so data[i, j] = canonical[H-1-j, W-1-i] and voxel [0, 0] is canonical [H-1, W-1].
    (dr, dc), (ox, oy, oz), (h, w) = top.spacing_mm, top.geometry.origin, top.shape
    ras_affine = np.array(
        [[dc, 0, 0, -(ox + (w - 1) * dc)], [0, dr, 0, -(oy + (h - 1) * dr)], [0, 0, 2.5, oz], [0, 0, 0, 1]]
    )
    nib.save(
        nib.Nifti1Image(top.hu[::-1, ::-1].T[:, :, None].astype(np.float32), ras_affine), str(root / "slice_ras.nii.gz")
    )
    no_height = dict(meta, height_m=None)
    write_ct_dicom(root / "noheight.dcm", case.hu, case.spacing_mm, **no_height)
    torch.manual_seed(0)
    save_checkpoint(root / "tiny.pt", SarcoModel(get_preset("tiny")), phase="seg")
    return {
        "top": root / "top.dcm",
        "bottom": root / "bottom.dcm",
        "nifti": root / "slice.nii.gz",
        "nifti_ras": root / "slice_ras.nii.gz",
        "noheight": root / "noheight.dcm",
        "model": root / "tiny.pt",
        "root": root,
    }


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sarcofed", "predict", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


def test_cli_writes_all_outputs(inputs, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "sarcofed",
            "predict",
            str(inputs["top"]),
            "--model",
            str(inputs["model"]),
            "--out",
            str(out),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads((out / "result.json").read_text())
    assert json.loads(run.stdout) == result
    ct = read_ct_slice(inputs["top"])
    mask_img = nib.load(str(out / "mask.nii.gz"))
    labels = np.asarray(mask_img.dataobj)[:, :, 0].T  # canonical (H, W) label map: 1 muscle ... 4 SAT
    mask = (labels == 1).astype(np.uint8)
    # Numbers: recomputed here from the written label map at the input's native spacing.
    pixel_cm2 = ct.spacing_mm[0] * ct.spacing_mm[1] / 100
    sma = mask.sum() * pixel_cm2
    assert result["sma_cm2"] == pytest.approx(sma, abs=1e-3)
    assert result["smi_cm2_m2"] == pytest.approx(sma / ct.height_m**2, abs=1e-3)
    in_window = ct.hu[mask > 0]
    assert in_window.min() >= -29 and in_window.max() <= 150  # the written mask is the windowed one
    assert result["muscle_hu_mean"] == pytest.approx(in_window.mean(), abs=0.01)
    assert result["mask_postprocess"]["muscle_hu_range"] == [-29.0, 150.0]
    body_mass = ct.weight_kg / ct.height_m**2
    myo = result["myosteatosis"]
    assert myo["threshold_hu"] == (41.0 if body_mass < 25 else 33.0) and myo["bmi"] == round(body_mass, 1)
    assert myo["present"] == (result["muscle_hu_mean"] < myo["threshold_hu"]) and "Martin" in myo["citation"]
    assert result["mask_postprocess"]["network_pixels"] >= result["muscle_pixels"] == mask.sum()
    for name, value in (("imat", 2), ("vat", 3), ("sat", 4)):
        tissue = labels == value
        low, high = result["tissue_hu_ranges"][name]
        assert result[f"{name}_cm2"] == pytest.approx(tissue.sum() * pixel_cm2, abs=1e-3), name
        if tissue.any():
            assert low <= ct.hu[tissue].min() and ct.hu[tissue].max() <= high, name
            assert result[f"{name}_hu_mean"] == pytest.approx(ct.hu[tissue].mean(), abs=0.01), name
    assert result["tissue_hu_ranges"]["vat"] == [-150.0, -50.0] and result["composition_unavailable_reason"] is None
    rule = get_cutoff("prado2008")
    threshold = rule.threshold(ct.sex)
    assert result["cutoff"]["name"] == "prado2008" and result["cutoff"]["threshold_cm2_m2"] == threshold
    assert "Prado" in result["cutoff"]["citation"]
    assert result["sarcopenic"] == (result["smi_cm2_m2"] < threshold)
    assert result["patient"]["source"]["height_m"].startswith("DICOM")
    assert result["model"]["preset"] == "tiny" and result["model"]["phase"] == "seg"
    assert len(result["model"]["sha256"]) == 64
    assert result["input"]["format"] == "dicom" and result["spacing"] == list(ct.spacing_mm)
    assert set(result["versions"]) >= {"torch", "monai", "pydicom", "highdicom"}
    # mask.nii.gz lies on the input's grid: same shape, same affine as the CT's own NIfTI geometry.
    assert mask_img.shape == (ct.shape[1], ct.shape[0], 1)
    np.testing.assert_allclose(mask_img.affine, ct.geometry.nifti_affine(), atol=1e-6)
    assert (out / "overlay.png").stat().st_size > 10_000
    seg = hd.seg.segread(out / "seg.dcm")
    assert seg.SegmentSequence[0].SegmentLabel == "Skeletal muscle"
    frame = seg.get_pixels_by_source_instance([ct.sop_instance_uid], segment_numbers=[1])[0, :, :, 0]
    np.testing.assert_array_equal(frame, ct.geometry.to_stored(mask))
    assert read_mask(out / "seg.dcm", ct).tolist() == labels.tolist()  # every tissue's segment, read back


def test_bottom_up_storage_gives_the_same_answer(inputs, tmp_path):
    rule = get_cutoff("prado2008")
    top = predict_slice(inputs["top"], inputs["model"], tmp_path / "top", cutoff=rule)
    bottom = predict_slice(inputs["bottom"], inputs["model"], tmp_path / "bottom", cutoff=rule)
    assert read_ct_slice(inputs["bottom"]).geometry.flip_rows
    for key in ("sma_cm2", "smi_cm2_m2", "muscle_hu_mean", "sarcopenic", "muscle_pixels"):
        assert bottom[key] == top[key], key
    # The NIfTI masks are identical and the SEG frame is the stored (bottom-up) layout, i.e. flipped.
    m_top = np.asarray(nib.load(str(tmp_path / "top" / "mask.nii.gz")).dataobj)
    m_bottom = np.asarray(nib.load(str(tmp_path / "bottom" / "mask.nii.gz")).dataobj)
    np.testing.assert_array_equal(m_top, m_bottom)
    ct = read_ct_slice(inputs["bottom"])
    frame = hd.seg.segread(tmp_path / "bottom" / "seg.dcm").get_pixels_by_source_instance(
        [ct.sop_instance_uid], segment_numbers=[1]
    )[0, :, :, 0]
    canonical = m_bottom[:, :, 0].T == 1
    np.testing.assert_array_equal(frame, canonical[::-1, :])


def test_nifti_input_skips_seg(inputs, tmp_path):
    result = predict_slice(
        inputs["nifti"], inputs["model"], tmp_path, cutoff=get_cutoff("prado2008"), height_m=1.7, sex="F"
    )
    assert result["files"]["seg"] is None and "NIfTI" in result["seg_skipped"]
    assert not (tmp_path / "seg.dcm").exists()
    assert result["input"]["format"] == "nifti" and result["patient"]["source"]["sex"] == "command line"
    assert result["cutoff"]["threshold_cm2_m2"] == 38.5
    src = nib.load(str(inputs["nifti"]))
    out = nib.load(str(tmp_path / "mask.nii.gz"))
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["seg_skipped"] == result["seg_skipped"]


def test_missing_height_reports_sma_but_no_verdict(inputs, tmp_path):
    result = predict_slice(inputs["noheight"], inputs["model"], tmp_path, cutoff=get_cutoff("prado2008"))
    assert result["sma_cm2"] > 0 and result["muscle_hu_mean"] is not None
    assert result["smi_cm2_m2"] is None and result["sarcopenic"] is None
    assert result["unavailable_reason"] == "height unknown"
    assert result["patient"]["height_m"] is None
    # Given on the command line, the height is used and says where it came from.
    given = predict_slice(
        inputs["noheight"], inputs["model"], tmp_path / "h", cutoff=get_cutoff("prado2008"), height_m=1.8
    )
    assert given["smi_cm2_m2"] == pytest.approx(given["sma_cm2"] / 1.8**2, abs=1e-3)
    assert given["patient"]["source"]["height_m"] == "command line"
    assert given["sarcopenic"] is not None


def test_cli_on_ras_nifti_prints_table_and_writes_mask_on_its_grid(inputs, tmp_path):
    out = tmp_path / "out"
    run = run_cli(inputs["nifti_ras"], "--model", inputs["model"], "--out", out, "--height-m", "1.7", "--sex", "F")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert "SMA" in run.stdout and "mask.nii.gz" in run.stdout and "seg.dcm" not in run.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["files"]["seg"] is None and "NIfTI" in result["seg_skipped"]
    source, written = nib.load(str(inputs["nifti_ras"])), nib.load(str(out / "mask.nii.gz"))
    assert written.shape == source.shape
    assert np.array_equal(written.affine, source.affine)
    # Voxel [i, j] of the mask is voxel [i, j] of the image: every mask voxel lies on input HU in the
    # muscle window, and the same mask mirrored (the LPS order) would not.
    mask, hu = np.asarray(written.dataobj)[:, :, 0] == 1, np.asarray(source.dataobj)[:, :, 0]
    assert mask.sum() == result["muscle_pixels"] > 0
    assert np.all((hu[mask > 0] >= -29) & (hu[mask > 0] <= 150))
    mirrored = mask[::-1, ::-1]
    assert not np.all((hu[mirrored > 0] >= -29) & (hu[mirrored > 0] <= 150))


def _ct_small_anonymised(tmp_path) -> Path:
    """pydicom's real CT_small.dcm with blank Study, Series and SOP Class UIDs, as anonymised exports come."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID = ds.SeriesInstanceUID = ds.SOPClassUID = ""
    path = tmp_path / "anonymised.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_cli_on_dicom_with_blank_uids_measures_and_says_why_no_seg(inputs, tmp_path, fmt):
    source = _ct_small_anonymised(tmp_path)
    out = tmp_path / "out"
    run = run_cli(source, "--model", inputs["model"], "--out", out, "--format", fmt)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["input"]["format"] == "dicom" and result["sma_cm2"] >= 0
    assert result["files"] == {"mask": "mask.nii.gz", "overlay": "overlay.png", "seg": None, "result": "result.json"}
    assert "(0020,000D) 'Study Instance UID'" in result["seg_skipped"]
    assert "(0020,000E) 'Series Instance UID'" in result["seg_skipped"]
    assert not (out / "seg.dcm").exists()
    assert (out / "mask.nii.gz").is_file() and (out / "overlay.png").is_file()
    if fmt == "json":
        assert json.loads(run.stdout) == result
    else:
        assert "DICOM SEG" in run.stdout and "(0020,000D)" in run.stdout
