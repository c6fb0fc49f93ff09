"""Inference on native slices: segment (masks on the slice's own grid) and classify (probability of sarcopenia).

The network runs on the preset grid; each compartment's probability is resampled back to the native
grid (bilinear) and the most probable compartment is taken there, so areas are measured at the
image's own spacing; ``common.metrics.composition`` turns compartments into tissues by HU window.
Evaluation and ``sarcofed predict`` call these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import convert_to_tensor

from common.metrics.composition import FASCIA
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
    """Class probabilities per slice, each (C, H, W) float32 on that slice's native grid.

    C is ``model.seg_classes``: the compartments of ``common.metrics.composition.COMPARTMENTS``, or
    (background, muscle) for a muscle-only model; channel 1 is the muscle fascia in both.
    """
    preset = preset or model.preset
    model.eval()
    dev = _device(model)
    out: list[np.ndarray] = []
    for start in range(0, len(cts), batch_size):
        chunk = cts[start : start + batch_size]
        x, geoms = _net_batch(chunk, preset)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = model.segment_logits(x.to(dev))
        prob = torch.softmax(logits.float(), dim=1).cpu()
        for p, ct, g in zip(prob, chunk, geoms, strict=True):
            native = np.stack([to_native(channel, ct, geom=g) for channel in p])
            native[0] += 1.0 - native.sum(axis=0)  # outside the network's view: "other"
            out.append(native)
    return out


def segment_compartments_batch(
    model: SarcoModel, cts: Sequence, preset: Preset | None = None, batch_size: int = 16
) -> list[np.ndarray]:
    """The most probable compartment per native pixel, each (H, W) uint8 (indices of ``COMPARTMENTS``)."""
    return [p.argmax(axis=0).astype(np.uint8) for p in compartment_prob_batch(model, cts, preset, batch_size)]


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
