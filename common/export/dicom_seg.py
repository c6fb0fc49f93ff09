"""The predicted mask as a DICOM Segmentation that a PACS shows over the very image it came from.

highdicom builds the SEG, produced AUTOMATICALLY by an algorithm identified as SarcoFed with the
model's preset and SHA-256. A muscle-only mask (0/1) gives one binary segment 'Skeletal muscle'; a
body-composition label map (``common.data.mask_io.is_tissue_map``) gives one segment per tissue, in
the order muscle, IMAT, VAT, SAT, a fat tissue only where it has pixels, muscle always (an empty
muscle segment still says "no muscle"). The codes (category, type, anatomic region), all SNOMED CT:

- Skeletal muscle: Tissue 85756007, Skeletal muscle 127954009, Abdomen 818981001 (pydicom's
  ``codes.SCT.Tissue``, ``SkeletalMuscle``, ``Abdomen``; CID 7150, 7710 and 4).
- Intermuscular adipose tissue: Tissue, Fat 55603005 (``codes.SCT.AdiposeTissue``, CID 7166), in
  the region Skeletal muscle 127954009. SNOMED CT has no concept for IMAT itself.
- Visceral adipose tissue: Tissue, Fat 55603005, in the region Abdominal cavity 52731004
  (``codes.SCT.AbdominalCavityStructure``). SNOMED CT has no concept for VAT itself; TotalSegmentator
  codes its torso fat the same way, Fat in the region Trunk.
- Subcutaneous adipose tissue: Tissue, Subcutaneous fatty tissue 67769002, Abdomen: the code of
  TotalSegmentator's ``subcutaneous_fat`` (resources/totalsegmentator_snomed_mapping.csv, also in
  the 3D Slicer extension); pydicom's dictionary lacks it, so it is written as a CodedConcept.

IMAT and VAT share their type and differ by region, so a reader tells them apart by both (or by the
segment label). The frame must be in the source file's stored pixel order, so the canonical mask
goes back through ``SliceGeometry.to_stored`` (some scanners store rows bottom-up; a SEG in
canonical order would then lie upside down on its image).

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

from common.clinical import IMAT, MUSCLE, SAT, VAT
from common.data.ctslice import CTSlice
from common.data.mask_io import is_tissue_map
from common.errors import SegUnavailableError

if TYPE_CHECKING:  # pydicom and highdicom are imported lazily; only the types are needed here
    from highdicom import AlgorithmIdentificationSequence
    from highdicom.seg import SegmentDescription
    from highdicom.sr import CodedConcept
    from pydicom import Dataset

SEGMENT_LABEL = "Skeletal muscle"

# SNOMED CT (code value, meaning) of each tissue's segment: label, type, anatomic region; see above.
_TISSUE = ("85756007", "Tissue")
_FAT = ("55603005", "Fat")
_ABDOMEN = ("818981001", "Abdomen")
TISSUE_SEGMENTS: dict[int, tuple[str, tuple[str, str], tuple[str, str]]] = {
    MUSCLE: (SEGMENT_LABEL, ("127954009", "Skeletal muscle"), _ABDOMEN),
    IMAT: ("Intermuscular adipose tissue", _FAT, ("127954009", "Skeletal muscle")),
    VAT: ("Visceral adipose tissue", _FAT, ("52731004", "Abdominal cavity")),
    SAT: ("Subcutaneous adipose tissue", ("67769002", "Subcutaneous fatty tissue"), _ABDOMEN),
}
"""Label value -> (segment label, type, anatomic region), in the order segments are written."""

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


def write_tissue_seg(
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
    mask : (H, W) array
        A body-composition label map (one segment per tissue drawn, muscle always), or a muscle-only
        mask (nonzero is muscle; one segment 'Skeletal muscle').
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
    labels = mask.astype(np.uint8) if is_tissue_map(mask) else (mask > 0).astype(np.uint8)
    tissues = [value for value in TISSUE_SEGMENTS if value == MUSCLE or np.any(labels == value)]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64],
        family=codes.DCM.ArtificialIntelligence,
        version=model_version[:64],
        source="SarcoFed",
        parameters=parameters or None,
    )
    descriptions = [_segment_description(number, value, algorithm) for number, value in enumerate(tissues, 1)]
    stored = np.stack([ct.geometry.to_stored((labels == value).astype(np.uint8)) for value in tissues], axis=-1)
    muscle_only = tissues == [MUSCLE]
    with warnings.catch_warnings():
        # highdicom warns about one-component person names; pseudonymised files have exactly that.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        try:
            seg = hd.seg.Segmentation(
                source_images=[source],
                pixel_array=np.ascontiguousarray(stored[None]),
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=901,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="SarcoFed",
                manufacturer_model_name=model_name[:64],
                software_versions=sarcofed.__version__,
                device_serial_number="none",
                series_description="SarcoFed skeletal muscle (research use)"
                if muscle_only
                else "SarcoFed body composition (research use)",
                content_label="MUSCLE" if muscle_only else "TISSUES",
                content_description="Skeletal muscle at L3, automatic"
                if muscle_only
                else "Skeletal muscle and adipose tissues at L3, automatic",
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


write_muscle_seg = write_tissue_seg
"""The same writer under its first name: a 0/1 mask still gives the single 'Skeletal muscle' segment."""


def _segment_description(number: int, value: int, algorithm: AlgorithmIdentificationSequence) -> SegmentDescription:
    """highdicom's description of segment ``number``, holding tissue ``value`` (``TISSUE_SEGMENTS``)."""
    import highdicom as hd

    label, kind, region = TISSUE_SEGMENTS[value]
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=_sct(_TISSUE),
        segmented_property_type=_sct(kind),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[_sct(region)],
    )


def _sct(code: tuple[str, str]) -> CodedConcept:
    import highdicom as hd

    value, meaning = code
    return hd.sr.CodedConcept(value=value, scheme_designator="SCT", meaning=meaning)


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
