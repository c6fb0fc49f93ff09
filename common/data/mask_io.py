"""Muscle masks on disk (NIfTI and DICOM SEG) that overlay their CT slice exactly.

A mask is (H, W) uint8 {0, 1} in canonical orientation. On disk, NIfTI masks are written as
``mask.T[:, :, None]`` with the RAS affine of ``SliceGeometry.nifti_affine`` (so any viewer overlays
them on the DICOM); reading accepts any axis-aligned layout and checks, with the numbers, that the
grid is the image's grid: a mask that is off by a flip or a transpose is refused, never silently
"fixed", because a flipped muscle mask still looks like a muscle mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data.ctslice import CTSlice, SliceGeometry, geometry_from_axes
from common.data.dicom_io import is_nifti, load_nifti_slice, read_dataset
from common.errors import InputDataError, MaskGeometryError

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SPACING_TOL_MM = 1e-3
POSITION_TOL_PX = 0.1


def write_mask_nifti(path: str | Path, mask: np.ndarray, geometry: SliceGeometry) -> Path:
    """Write a canonical (H, W) mask as .nii.gz (uint8, stored as ``mask.T[:, :, None]``)."""
    import nibabel as nib

    mask = np.asarray(mask)
    if mask.shape != geometry.shape:
        raise ValueError(f"mask is {mask.shape}, geometry says {geometry.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.ascontiguousarray((mask > 0).astype(np.uint8).T[:, :, None]), geometry.nifti_affine())
    img.header.set_xyzt_units("mm")
    img.set_qform(geometry.nifti_affine(), code=1)  # scanner-based coordinates
    img.set_sform(geometry.nifti_affine(), code=1)
    nib.save(img, str(path))
    return path


def read_mask(path: str | Path, ct: CTSlice) -> np.ndarray:
    """Read a NIfTI or DICOM SEG mask onto ``ct``'s canonical grid: (H, W) uint8 {0, 1}.

    Raises
    ------
    MaskGeometryError
        When the mask's size, spacing, position or orientation disagree with the image beyond
        1e-3 mm / 0.1 pixel, or a SEG references another image.
    InputDataError
        When the file cannot be read as a mask.
    """
    path = Path(path)
    if is_nifti(path):
        stored, geometry = _read_nifti_mask(path)
    else:
        stored, geometry = _read_seg_mask(path, ct)
    check_same_grid(geometry, ct.geometry, path, ct.path)
    return np.ascontiguousarray(geometry.to_canonical(stored) > 0).astype(np.uint8)


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
            "mask does not lie on its image's pixel grid: " + "; ".join(problems)
            + f" (image {image_path}). Re-export the mask from the image it was drawn on",
            mask_path,
        )


def _read_nifti_mask(path: Path) -> tuple[np.ndarray, SliceGeometry]:
    return load_nifti_slice(path, what="mask")


def _read_seg_mask(path: Path, ct: CTSlice) -> tuple[np.ndarray, SliceGeometry]:
    """DICOM SEG (binary or fractional): the muscle segment's frame that lies on the image's plane.

    The segment is the only one, or the one whose label mentions muscle. Frames are matched to the
    image by position; the SEG must reference the image's SOP Instance UID when both are known.
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
    segment = _muscle_segment(ds, path)
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    if str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        frames = frames >= (float(ds.get("MaximumFractionalValue", 255)) / 2)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per_frame = ds.PerFrameFunctionalGroupsSequence

    def group(item, name):
        if name in item:
            return item[name].value[0]
        if shared is not None and name in shared:
            return shared[name].value[0]
        raise MaskGeometryError(f"DICOM SEG frame lacks {name}; cannot place it on the image", path)

    candidates: list[tuple[float, np.ndarray, SliceGeometry]] = []
    for index, item in enumerate(per_frame):
        if "SegmentIdentificationSequence" in item:
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        else:
            number = int(shared.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if number != segment:
            continue
        iop = [float(v) for v in group(item, "PlaneOrientationSequence").ImageOrientationPatient]
        ipp = [float(v) for v in group(item, "PlanePositionSequence").ImagePositionPatient]
        spacing = [float(v) for v in group(item, "PixelMeasuresSequence").PixelSpacing]
        geometry = geometry_from_axes(
            np.array(iop[3:]), np.array(iop[:3]), spacing[0], spacing[1], np.array(ipp),
            (int(ds.Rows), int(ds.Columns)), source=path,
        )
        candidates.append((abs(geometry.origin[2] - ct.geometry.origin[2]), frames[index], geometry))
    if not candidates:
        raise MaskGeometryError(f"DICOM SEG has no frame for segment {segment}", path)
    candidates.sort(key=lambda c: c[0])
    _, stored, geometry = candidates[0]
    return stored, geometry


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


def _muscle_segment(ds, path: Path) -> int:
    segments = list(ds.get("SegmentSequence", []))
    if not segments:
        raise InputDataError("(0062,0002) 'Segment Sequence' missing or empty: a SEG without segments", path)
    if len(segments) == 1:
        return int(segments[0].SegmentNumber)
    muscle = [s for s in segments if "muscle" in str(s.get("SegmentLabel", "")).lower()]
    if len(muscle) == 1:
        return int(muscle[0].SegmentNumber)
    labels = [str(s.get("SegmentLabel", "")) for s in segments]
    raise InputDataError(
        f"DICOM SEG has {len(segments)} segments {labels}; expected one, or exactly one labelled "
        "'...muscle...'", path,
    )
