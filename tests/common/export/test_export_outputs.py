"""result.json values, the overlay PNG and the DICOM SEG, on real DICOM written by common.data."""

from __future__ import annotations

import json
import math

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from common.clinical import get_cutoff
from common.data.dicom_io import read_ct_slice, write_ct_dicom
from common.data.mask_io import read_mask
from common.errors import SegUnavailableError
from common.export.dicom_seg import write_muscle_seg
from common.export.overlay import write_overlay_png
from common.export.result import file_sha256, measurements, write_result_json


def _slice(h: int = 60, w: int = 72) -> tuple[np.ndarray, np.ndarray]:
    hu = np.full((h, w), -80.0, np.float32)
    mask = np.zeros((h, w), np.uint8)
    mask[5:25, 10:30] = 1  # 400 px; top-heavy on purpose so a flip shows
    hu[5:25, 10:30] = 50.0
    hu[5, 10] = -500.0  # one masked pixel outside the muscle window
    return hu, mask


def test_measurements_by_hand():
    hu, mask = _slice()
    rec = measurements(hu, mask, (0.8, 0.75), height_m=1.6, sex="F", weight_kg=None, cutoff=get_cutoff("prado2008"))
    sma = 400 * 0.8 * 0.75 / 100  # 2.4 cm2
    assert rec["sma_cm2"] == pytest.approx(sma)
    assert rec["smi_cm2_m2"] == pytest.approx(round(sma / 1.6**2, 3))
    assert rec["muscle_hu_mean"] == pytest.approx(50.0)  # the -500 HU pixel is outside -29..150
    assert rec["sarcopenic"] is True and rec["unavailable_reason"] is None
    assert rec["cutoff"] == {
        "name": "prado2008",
        "citation": "Prado et al., Lancet Oncol 2008",
        "threshold_cm2_m2": 38.5,
        "rule": "sarcopenic when SMI < threshold",
    }


def test_measurements_without_height_or_weight_are_not_guessed():
    hu, mask = _slice()
    no_height = measurements(hu, mask, (1.0, 1.0), height_m=None, sex="M", weight_kg=80, cutoff=get_cutoff("prado2008"))
    assert no_height["sma_cm2"] == pytest.approx(4.0) and no_height["muscle_hu_mean"] == pytest.approx(50.0)
    assert no_height["smi_cm2_m2"] is None and no_height["sarcopenic"] is None
    assert no_height["unavailable_reason"] == "height unknown"
    # Martin 2013 needs BMI for men: without weight there is no threshold to pick.
    martin = measurements(hu, mask, (1.0, 1.0), height_m=1.8, sex="M", weight_kg=None, cutoff=get_cutoff("martin2013"))
    assert martin["smi_cm2_m2"] is not None and martin["sarcopenic"] is None
    assert "BMI" in martin["unavailable_reason"] and martin["cutoff"]["threshold_cm2_m2"] is None
    martin_f = measurements(
        hu, mask, (1.0, 1.0), height_m=1.6, sex="F", weight_kg=None, cutoff=get_cutoff("martin2013")
    )
    assert martin_f["sarcopenic"] is True and martin_f["cutoff"]["threshold_cm2_m2"] == 41.0


def test_result_json_has_no_nan(tmp_path):
    path = write_result_json(tmp_path / "r.json", {"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2)]})
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [2]}
    assert len(file_sha256(path)) == 64


@pytest.mark.parametrize("bottom_up", [False, True])
def test_seg_is_in_stored_order_and_readable(tmp_path, bottom_up):
    hu, mask = _slice()
    write_ct_dicom(
        tmp_path / "ct.dcm",
        hu,
        (0.8, 0.75),
        patient_id="sf-001",
        sex="F",
        height_m=1.6,
        weight_kg=60,
        age_years=70,
        rows_bottom_up=bottom_up,
    )
    ct = read_ct_slice(tmp_path / "ct.dcm")
    assert ct.geometry.flip_rows is bottom_up
    np.testing.assert_array_equal(ct.hu, hu)
    write_muscle_seg(
        tmp_path / "seg.dcm",
        mask,
        ct,
        model_name="SarcoFed tiny seg",
        model_version="0.1.0 sha256:ab",
        parameters={"preset": "tiny"},
    )
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    frames = seg.get_pixels_by_source_instance([ct.sop_instance_uid], segment_numbers=[1])
    stored = frames[0, :, :, 0]
    np.testing.assert_array_equal(stored, ct.geometry.to_stored(mask))
    raw = ct.dataset.pixel_array
    assert stored.shape == raw.shape
    # The SEG overlays the stored pixels of the muscle (stored 1074 = 50 HU), wherever the scanner put them.
    hu_under_seg = raw[stored > 0].astype(np.float64) - 1024.0
    assert np.count_nonzero(hu_under_seg == 50.0) == 399 and np.count_nonzero(hu_under_seg == -500.0) == 1
    desc = seg.SegmentSequence[0]
    assert desc.SegmentLabel == "Skeletal muscle"
    assert desc.SegmentAlgorithmType == "AUTOMATIC" and desc.SegmentAlgorithmName == "SarcoFed tiny seg"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.SkeletalMuscle.value
    assert desc.SegmentedPropertyCategoryCodeSequence[0].CodeValue == codes.SCT.Tissue.value
    algo = desc.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "SarcoFed tiny seg" and algo.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    assert (
        pydicom.dcmread(tmp_path / "seg.dcm")
        .ReferencedSeriesSequence[0]
        .ReferencedInstanceSequence[0]
        .ReferencedSOPInstanceUID
        == ct.sop_instance_uid
    )
    # The data layer reads it back onto the canonical grid.
    np.testing.assert_array_equal(read_mask(tmp_path / "seg.dcm", ct), mask)


def test_seg_refuses_nifti_input(tmp_path):
    import nibabel as nib

    hu, mask = _slice()
    from common.data.ctslice import SliceGeometry

    geo = SliceGeometry((0.8, 0.75), (0.0, 0.0, 0.0), hu.shape)
    nib.save(nib.Nifti1Image(hu.T[:, :, None], geo.nifti_affine()), str(tmp_path / "ct.nii.gz"))
    ct = read_ct_slice(tmp_path / "ct.nii.gz")
    with pytest.raises(SegUnavailableError, match="NIfTI: a DICOM SEG must reference a DICOM image"):
        write_muscle_seg(tmp_path / "seg.dcm", mask, ct, model_name="x", model_version="y")


def test_overlay_png(tmp_path):
    import matplotlib.image as mpimg

    hu, mask = _slice()
    path = write_overlay_png(tmp_path / "o.png", hu, mask, (0.8, 0.75), ["SMA 2.4 cm2", "prado2008: SARCOPENIC"])
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # The mask is drawn in red: some pixels are clearly redder than grey.
    red = (img[..., 0] - img[..., 1] > 0.3).sum()
    assert red > 1000
    assert not math.isnan(float(img.mean()))


def test_seg_on_real_bottom_up_jpeg2000_ct(tmp_path):
    """pydicom-data's real abdominal slice: JPEG 2000, stored bottom-up, empty Slice Thickness."""
    from pydicom.data import get_testdata_file

    ct = read_ct_slice(get_testdata_file("explicit_VR-UN.dcm"))
    assert ct.geometry.flip_rows and ct.dataset.get("SliceThickness") in (None, "")
    mask = ((ct.hu > -29) & (ct.hu < 150)).astype(np.uint8)
    mask[: ct.shape[0] // 2] = 0  # posterior half only: a flip would move it
    write_muscle_seg(tmp_path / "seg.dcm", mask, ct, model_name="SarcoFed test", model_version="0")
    assert ct.dataset.get("SliceThickness") in (None, "")  # the caller's dataset is untouched
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    frame = seg.get_pixels_by_source_instance([ct.sop_instance_uid], segment_numbers=[1])[0, :, :, 0]
    np.testing.assert_array_equal(frame, mask[::-1, :])  # stored bottom-up
    np.testing.assert_array_equal(read_mask(tmp_path / "seg.dcm", ct), mask)


def _ct_small_with_blank(tmp_path, *keywords: str):
    """pydicom's real CT_small.dcm saved with ``keywords`` emptied, as anonymised exports do."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword in keywords:
        setattr(ds, keyword, "")
    path = tmp_path / "blanked.dcm"
    ds.save_as(path)
    return path


def test_seg_takes_blank_sop_uids_from_file_meta(tmp_path):
    ct = read_ct_slice(_ct_small_with_blank(tmp_path, "SOPClassUID", "SOPInstanceUID"))
    meta_uid = ct.dataset.file_meta.MediaStorageSOPInstanceUID
    assert ct.sop_instance_uid == meta_uid
    mask = ((ct.hu > -29) & (ct.hu < 150)).astype(np.uint8)

    write_muscle_seg(tmp_path / "seg.dcm", mask, ct, model_name="SarcoFed test", model_version="0")

    assert ct.dataset.SOPClassUID == "" and ct.dataset.SOPInstanceUID == ""  # the caller's dataset is untouched
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    reference = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert reference.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage, from (0002,0002)
    assert reference.ReferencedSOPInstanceUID == meta_uid
    assert seg.StudyInstanceUID == ct.dataset.StudyInstanceUID
    frame = seg.get_pixels_by_source_instance([meta_uid], segment_numbers=[1])[0, :, :, 0]
    np.testing.assert_array_equal(frame, mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "seg.dcm", ct), mask)


@pytest.mark.parametrize(
    ("blank", "named"),
    [
        (("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"), ["(0020,000D)", "(0020,000E)"]),
        (("FrameOfReferenceUID",), ["(0020,0052)"]),
    ],
    ids=["study-series-sopclass", "frame-of-reference"],
)
def test_seg_refused_for_blank_uids_without_second_source(tmp_path, blank, named):
    ct = read_ct_slice(_ct_small_with_blank(tmp_path, *blank))
    mask = np.ones(ct.shape, np.uint8)
    with pytest.raises(SegUnavailableError) as refused:
        write_muscle_seg(tmp_path / "seg.dcm", mask, ct, model_name="SarcoFed test", model_version="0")
    assert all(tag in refused.value.reason for tag in named), refused.value.reason
    assert "(0008,0016)" not in refused.value.reason  # the SOP Class UID came from the file meta
    assert "blanked.dcm" in str(refused.value)
    assert not (tmp_path / "seg.dcm").exists()
