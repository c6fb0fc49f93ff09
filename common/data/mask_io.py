"""Muscle masks on disk (NIfTI and DICOM SEG) that overlay their CT slice exactly.

A mask is (H, W) uint8 {0, 1} in canonical orientation. On disk, the NIfTI mask of a DICOM image is
written as ``mask.T[:, :, None]`` with the RAS affine of ``SliceGeometry.nifti_affine`` (so any viewer
overlays it on the DICOM); the mask of a NIfTI image is written on that image's own voxel grid (its
shape, index order and affine), so that arrays compare voxel for voxel. Reading accepts any
axis-aligned layout and checks, with the numbers, that the grid is the image's grid: a mask that is
off by a flip or a transpose is refused, never silently "fixed", because a flipped muscle mask still
looks like a muscle mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

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
    """Write a canonical (H, W) mask as .nii.gz (uint8 {0, 1}).

    Parameters
    ----------
    mask : (H, W) array
        Canonical mask on ``geometry``'s grid; nonzero is muscle.
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
    binary = (mask > 0).astype(np.uint8)
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
    header["cal_min"], header["cal_max"] = 0, 1
    header["descrip"] = b"SarcoFed skeletal muscle mask"
    stored = np.ascontiguousarray(source_geometry.to_stored(binary)).reshape(shape)
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    return image_class(stored, None, header)


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
            "mask does not lie on its image's pixel grid: "
            + "; ".join(problems)
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
        number = int(group(item, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        if number != segment:
            continue
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
        f"DICOM SEG has {len(segments)} segments {labels}; expected one, or exactly one labelled '...muscle...'",
        path,
    )
