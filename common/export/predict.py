"""Everything `sarcofed predict` does for one slice, as a library call: read, segment, measure, write.

Outputs (all in ``out_dir``): ``mask.nii.gz``, the body-composition label map (1 muscle, 2 IMAT, 3 VAT,
4 SAT; 0/1 muscle from a muscle-only model) on the input's own grid (for a NIfTI input its very
voxel grid: shape, index order and affine; for DICOM an affine from the CT's geometry, so any viewer
overlays it), ``overlay.png``, ``seg.dcm`` and ``result.json``. ``seg.dcm`` needs a DICOM input whose
study, series and frame of reference UIDs are there; otherwise ``files.seg`` is null and
``seg_skipped`` says why, and the measurement stands. Height, sex and weight given by the caller win
over the DICOM header; anything still unknown leaves SMI and the verdict null with the reason, never
a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.clinical import MUSCLE, MUSCLE_HU_RANGE, CutoffRule
from common.export.result import file_sha256, measurements, versions, write_result_json
from common.metrics import keep_muscle_attenuation

if TYPE_CHECKING:  # torch and MONAI load only when a prediction runs (`sarcofed --help` stays fast)
    from common.data.ctslice import CTSlice
    from common.models.presets import Preset
    from common.models.sarco import SarcoModel


SLICE_FLAG_LEVELS = 1.5
"""A single slice reading more than this many vertebrae from L3 is flagged (its verdict withheld)."""


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint ready to predict with: the model in eval mode, its info and preset, the file's SHA-256.

    Loading and hashing the file cost about as much as a prediction (demo: about 0.15 s, 20 ms of it
    hashing 28 MB), so a caller with many slices loads once; ``predict_slice`` also takes a path.
    """

    path: Path
    model: SarcoModel
    info: dict[str, Any]
    preset: Preset
    sha256: str


def load_model(model_path: str | Path) -> LoadedModel:
    """Load a seg or cls checkpoint for ``predict_slice`` and hash it (raises CheckpointError)."""
    from common.models.checkpoint import load_checkpoint

    path = Path(model_path)
    model, info = load_checkpoint(path, phases=("seg", "cls"))
    model.eval()
    return LoadedModel(path, model, info, model_preset(model, info), file_sha256(path))


def predict_slice(
    input_path: str | Path,
    model_path: str | Path | LoadedModel,
    out_dir: str | Path,
    *,
    cutoff: CutoffRule,
    height_m: float | None = None,
    sex: str | None = None,
    weight_kg: float | None = None,
    muscle_hu_range: bool = True,
    insist: bool = False,
) -> dict[str, Any]:
    """Segment one CT slice with a checkpoint and write the four outputs; returns the result record.

    When the model has a trained L3 locator, the slice's level is checked first (``check_slice_level``):
    a slice that is clearly not at L3 keeps its measurement, flagged, but gets no verdict unless
    ``insist``.

    With ``muscle_hu_range`` (default) the network's mask keeps only pixels in the Alberta muscle range
    (-29..+150 HU), the way reference L3 masks are drawn; the record says so and keeps the raw
    pixel count. ``model_path`` is a checkpoint file or a :class:`LoadedModel` from ``load_model``.

    Raises
    ------
    InputDataError
        The input is not a usable CT slice (MR, no PixelSpacing, not an image, oblique ...).
    CheckpointError
        The model file cannot be loaded.
    """
    from common.data.dicom_io import read_ct_slice

    input_path, out_dir = Path(input_path), Path(out_dir)
    ct = read_ct_slice(input_path)  # fails first: a bad input should not wait for a model to load
    loaded = model_path if isinstance(model_path, LoadedModel) else load_model(model_path)
    extra = {"slice_check": check_slice_level(ct, loaded)} if "l3" in loaded.info.get("trained_phases", ()) else {}
    return predict_ct(
        ct, loaded, out_dir, cutoff=cutoff, height_m=height_m, sex=sex, weight_kg=weight_kg,
        muscle_hu_range=muscle_hu_range, extra=extra, insist=insist,
    )  # fmt: skip


def check_slice_level(ct: CTSlice, loaded: LoadedModel) -> dict[str, Any]:
    """The level the model's locator reads from this one slice, and whether that is (near) L3.

    From one slice the locator can tell the liver dome or the pelvis from L3, not L2 from L3 with
    certainty: a slice is flagged only when it reads more than ``SLICE_FLAG_LEVELS`` vertebrae away.
    """
    import numpy as np

    from common.data.series import CTSeries
    from common.train.locate import level_name, locator_input, predict_levels

    g = ct.geometry
    one = CTSeries(
        hu=ct.hu[None], z_mm=np.array([g.origin[2]]), geometry=g, file_index=[0], paths=[ct.path or Path("")],
        source=ct.path or Path(""), key="slice", grouped_by="single slice",
    )  # fmt: skip
    x, _ = locator_input(one)
    level, inside = predict_levels(loaded.model.locator, x)
    value = float(level[0])
    return {
        "level": level_name(value),
        "level_value": round(value, 2),
        "inside_l3_probability": round(float(inside[0]), 3),
        "at_l3": abs(value) <= SLICE_FLAG_LEVELS,
        "method": "L3 locator on one slice (coarse: it flags slices more than "
        f"{SLICE_FLAG_LEVELS:g} vertebrae from L3)",
    }


def predict_ct(
    ct: CTSlice,
    loaded: LoadedModel,
    out_dir: Path,
    *,
    cutoff: CutoffRule,
    height_m: float | None = None,
    sex: str | None = None,
    weight_kg: float | None = None,
    muscle_hu_range: bool = True,
    extra: dict[str, Any] | None = None,
    insist: bool = False,
) -> dict[str, Any]:
    """``predict_slice`` on a slice already read (a file, or the L3 slice of a series); ``extra`` keys
    are added to the record before it is written."""
    import numpy as np
    import torch

    from common.data.mask_io import write_mask_nifti
    from common.errors import SegUnavailableError
    from common.export.dicom_seg import write_muscle_seg
    from common.export.overlay import write_overlay_png
    from common.train.infer import classify, segment_tissues_batch

    assert ct.path is not None  # every reader records the file it read
    input_path = ct.path
    model, info, preset, sha = loaded.model, loaded.info, loaded.preset, loaded.sha256
    with torch.inference_mode():
        raw, tissues = segment_tissues_batch(model, [ct], preset)[0]
        cls_prob = float(classify(model, ct, preset)) if has_trained_classifier(info) else None
    if raw.shape != ct.shape:
        raise ValueError(f"segment returned {raw.shape} for a {ct.shape} image")
    mask = keep_muscle_attenuation(raw, ct.hu) if muscle_hu_range else raw
    tissue_map = None
    if model.seg_classes > 2:
        tissue_map = tissues.copy()
        tissue_map[mask > 0] = MUSCLE  # the same as the window's muscle, or the whole fascia without it

    height = height_m if height_m is not None else ct.height_m
    patient_sex = sex if sex is not None else ct.sex
    weight = weight_kg if weight_kg is not None else ct.weight_kg
    record: dict[str, Any] = measurements(
        ct.hu,
        mask,
        ct.spacing_mm,
        height_m=height,
        sex=patient_sex,
        weight_kg=weight,
        cutoff=cutoff,
        tissue_map=tissue_map,
    )
    check = (extra or {}).get("slice_check")
    if check is not None and not check["at_l3"]:
        flag = f"this slice reads as {check['level']}, not L3"
        record["level_flag"] = flag
        if not insist:
            record["sarcopenic"] = None
            record["unavailable_reason"] = f"{flag}: verdict withheld (--insist gives it anyway)"
    record["patient"]["source"] = {
        "height_m": _source(height_m, ct.height_m, "(0010,1020) PatientSize"),
        "sex": _source(sex, ct.sex, "(0010,0040) PatientSex"),
        "weight_kg": _source(weight_kg, ct.weight_kg, "(0010,1030) PatientWeight"),
    }
    record["mask_postprocess"] = {
        "muscle_hu_range": list(MUSCLE_HU_RANGE) if muscle_hu_range else None,
        "network_pixels": int(np.count_nonzero(raw)),
        "note": "pixels of the network's mask outside the Alberta muscle range are not muscle area"
        if muscle_hu_range
        else "network mask used as is (--no-muscle-hu-range)",
    }
    phase = info.get("phase")
    record["model"] = {"path": str(loaded.path.resolve()), "sha256": sha, "preset": preset.name, "phase": phase}
    if cls_prob is not None:
        record["image_classifier"] = {
            "probability": round(cls_prob, 4),
            "sarcopenic": cls_prob >= 0.5,
            "note": "image classifier (qualitative approach); the verdict above is the quantitative one",
        }
    record["input"] = {
        "path": str(input_path.resolve()),
        "format": "dicom" if ct.dataset is not None else "nifti",
        "shape": list(ct.shape),
        "spacing_mm": [round(s, 6) for s in ct.spacing_mm],
        "sop_instance_uid": ct.sop_instance_uid,
    }
    record["spacing"] = record["input"]["spacing_mm"]

    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str | None] = {}
    labels = tissue_map if tissue_map is not None else mask
    write_mask_nifti(out_dir / "mask.nii.gz", labels, ct.geometry, source_header=ct.nifti_header)
    files["mask"] = "mask.nii.gz"
    write_overlay_png(
        out_dir / "overlay.png",
        ct.hu,
        labels,
        ct.spacing_mm,
        _overlay_lines(record),
        title=f"SarcoFed {preset.name}: {input_path.name}",
    )
    files["overlay"] = "overlay.png"
    try:
        write_muscle_seg(
            out_dir / "seg.dcm",
            labels,
            ct,
            model_name=f"SarcoFed {preset.name} {phase or ''}".strip(),
            model_version=f"{_sarcofed_version()} sha256:{sha[:16]}",
            parameters={"preset": preset.name, "phase": str(phase), "model_sha256": sha, "cutoff": cutoff.name},
        )
        files["seg"] = "seg.dcm"
    except SegUnavailableError as skipped:
        files["seg"] = None
        # A seg.dcm left by an earlier run into this folder would contradict this result.json.
        (out_dir / "seg.dcm").unlink(missing_ok=True)
        record["seg_skipped"] = skipped.reason
    files["result"] = "result.json"
    record.update(extra or {})
    record["files"] = {**files, **record.get("files", {})}
    record["versions"] = versions()
    write_result_json(out_dir / "result.json", record)
    return record


def _overlay_lines(record: dict[str, Any]) -> list[str]:
    c = record["cutoff"]
    smi = record["smi_cm2_m2"]
    hu = record["muscle_hu_mean"]
    line1 = (
        f"SMA {record['sma_cm2']:.1f} cm2   muscle {hu:.0f} HU"
        if hu is not None
        else f"SMA {record['sma_cm2']:.1f} cm2"
    )
    if smi is None:
        line2 = f"SMI unavailable: {record['unavailable_reason']}"
    else:
        line2 = f"SMI {smi:.1f} cm2/m2"
    threshold = f"SMI < {c['threshold_cm2_m2']}" if c["threshold_cm2_m2"] is not None else "threshold n/a"
    verdict = {True: "SARCOPENIC", False: "not sarcopenic", None: "verdict unavailable"}[record["sarcopenic"]]
    line3 = f"{c['name']} ({threshold}): {verdict}"
    lines = [line1, line2, line3]
    if record.get("vat_cm2") is not None:
        lines.insert(1, _composition_line(record))
    lines.append("research use only: not for diagnosis")
    if record.get("level_flag"):
        lines.insert(0, f"WARNING: {record['level_flag']}")
    return lines


def _composition_line(record: dict[str, Any]) -> str:
    parts = []
    for name in ("imat", "vat", "sat"):
        area, hu = record[f"{name}_cm2"], record[f"{name}_hu_mean"]
        parts.append(f"{name.upper()} {area:.1f} cm2" + (f" ({hu:.0f} HU)" if hu is not None else ""))
    return "   ".join(parts)


def model_preset(model: Any, info: dict[str, Any]) -> Any:
    """The checkpoint's Preset (``load_checkpoint`` puts it in ``info``; the model carries it too)."""
    return info.get("preset") or model.preset


def has_trained_classifier(info: dict[str, Any]) -> bool:
    """True when the checkpoint's last phase is ``cls`` (phases run ssl -> seg -> cls)."""
    return info.get("phase") == "cls"


def _source(option: object, header: object, tag: str) -> str | None:
    if option is not None:
        return "command line"
    if header is not None:
        return f"DICOM {tag}"
    return None


def _sarcofed_version() -> str:
    import sarcofed

    return sarcofed.__version__
