"""`sarcofed ingest` over real pydicom files and over a small synthetic site with masks and a series."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import typer
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from client.commands.ingest import ingest as ingest_command
from common.data.dicom_io import write_ct_dicom
from common.data.ingest import ingest
from common.data.manifest import load_case, read_manifest
from common.data.mask_io import write_mask_nifti
from common.export.dicom_seg import write_muscle_seg

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("ingest")(ingest_command)
    app.command("noop")(lambda: None)  # two commands: typer then expects the command name
    return app


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def pydicom_folder(tmp_path) -> Path:
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "test-SR.dcm", "no_meta.dcm"):
        shutil.copy(get_testdata_file(name), folder / name)
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (folder / "nested" / "truncated.dcm").write_bytes(data[:20000])
    (folder / "nested" / "notes.txt").write_text("scanner protocol notes\n")
    return folder


def test_ingest_real_files_accepts_ct_rejects_rest(pydicom_folder, tmp_path):
    before = _tree_hash(pydicom_folder)
    out = tmp_path / "out" / "manifest.csv"
    result = runner.invoke(
        _app(),
        ["ingest", str(pydicom_folder), "--out", str(out), "--salt-file", str(tmp_path / "salt"), "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    assert _tree_hash(pydicom_folder) == before  # inputs untouched

    manifest = read_manifest(out)
    assert len(manifest) == 1 and manifest.loc[0, "image_path"] == "../in/CT_small.dcm"
    assert manifest.loc[0, "split"] == "unlabelled" and manifest.loc[0, "mask_path"] == ""
    ct, mask = load_case(manifest.iloc[0])
    assert mask is None and -1100 < ct.hu.min() < -500 and 1000 < ct.hu.max() < 3000

    rejected = pd.read_csv(out.parent / "rejected.csv").set_index("path")["reason"]
    reasons = {Path(p).name: r for p, r in rejected.items()}
    assert set(reasons) == {"MR_small.dcm", "rtdose.dcm", "test-SR.dcm", "no_meta.dcm", "truncated.dcm", "notes.txt"}
    assert "'Modality' is 'MR'" in reasons["MR_small.dcm"]
    assert "'Modality' is 'RTDOSE'" in reasons["rtdose.dcm"]
    assert "'Modality' is 'SR'" in reasons["test-SR.dcm"]
    assert "not a DICOM Part 10 file" in reasons["no_meta.dcm"]
    assert "not a DICOM Part 10 file" in reasons["notes.txt"]
    assert "'Pixel Data' cannot be decoded" in reasons["truncated.dcm"] and "truncated" in reasons["truncated.dcm"]

    # Nothing identifying leaves: CT_small's PatientID and PatientName are in no output.
    ds = pydicom.dcmread(pydicom_folder / "CT_small.dcm")
    for written in (out, out.parent / "rejected.csv"):
        text = written.read_text()
        assert str(ds.PatientID) not in text and str(ds.PatientName).split("^")[0] not in text


def test_ingest_without_usable_image_exits_2(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), folder)
    result = runner.invoke(
        _app(), ["ingest", str(folder), "--out", str(tmp_path / "m.csv"), "--salt-file", str(tmp_path / "salt")]
    )
    assert result.exit_code == 2
    assert "Modality" in (tmp_path / "rejected.csv").read_text()


@pytest.fixture()
def site(tmp_path, body) -> dict:
    """Four patients: NIfTI mask (bottom-up CT), SEG mask, flipped mask, no mask; plus a 3-slice series."""
    root = tmp_path / "site"
    images, masks = root / "dicom", root / "masks"
    hu, mask = body()
    cts = {}
    for name, kw in {
        "p1": dict(sex="M", height_m=1.80, rows_bottom_up=True),
        "p2": dict(sex="F", height_m=1.60),
        "p3": dict(sex="F", height_m=1.70),
        "p4": dict(sex="M", height_m=None),
    }.items():
        cts[name] = write_ct_dicom(
            images / f"{name}.dcm", hu, (0.8, 0.8), patient_id=f"ORIG-{name}", weight_kg=70, age_years=60, **kw
        )
    write_mask_nifti(masks / "p1_mask.nii.gz", mask, cts["p1"].geometry)
    write_muscle_seg(masks / "p2.seg.dcm", mask, cts["p2"], model_name="reference", model_version="test")
    wrong = cts["p3"].geometry.nifti_affine()
    wrong[:3, 1] *= -1
    import nibabel as nib

    nib.save(nib.Nifti1Image(mask.T[:, :, None], wrong), masks / "p3.nii.gz")
    series_uid = pydicom.uid.generate_uid()
    for i, z in enumerate((-10.0, 0.0, 10.0)):
        write_ct_dicom(
            images / "series" / f"s{i}.dcm",
            hu,
            (0.8, 0.8),
            patient_id="ORIG-p5",
            sex="F",
            height_m=1.5,
            weight_kg=50,
            age_years=70,
            slice_z_mm=z,
            series_uid=series_uid,
            instance_number=i + 1,
        )
    return {"root": root, "images": images, "masks": masks, "mask": mask, "series_uid": series_uid}


def test_ingest_site_with_masks_series_and_meta(site, tmp_path):
    before = _tree_hash(site["root"])
    out = tmp_path / "out" / "manifest.csv"
    first = ingest(
        site["images"], out, masks_dir=site["masks"], salt_file=tmp_path / "salt", holdout_fraction=0.0, progress=False
    )
    assert first.exit_code == 0 and _tree_hash(site["root"]) == before
    rejected = {Path(p).name: r for p, r in zip(first.rejected["path"], first.rejected["reason"], strict=True)}
    assert "first-pixel position" in rejected["p3.nii.gz"] and "p3.dcm kept without mask" in rejected["p3.nii.gz"]
    assert "CT series of 3 slices" in rejected["series"] and "--meta" in rejected["series"]

    df = read_manifest(out).set_index(first.manifest["image_path"].str.rsplit("/", n=1).str[-1])
    assert list(df.index) == ["p1.dcm", "p2.dcm", "p3.dcm", "p4.dcm"]
    assert df.loc["p1.dcm", "mask_path"].endswith("masks/p1_mask.nii.gz")
    assert df.loc["p2.dcm", "mask_path"].endswith("masks/p2.seg.dcm")
    assert df.loc["p3.dcm", "mask_path"] == "" and df.loc["p3.dcm", "split"] == "unlabelled"
    assert (df.loc["p1.dcm", "split"], df.loc["p2.dcm", "split"]) == ("train", "train")
    expected_sma = site["mask"].sum() * 0.64 / 100
    assert df.loc["p1.dcm", "sma_cm2"] == pytest.approx(expected_sma, rel=1e-3)
    assert df.loc["p1.dcm", "smi_cm2_m2"] == pytest.approx(expected_sma / 1.8**2, rel=1e-3)
    assert df.loc["p1.dcm", "sarcopenic"] is True  # a tiny phantom mask is far below any cutoff
    assert not any(pid.startswith("ORIG") for pid in df["patient_id"]) and df["patient_id"].is_unique
    ct, mask = load_case(df.loc["p1.dcm"])
    assert np.array_equal(mask, site["mask"])  # bottom-up CT, canonical mask
    assert "ORIG-" not in out.read_text()

    # Meta CSV: pick the series' L3 slice by z, override p4's height and split; same salt -> same pseudonyms.
    meta = tmp_path / "meta.csv"
    pd.DataFrame(
        [
            {"key": site["series_uid"], "l3_z_mm": "1.0", "height_m": "", "split": ""},
            {"key": "p4.dcm", "l3_z_mm": "", "height_m": "1.75", "split": "holdout"},
        ]
    ).to_csv(meta, index=False)
    second = ingest(
        site["images"],
        out,
        masks_dir=site["masks"],
        meta_csv=meta,
        salt_file=tmp_path / "salt",
        holdout_fraction=0.0,
        progress=False,
    )
    df2 = read_manifest(out)
    assert len(df2) == 5 and df2["image_path"].str.endswith("series/s1.dcm").any()
    p4 = df2[df2["image_path"].str.endswith("p4.dcm")].iloc[0]
    assert p4["height_m"] == 1.75 and p4["split"] == "holdout"
    assert set(first.manifest["patient_id"]) < set(second.manifest["patient_id"])
    assert second.warnings == []


def test_holdout_fraction_is_stable_per_patient(site, tmp_path):
    results = [
        ingest(
            site["images"],
            tmp_path / f"m{i}.csv",
            masks_dir=site["masks"],
            salt_file=tmp_path / "salt",
            holdout_fraction=0.5,
            progress=False,
        ).manifest
        for i in range(2)
    ]
    assert results[0][["patient_id", "split"]].equals(results[1][["patient_id", "split"]])


def test_nifti_slices_with_masks_beside_them_and_volume_rejected(tmp_path, body):
    import nibabel as nib

    from common.data.ctslice import SliceGeometry

    hu, mask = body()
    folder = tmp_path / "nifti"
    geometry = SliceGeometry((0.9, 0.9), (-20.0, -20.0, 5.0), hu.shape)
    folder.mkdir()
    nib.save(nib.Nifti1Image(hu.T[:, :, None], geometry.nifti_affine()), folder / "case7.nii.gz")
    write_mask_nifti(folder / "case7_mask.nii.gz", mask, geometry)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), folder / "volume.nii.gz")
    result = ingest(folder, tmp_path / "m.csv", salt_file=tmp_path / "salt", holdout_fraction=0.0, progress=False)
    df = read_manifest(tmp_path / "m.csv")
    assert list(df["image_path"]) == ["nifti/case7.nii.gz"] and list(df["mask_path"]) == ["nifti/case7_mask.nii.gz"]
    assert df.loc[0, "sex"] is None and np.isnan(df.loc[0, "smi_cm2_m2"])  # no height: no SMI, no guess
    ct, loaded = load_case(df.iloc[0])
    assert np.array_equal(loaded, mask) and np.allclose(ct.hu, hu)
    reason = result.rejected.set_index("path").loc[str(folder / "volume.nii.gz"), "reason"]
    assert reason == "NIfTI volume: extract the L3 slice first, or give --locator MODEL to find it"


def test_ingest_reports_links_out_of_the_folder_and_dangling_links(tmp_path):
    """Links inside the folder are followed (once per file); links out of it, dangling links and a FIFO are listed."""
    folder, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    (folder / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "a.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), elsewhere / "b.dcm")
    (folder / "sub" / "alias.dcm").symlink_to("../a.dcm")
    (folder / "outside.dcm").symlink_to(elsewhere / "b.dcm")
    (folder / "dangling.dcm").symlink_to(tmp_path / "nowhere.dcm")
    (folder / "outdir").symlink_to(elsewhere, target_is_directory=True)
    os.mkfifo(folder / "pipe")  # opening it for reading would wait for a writer forever
    out = tmp_path / "out" / "manifest.csv"
    result = runner.invoke(
        _app(), ["ingest", str(folder), "--out", str(out), "--salt-file", str(tmp_path / "salt"), "--format", "json"]
    )
    assert result.exit_code == 0 and result.exception is None, result.output
    assert list(read_manifest(out)["image_path"]) == ["../in/a.dcm"]
    rejected = pd.read_csv(out.parent / "rejected.csv")
    reasons = dict(zip(rejected["path"], rejected["reason"], strict=True))
    assert set(reasons) == {str(folder / n) for n in ("outside.dcm", "dangling.dcm", "outdir", "pipe")}
    assert reasons[str(folder / "outside.dcm")].startswith(
        f"symbolic link to a file outside the input folder ({elsewhere / 'b.dcm'})"
    )
    assert reasons[str(folder / "dangling.dcm")] == f"symbolic link to {tmp_path / 'nowhere.dcm'}, which does not exist"
    assert reasons[str(folder / "outdir")].startswith("symbolic link to a folder outside the input folder")
    assert reasons[str(folder / "pipe")].startswith("not a regular file")


def test_ingest_rejects_non_finite_and_oversized_files(tmp_path, body):
    """NaN in an image or a mask, a DICOM declaring 65535 x 65535, a NIfTI volume: each in rejected.csv."""
    import gzip

    import nibabel as nib

    from common.data.ctslice import SliceGeometry

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "a.dcm")
    bomb = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    bomb.compress(pydicom.uid.JPEG2000Lossless)
    bomb.Rows = bomb.Columns = 65535
    bomb.SOPInstanceUID, bomb.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    bomb.save_as(folder / "bomb.dcm")
    hu, mask = body()
    geometry = SliceGeometry((0.9, 0.9), (-20.0, -20.0, 5.0), hu.shape)
    nib.save(nib.Nifti1Image(hu.T[:, :, None], geometry.nifti_affine()), folder / "case.nii.gz")
    nan_mask = mask.T[:, :, None].astype(np.float32)
    nan_mask[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan_mask, geometry.nifti_affine()), folder / "case_mask.nii.gz")
    nan_image = hu.T[:, :, None].copy()
    nan_image[4, 4, 0] = np.nan
    nib.save(nib.Nifti1Image(nan_image, geometry.nifti_affine()), folder / "nan.nii.gz")
    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 32767))
    header.set_data_dtype(np.float64)
    header["vox_offset"] = 352
    (folder / "volume.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\0" * 1028))

    result = ingest(folder, tmp_path / "m.csv", salt_file=tmp_path / "salt", progress=False)
    assert result.exit_code == 0
    df = read_manifest(tmp_path / "m.csv")
    assert list(df["image_path"]) == ["in/a.dcm", "in/case.nii.gz"] and list(df["mask_path"]) == ["", ""]
    reasons = {Path(p).name: r for p, r in zip(result.rejected["path"], result.rejected["reason"], strict=True)}
    assert set(reasons) == {"bomb.dcm", "case_mask.nii.gz", "nan.nii.gz", "volume.nii.gz"}
    assert "declare 65535 x 65535 pixels" in reasons["bomb.dcm"]
    assert f"NIfTI image has non-finite pixels: 1 of {hu.size} (1 NaN" in reasons["nan.nii.gz"]
    assert f"NIfTI mask has non-finite pixels: 1 of {mask.size}" in reasons["case_mask.nii.gz"]
    assert reasons["case_mask.nii.gz"].endswith("image case.nii.gz kept without mask")
    assert "header declares shape (4096, 4096, 32767)" in reasons["volume.nii.gz"]
