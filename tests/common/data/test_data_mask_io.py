"""Masks overlay their CT exactly (NIfTI and DICOM SEG), and misplaced masks are refused."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from common.clinical import IMAT, MUSCLE, SAT, VAT
from common.data.ctslice import SliceGeometry
from common.data.dicom_io import read_ct_slice, write_ct_dicom
from common.data.mask_io import read_mask, write_mask_nifti
from common.errors import InputDataError, MaskGeometryError
from common.export.dicom_seg import write_muscle_seg, write_tissue_seg


@pytest.fixture(params=[False, True], ids=["top-down", "bottom-up"])
def case(request, tmp_path, body):
    hu, mask = body()
    ct = write_ct_dicom(
        tmp_path / "ct.dcm",
        hu,
        (0.7, 0.9),
        patient_id="SF-1",
        sex="M",
        height_m=1.8,
        weight_kg=80,
        age_years=60,
        rows_bottom_up=request.param,
        slice_z_mm=33.0,
    )
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
    other = write_ct_dicom(
        tmp_path / "other.dcm",
        body()[0],
        (0.7, 0.9),
        patient_id="SF-2",
        sex="M",
        height_m=1.8,
        weight_kg=80,
        age_years=60,
        slice_z_mm=33.0,
    )
    with pytest.raises(MaskGeometryError, match="references"):
        read_mask(tmp_path / "m.seg.dcm", other)


def test_float_nifti_mask_with_a_nan_voxel_refused(case, tmp_path):
    """NaN > 0 is False: without the check this voxel would silently become background."""
    ct, mask = case
    stored = mask.T[:, :, None].astype(np.float32)
    stored[10, 30, 0] = np.nan
    nib.save(nib.Nifti1Image(stored, ct.geometry.nifti_affine()), tmp_path / "nan_mask.nii.gz")
    with pytest.raises(InputDataError, match=rf"NIfTI mask has non-finite pixels: 1 of {mask.size} \(1 NaN") as info:
        read_mask(tmp_path / "nan_mask.nii.gz", ct)
    assert info.value.path == tmp_path / "nan_mask.nii.gz"


def test_dicom_seg_declaring_too_many_frames_refused_before_decoding(case, tmp_path):
    """A SEG whose header claims 2**20 frames (1.9 GiB decoded) is refused from the header."""
    import pydicom

    ct, mask = case
    write_muscle_seg(tmp_path / "m.seg.dcm", mask, ct, model_name="reference", model_version="test")
    ds = pydicom.dcmread(tmp_path / "m.seg.dcm")
    ds.NumberOfFrames = 2**20
    ds.save_as(tmp_path / "many.seg.dcm")
    with pytest.raises(InputDataError, match=r"1048576 frame\(s\) of 48 x 40 x 1 sample\(s\) at 1 bits, 1.9 GiB"):
        read_mask(tmp_path / "many.seg.dcm", ct)


def _label_map(mask: np.ndarray) -> np.ndarray:
    """The phantom's muscle with IMAT inside it, SAT along the image's front and VAT behind that."""
    labels = mask.astype(np.uint8)
    rows, cols = np.nonzero(mask)
    labels[rows[0], cols[0]] = IMAT
    labels[2:6, 4:30] = SAT
    labels[8:14, 10:30] = VAT
    return labels


def _highdicom_seg(path, ct, segments: list[tuple[str, object, np.ndarray]]):
    """A SEG written by highdicom alone: one (label, SNOMED CT type, canonical 0/1 mask) per segment."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, (label, kind, _) in enumerate(segments, 1)
    ]
    stored = np.stack([ct.geometry.to_stored(pixels.astype(np.uint8)) for _, _, pixels in segments], axis=-1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        seg = _segmentation(hd, ct, stored, descriptions)
    seg.save_as(path)
    return path


def _segmentation(hd, ct, stored, descriptions):
    return hd.seg.Segmentation(
        source_images=[ct.dataset],
        pixel_array=stored[None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=False,
    )


def test_dicom_seg_label_map_round_trip(case, tmp_path):
    ct, mask = case
    labels = _label_map(mask)
    write_tissue_seg(tmp_path / "m.seg.dcm", labels, ct, model_name="reference", model_version="test")
    again = read_mask(tmp_path / "m.seg.dcm", read_ct_slice(ct.path))
    assert again.dtype == np.uint8 and np.array_equal(again, labels)


def test_dicom_seg_tissues_told_by_label_when_codes_are_generic(case, tmp_path):
    """Body-composition SEGs often code every segment as 'Tissue' and name it only in the label."""
    from pydicom.sr.codedict import codes

    ct, mask = case
    labels = _label_map(mask)
    names = {MUSCLE: "Muscle", IMAT: "IMAT", VAT: "Visceral Adipose Tissue", SAT: "Subcutaneous fat"}
    segments = [(name, codes.SCT.Tissue, labels == value) for value, name in reversed(names.items())]
    _highdicom_seg(tmp_path / "m.seg.dcm", ct, segments)
    assert np.array_equal(read_mask(tmp_path / "m.seg.dcm", ct), labels)


def test_dicom_seg_segments_other_than_tissues_ignored(case, tmp_path):
    from pydicom.sr.codedict import codes

    ct, mask = case
    liver = np.zeros_like(mask)
    liver[5:20, 5:25] = 1
    liver[mask > 0] = 1  # not a tissue: overlapping the muscle is no conflict
    segments = [("Liver", codes.SCT.Liver, liver), ("Skeletal muscle", codes.SCT.SkeletalMuscle, mask)]
    _highdicom_seg(tmp_path / "m.seg.dcm", ct, segments)
    assert np.array_equal(read_mask(tmp_path / "m.seg.dcm", ct), mask)


def test_dicom_seg_with_two_muscle_segments_refused(case, tmp_path):
    from pydicom.sr.codedict import codes

    ct, mask = case
    left, right = mask.copy(), mask.copy()
    left[:, 20:], right[:, :20] = 0, 0
    segments = [("Muscle left", codes.SCT.SkeletalMuscle, left), ("Muscle right", codes.SCT.SkeletalMuscle, right)]
    _highdicom_seg(tmp_path / "m.seg.dcm", ct, segments)
    with pytest.raises(InputDataError, match=r"two segments of muscle among \['Muscle left', 'Muscle right'\]") as info:
        read_mask(tmp_path / "m.seg.dcm", ct)
    assert info.value.path == tmp_path / "m.seg.dcm"


def test_dicom_seg_without_a_muscle_segment_refused(case, tmp_path):
    from pydicom.sr.codedict import codes

    ct, mask = case
    segments = [("Liver", codes.SCT.Liver, mask), ("Spleen", codes.SCT.Spleen, 1 - mask)]
    _highdicom_seg(tmp_path / "m.seg.dcm", ct, segments)
    with pytest.raises(InputDataError, match=r"\['Liver', 'Spleen'\] and none is skeletal muscle"):
        read_mask(tmp_path / "m.seg.dcm", ct)


def test_dicom_seg_with_overlapping_tissues_refused(case, tmp_path):
    from pydicom.sr.codedict import codes

    ct, mask = case
    fat = np.ones_like(mask)  # covers the muscle too
    segments = [("Skeletal muscle", codes.SCT.SkeletalMuscle, mask), ("Subcutaneous fat", codes.SCT.Tissue, fat)]
    _highdicom_seg(tmp_path / "m.seg.dcm", ct, segments)
    with pytest.raises(InputDataError, match=r"overlap.*\['Skeletal muscle', 'Subcutaneous fat'\]"):
        read_mask(tmp_path / "m.seg.dcm", ct)


# A NIfTI CT slice in several index orders, all on one canonical grid: (H, W) = (48, 40), spacing
# (row 0.8, column 0.7) mm, canonical pixel [0, 0] (anterior-right) at LPS (-15, -20, 33) mm,
# 2.5 mm thick. Each case gives the stored array as an index expression on the canonical (H, W)
# array and the RAS affine worked out by hand (RAS x, y = -LPS x, y; canonical rows run posterior,
# columns toward the patient's left).
H, W, DR, DC, OX, OY, OZ, THICK = 48, 40, 0.8, 0.7, -15.0, -20.0, 33.0, 2.5
LEFT_X = OX + (W - 1) * DC  # LPS x of the most patient-left column
POSTERIOR_Y = OY + (H - 1) * DR  # LPS y of the most posterior row
LAYOUTS = {
    # i toward patient right, j toward anterior: data[i, j] = canonical[H-1-j, W-1-i].
    "RAS": (lambda c: c[::-1, ::-1].T, [[DC, 0, 0, -LEFT_X], [0, DR, 0, -POSTERIOR_Y], [0, 0, THICK, OZ]]),
    # i toward patient left, j toward anterior: data[i, j] = canonical[H-1-j, i].
    "LAS": (lambda c: c[::-1, :].T, [[-DC, 0, 0, -OX], [0, DR, 0, -POSTERIOR_Y], [0, 0, THICK, OZ]]),
    # i toward patient left, j toward posterior: data[i, j] = canonical[j, i] (the DICOM-style layout).
    "LPS": (lambda c: c.T, [[-DC, 0, 0, -OX], [0, -DR, 0, -OY], [0, 0, THICK, OZ]]),
    # i toward posterior, j toward patient right: data[i, j] = canonical[i, W-1-j] (axes swapped).
    "PRS": (lambda c: c[:, ::-1], [[0, DC, 0, -LEFT_X], [-DR, 0, 0, -OY], [0, 0, THICK, OZ]]),
}


def _nifti_slice(path, body, layout: str, *, two_d: bool = False, nifti2: bool = False):
    """Write the body phantom as a NIfTI slice in ``layout``; return (canonical hu, canonical mask, stored hu)."""
    hu, mask = body(H, W)
    to_stored, rows = LAYOUTS[layout]
    stored = np.ascontiguousarray(to_stored(hu))
    affine = np.vstack([np.array(rows, float), [0, 0, 0, 1]])
    image_class = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    nib.save(image_class(stored if two_d else stored[:, :, None], affine), str(path))
    return hu, mask, stored


@pytest.mark.parametrize(
    ("layout", "two_d", "nifti2"),
    [
        ("RAS", False, False),
        ("RAS", True, False),
        ("LAS", False, False),
        ("LPS", False, False),
        ("PRS", False, False),
        ("RAS", False, True),
    ],
    ids=["RAS", "RAS-2d", "LAS", "LPS", "PRS-transposed", "RAS-nifti2"],
)
def test_mask_of_nifti_image_is_on_its_voxel_grid(tmp_path, body, layout, two_d, nifti2):
    """Same shape, bit-identical affine, and mask voxel [i, j] is image voxel [i, j]."""
    hu, mask, stored_hu = _nifti_slice(tmp_path / "ct.nii.gz", body, layout, two_d=two_d, nifti2=nifti2)
    ct = read_ct_slice(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(ct.hu, hu)  # the reader puts every layout on one canonical grid

    write_mask_nifti(tmp_path / "mask.nii.gz", mask, ct.geometry, source_header=ct.nifti_header)

    source, written = nib.load(str(tmp_path / "ct.nii.gz")), nib.load(str(tmp_path / "mask.nii.gz"))
    assert written.shape == source.shape
    assert np.array_equal(written.affine, source.affine)
    assert written.get_data_dtype() == np.uint8 and type(written) is type(source)
    data = np.asarray(written.dataobj)
    np.testing.assert_array_equal(data.reshape(stored_hu.shape), LAYOUTS[layout][0](mask))
    under = stored_hu[data.reshape(stored_hu.shape) > 0]  # the phantom's muscle: 45 HU + 0.25 HU per column
    assert under.size == mask.sum() and np.all((under >= 45) & (under < 56))
    assert np.array_equal(read_mask(tmp_path / "mask.nii.gz", ct), mask)


def test_mask_for_another_nifti_grid_is_refused(tmp_path, body):
    _nifti_slice(tmp_path / "ct.nii.gz", body, "RAS")
    ct = read_ct_slice(tmp_path / "ct.nii.gz")
    shifted = SliceGeometry(ct.geometry.spacing_mm, (OX + 5.0, OY, OZ), ct.geometry.shape)
    with pytest.raises(MaskGeometryError, match="off by"):
        write_mask_nifti(
            tmp_path / "mask.nii.gz", np.zeros(shifted.shape, np.uint8), shifted, source_header=ct.nifti_header
        )
