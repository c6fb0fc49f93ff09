"""Reading CT series as exported: grouping, sorting by position, copies, and what is refused with a reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from common.data.dicom_io import write_ct_dicom
from common.data.series import read_nifti_series, read_series, scan_series
from common.errors import InputDataError

REAL_SERIES = Path(__file__).parents[2] / "data" / "real-ct-upper-abdomen"


def _write_series(folder: Path, z_mm, *, names=None, numbers=None, series_uid=None, spacing=(1.5, 1.5), **kw):
    """A 24 x 20 series whose pixel [0, 0] holds the slice's z (order is visible in the pixels)."""
    series_uid = series_uid or pydicom.uid.generate_uid()
    paths = []
    for k, z in enumerate(z_mm):
        hu = np.full((24, 20), -100.0, np.float32)
        hu[0, 0] = z
        hu[5:10, 2:6] = 50.0  # an asymmetric block: flips would show
        name = names[k] if names else f"{k:03d}.dcm"
        number = numbers[k] if numbers else k + 1
        write_ct_dicom(
            folder / name, hu, spacing, patient_id="p", sex="F", height_m=1.6, weight_kg=60.0, age_years=50,
            slice_z_mm=z, series_uid=series_uid, instance_number=number, **kw,
        )  # fmt: skip
        paths.append(folder / name)
    return paths


def _edit(path: Path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for name, value in tags.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    ds.save_as(path)


def test_real_series_with_blank_uids_is_grouped_and_sorted(tmp_path):
    folder = tmp_path / "real"
    shutil.copytree(REAL_SERIES, folder)
    series = read_series(folder)
    assert series.grouped_by == "frame of reference, orientation and spacing"
    assert series.hu.shape == (20, 512, 512)
    assert series.z_mm[0] == pytest.approx(-804.5) and series.z_mm[-1] == pytest.approx(-766.5)
    assert np.all(np.diff(series.z_mm) == pytest.approx(2.0))
    assert series.geometry.spacing_mm == pytest.approx((0.9765625, 0.9765625))
    assert -1100 < series.hu.min() < -900 and series.hu.max() > 1000  # air and bone in HU
    one = series.slice(7)
    assert one.geometry.origin[2] == pytest.approx(series.z_mm[7]) and one.path == series.paths[7]
    assert one.sop_instance_uid and one.series_instance_uid is None


def test_shuffled_and_missing_instance_numbers_sorted_by_position(tmp_path):
    z = [10.0, 13.0, 16.0, 19.0, 22.0]
    _write_series(tmp_path, z, names=["c.dcm", "a.dcm", "e.dcm", "b.dcm", "d.dcm"], numbers=[3, 1, 5, 2, 4])
    series = read_series(tmp_path)
    assert series.hu[:, 0, 0].tolist() == z
    assert series.file_index == [0, 1, 2, 3, 4]
    assert [p.name for p in series.paths] == ["c.dcm", "a.dcm", "e.dcm", "b.dcm", "d.dcm"]
    assert series.notes == ["InstanceNumber does not follow position; sorted by position"]
    _edit(tmp_path / "e.dcm", InstanceNumber=None)
    assert read_series(tmp_path).notes == ["InstanceNumber missing on 1 files; sorted by position"]


def test_rows_stored_bottom_up_read_canonical(tmp_path):
    _write_series(tmp_path, [0.0, 3.0], rows_bottom_up=True)
    series = read_series(tmp_path)
    assert series.hu[1, 5:10, 2:6].tolist() == np.full((5, 4), 50.0).tolist()
    assert series.hu[1, 0, 0] == 3.0


def test_two_series_in_one_folder_listed_and_refused_for_one(tmp_path):
    _write_series(tmp_path / "x", [0.0, 2.0, 4.0], series_uid="1.2.3.1")
    _write_series(tmp_path / "x", [0.0, 5.0], names=["s2-0.dcm", "s2-1.dcm"], series_uid="1.2.3.2")
    scan = scan_series(tmp_path / "x")
    assert [(s.key, s.n_slices) for s in scan.series] == [("1.2.3.1", 3), ("1.2.3.2", 2)]
    with pytest.raises(InputDataError, match=r"holds 2 CT series: 1\.2\.3\.1 \(3 slices.*1\.2\.3\.2 \(2 slices"):
        read_series(tmp_path / "x")


def test_blank_series_uids_split_by_spacing(tmp_path):
    fine = _write_series(tmp_path, [0.0, 1.0, 2.0], spacing=(0.8, 0.8))
    coarse = _write_series(tmp_path, [0.0, 5.0], names=["k0.dcm", "k1.dcm"], spacing=(1.6, 1.6))
    for path in fine + coarse:
        _edit(path, SeriesInstanceUID="", FrameOfReferenceUID="1.2.9")
    scan = scan_series(tmp_path)
    assert sorted(s.n_slices for s in scan.series) == [2, 3]
    assert {s.grouped_by for s in scan.series} == {"frame of reference, orientation and spacing"}


def test_copies_of_one_instance_read_once(tmp_path):
    paths = _write_series(tmp_path, [0.0, 2.0, 4.0])
    shutil.copy(paths[1], tmp_path / "copy-of-001.dcm")
    series = read_series(tmp_path)
    assert series.n_slices == 3
    assert any(
        "copy-of-001.dcm is a copy of 001.dcm" in n or "001.dcm is a copy of copy-of-001.dcm" in n for n in series.notes
    )


def test_two_images_at_one_position_refused(tmp_path):
    _write_series(tmp_path, [0.0, 2.0, 2.0, 4.0])
    with pytest.raises(InputDataError, match="lie at the same position .* two reconstructions are mixed"):
        read_series(tmp_path)


def test_missing_slices_refused_small_unevenness_accepted(tmp_path):
    _write_series(tmp_path / "gap", [0.0, 2.0, 4.0, 10.0, 12.0])
    with pytest.raises(InputDataError, match=r"6\.0 mm between 002\.dcm \(z 4\.0\) and 003\.dcm .*steps 2\.0 mm"):
        read_series(tmp_path / "gap")
    series = read_series(_write_series(tmp_path / "ok", [0.0, 2.0, 4.2, 6.0, 8.1])[0].parent)
    assert series.step_mm == pytest.approx(2.0, abs=0.1)


def test_gantry_tilt_refused(tmp_path):
    paths = _write_series(tmp_path / "drift", [0.0, 5.0, 10.0, 15.0])
    for k, path in enumerate(paths):  # a tilted gantry moves each slice's origin along y
        x, y, z = (float(v) for v in pydicom.dcmread(path).ImagePositionPatient)
        _edit(path, ImagePositionPatient=[x, y + 0.5 * k * 5.0, z])
    with pytest.raises(InputDataError, match="gantry tilt"):
        read_series(tmp_path / "drift")
    tilted = _write_series(tmp_path / "tilted", [0.0, 5.0])
    for path in tilted:
        _edit(path, ImageOrientationPatient=[1, 0, 0, 0, 0.9848, -0.1736])
    scan = scan_series(tmp_path / "tilted")
    assert not scan.series and "gantry tilt" in scan.rejected[0][1]


def test_folder_without_series_names_the_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not dicom")
    with pytest.raises(InputDataError, match=r"no readable CT series \(notes\.txt: not a DICOM Part 10 file"):
        read_series(tmp_path)
    _write_series(tmp_path, [0.0, 2.0])
    scan = scan_series(tmp_path)
    assert scan.series[0].n_slices == 2 and scan.rejected[0][0].endswith("notes.txt")


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_nifti_volume_sorted_inferior_to_superior_keeping_file_indices(tmp_path):
    data = np.full((20, 24, 4), -100.0, np.float32)
    for k in range(4):
        data[0, 0, k] = k  # file index visible in the pixels
    affine = np.diag([-1.5, -1.5, -3.0, 1.0])  # RAS: x, y stored as LPS; slices descend in z
    affine[2, 3] = 100.0
    series = read_nifti_series(_nifti(tmp_path / "v.nii.gz", data, affine))
    assert series.z_mm.tolist() == [91.0, 94.0, 97.0, 100.0]
    assert series.file_index == [3, 2, 1, 0]
    assert series.hu.shape == (4, 24, 20)  # canonical (H = y, W = x)
    assert series.hu[:, 0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert series.geometry.thickness_mm == pytest.approx(3.0)


def test_nifti_not_stacked_along_z_refused(tmp_path):
    sagittal = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])  # third axis along x
    path = _nifti(tmp_path / "sag.nii.gz", np.zeros((8, 8, 8), np.float32), sagittal)
    with pytest.raises(InputDataError, match="third axis runs along .* resample it to axial"):
        read_series(path)
    path = _nifti(tmp_path / "4d.nii.gz", np.zeros((8, 8, 3, 2), np.float32), np.eye(4))
    with pytest.raises(InputDataError, match=r"declares shape \(8, 8, 3, 2\)"):
        read_series(path)
