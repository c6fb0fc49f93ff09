"""`sarcofed ingest` on series: the L3 slice taken from a drawn mask, from the locator, or refused with why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.data.ingest import ingest
from common.data.manifest import read_manifest
from common.data.mask_io import write_mask_nifti
from common.data.series import read_series
from common.models.checkpoint import load_checkpoint
from common.train.locate import locate_l3

ROOT = Path(__file__).resolve().parents[2]
REAL_SERIES = ROOT / "tests" / "data" / "real-ct-upper-abdomen"


@pytest.fixture(scope="module")
def locator(series_inputs):
    model, _ = load_checkpoint(series_inputs["model"])
    return lambda series: locate_l3(model.locator, series)


def _copy_series(series_inputs, folder: Path) -> Path:
    target = folder / "scan"
    shutil.copytree(series_inputs["root"] / "full_dicom", target)
    return target


def test_the_slice_a_mask_is_drawn_on_is_taken(series_inputs, tmp_path):
    scan = _copy_series(series_inputs, tmp_path / "in")
    series = read_series(scan)
    k = 20
    drawn = series.slice(k)
    mask = (drawn.hu > 0).astype("uint8")
    write_mask_nifti(scan / f"{drawn.path.stem}_mask.nii.gz", mask, drawn.geometry)
    result = ingest(tmp_path / "in", tmp_path / "m.csv", salt_file=tmp_path / "salt", progress=False)
    df = read_manifest(tmp_path / "m.csv")
    assert len(df) == 1 and result.n_rejected == 0
    row = df.iloc[0]
    assert row["slice_chosen_by"] == "annotated" and row["series_slice_index"] == k
    assert row["image_path"] == f"in/scan/{drawn.path.name}" and row["mask_path"].endswith("_mask.nii.gz")
    assert row["source_series"] == drawn.series_instance_uid


def test_without_a_mask_the_locator_chooses_or_the_series_is_refused(series_inputs, locator, tmp_path):
    _copy_series(series_inputs, tmp_path / "in")
    refused = ingest(tmp_path / "in", tmp_path / "a.csv", salt_file=tmp_path / "salt", progress=False)
    assert refused.n_accepted == 0 and "give --locator MODEL to find it" in refused.rejected["reason"][0]
    located = ingest(tmp_path / "in", tmp_path / "b.csv", salt_file=tmp_path / "salt", progress=False, locator=locator)
    df = read_manifest(tmp_path / "b.csv")
    assert len(df) == 1 and df.loc[0, "slice_chosen_by"] == "located" and 0 < df.loc[0, "l3_confidence"] <= 1
    series = read_series(tmp_path / "in" / "scan")
    assert series.paths[int(df.loc[0, "series_slice_index"])].name == Path(df.loc[0, "image_path"]).name
    assert df.loc[0, "split"] == "unlabelled" and located.n_rejected == 0


def test_a_nifti_volume_gives_its_located_slice_as_a_file(series_inputs, locator, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(series_inputs["root"] / "full.nii.gz", tmp_path / "in" / "ct.nii.gz")
    shutil.copy(series_inputs["root"] / "upper.nii.gz", tmp_path / "in" / "upper.nii.gz")
    result = ingest(
        tmp_path / "in", tmp_path / "out" / "m.csv", salt_file=tmp_path / "salt", progress=False, locator=locator
    )
    df = read_manifest(tmp_path / "out" / "m.csv")
    assert len(df) == 1 and df.loc[0, "source_series"] == "ct.nii.gz"
    k = int(df.loc[0, "series_slice_index"])
    assert df.loc[0, "image_path"] == f"extracted/ct.slice{k:04d}.nii.gz"
    extracted = read_series(tmp_path / "out" / df.loc[0, "image_path"])
    volume = read_series(tmp_path / "in" / "ct.nii.gz")
    z_order = volume.file_index.index(k)
    assert extracted.n_slices == 1 and extracted.z_mm[0] == pytest.approx(volume.z_mm[z_order])
    assert (extracted.hu[0] == volume.hu[z_order]).all()
    reasons = result.rejected.set_index("path")["reason"]
    assert reasons[str(tmp_path / "in" / "upper.nii.gz")].startswith("L3 not in this volume")


def test_real_export_with_blank_uids_is_one_series_not_twenty_slices(tmp_path):
    shutil.copytree(REAL_SERIES, tmp_path / "in" / "real")
    result = ingest(tmp_path / "in", tmp_path / "m.csv", salt_file=tmp_path / "salt", progress=False)
    assert result.exit_code == 2
    reasons = dict(zip(result.rejected["path"], result.rejected["reason"], strict=True))
    assert reasons.pop(str(tmp_path / "in" / "real" / "README.md")).startswith("not a DICOM Part 10 file")
    (reason,) = reasons.values()  # the 20 DICOM files: one series, one reason
    assert reason.startswith("CT series of 20 slices (z -804.5..-766.5 mm)") and "--locator" in reason
