"""`sarcofed predict` on a whole series: find L3 with the model's locator, then measure there.

What it writes (``out_dir``): ``series.png`` (the sagittal picture with the chosen slice) and
``result.json`` always; when L3 is found surely enough, also what a single slice gets (mask, overlay,
DICOM SEG) for the chosen slice, with the sagittal picture beside the overlay in ``overlay.png``.
``result.json`` gains ``"l3"``: ``slice_index`` (a NIfTI volume: the index along its third array
axis; a DICOM folder: the place in the series sorted by position), ``z_mm``, ``confidence``,
``method``, what the series covers, and how the series was read.

No L3 in the series, or a low confidence, means no measurement: ``measured`` is false with the
reason, and ``NoMeasurementError`` (exit code 5) tells the caller so after the files are written.
``insist`` measures a low-confidence slice anyway, flagged; it never measures where L3 was not found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.clinical import CutoffRule
from common.errors import CheckpointError, NoMeasurementError
from common.export.predict import LoadedModel, load_model, predict_ct
from common.export.result import versions, write_result_json


def is_series(path: Path) -> bool:
    """A folder, or a NIfTI file whose header declares more than one slice (read from the header only)."""
    from common.data.series import is_nifti_volume

    return path.is_dir() or is_nifti_volume(path)


def predict_series(
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
    """Locate L3 in a DICOM folder or NIfTI volume and measure there (module docstring)."""
    from common.data.series import read_series
    from common.export.series_view import write_series_view_png
    from common.train.locate import MIN_CONFIDENCE, locator_input, predict_levels, read_location

    input_path, out_dir = Path(input_path), Path(out_dir)
    series = read_series(input_path)
    loaded = model_path if isinstance(model_path, LoadedModel) else load_model(model_path)
    if "l3" not in loaded.info.get("trained_phases", ()):
        raise CheckpointError(
            "this model has no trained L3 locator (its run had no l3 rounds): give the L3 slice itself, "
            "or a model from a run with rounds-l3 > 0",
            loaded.path,
        )
    x, grid = locator_input(series)
    level, inside = predict_levels(loaded.model.locator, x)
    location = read_location(series.z_mm, series.file_index, grid, level, inside)
    l3: dict[str, Any] = {
        **location.to_dict(),
        "series": {
            "path": str(input_path.resolve()),
            "slices": series.n_slices,
            "step_mm": round(series.step_mm, 3),
            "grouped_by": series.grouped_by,
            "key": series.key,
            "notes": series.notes,
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if location.found:
        verdict = f"L3 at slice {location.slice_index} (z {location.z_mm:.1f} mm), confidence {location.confidence:.2f}"
    else:
        verdict = f"L3 not in this series (it covers about {location.covers[0]}-{location.covers[1]})"
    write_series_view_png(
        out_dir / "series.png", series.hu, series.z_mm, series.geometry.spacing_mm[0], chosen_k=location.slice_k,
        grid_z=grid, level=level, lines=[verdict, "research use only: not for diagnosis"],
    )  # fmt: skip
    reason = None
    if not location.found:
        reason = verdict
    elif location.low_confidence and not insist:
        reason = f"{verdict}: below {MIN_CONFIDENCE:.2f}, so not measured (--insist measures it, flagged)"
    if reason is not None:
        record = {
            "measured": False,
            "reason": reason,
            "l3": l3,
            "model": {"path": str(loaded.path.resolve()), "sha256": loaded.sha256, "preset": loaded.preset.name},
            "files": {"series_view": "series.png", "result": "result.json"},
            "versions": versions(),
        }
        write_result_json(out_dir / "result.json", record)
        raise NoMeasurementError(reason, input_path)
    assert location.slice_k is not None  # found
    l3["low_confidence_measured"] = location.low_confidence
    record = predict_ct(
        series.slice(location.slice_k), loaded, out_dir, cutoff=cutoff, height_m=height_m, sex=sex,
        weight_kg=weight_kg, muscle_hu_range=muscle_hu_range,
        extra={"measured": True, "l3": l3, "files": {"series_view": "series.png"}},
    )  # fmt: skip
    side_by_side(out_dir / "overlay.png", out_dir / "series.png")
    return record


def side_by_side(overlay: Path, view: Path) -> None:
    """Put the sagittal view beside the axial overlay in overlay.png: the slice and where it lies, one picture."""
    from PIL import Image

    with Image.open(overlay) as left, Image.open(view) as right:
        scale = left.height / right.height
        sagittal = right.resize((max(1, round(right.width * scale)), left.height))
        both = Image.new("RGB", (left.width + sagittal.width, left.height), "black")
        both.paste(left.convert("RGB"), (0, 0))
        both.paste(sagittal.convert("RGB"), (left.width, 0))
    both.save(overlay, compress_level=1)
