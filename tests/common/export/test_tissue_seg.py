"""A body-composition label map as a DICOM SEG: one coded segment per tissue, read back by common.data."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from common.clinical import IMAT, MUSCLE, SAT, VAT
from common.data.dicom_io import read_ct_slice, write_ct_dicom
from common.data.mask_io import read_mask
from common.export.dicom_seg import write_muscle_seg, write_tissue_seg

# (label, type, anatomic region) as SNOMED CT code values, in the order the segments are written.
EXPECTED = {
    MUSCLE: ("Skeletal muscle", "127954009", "818981001"),
    IMAT: ("Intermuscular adipose tissue", "55603005", "127954009"),
    VAT: ("Visceral adipose tissue", "55603005", "52731004"),
    SAT: ("Subcutaneous adipose tissue", "67769002", "818981001"),
}


def _ct(tmp_path, bottom_up: bool = False):
    hu = np.full((48, 40), -100.0, np.float32)
    hu[:, ::7] = 40.0  # any image does; the SEG only references it
    write_ct_dicom(
        tmp_path / "ct.dcm",
        hu,
        (0.7, 0.9),
        patient_id="SF-1",
        sex="F",
        height_m=1.6,
        weight_kg=60,
        age_years=70,
        rows_bottom_up=bottom_up,
    )
    return read_ct_slice(tmp_path / "ct.dcm")


def _label_map(imat: bool = True) -> np.ndarray:
    """SAT ring, VAT inside, a posterior-right muscle block with IMAT in it: asymmetric, so a flip shows."""
    labels = np.zeros((48, 40), np.uint8)
    labels[2:46, 2:38] = SAT
    labels[6:42, 6:34] = VAT
    labels[30:40, 8:18] = MUSCLE
    if imat:
        labels[33:35, 10:13] = IMAT
    return labels


def _write(tmp_path, labels, ct):
    return write_tissue_seg(tmp_path / "seg.dcm", labels, ct, model_name="SarcoFed test", model_version="0")


def _codes(item, keyword: str) -> list[tuple[str, str]]:
    return [(c.CodingSchemeDesignator, c.CodeValue) for c in item[keyword].value]


@pytest.mark.parametrize("bottom_up", [False, True], ids=["top-down", "bottom-up"])
def test_label_map_gives_four_coded_segments_and_reads_back(tmp_path, bottom_up):
    ct = _ct(tmp_path, bottom_up)
    assert ct.geometry.flip_rows is bottom_up
    labels = _label_map()
    _write(tmp_path, labels, ct)

    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == [1, 2, 3, 4]
    for segment, (label, kind, region) in zip(ds.SegmentSequence, EXPECTED.values(), strict=True):
        assert segment.SegmentLabel == label
        assert _codes(segment, "SegmentedPropertyCategoryCodeSequence") == [("SCT", "85756007")]
        assert _codes(segment, "SegmentedPropertyTypeCodeSequence") == [("SCT", kind)]
        assert _codes(segment, "AnatomicRegionSequence") == [("SCT", region)]
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert ds.ContentLabel == "TISSUES"
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    for number, value in enumerate(EXPECTED, 1):
        frame = seg.get_pixels_by_source_instance([ct.sop_instance_uid], segment_numbers=[number])[0, :, :, 0]
        np.testing.assert_array_equal(frame, ct.geometry.to_stored((labels == value).astype(np.uint8)))
    again = read_mask(tmp_path / "seg.dcm", ct)
    assert again.dtype == np.uint8
    np.testing.assert_array_equal(again, labels)


def test_label_map_without_imat_gives_three_segments(tmp_path):
    ct = _ct(tmp_path)
    labels = _label_map(imat=False)
    _write(tmp_path, labels, ct)
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [
        "Skeletal muscle",
        "Visceral adipose tissue",
        "Subcutaneous adipose tissue",
    ]
    np.testing.assert_array_equal(read_mask(tmp_path / "seg.dcm", ct), labels)


def test_label_map_without_muscle_keeps_an_empty_muscle_segment(tmp_path):
    ct = _ct(tmp_path)
    labels = _label_map(imat=False)
    labels[labels == MUSCLE] = VAT
    _write(tmp_path, labels, ct)
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [
        "Skeletal muscle",
        "Visceral adipose tissue",
        "Subcutaneous adipose tissue",
    ]
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    muscle = seg.get_pixels_by_source_instance([ct.sop_instance_uid], segment_numbers=[1])
    assert muscle.shape[0] == 1 and not muscle.any()
    np.testing.assert_array_equal(read_mask(tmp_path / "seg.dcm", ct), labels)


def test_muscle_only_mask_gives_one_segment(tmp_path):
    ct = _ct(tmp_path, bottom_up=True)
    mask = (_label_map() == MUSCLE).astype(np.uint8) * 255  # any one nonzero value is muscle
    write_muscle_seg(tmp_path / "seg.dcm", mask, ct, model_name="SarcoFed test", model_version="0")
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert len(ds.SegmentSequence) == 1 and ds.SegmentSequence[0].SegmentLabel == "Skeletal muscle"
    assert _codes(ds.SegmentSequence[0], "SegmentedPropertyTypeCodeSequence") == [("SCT", "127954009")]
    assert ds.ContentLabel == "MUSCLE" and ds.SeriesDescription == "SarcoFed skeletal muscle (research use)"
    np.testing.assert_array_equal(read_mask(tmp_path / "seg.dcm", ct), (mask > 0).astype(np.uint8))
