"""Masks on disk (NIfTI and DICOM SEG) that overlay their CT slice exactly.

A mask is (H, W) uint8 in canonical orientation: a body-composition label map (0 background,
1 muscle, 2 IMAT, 3 VAT, 4 SAT; ``common.clinical.TISSUES``) or a muscle-only mask (0 and 1, which
is the same map with the fat tissues not drawn; ``is_tissue_map`` tells them apart). On disk, the
NIfTI mask of a DICOM image is written as ``mask.T[:, :, None]`` with the RAS affine of
``SliceGeometry.nifti_affine`` (so any viewer overlays it on the DICOM); the mask of a NIfTI image
is written on that image's own voxel grid (its shape, index order and affine), so that arrays
compare voxel for voxel. Reading accepts any axis-aligned layout and checks, with the numbers, that
the grid is the image's grid: a mask that is off by a flip or a transpose is refused, never
silently "fixed", because a flipped muscle mask still looks like a muscle mask.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.clinical import IMAT, MUSCLE, SAT, TISSUES, VAT
from common.data.ctslice import CTSlice, SliceGeometry, geometry_from_axes
from common.data.dicom_io import (
    check_pixel_data_size,
    geometry_from_affine,
    is_nifti,
    load_nifti_slice,
    read_dataset,
)
from common.errors import InputDataError, MaskGeometryError

if TYPE_CHECKING:  # nibabel is imported lazily; only the type is needed here
    from nibabel.nifti1 import Nifti1Header, Nifti1Image

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SPACING_TOL_MM = 1e-3
POSITION_TOL_PX = 0.1


def write_mask_nifti(
    path: str | Path,
    mask: np.ndarray,
    geometry: SliceGeometry,
    *,
    source_header: Nifti1Header | None = None,
) -> Path:
    """Write a canonical (H, W) mask as .nii.gz (uint8: a 0-4 label map, or 0/1 muscle).

    Parameters
    ----------
    mask : (H, W) array
        Canonical mask on ``geometry``'s grid: a label map with values 0-4 (``common.clinical.TISSUES``)
        is written as it is; any other mask is binarised (nonzero is muscle).
    geometry : SliceGeometry
        The image's canonical grid.
    source_header : nibabel NIfTI header, optional (default: None)
        The header of the NIfTI image the mask was drawn on (``CTSlice.nifti_header``). With it, the
        mask is written on that file's own voxel grid: its shape ((X, Y) or (X, Y, 1)), index order,
        affine, qform/sform and units, so voxel [i, j] of the mask is voxel [i, j] of the image and
        tools that assume the image's affine read the mask right. Without it, the mask is stored as
        ``mask.T[:, :, None]`` under ``geometry.nifti_affine()`` (what a DICOM image gets).

    Raises
    ------
    MaskGeometryError
        When ``source_header`` describes another grid than ``geometry``.
    """
    import nibabel as nib

    mask = np.asarray(mask)
    if mask.shape != geometry.shape:
        raise ValueError(f"mask is {mask.shape}, geometry says {geometry.shape}")
    binary = mask.astype(np.uint8) if is_tissue_map(mask) else (mask > 0).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if source_header is not None:
        img = _on_source_grid(binary, geometry, source_header, path)
    else:
        img = nib.Nifti1Image(np.ascontiguousarray(binary.T[:, :, None]), geometry.nifti_affine())
        img.header.set_xyzt_units("mm")
        img.set_qform(geometry.nifti_affine(), code=1)  # scanner-based coordinates
        img.set_sform(geometry.nifti_affine(), code=1)
    nib.save(img, str(path))
    return path


def _on_source_grid(
    binary: np.ndarray,
    geometry: SliceGeometry,
    source_header: Nifti1Header,
    path: Path,
) -> Nifti1Image:
    """A NIfTI image of ``binary`` in the source file's stored layout, under a copy of its header.

    The header is copied rather than rebuilt from ``geometry`` so that the affine comes back bit for
    bit (a NIfTI-2 header stays NIfTI-2: its float64 affine would not survive a NIfTI-1 header), and
    qform/sform codes and units stay the source's; only what describes the values changes.
    """
    import nibabel as nib

    shape = tuple(int(n) for n in source_header.get_data_shape())
    source_geometry = geometry_from_affine(source_header.get_best_affine(), shape[:2], path)
    check_same_grid(source_geometry, geometry, path, None)
    header = source_header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, int(binary.max(initial=1))
    tissues = is_tissue_map(binary)
    header["descrip"] = b"SarcoFed body composition labels" if tissues else b"SarcoFed skeletal muscle mask"
    stored = np.ascontiguousarray(source_geometry.to_stored(binary)).reshape(shape)
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    return image_class(stored, None, header)


def is_tissue_map(mask: np.ndarray) -> bool:
    """True for a body-composition label map: integer values within 0-4 with a fat tissue (2-4) drawn.

    A 0/1 mask is muscle only: IMAT, VAT and SAT were not drawn, which is not the same as "none there".
    """
    values = np.unique(np.asarray(mask))
    if values.size == 0 or not np.all(np.mod(values, 1) == 0):
        return False
    return bool(values.min() >= 0 and MUSCLE < values.max() <= max(TISSUES.values()))


def muscle_of(mask: np.ndarray) -> np.ndarray:
    """The skeletal-muscle pixels of a label map or a muscle-only mask, (H, W) uint8 {0, 1}."""
    return (np.asarray(mask) == MUSCLE).astype(np.uint8)


def as_label_map(values: np.ndarray, path: Path) -> np.ndarray:
    """Stored mask values -> (H, W) uint8: a 0-4 label map as it is, a binary mask (any one nonzero value) as 0/1.

    Raises InputDataError naming the file for anything else (several values beyond 0-4, negative or
    fractional values that are not a 0..1 muscle fraction).
    """
    values = np.asarray(values)
    if values.dtype == bool:
        return values.astype(np.uint8)
    if not np.all(np.isfinite(values)):
        raise InputDataError("mask holds NaN or infinite values", path)
    distinct = np.unique(values)
    nonzero = distinct[distinct != 0]
    if nonzero.size == 1 and nonzero[0] in (IMAT, VAT, SAT):
        return values.astype(np.uint8)  # a label map that holds one fat tissue only
    if nonzero.size <= 1 and (nonzero.size == 0 or nonzero[0] > 0):
        return (values > 0).astype(np.uint8)  # muscle only, whatever value marks it (1, 255, ...)
    if np.all(np.mod(distinct, 1) == 0) and distinct.min() >= 0 and distinct.max() <= max(TISSUES.values()):
        return values.astype(np.uint8)
    if distinct.min() >= 0 and distinct.max() <= 1:
        return (values >= 0.5).astype(np.uint8)  # a fractional muscle mask
    names = ", ".join(f"{k} = {v}" for k, v in TISSUES.items())
    shown = ", ".join(f"{v:g}" for v in distinct[:8]) + (" ..." if distinct.size > 8 else "")
    raise InputDataError(
        f"mask values {shown} are neither a muscle mask (0 and one other value) "
        f"nor a label map (0 background, {names})",
        path,
    )


def read_mask(path: str | Path, ct: CTSlice) -> np.ndarray:
    """Read a NIfTI or DICOM SEG mask onto ``ct``'s canonical grid: (H, W) uint8 label map (``as_label_map``).

    Raises
    ------
    MaskGeometryError
        When the mask's size, spacing, position or orientation disagree with the image beyond
        1e-3 mm / 0.1 pixel, or a SEG references another image.
    InputDataError
        When the file cannot be read as a mask, or its values are neither a muscle mask nor a label map.
    """
    path = Path(path)
    if is_nifti(path):
        stored, geometry = _read_nifti_mask(path)
    else:
        stored, geometry = _read_seg_mask(path, ct)
    check_same_grid(geometry, ct.geometry, path, ct.path)
    return np.ascontiguousarray(as_label_map(geometry.to_canonical(stored), path))


def check_same_grid(mask: SliceGeometry, image: SliceGeometry, mask_path: Path, image_path: Path | None) -> None:
    """Raise MaskGeometryError with both sets of numbers when the canonical grids differ."""
    problems = []
    if mask.shape != image.shape:
        problems.append(f"size {mask.shape} vs image {image.shape}")
    if not np.allclose(mask.spacing_mm, image.spacing_mm, rtol=0, atol=SPACING_TOL_MM):
        problems.append(f"spacing {mask.spacing_mm} mm vs image {image.spacing_mm} mm")
    tol = POSITION_TOL_PX * min(image.spacing_mm)
    offset = np.asarray(mask.origin) - np.asarray(image.origin)
    if np.abs(offset).max() > tol:
        problems.append(
            f"first-pixel position {tuple(round(v, 3) for v in mask.origin)} vs image "
            f"{tuple(round(v, 3) for v in image.origin)} mm LPS (off by {np.round(offset, 3).tolist()} mm; "
            "a flipped or transposed mask, or a mask of another slice, looks like this)"
        )
    if problems:
        raise MaskGeometryError(
            "mask does not lie on its image's pixel grid: "
            + "; ".join(problems)
            + f" (image {image_path}). Re-export the mask from the image it was drawn on",
            mask_path,
        )


def _read_nifti_mask(path: Path) -> tuple[np.ndarray, SliceGeometry]:
    return load_nifti_slice(path, what="mask")


def _read_seg_mask(path: Path, ct: CTSlice) -> tuple[np.ndarray, SliceGeometry]:
    """DICOM SEG (binary or fractional): its tissue segments' frames on the image's plane, as one uint8 label map.

    Which segment holds which tissue is :func:`_tissue_segments`'s answer. Frames are matched to the
    image by position, per segment; each chosen frame must lie on the image's grid. A fat tissue's
    segment with no frame on the image's plane is empty there (writers may omit empty frames).
    The SEG must reference the image's SOP Instance UID when both are known.
    """
    ds = read_dataset(path)
    if str(ds.get("SOPClassUID", "")) != SEG_STORAGE:
        raise InputDataError(
            f"(0008,0016) 'SOP Class UID' is {ds.get('SOPClassUID')} ({ds.get('Modality', '?')}), expected "
            "Segmentation Storage or a NIfTI mask",
            path,
        )
    refs = referenced_sop_uids(ds)
    if ct.sop_instance_uid and refs and ct.sop_instance_uid not in refs:
        raise MaskGeometryError(
            f"DICOM SEG references {sorted(refs)[:3]}, not this image's SOP Instance UID "
            f"{ct.sop_instance_uid} ({ct.path}); it was drawn on another image",
            path,
        )
    tissues = _tissue_segments(ds, path)
    check_pixel_data_size(ds, path)
    try:
        frames = ds.pixel_array
    except Exception as error:  # decoders raise many types; all mean the same to the user
        raise InputDataError(
            f"(7FE0,0010) 'Pixel Data' of the DICOM SEG cannot be decoded ({type(error).__name__}: "
            f"{error}); the file may be truncated: export the segmentation again",
            path,
        ) from None
    if frames.ndim == 2:
        frames = frames[None]
    if str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        frames = frames >= (float(ds.get("MaximumFractionalValue", 255)) / 2)
    placed = _place_frames(ds, path, ct)
    muscle = tissues[MUSCLE]
    if muscle not in placed:
        raise MaskGeometryError(f"DICOM SEG has no frame for segment {muscle}", path)
    geometry = placed[muscle][1]
    labels = np.zeros((int(ds.Rows), int(ds.Columns)), np.uint8)
    for value, number in sorted(tissues.items()):
        if number not in placed:
            continue
        offset, frame_geometry, index = placed[number]
        if value != MUSCLE and offset > POSITION_TOL_PX * min(ct.geometry.spacing_mm):
            continue  # this tissue is drawn on other slices only
        check_same_grid(frame_geometry, ct.geometry, path, ct.path)
        pixels = frames[index] > 0
        if np.any(labels[pixels]):
            raise InputDataError(
                f"DICOM SEG segments overlap on this slice {_segment_labels(ds)}: a body-composition label "
                "map gives each pixel one tissue",
                path,
            )
        labels[pixels] = value
    return labels, geometry


def _place_frames(ds, path: Path, ct: CTSlice) -> dict[int, tuple[float, SliceGeometry, int]]:
    """Segment number -> (z offset from the image in mm, geometry, frame index) of its frame nearest the image."""
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None

    def group(item, name):
        if name in item:
            return item[name].value[0]
        if shared is not None and name in shared:
            return shared[name].value[0]
        raise MaskGeometryError(f"DICOM SEG frame lacks {name}; cannot place it on the image", path)

    nearest: dict[int, tuple[float, SliceGeometry, int]] = {}
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(group(item, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        iop = [float(v) for v in group(item, "PlaneOrientationSequence").ImageOrientationPatient]
        ipp = [float(v) for v in group(item, "PlanePositionSequence").ImagePositionPatient]
        spacing = [float(v) for v in group(item, "PixelMeasuresSequence").PixelSpacing]
        geometry = geometry_from_axes(
            np.array(iop[3:]),
            np.array(iop[:3]),
            spacing[0],
            spacing[1],
            np.array(ipp),
            (int(ds.Rows), int(ds.Columns)),
            source=path,
        )
        offset = abs(geometry.origin[2] - ct.geometry.origin[2])
        if number not in nearest or offset < nearest[number][0]:
            nearest[number] = (offset, geometry, index)
    return nearest


def referenced_sop_uids(ds) -> set[str]:
    """SOP Instance UIDs a SEG says it was derived from (series references and per-frame sources)."""
    uids: set[str] = set()
    for series in ds.get("ReferencedSeriesSequence", []):
        for inst in series.get("ReferencedInstanceSequence", []):
            uids.add(str(inst.ReferencedSOPInstanceUID))
    for item in ds.get("PerFrameFunctionalGroupsSequence", []):
        for der in item.get("DerivationImageSequence", []):
            for src in der.get("SourceImageSequence", []):
                uids.add(str(src.ReferencedSOPInstanceUID))
    return uids


# SNOMED CT segmented property types that name one tissue; Fat (55603005) names IMAT or VAT by its
# anatomic region (what common.export.dicom_seg writes). Anything else is told by its label.
_TISSUE_TYPES = {"127954009": MUSCLE, "67769002": SAT, "71966008": SAT}
_FAT = "55603005"
_FAT_REGIONS = {"127954009": IMAT, "52731004": VAT}
_TISSUE_LABELS = [
    (re.compile(r"\bimat\b|intermuscular|intramuscular", re.IGNORECASE), IMAT),
    (re.compile(r"\bvat\b|visceral", re.IGNORECASE), VAT),
    (re.compile(r"\bsat\b|subcutaneous", re.IGNORECASE), SAT),
    (re.compile(r"muscle", re.IGNORECASE), MUSCLE),
]


def _tissue_segments(ds, path: Path) -> dict[int, int]:
    """Tissue label value -> segment number: the only segment is muscle, else each segment's tissue by code or label.

    Segments that are no tissue (a "Liver") are left out. Several segments without muscle, two
    segments of one tissue: InputDataError listing the labels.
    """
    segments = list(ds.get("SegmentSequence", []))
    if not segments:
        raise InputDataError("(0062,0002) 'Segment Sequence' missing or empty: a SEG without segments", path)
    if len(segments) == 1:
        return {MUSCLE: int(segments[0].SegmentNumber)}
    tissues: dict[int, int] = {}
    for segment in segments:
        value = _segment_tissue(segment)
        if value is None:
            continue
        if value in tissues:
            name = next(k for k, v in TISSUES.items() if v == value)
            raise InputDataError(
                f"DICOM SEG has two segments of {name} among {_segment_labels(ds)}; expected one segment per tissue",
                path,
            )
        tissues[value] = int(segment.SegmentNumber)
    if MUSCLE not in tissues:
        raise InputDataError(
            f"DICOM SEG has {len(segments)} segments {_segment_labels(ds)} and none is skeletal muscle "
            "(SNOMED CT 127954009 or a label with 'muscle'); expected one, or one per tissue with muscle among them",
            path,
        )
    return tissues


def _segment_tissue(segment) -> int | None:
    """The tissue value of a SEG segment by its SNOMED CT type (and region), else by its label; None for no tissue."""
    kind = _sct_codes(segment, "SegmentedPropertyTypeCodeSequence")
    for code in kind:
        if code in _TISSUE_TYPES:
            return _TISSUE_TYPES[code]
    if _FAT in kind:
        for region in _sct_codes(segment, "AnatomicRegionSequence"):
            if region in _FAT_REGIONS:
                return _FAT_REGIONS[region]
    label = str(segment.get("SegmentLabel", ""))
    return next((value for pattern, value in _TISSUE_LABELS if pattern.search(label)), None)


def _sct_codes(item, keyword: str) -> list[str]:
    return [
        str(code.get("CodeValue", ""))
        for code in item.get(keyword, [])
        if str(code.get("CodingSchemeDesignator", "")) == "SCT"
    ]


def _segment_labels(ds) -> list[str]:
    return [str(s.get("SegmentLabel", "")) for s in ds.get("SegmentSequence", [])]
