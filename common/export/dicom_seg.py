"""The predicted mask as a DICOM Segmentation that a PACS shows over the very image it came from.

highdicom builds the SEG: one binary segment 'Skeletal muscle' (SCT 127954009, category Tissue
SCT 85756007, anatomic region Abdomen), produced AUTOMATICALLY by an algorithm identified as
SarcoFed with the model's preset and SHA-256. The frame must be in the source file's stored pixel
order, so the canonical mask goes back through ``SliceGeometry.to_stored`` (some scanners store
rows bottom-up; a SEG in canonical order would then lie upside down on its image).

A SEG copies the source's study and patient and references its series and instance, so those UIDs
must be there. Anonymised exports often blank some: a blank SOP Class or SOP Instance UID is taken
from the file meta, which names the same object (PS3.10); a blank Study, Series or Frame of Reference
UID has no such second source, and a new one would pass for the source's, so no SEG is made
(:class:`~common.errors.SegUnavailableError`, which ``predict`` records as the reason).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.data.ctslice import CTSlice
from common.errors import SegUnavailableError

if TYPE_CHECKING:  # pydicom is imported lazily; only the type is needed here
    from pydicom import Dataset

SEGMENT_LABEL = "Skeletal muscle"

# (tag, keyword, name) of source UIDs a SEG copies or references and that nothing else can supply.
_REQUIRED_UIDS = [
    ("(0020,000D)", "StudyInstanceUID", "Study Instance UID"),
    ("(0020,000E)", "SeriesInstanceUID", "Series Instance UID"),
    ("(0020,0052)", "FrameOfReferenceUID", "Frame of Reference UID"),
]
# Dataset UIDs the file meta repeats: (tag, keyword, name, meta tag, meta keyword).
_FILE_META_UIDS = [
    ("(0008,0016)", "SOPClassUID", "SOP Class UID", "(0002,0002)", "MediaStorageSOPClassUID"),
    ("(0008,0018)", "SOPInstanceUID", "SOP Instance UID", "(0002,0003)", "MediaStorageSOPInstanceUID"),
]


def write_muscle_seg(
    path: str | Path,
    mask: np.ndarray,
    ct: CTSlice,
    *,
    model_name: str,
    model_version: str,
    parameters: dict[str, str] | None = None,
) -> Path:
    """Write canonical (H, W) ``mask`` as a binary DICOM SEG referencing ``ct`` (which must come from DICOM).

    Parameters
    ----------
    model_name : str
        Shown as the algorithm's name in the segment (for example "SarcoFed tiny seg").
    model_version : str
        Algorithm version (for example the SarcoFed version and the checkpoint's short hash).
    parameters : dict of str, optional
        Extra algorithm parameters recorded in the SEG (preset, phase, model SHA-256).

    Raises
    ------
    SegUnavailableError
        When ``ct`` has no DICOM dataset (NIfTI input), its dataset lacks a UID the SEG must copy or
        reference (see :func:`seg_source`), or highdicom refuses to build a SEG on it.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import ExplicitVRLittleEndian

    import sarcofed

    source = seg_source(ct)
    mask = np.asarray(mask)
    if mask.shape != ct.shape:
        raise ValueError(f"mask is {mask.shape}, image is {ct.shape}")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64],
        family=codes.DCM.ArtificialIntelligence,
        version=model_version[:64],
        source="SarcoFed",
        parameters=parameters or None,
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.SkeletalMuscle,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.Abdomen],
    )
    stored = np.ascontiguousarray(ct.geometry.to_stored((mask > 0).astype(np.uint8)))
    with warnings.catch_warnings():
        # highdicom warns about one-component person names; pseudonymised files have exactly that.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        try:
            seg = hd.seg.Segmentation(
                source_images=[source],
                pixel_array=stored[None],
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=[description],
                series_instance_uid=hd.UID(),
                series_number=901,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="SarcoFed",
                manufacturer_model_name=model_name[:64],
                software_versions=sarcofed.__version__,
                device_serial_number="none",
                series_description="SarcoFed skeletal muscle (research use)",
                content_label="MUSCLE",
                content_description="Skeletal muscle at L3, automatic",
                transfer_syntax_uid=ExplicitVRLittleEndian,
                omit_empty_frames=False,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            # highdicom checks the source against the SEG IOD in ways seg_source cannot foresee; the
            # SEG is optional, so its refusal becomes the reason none was written, not a crash.
            raise SegUnavailableError(
                f"highdicom could not build a DICOM SEG on this image ({type(error).__name__}: {error}); "
                "mask.nii.gz overlays it instead",
                ct.path,
            ) from error
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def seg_source(ct: CTSlice) -> Dataset:
    """The source dataset a SEG of ``ct`` is built from: ``ct.dataset``, or a copy with blanks filled.

    Filled in a deep copy (a shallow one shares elements and would change the caller's dataset):
    a blank (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID from the file meta's
    (0002,0002) / (0002,0003), which name the same object; a blank or non-positive (0018,0050) Slice
    Thickness with the value the reader assumed (1 mm unless known), since highdicom writes a SEG
    without it that highdicom itself refuses to read, and it plays no part in an area on one slice.

    Raises
    ------
    SegUnavailableError
        NIfTI input; or a Study, Series or Frame of Reference UID (or a SOP UID the file meta does not
        repeat) is blank: a SEG with a blank UID is not valid DICOM, and one made up would pass for
        the source's.
    """
    if ct.dataset is None:
        raise SegUnavailableError(
            "input is NIfTI: a DICOM SEG must reference a DICOM image, so none was written "
            "(mask.nii.gz holds the mask)",
            ct.path,
        )
    ds = ct.dataset
    meta = getattr(ds, "file_meta", None)
    fills: dict[str, object] = {}
    blank: list[str] = []
    for tag, keyword, name, meta_tag, meta_keyword in _FILE_META_UIDS:
        if _blank(ds.get(keyword)):
            from_meta = meta.get(meta_keyword) if meta is not None else None
            if _blank(from_meta):
                blank.append(f"{tag} '{name}' (and the file meta's {meta_tag})")
            else:
                fills[keyword] = str(from_meta).strip()
    blank += [f"{tag} '{name}'" for tag, keyword, name in _REQUIRED_UIDS if _blank(ds.get(keyword))]
    if blank:
        raise SegUnavailableError(
            f"{' and '.join(blank)} {'is' if len(blank) == 1 else 'are'} empty (an anonymised export?): a "
            "DICOM SEG must carry the study, series and frame of reference UIDs of the image it segments, "
            "and made-up ones would pass for the source's; no seg.dcm written, mask.nii.gz overlays the "
            "image. To get a SEG, export the image with its UIDs kept or consistently replaced",
            ct.path,
        )
    if _positive(ds.get("SliceThickness")) is None:
        fills["SliceThickness"] = float(ct.geometry.thickness_mm)
    if fills:
        ds = copy.deepcopy(ds)
        for keyword, value in fills.items():
            setattr(ds, keyword, value)
    return ds


def _blank(value: object) -> bool:
    return value is None or not str(value).strip()


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]  # any object: what float() rejects gives None
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
