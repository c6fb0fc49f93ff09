"""Self-describing model files: one ``torch.save`` dict that rebuilds the model from the file alone.

Contents: ``format`` marker and version, ``state_dict``, ``preset`` (plain dict), ``classifier``,
``phase`` (the last phase trained), ``trained_phases`` (every phase the weights were trained in), the
input HU range and network spacing the model expects, library versions, creation time (UTC ISO 8601)
and a free ``extra`` dict (plain values: round, metrics, site).
Loading uses ``weights_only=True``: nothing but tensors and plain Python values is unpickled.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from pathlib import Path

import torch

from common.errors import CheckpointError
from common.metrics.composition import MUSCLE_ONLY_CHANNELS, SEG_CHANNELS
from common.models.presets import Preset, check_phase
from common.models.sarco import SarcoModel

FORMAT = "sarcofed-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path, model: SarcoModel, *, preset: Preset | None = None, phase: str, extra: dict | None = None
) -> Path:
    """Write ``model`` to ``path`` (parents created); return the path.

    Parameters
    ----------
    preset : Preset (default: ``model.preset``)
    phase : "l3" | "ssl" | "seg" | "cls", the phase the weights were last trained in (added to the
        model's ``trained_phases``, which the file records)
    extra : dict of plain values (str, int, float, bool, None, lists/dicts of them)
    """
    import monai

    from sarcofed import __version__

    check_phase(phase)
    preset = preset or model.preset
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "preset": preset.to_dict(),
        "classifier": model.classifier,
        "phase": phase,
        "trained_phases": sorted(set(model.trained_phases) | {phase}),
        "input_hu_range": [float(preset.hu_min), float(preset.hu_max)],
        "spacing_mm": float(preset.spacing_mm),
        "image_size": int(preset.image_size),
        "versions": {"sarcofed": __version__, "torch": str(torch.__version__), "monai": str(monai.__version__)},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
    except (OSError, RuntimeError) as error:  # a full disk: torch reports ENOSPC as either
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write the checkpoint ({error}); earlier checkpoints are intact", path
        ) from None
    tmp.replace(path)  # never leave a half-written checkpoint under the real name
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", phases: Iterable[str] | None = None
) -> tuple[SarcoModel, dict]:
    """Rebuild the model stored in ``path``.

    Parameters
    ----------
    phases : if given, the phases acceptable to the caller (e.g. ("seg",) for segmentation);
        a checkpoint from another phase raises CheckpointError.

    Returns
    -------
    (model in eval mode on ``map_location``, info dict: everything in the file except the weights,
    with ``preset`` as a Preset)

    Raises
    ------
    CheckpointError
        Missing file, not a SarcoFed checkpoint, incompatible weights, or the wrong phase.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("model file not found; train one with `sarcofed train-local` or a federated run", path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"not a readable SarcoFed checkpoint ({type(error).__name__}: {str(error)[:200]})", path
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"not a SarcoFed checkpoint (expected format {FORMAT!r})", path)
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {payload['format_version']} is newer than this SarcoFed reads ({FORMAT_VERSION}); "
            "upgrade sarcofed",
            path,
        )
    phase = payload.get("phase")
    allowed = tuple(phases) if phases is not None else None
    if allowed is not None and phase not in allowed:
        raise CheckpointError(
            f"model was trained for phase {phase!r}, expected {' or '.join(allowed)}; "
            f"train it with `sarcofed train-local --phase {allowed[0]}`",
            path,
        )
    try:
        preset = Preset.from_dict(payload["preset"])
        state = payload["state_dict"]
        # a checkpoint from before body composition has no fat head: it segments muscle alone
        seg_classes = SEG_CHANNELS if any(k.startswith("fat_head.") for k in state) else MUSCLE_ONLY_CHANNELS
        model = SarcoModel(preset, classifier=payload.get("classifier", "vit"), seg_classes=seg_classes)
        missing, unexpected = model.load_state_dict(state, strict=False)
        # A checkpoint from before the L3 locator existed has everything else: it loads, without a locator.
        if unexpected or any(not k.startswith("locator.") for k in missing):
            raise RuntimeError(f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    except Exception as error:
        raise CheckpointError(
            f"weights do not fit the stored preset ({type(error).__name__}: {str(error)[:300]})", path
        ) from None
    info = {k: v for k, v in payload.items() if k != "state_dict"}
    info["preset"] = preset
    info["has_locator"] = not missing
    info["seg_classes"] = model.seg_classes
    # Files from before this key name only their last phase; the locator (l3) is never assumed trained.
    info["trained_phases"] = sorted(set(payload.get("trained_phases") or []) | ({phase} if phase else set()))
    model.trained_phases = set(info["trained_phases"])
    info["path"] = str(path)
    return model.to(map_location).eval(), info
