"""Read one CT slice (DICOM or single-slice NIfTI) into canonical HU, and write CT slices as real DICOM.

Reading is on every training step's path, so it does the minimum: one ``dcmread``, one pixel decode
(pylibjpeg handles the compressed transfer syntaxes), one modality LUT, then flips/transposes as views.
Every check that fails names the file and the DICOM tag by number and keyword, so a site can fix it.
The declared size (DICOM header, NIfTI header) is checked before any pixel is decoded or loaded, and no
NaN or infinite value leaves a reader: one such pixel is enough to turn a trained model into NaN.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.clinical import normalise_sex
from common.data.ctslice import CTSlice, SliceGeometry, geometry_from_axes
from common.errors import InputDataError

if TYPE_CHECKING:  # nibabel is imported lazily; only the type is needed here
    from nibabel.nifti1 import Nifti1Header

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NIFTI_SUFFIXES = (".nii", ".nii.gz")

# Largest slice read, in pixels a side (DICOM Rows and Columns, NIfTI X and Y). CT slices are
# 512 x 512, high-resolution reconstructions 1024 or 2048; 4096 leaves room for any real slice while
# bounding one frame at 16 Mi pixels (128 MiB as float64 HU). Decoders and nibabel allocate what the
# header declares, so the header is held to this before any pixel is decoded or loaded.
MAX_SLICE_SIDE = 4096
# Largest decoded Pixel Data of one DICOM file, all frames together (a SEG has one frame per segment
# and slice): 1 GiB is 4096 frames of 512 x 512 at one byte a pixel.
MAX_PIXEL_DATA_BYTES = 1 << 30

# (tag, keyword) of attributes without which a slice cannot be placed or converted to HU.
_REQUIRED = [
    ("(0028,0010)", "Rows"),
    ("(0028,0011)", "Columns"),
    ("(0028,0030)", "PixelSpacing"),
    ("(0020,0037)", "ImageOrientationPatient"),
    ("(0020,0032)", "ImagePositionPatient"),
    ("(7FE0,0010)", "PixelData"),
]
_NAMES = {
    "Rows": "Rows",
    "Columns": "Columns",
    "PixelSpacing": "Pixel Spacing",
    "ImageOrientationPatient": "Image Orientation (Patient)",
    "ImagePositionPatient": "Image Position (Patient)",
    "PixelData": "Pixel Data",
    "Modality": "Modality",
}


def is_nifti(path: str | Path) -> bool:
    """True for .nii / .nii.gz file names."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_ct_slice(path: str | Path) -> CTSlice:
    """Read one axial CT slice as canonical (H, W) float32 HU.

    Parameters
    ----------
    path : DICOM Part 10 file (CT Image Storage, any transfer syntax pylibjpeg decodes) or a NIfTI
        file holding one slice (values taken as HU; no patient data).

    Raises
    ------
    InputDataError
        Not DICOM/NIfTI, not CT, a required tag missing, a declared size over MAX_SLICE_SIDE a side
        (refused before decoding), pixel data undecodable, NaN or infinite HU, or an oblique plane.
    """
    path = Path(path)
    if is_nifti(path):
        return _read_nifti_slice(path)
    ds = read_dataset(path)
    return ct_slice_from_dataset(ds, path)


def read_dataset(path: Path, stop_before_pixels: bool = False):
    """``dcmread`` that turns pydicom's failures into one InputDataError naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise InputDataError(_not_part10_reason(path), path) from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise InputDataError(
            f"cannot be read as DICOM ({type(error).__name__}: {error}); the file may be "
            "truncated or damaged: copy it again from the source",
            path,
        ) from None


def _not_part10_reason(path: Path) -> str:
    """Tell a raw DICOM dataset (no File Meta header) from a file that is not DICOM at all."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # guessing at a non-DICOM file warns about every "element"
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        raw_dicom = "SOPClassUID" in ds or "Modality" in ds
    except Exception:  # anything unreadable under force is simply not DICOM
        raw_dicom = False
    if raw_dicom:
        return (
            "DICOM dataset without the Part 10 file header (no 128-byte preamble, 'DICM' marker or "
            "(0002,0010) 'Transfer Syntax UID'), so its encoding is unknown; re-export it from the "
            "PACS/viewer as a standard DICOM file"
        )
    return (
        "not a DICOM Part 10 file (no 'DICM' marker after the 128-byte preamble, no File Meta "
        "Information) and not NIfTI (.nii/.nii.gz); if it is DICOM, re-export it from the PACS/viewer "
        "as a standard DICOM file"
    )


def ct_slice_from_dataset(ds, path: Path | None) -> CTSlice:
    """Checks + HU + canonical orientation for a dataset already in memory (used by reader and writer)."""
    from pydicom.pixels import apply_modality_lut

    modality = str(ds.get("Modality", "") or "")
    if modality != "CT":
        what = modality or "missing"
        raise InputDataError(
            f"(0008,0060) 'Modality' is {what!r}, expected 'CT' (SOP class {ds.get('SOPClassUID', '?')}, "
            f"{getattr(ds.get('SOPClassUID'), 'name', 'unknown')}); only CT slices can be used",
            path,
        )
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames != 1:
        raise InputDataError(
            f"(0028,0008) 'Number of Frames' is {n_frames}: multi-frame (enhanced) CT is not supported; "
            "export the L3 slice as a single-frame CT Image",
            path,
        )
    for tag, keyword in _REQUIRED:
        if keyword not in ds or ds[keyword].value in (None, "", b""):
            raise InputDataError(f"{tag} '{_NAMES[keyword]}' missing; a CT slice needs it to be placed/decoded", path)
    spacing = [float(v) for v in ds.PixelSpacing]
    iop = [float(v) for v in ds.ImageOrientationPatient]
    ipp = [float(v) for v in ds.ImagePositionPatient]
    if len(spacing) != 2 or min(spacing) <= 0 or not all(map(math.isfinite, spacing)):
        raise InputDataError(f"(0028,0030) 'Pixel Spacing' is {spacing}, expected two positive numbers (mm)", path)
    if len(iop) != 6 or len(ipp) != 3:
        raise InputDataError(f"(0020,0037)/(0020,0032) have {len(iop)}/{len(ipp)} values, expected 6/3", path)
    check_pixel_data_size(ds, path)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InputDataError(
            f"(0028,0002) 'Samples per Pixel' is {ds.SamplesPerPixel}, expected 1 (greyscale CT)", path
        )
    thickness = float(ds.get("SliceThickness") or 1.0)
    geometry = geometry_from_axes(
        np.array(iop[3:]),
        np.array(iop[:3]),
        spacing[0],
        spacing[1],
        np.array(ipp),
        (int(ds.Rows), int(ds.Columns)),
        thickness_mm=thickness,
        source=path or "dataset",
    )
    try:
        stored = ds.pixel_array
    except Exception as error:  # decoders raise many types; all mean the same to the user
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raise InputDataError(
            f"(7FE0,0010) 'Pixel Data' cannot be decoded (transfer syntax {ts} "
            f"{getattr(ts, 'name', '')}): {type(error).__name__}: {error}; the file may be truncated, or "
            "needs a decoder pylibjpeg lacks: re-export it uncompressed",
            path,
        ) from None
    if stored.shape != (int(ds.Rows), int(ds.Columns)):
        raise InputDataError(f"pixel array is {stored.shape}, (0028,0010/0011) say {(ds.Rows, ds.Columns)}", path)
    with np.errstate(over="ignore"):  # HU beyond float32 become inf, which check_finite reports
        hu = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    check_finite(
        hu,
        path,
        "HU image",
        f"HU = stored value x (0028,1053) 'Rescale Slope' {ds.get('RescaleSlope', 1)!s} + (0028,1052) "
        f"'Rescale Intercept' {ds.get('RescaleIntercept', 0)!s}; the header is damaged: re-export the slice",
    )
    hu = np.ascontiguousarray(geometry.to_canonical(hu))
    return CTSlice(
        hu=hu,
        geometry=geometry,
        path=path,
        sex=normalise_sex(ds.get("PatientSex"), strict=False),
        height_m=_positive(ds.get("PatientSize")),
        weight_kg=_positive(ds.get("PatientWeight")),
        age_years=parse_age(ds.get("PatientAge")),
        sop_instance_uid=sop_instance_uid(ds),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "") or "") or None,
        dataset=ds,
    )


# (tag, keyword, name, default) of the attributes that fix how many bytes Pixel Data decodes to.
_SIZE_TAGS = [
    ("(0028,0010)", "Rows", "Rows", None),
    ("(0028,0011)", "Columns", "Columns", None),
    ("(0028,0008)", "NumberOfFrames", "Number of Frames", 1),
    ("(0028,0002)", "SamplesPerPixel", "Samples per Pixel", 1),
    ("(0028,0100)", "BitsAllocated", "Bits Allocated", 16),
]


def check_pixel_data_size(ds, path: Path | None) -> None:
    """Refuse, from the header alone, Pixel Data that would decode to more than SarcoFed reads.

    A decoder allocates what Rows, Columns, Number of Frames, Samples per Pixel and Bits Allocated
    declare before it reads the data: a JPEG 2000 file of a few kilobytes can declare 65535 x 65535
    pixels (8 GiB as int16). So this runs before ``pixel_array`` is touched, for CT slices and SEGs.

    Raises
    ------
    InputDataError
        A frame larger than MAX_SLICE_SIDE a side, all frames over MAX_PIXEL_DATA_BYTES, or a size
        attribute that is not a positive whole number.
    """
    declared = {}
    for tag, keyword, name, default in _SIZE_TAGS:
        value = ds.get(keyword, default)
        raw = default if value in (None, "") else value
        try:
            number = 0 if raw is None else int(raw)
        except (TypeError, ValueError):
            number = 0
        if number < 1 or (keyword == "BitsAllocated" and number not in (1, 8, 16, 32, 64)):
            raise InputDataError(
                f"{tag} '{name}' is {value!r}, which no pixel data can have; the header is damaged", path
            )
        declared[keyword] = number
    rows, columns = declared["Rows"], declared["Columns"]
    if max(rows, columns) > MAX_SLICE_SIDE:
        raise InputDataError(
            f"(0028,0010) 'Rows' x (0028,0011) 'Columns' declare {rows} x {columns} pixels a frame, more than "
            f"the {MAX_SLICE_SIDE} x {MAX_SLICE_SIDE} SarcoFed decodes (a CT slice is 512 x 512, rarely 2048); "
            "the header is damaged or the file is no CT slice. Nothing was decoded",
            path,
        )
    bytes_per_sample = max(1, declared["BitsAllocated"] // 8)  # 1-bit SEG frames decode to a byte a pixel
    n_bytes = rows * columns * declared["NumberOfFrames"] * declared["SamplesPerPixel"] * bytes_per_sample
    if n_bytes > MAX_PIXEL_DATA_BYTES:
        raise InputDataError(
            f"Pixel Data declares {declared['NumberOfFrames']} frame(s) of {rows} x {columns} x "
            f"{declared['SamplesPerPixel']} sample(s) at {declared['BitsAllocated']} bits, {n_bytes / 2**30:.1f} GiB "
            f"decoded, more than the {MAX_PIXEL_DATA_BYTES / 2**30:.0f} GiB SarcoFed decodes from one file; "
            "export only the L3 slice (or its segmentation). Nothing was decoded",
            path,
        )


def check_finite(values: np.ndarray, path: Path | None, what: str, hint: str) -> None:
    """Refuse NaN and infinite pixels: one NaN in one training image makes every weight of a model NaN.

    ``what`` names the array in the message ("HU image", "NIfTI mask"), ``hint`` says where the values came from.
    """
    if values.dtype.kind not in "fc":  # integers and booleans are always finite
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    n_bad = int(values.size - np.count_nonzero(finite))
    n_nan = int(np.count_nonzero(np.isnan(values)))
    raise InputDataError(
        f"{what} has non-finite pixels: {n_bad} of {values.size} ({n_nan} NaN, {n_bad - n_nan} infinite); {hint}",
        path,
    )


def sop_instance_uid(ds) -> str | None:
    """(0008,0018) 'SOP Instance UID', else the file meta's (0002,0003) 'Media Storage SOP Instance UID'.

    Some anonymisers blank the dataset's UID but keep the file meta, which by definition (PS3.10)
    names the same instance; None when both are blank.
    """
    uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip() if meta is not None else ""
    return uid or None


def _positive(value: object) -> float | None:
    """A DICOM DS as float, None when empty, zero (a common 'unknown' filler) or not a number."""
    try:
        number = float(value)  # type: ignore[arg-type]  # any object: what float() rejects gives None
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def parse_age(value: object) -> float | None:
    """DICOM AS ('065Y', '006M', '003W', '010D') -> years; None when empty or '000Y' (unknown filler)."""
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(value or ""))
    if not match:
        return None
    n, unit = int(match.group(1)), match.group(2)
    years = {"Y": n, "M": n / 12.0, "W": n * 7 / 365.25, "D": n / 365.25}[unit]
    return float(years) if years > 0 else None


def load_nifti_slice(path: Path, what: str = "image") -> tuple[np.ndarray, SliceGeometry]:
    """One axial NIfTI slice as stored ((X, Y) array) and its canonical geometry (sform/qform, RAS -> LPS).

    Raises InputDataError (``what`` names the file's role) for an unreadable file, a header that
    declares anything but one slice of at most MAX_SLICE_SIDE a side, or NaN / infinite voxels.
    """
    data, geometry, _ = _load_nifti(path, what)
    return data, geometry


def _load_nifti(
    path: Path,
    what: str,
    dtype: type[np.floating] | None = None,
) -> tuple[np.ndarray, SliceGeometry, Nifti1Header]:
    """``load_nifti_slice`` plus the file's header (the mask writer needs the input's exact grid).

    ``nib.load`` reads the header only; its shape and voxel type are checked before the voxels are
    loaded, so a volume, or a header that declares billions of voxels over a tiny file, is refused
    without reading them. ``dtype`` converts the voxels before they are checked for NaN and infinity
    (a float64 value beyond float32 becomes inf).
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as error:
        raise InputDataError(f"cannot be read as NIfTI ({type(error).__name__}: {error})", path) from None
    if not isinstance(img, nib.Nifti1Image):  # a .nii name gives one (NIfTI-2 images are a subclass)
        raise InputDataError(f"cannot be read as NIfTI (nibabel reads it as {type(img).__name__})", path)
    shape = _check_nifti_header(img.header, path, what)
    try:
        data = np.asarray(img.dataobj).reshape(shape[:2])
    except Exception as error:
        raise InputDataError(
            f"NIfTI voxel data cannot be read ({type(error).__name__}: {error}); the file may be "
            "truncated: copy it again from the source",
            path,
        ) from None
    if dtype is not None:
        with np.errstate(over="ignore"):
            data = data.astype(dtype, copy=False)
    check_finite(
        data,
        path,
        f"NIfTI {what}",
        "SarcoFed takes no NaN as 'outside the scan': fill such voxels with air (-1024 HU) in an image, "
        "0 in a mask, and check the header's scl_slope / scl_inter",
    )
    return data, geometry_from_affine(img.affine, data.shape, path), img.header


def _check_nifti_header(header, path: Path, what: str) -> tuple[int, ...]:
    """The header's shape when it is one slice of at most MAX_SLICE_SIDE a side with numeric voxels."""
    shape = tuple(int(n) for n in header.get_data_shape())
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)):
        raise InputDataError(
            f"NIfTI {what} header declares shape {shape}, expected one axial slice (X, Y) or (X, Y, 1); "
            "extract the L3 slice first",
            path,
        )
    if min(shape[:2]) < 1 or max(shape[:2]) > MAX_SLICE_SIDE:
        raise InputDataError(
            f"NIfTI {what} header declares {shape[0]} x {shape[1]} voxels, expected 1 to {MAX_SLICE_SIDE} a side "
            "(a CT slice is 512 x 512); the header is damaged or the file is no CT slice",
            path,
        )
    dtype = header.get_data_dtype()
    if dtype.kind not in "biuf":
        raise InputDataError(
            f"NIfTI {what} stores voxels as {dtype} (NIfTI datatype {int(header['datatype'])}), expected integers "
            "or floats (HU in an image, 0/1 in a mask)",
            path,
        )
    return shape


def _read_nifti_slice(path: Path) -> CTSlice:
    """NIfTI with one axial slice, values in HU."""
    data, geometry, header = _load_nifti(path, "image", np.float32)
    hu = np.ascontiguousarray(geometry.to_canonical(data))
    return CTSlice(hu=hu, geometry=geometry, path=path, nifti_header=header)


def geometry_from_affine(affine: np.ndarray, shape: tuple[int, ...], path: str | Path) -> SliceGeometry:
    """Canonical geometry of NIfTI voxels data[i, j, 0] under a RAS affine."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, float)[:3, :]
    col_i, col_j, col_k, pos = lps[:, 0], lps[:, 1], lps[:, 2], lps[:, 3]
    step_i, step_j = float(np.linalg.norm(col_i)), float(np.linalg.norm(col_j))
    if step_i <= 0 or step_j <= 0:
        raise InputDataError(f"NIfTI affine has a zero voxel size: {np.round(affine, 4).tolist()}", path)
    return geometry_from_axes(
        col_i / step_i,
        col_j / step_j,
        step_i,
        step_j,
        pos,
        (int(shape[0]), int(shape[1])),
        thickness_mm=float(np.linalg.norm(col_k)) or 1.0,
        source=path,
    )


def write_ct_dicom(
    path: str | Path,
    hu: np.ndarray,
    spacing_mm: tuple[float, float],
    *,
    patient_id: str,
    sex: str | None,
    height_m: float | None,
    weight_kg: float | None,
    age_years: float | None,
    rows_bottom_up: bool = False,
    slice_z_mm: float = 0.0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int = 1,
    contrast: bool = False,
    description: str = "",
    thickness_mm: float = 2.5,
) -> CTSlice:
    """Write a canonical (H, W) HU slice as a CT Image Storage file; return it as a reader would see it.

    HU are rounded to integers and stored with RescaleSlope 1 / RescaleIntercept -1024 (uint16, or
    int16 when values fall below -1024). The patient is named only by the pseudonym ``patient_id``; no
    real identifier, birth date or institution is written. ``rows_bottom_up`` stores the rows in the
    reverse order with ImageOrientationPatient [1,0,0, 0,-1,0], as some scanners do. The image is
    centred on x = y = 0 at z = ``slice_z_mm``.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    hu = np.asarray(hu)
    if hu.ndim != 2:
        raise ValueError(f"hu must be (H, W), got {hu.shape}")
    h, w = hu.shape
    dr, dc = float(spacing_mm[0]), float(spacing_mm[1])
    # DICOM DS holds 16 characters: round the geometry to what the file can keep, so that the
    # returned CTSlice equals a re-read one exactly.
    dr, dc = float(_ds(dr)), float(_ds(dc))
    origin = (float(_ds(-(w - 1) / 2 * dc)), float(_ds(-(h - 1) / 2 * dr)), float(_ds(slice_z_mm)))
    geometry = SliceGeometry((dr, dc), origin, (h, w), flip_rows=rows_bottom_up, thickness_mm=float(thickness_mm))
    position = geometry.stored_position()

    values = np.rint(hu.astype(np.float64)) + 1024.0
    if values.min() >= 0 and values.max() <= 65535:
        stored, signed = values.astype(np.uint16), 0
    elif values.min() >= -32768 and values.max() <= 32767:
        stored, signed = values.astype(np.int16), 1
    else:
        raise ValueError(f"HU range {hu.min()}..{hu.max()} does not fit 16 bits")
    stored = np.ascontiguousarray(geometry.to_stored(stored))

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    sop_uid = generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[series_uid, "frame-of-reference"])
    today = _dt.date(2000, 1, 1).strftime("%Y%m%d")  # a fixed date: real dates can identify
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "SarcoFed"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(instance_number)
    ds.SeriesDescription = description
    ds.StudyDescription = description
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientIdentityRemoved = "YES"
    ds.PatientSex = normalise_sex(sex, strict=False) or ""
    ds.PatientAge = f"{int(round(age_years)):03d}Y" if age_years is not None else ""
    ds.PatientSize = _ds(height_m) if height_m is not None else None
    ds.PatientWeight = _ds(weight_kg) if weight_kg is not None else None
    ds.KVP = "120"
    ds.ContrastBolusAgent = "IV contrast" if contrast else ""
    ds.PatientPosition = "FFS"
    ds.SliceThickness = _ds(thickness_mm)
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry.stored_orientation()]
    ds.SliceLocation = _ds(slice_z_mm)
    ds.PositionReferenceIndicator = ""
    ds.PixelSpacing = [_ds(v) for v in geometry.stored_spacing()]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = signed
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ct_slice_from_dataset(ds, path)


def _ds(value: float) -> str:
    """A float as a DICOM Decimal String of at most 16 characters (pydicom's auto-format)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))
