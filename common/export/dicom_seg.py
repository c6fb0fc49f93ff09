"""The predicted mask as a DICOM Segmentation that a PACS shows over the very image it came from.

highdicom builds the SEG: one binary segment 'Skeletal muscle' (SCT 127954009, category Tissue
SCT 85756007, anatomic region Abdomen), produced AUTOMATICALLY by an algorithm identified as
SarcoFed with the model's preset and SHA-256. The frame must be in the source file's stored pixel
order, so the canonical mask goes back through ``SliceGeometry.to_stored`` (some scanners store
rows bottom-up; a SEG in canonical order would then lie upside down on its image).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np

from common.data.ctslice import CTSlice
from common.errors import InputDataError

SEGMENT_LABEL = "Skeletal muscle"


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
    InputDataError
        When ``ct`` has no DICOM dataset (NIfTI input): a SEG must reference a DICOM image.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import ExplicitVRLittleEndian

    import sarcofed

    if ct.dataset is None:
        raise InputDataError("a DICOM SEG needs a DICOM source image; NIfTI input gets mask.nii.gz only", ct.path)
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
    source = ct.dataset
    if _positive(source.get("SliceThickness")) is None:
        # Some scanners leave (0018,0050) Slice Thickness empty; highdicom then writes a SEG whose
        # Pixel Measures lack it, which highdicom itself refuses to read. A copy (deep: a shallow
        # one shares the element and would change the caller's dataset) gets the value the reader
        # assumed (1 mm unless known): it plays no part in an area measured on one slice.
        source = copy.deepcopy(source)
        source.SliceThickness = float(ct.geometry.thickness_mm)
    with warnings.catch_warnings():
        # highdicom warns about one-component person names; pseudonymised files have exactly that.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
