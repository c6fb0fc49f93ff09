"""read_ct_slice / write_ct_dicom on real files and on files we write (both row orders)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from common.clinical import FAT_HU_RANGE, MUSCLE_HU_RANGE
from common.data.ctslice import SliceGeometry
from common.data.dicom_io import ct_slice_from_dataset, parse_age, read_ct_slice, write_ct_dicom
from common.errors import InputDataError

_BODY: list = []


@pytest.fixture(autouse=True)
def _body(body):
    """Hands the conftest phantom factory to the module helper."""
    _BODY[:] = [body]


def _write(tmp_path, bottom_up: bool, name: str = "ct.dcm"):
    hu, _ = _BODY[0]()
    ct = write_ct_dicom(
        tmp_path / name,
        hu,
        (0.78125, 0.8),
        patient_id="SF-0123",
        sex="female",
        height_m=1.64,
        weight_kg=58.5,
        age_years=67,
        rows_bottom_up=bottom_up,
        slice_z_mm=-120.5,
        description="test",
    )
    return hu, ct


@pytest.mark.parametrize("bottom_up", [False, True])
def test_write_read_round_trip_keeps_hu_and_geometry(tmp_path, bottom_up):
    hu, written = _write(tmp_path, bottom_up)
    read = read_ct_slice(tmp_path / "ct.dcm")
    assert read.hu.dtype == np.float32 and read.hu.shape == hu.shape
    assert np.array_equal(read.hu, np.rint(hu))
    assert np.array_equal(written.hu, read.hu)
    assert read.spacing_mm == (0.78125, 0.8)
    assert np.allclose(read.geometry.origin, written.geometry.origin, atol=1e-6)
    assert read.geometry.origin[2] == pytest.approx(-120.5)
    assert read.geometry.flip_rows is bottom_up
    assert (read.sex, read.height_m, read.weight_kg, read.age_years) == ("F", 1.64, 58.5, 67.0)
    assert read.sop_instance_uid == written.sop_instance_uid


def test_bottom_up_file_stores_rows_reversed_and_reads_canonical(tmp_path):
    hu, _ = _write(tmp_path, True)
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, -1, 0]
    raw = ds.pixel_array.astype(np.float32) - 1024
    assert np.array_equal(raw, np.rint(hu)[::-1])  # really stored bottom-up
    top_down = read_ct_slice(_write(tmp_path, False, "b.dcm")[1].path)
    assert np.array_equal(read_ct_slice(tmp_path / "ct.dcm").hu, top_down.hu)


def test_written_file_is_valid_ct_without_identifiers(tmp_path):
    _write(tmp_path, False)
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
    assert str(ds.PatientName) == "SF-0123" and ds.PatientID == "SF-0123"
    assert ds.PatientBirthDate == "" and ds.PatientAge == "067Y" and float(ds.PatientSize) == 1.64
    assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert "InstitutionName" not in ds


def test_hu_below_minus_1024_stored_signed(tmp_path):
    hu = np.full((8, 8), -2000.0, dtype=np.float32)
    hu[0, 0] = 3000
    ct = write_ct_dicom(
        tmp_path / "s.dcm", hu, (1, 1), patient_id="x", sex=None, height_m=None, weight_kg=None, age_years=None
    )
    assert pydicom.dcmread(tmp_path / "s.dcm").PixelRepresentation == 1
    assert np.array_equal(read_ct_slice(tmp_path / "s.dcm").hu, hu) and ct.sex is None


def test_transposed_storage_reads_canonical(tmp_path):
    """A file whose rows run along x (IOP 0,1,0,1,0,0) is transposed back."""
    hu, written = _write(tmp_path, False)
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    stored = ds.pixel_array
    ds.PixelData = np.ascontiguousarray(stored.T).tobytes()
    ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
    ds.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    ds.PixelSpacing = [0.8, 0.78125]
    ds.save_as(tmp_path / "t.dcm")
    read = read_ct_slice(tmp_path / "t.dcm")
    assert read.geometry.transpose and read.spacing_mm == (0.78125, 0.8)
    assert np.array_equal(read.hu, written.hu)
    assert np.allclose(read.geometry.origin, written.geometry.origin)


def test_ct_small_real_file_has_tissue_range(ct_small):
    ct = read_ct_slice(ct_small)
    assert ct.shape == (128, 128) and ct.spacing_mm == pytest.approx((0.661468, 0.661468))
    hu = ct.hu
    muscle = np.mean((hu >= MUSCLE_HU_RANGE[0]) & (hu <= MUSCLE_HU_RANGE[1]))
    fat = np.mean((hu >= FAT_HU_RANGE[0]) & (hu <= FAT_HU_RANGE[1]))
    bone = np.mean(hu > 250)
    assert muscle > 0.05 and fat > 0.01 and bone > 0.01, (muscle, fat, bone)
    assert -1100 < hu.min() < 0 < 1000 < hu.max() < 3000
    assert ct.sex is None and ct.age_years is None  # '000Y' and 'O' are unknown, not zero / other


def test_real_bottom_up_jpeg2000_abdomen_is_canonical(abdomen_bottom_up):
    ct = read_ct_slice(abdomen_bottom_up)
    assert ct.shape == (512, 512) and ct.geometry.flip_rows and not ct.geometry.transpose
    hu = ct.hu
    assert hu.min() == pytest.approx(-1024) and 800 < hu.max() < 2000
    body = hu > -300
    rows = np.nonzero(body[:, 200:312].any(axis=1))[0]
    # Vertebra: dense bone near the midline, in the posterior (lower) half of the canonical image.
    spine_rows, spine_cols = np.nonzero(hu[:, 160:352] > 400)
    assert spine_rows.size > 500 and np.median(spine_rows) > 256
    assert abs(np.median(spine_cols) + 160 - 256) < 40
    # Anterior abdominal wall in the upper part of the image.
    assert rows.min() < 180
    # The table's curved ends reach the image edges (no patient there), below the spine.
    for edge in (hu[:, :15], hu[:, -15:]):
        table_rows = np.nonzero((edge > -300).any(axis=1))[0]
        assert table_rows.size and table_rows.min() > np.median(spine_rows)
    # Physical position of canonical pixel [0, 0] is the most anterior row: y smallest.
    assert ct.geometry.origin[1] == pytest.approx(-511 * 0.859375)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_small.dcm", "'Modality' is 'MR'"),
        ("rtdose.dcm", "'Modality' is 'RTDOSE'"),
        ("test-SR.dcm", "'Modality' is 'SR'"),
        ("no_meta.dcm", "not a DICOM Part 10 file"),
    ],
)
def test_non_ct_files_rejected_with_reason(name, reason):
    with pytest.raises(InputDataError, match=reason) as info:
        read_ct_slice(get_testdata_file(name))
    assert name in str(info.value)


def test_missing_tag_named_by_number_and_keyword(tmp_path):
    _write(tmp_path, False)
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    del ds.PixelSpacing
    ds.save_as(tmp_path / "nospacing.dcm")
    with pytest.raises(InputDataError, match=r"\(0028,0030\) 'Pixel Spacing' missing"):
        read_ct_slice(tmp_path / "nospacing.dcm")


def test_truncated_and_oblique_rejected(tmp_path):
    _write(tmp_path, False)
    data = (tmp_path / "ct.dcm").read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(data[: len(data) - 1000])
    with pytest.raises(InputDataError, match="Pixel Data|truncated"):
        read_ct_slice(tmp_path / "trunc.dcm")
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    ds.save_as(tmp_path / "coronal.dcm")
    with pytest.raises(InputDataError, match="not an axis-aligned axial plane"):
        read_ct_slice(tmp_path / "coronal.dcm")


def test_nifti_single_slice_reads_as_hu(tmp_path):
    import nibabel as nib

    hu, written = _write(tmp_path, True)
    geometry: SliceGeometry = written.geometry
    nib.save(
        nib.Nifti1Image(np.rint(hu).T[:, :, None].astype(np.int16), geometry.nifti_affine()), tmp_path / "x.nii.gz"
    )
    ct = read_ct_slice(tmp_path / "x.nii.gz")
    assert np.array_equal(ct.hu, written.hu) and ct.dataset is None and ct.sex is None
    assert np.allclose(ct.geometry.origin, geometry.origin, atol=1e-4)


def test_parse_age():
    assert parse_age("065Y") == 65 and parse_age("006M") == 0.5 and parse_age("000Y") is None
    assert parse_age(None) is None and parse_age("abc") is None


def test_read_is_fast(abdomen_bottom_up, tmp_path):
    import time

    _write(tmp_path, False)
    start = time.perf_counter()
    for _ in range(20):
        read_ct_slice(tmp_path / "ct.dcm")
    assert (time.perf_counter() - start) / 20 < 0.05


def test_blank_sop_instance_uid_is_read_from_file_meta(tmp_path, ct_small):
    ds = pydicom.dcmread(ct_small)
    ds.SOPInstanceUID = ""
    ds.SeriesInstanceUID = ""
    ds.save_as(tmp_path / "blank.dcm")
    ct = read_ct_slice(tmp_path / "blank.dcm")
    assert ct.sop_instance_uid == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"  # (0002,0003)
    assert ct.series_instance_uid is None  # blank and nothing repeats it: unknown, not ""
    del ds.file_meta.MediaStorageSOPInstanceUID
    assert ct_slice_from_dataset(ds, None).sop_instance_uid is None


@pytest.mark.parametrize(
    ("value", "counts"), [(np.nan, "(1 NaN, 0 infinite)"), (np.inf, "(0 NaN, 1 infinite)")], ids=["nan", "inf"]
)
def test_nifti_image_with_one_non_finite_voxel_refused(tmp_path, value, counts):
    import nibabel as nib

    hu, _ = _BODY[0]()
    stored = hu.T[:, :, None].copy()
    stored[3, 5, 0] = value
    nib.save(nib.Nifti1Image(stored, np.eye(4)), tmp_path / "bad.nii.gz")
    with pytest.raises(InputDataError, match="NIfTI image has non-finite pixels") as info:
        read_ct_slice(tmp_path / "bad.nii.gz")
    assert f"1 of {hu.size} {counts}" in str(info.value) and info.value.path == tmp_path / "bad.nii.gz"


@pytest.mark.parametrize(
    ("slope", "counts"),
    [("NaN", "(16384 NaN, 0 infinite)"), ("1e38", "(0 NaN, 16384 infinite)")],
    ids=["nan-slope", "beyond-float32"],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # 'NaN' is no valid DS: that is the damage tested
def test_dicom_whose_rescale_gives_non_finite_hu_refused(tmp_path, ct_small, slope, counts):
    """Integer Pixel Data times a NaN Rescale Slope is NaN HU; times 1e38 it is beyond float32, so inf."""
    ds = pydicom.dcmread(ct_small)
    ds.RescaleSlope = slope
    ds.save_as(tmp_path / "slope.dcm")
    with pytest.raises(InputDataError, match=r"HU image has non-finite pixels: 16384 of 16384") as info:
        read_ct_slice(tmp_path / "slope.dcm")
    assert counts in str(info.value) and f"'Rescale Slope' {slope}" in str(info.value)
    assert "slope.dcm" in str(info.value)


def test_dicom_declaring_65535_squared_pixels_refused_before_decoding(tmp_path, ct_small):
    """A 20 kB JPEG 2000 file whose header says 65535 x 65535 (8 GiB as int16): refused from the header."""
    import time
    import tracemalloc

    ds = pydicom.dcmread(ct_small)
    ds.compress(pydicom.uid.JPEG2000Lossless)  # a real codestream of the real 128 x 128 slice
    ds.Rows = ds.Columns = 65535
    ds.save_as(tmp_path / "bomb.dcm")
    assert (tmp_path / "bomb.dcm").stat().st_size < 32_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(InputDataError, match=r"declare 65535 x 65535 pixels a frame, more than the 4096 x 4096"):
            read_ct_slice(tmp_path / "bomb.dcm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 10 * 2**20  # nothing near the declared size was allocated


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        # 4 TiB declared, about 1 kB on disk: the header alone says it is a volume.
        (
            "volume.nii.gz",
            (4096, 4096, 32767),
            r"header declares shape \(4096, 4096, 32767\), expected one axial slice",
        ),
        ("huge_slice.nii", (32767, 32767, 1), r"header declares 32767 x 32767 voxels, expected 1 to 4096 a side"),
    ],
    ids=["volume", "oversized-slice"],
)
def test_nifti_refused_from_its_header_before_the_voxels_are_read(tmp_path, name, shape, message):
    import gzip
    import time

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float64)
    header["vox_offset"] = 352
    content = header.binaryblock + b"\0" * 4 + b"\0" * 1024  # header, no extensions, 128 voxels of data
    (tmp_path / name).write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    start = time.perf_counter()
    with pytest.raises(InputDataError, match=message) as info:
        read_ct_slice(tmp_path / name)
    assert time.perf_counter() - start < 1.0 and name in str(info.value)
