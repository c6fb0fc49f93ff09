"""Inference on native slices: segment (masks on the slice's own grid) and classify (probability of sarcopenia).

The network runs on the preset grid; each compartment's probability is resampled back to the native
grid (bilinear) and the compartments are read there, so areas are measured at the
image's own spacing; ``common.metrics.composition`` turns compartments into tissues by HU window.
Evaluation and ``sarcofed predict`` call these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import convert_to_tensor

from common.metrics.composition import (
    FASCIA,
    FAT_HEAD,
    MUSCLE_HEAD,
    compartments_from_probs,
    tissues_from_compartments,
)
from common.models.presets import Preset
from common.models.sarco import SarcoModel
from common.train.data import image_to_net, net_geometry, normaliser, to_native


def _device(model: SarcoModel) -> torch.device:
    return next(model.parameters()).device


def _net_batch(cts: Sequence, preset: Preset) -> tuple[torch.Tensor, list]:
    """Native CTSlices -> (B, 1, S, S) normalised plain tensor and their NetGeometry list.

    MONAI's normaliser returns a MetaTensor; fed to the network, each of the demo forward's ~400
    torch calls would go through MetaTensor.__torch_function__ (about 7 ms of 55 ms on one core), so
    the batch is made a plain tensor (``track_meta=False``) first. Values are unchanged.
    """
    norm = normaliser(preset)
    geoms = [net_geometry(ct.shape, ct.spacing_mm, preset) for ct in cts]
    images = [
        convert_to_tensor(norm(image_to_net(ct.hu, g)[None]), dtype=torch.float32, track_meta=False)
        for ct, g in zip(cts, geoms, strict=True)
    ]
    return torch.stack(images), geoms


@torch.no_grad()
def compartment_prob_batch(
    model: SarcoModel, cts: Sequence, preset: Preset | None = None, batch_size: int = 16
) -> list[np.ndarray]:
    """Head probabilities per slice, each (C, H, W) float32 on that slice's native grid.

    C is ``model.seg_classes``: the muscle head then the fat head of ``common.metrics.composition``,
    or (background, muscle) for a muscle-only model. Outside the network's view each head says "other".
    """
    preset = preset or model.preset
    model.eval()
    dev = _device(model)
    out: list[np.ndarray] = []
    for start in range(0, len(cts), batch_size):
        chunk = cts[start : start + batch_size]
        x, geoms = _net_batch(chunk, preset)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = model.segment_logits(x.to(dev)).float()
        heads = [MUSCLE_HEAD] if logits.shape[1] == MUSCLE_HEAD.stop else [MUSCLE_HEAD, FAT_HEAD]
        prob = torch.cat([torch.softmax(logits[:, head], dim=1) for head in heads], dim=1).cpu()
        for p, ct, g in zip(prob, chunk, geoms, strict=True):
            native = np.stack([to_native(channel, ct, geom=g) for channel in p])
            for head in heads:
                native[head.start] += 1.0 - native[head].sum(axis=0)
            out.append(native)
    return out


def segment_compartments_batch(
    model: SarcoModel, cts: Sequence, preset: Preset | None = None, batch_size: int = 16
) -> list[np.ndarray]:
    """Compartment map per slice, each (H, W) uint8 (``common.metrics.composition.compartments_from_probs``)."""
    return [compartments_from_probs(p)[0] for p in compartment_prob_batch(model, cts, preset, batch_size)]


def segment_tissues_batch(
    model: SarcoModel, cts: Sequence, preset: Preset | None = None, batch_size: int = 16
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(muscle fascia {0, 1}, tissue label map 0-4) per slice, each (H, W) uint8 on its native grid.

    The label map is the Alberta windows on the compartments (``tissues_from_compartments``); a
    muscle-only model's has muscle and IMAT only.
    """
    out = []
    for p, ct in zip(compartment_prob_batch(model, cts, preset, batch_size), cts, strict=True):
        compartments, fat = compartments_from_probs(p)
        tissues = tissues_from_compartments(compartments, ct.hu, fat, ct.spacing_mm)
        out.append(((compartments == FASCIA).astype(np.uint8), tissues))
    return out


def segment_batch(
    model: SarcoModel, cts: Sequence, preset: Preset | None = None, batch_size: int = 16
) -> list[np.ndarray]:
    """Muscle-fascia masks (muscle before its HU window), each (H, W) uint8 {0, 1} on the slice's native grid."""
    return [(c == FASCIA).astype(np.uint8) for c in segment_compartments_batch(model, cts, preset, batch_size)]


def segment(model: SarcoModel, ct, preset: Preset | None = None) -> np.ndarray:
    """One slice -> (H, W) uint8 muscle-fascia mask on ``ct``'s native grid (``ct.hu`` shape)."""
    return segment_batch(model, [ct], preset)[0]


@torch.no_grad()
def classify_batch(model: SarcoModel, cts: Sequence, preset: Preset | None = None, batch_size: int = 16) -> list[float]:
    """Probability of sarcopenia per slice (softmax of the classifier's 'sarcopenic' logit)."""
    preset = preset or model.preset
    model.eval()
    dev = _device(model)
    out: list[float] = []
    for start in range(0, len(cts), batch_size):
        x, _ = _net_batch(cts[start : start + batch_size], preset)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = model.classify_logits(x.to(dev))
        out.extend(torch.softmax(logits.float(), dim=1)[:, 1].cpu().tolist())
    return out


def classify(model: SarcoModel, ct, preset: Preset | None = None) -> float:
    """One slice -> probability (0..1) that the image shows sarcopenia."""
    return classify_batch(model, [ct], preset)[0]
