"""Masks overlay their CT exactly (NIfTI and DICOM SEG), and misplaced masks are refused."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from common.data.dicom_io import read_ct_slice, write_ct_dicom
from common.data.mask_io import read_mask, write_mask_nifti
from common.export.dicom_seg import write_muscle_seg
from common.errors import MaskGeometryError


@pytest.fixture(params=[False, True], ids=["top-down", "bottom-up"])
def case(request, tmp_path, body):
    hu, mask = body()
    ct = write_ct_dicom(tmp_path / "ct.dcm", hu, (0.7, 0.9), patient_id="SF-1", sex="M", height_m=1.8,
                        weight_kg=80, age_years=60, rows_bottom_up=request.param, slice_z_mm=33.0)
    return ct, mask


def test_nifti_mask_round_trip_for_both_row_orders(case, tmp_path):
    ct, mask = case
    write_mask_nifti(tmp_path / "m.nii.gz", mask, ct.geometry)
    again = read_mask(tmp_path / "m.nii.gz", read_ct_slice(ct.path))
    assert again.dtype == np.uint8 and np.array_equal(again, mask)
    # The mask's voxels lie where the CT's pixels are: the muscle HU sits under the mask.
    under = read_ct_slice(ct.path).hu[again > 0]
    assert np.all((under >= 45) & (under < 56))


def test_nifti_affine_matches_dicom_pixel_positions(case, tmp_path):
    """Voxel -> RAS via the NIfTI affine equals DICOM's pixel position (LPS) with x, y negated."""
    ct, mask = case
    write_mask_nifti(tmp_path / "m.nii.gz", mask, ct.geometry)
    affine = nib.load(tmp_path / "m.nii.gz").affine
    ds = ct.dataset
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    h, w = ct.shape
    for stored_r, stored_c in [(0, 0), (5, 7), (h - 1, w - 1)]:
        lps = ipp + stored_c * dc * iop[:3] + stored_r * dr * iop[3:]
        canon_r = h - 1 - stored_r if ct.geometry.flip_rows else stored_r
        ras = affine @ np.array([stored_c, canon_r, 0, 1.0])
        assert np.allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)


def test_mask_in_other_valid_layout_is_resolved(case, tmp_path):
    """A NIfTI stored like the DICOM (rows bottom-up) with a correct affine reads back canonical."""
    ct, mask = case
    geometry = ct.geometry
    flipped = mask[::-1].T[:, :, None]
    affine = geometry.nifti_affine().copy()
    affine[:3, 3] = affine[:3, :3] @ [0, mask.shape[0] - 1, 0] + affine[:3, 3]
    affine[:3, 1] *= -1
    nib.save(nib.Nifti1Image(flipped, affine), tmp_path / "alt.nii.gz")
    assert np.array_equal(read_mask(tmp_path / "alt.nii.gz", ct), mask)


def test_flipped_mask_refused(case, tmp_path):
    ct, mask = case
    affine = ct.geometry.nifti_affine().copy()
    affine[:3, 1] *= -1  # says rows run anterior; origin unchanged: the mask covers the wrong region
    nib.save(nib.Nifti1Image(mask.T[:, :, None], affine), tmp_path / "flip.nii.gz")
    with pytest.raises(MaskGeometryError, match="first-pixel position"):
        read_mask(tmp_path / "flip.nii.gz", ct)


def test_transposed_mask_refused(case, tmp_path):
    ct, mask = case
    nib.save(nib.Nifti1Image(mask[:, :, None], ct.geometry.nifti_affine()), tmp_path / "t.nii.gz")
    with pytest.raises(MaskGeometryError, match=r"size \(40, 48\) vs image \(48, 40\)"):
        read_mask(tmp_path / "t.nii.gz", ct)


def test_mask_of_another_slice_or_spacing_refused(case, tmp_path):
    ct, mask = case
    affine = ct.geometry.nifti_affine().copy()
    affine[2, 3] += 5.0
    nib.save(nib.Nifti1Image(mask.T[:, :, None], affine), tmp_path / "z.nii.gz")
    with pytest.raises(MaskGeometryError, match="off by"):
        read_mask(tmp_path / "z.nii.gz", ct)
    affine = ct.geometry.nifti_affine().copy()
    affine[0, 0] *= 1.01
    nib.save(nib.Nifti1Image(mask.T[:, :, None], affine), tmp_path / "s.nii.gz")
    with pytest.raises(MaskGeometryError, match="spacing"):
        read_mask(tmp_path / "s.nii.gz", ct)


def test_dicom_seg_round_trip_and_reference_check(case, tmp_path, body):
    ct, mask = case
    write_muscle_seg(tmp_path / "m.seg.dcm", mask, ct, model_name="reference", model_version="test")
    assert np.array_equal(read_mask(tmp_path / "m.seg.dcm", read_ct_slice(ct.path)), mask)
    other = write_ct_dicom(tmp_path / "other.dcm", body()[0], (0.7, 0.9), patient_id="SF-2", sex="M",
                           height_m=1.8, weight_kg=80, age_years=60, slice_z_mm=33.0)
    with pytest.raises(MaskGeometryError, match="references"):
        read_mask(tmp_path / "m.seg.dcm", other)
