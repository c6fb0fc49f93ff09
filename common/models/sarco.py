"""SarcoModel: one module holding every part the three phases train, and the per-phase weight exchange.

Parts (state_dict prefixes):

- ``encoder.``          ViT student encoder (all phases)
- ``ssl_head.``         DINO/iBOT projection head (ssl)
- ``pixel_head.``       masked-pixel L1 head (ssl)
- ``teacher_encoder.``, ``teacher_head.``, ``center_cls``, ``center_patch``: EMA teacher and centres (ssl)
- ``decoder.``          UNETR-style decoder (seg): the muscle head
- ``fat_head.``         small U-Net for visceral and subcutaneous fat (seg; common.models.fat)
- ``cls_head.``         linear head on [global token, mean patch token] (cls, classifier="vit")
- ``densenet.``         MONAI DenseNet121 from scratch (cls, classifier="densenet")
- ``locator.``          L3 locator on whole series (l3; common.models.locator), independent of the rest

Federation of the teacher (decision): in the ssl phase the teacher and the centres are exchanged and
averaged together with the student. Both update linearly (an EMA of student weights; a running mean
of teacher logits), so with equal local step counts the FedAvg of site teachers *is* the EMA of the
averaged student trajectory, and every site starts the next round with the same teacher and centre.
Keeping them local instead would let each site's teacher drift from the global student, and in a
stateless simulated client the teacher would be lost every round. The cost is about 2x the ssl payload.
Integer buffers (BatchNorm ``num_batches_tracked``) are never exchanged: secure aggregation clips and
quantises values, which would corrupt counters.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from common.errors import ConfigError
from common.metrics.composition import MUSCLE_ONLY_CHANNELS, SEG_CHANNELS
from common.models.decoder import UnetrDecoder
from common.models.encoder import Encoder
from common.models.fat import FatHead
from common.models.locator import L3Locator
from common.models.presets import Preset, check_phase
from common.models.ssl import DistillHead, PixelHead

CLASSIFIERS: tuple[str, ...] = ("vit", "densenet")

_PHASE_PREFIXES: dict[str, tuple[str, ...]] = {
    "ssl": ("encoder.", "ssl_head.", "pixel_head.", "teacher_encoder.", "teacher_head.", "center_cls", "center_patch"),
    "seg": ("encoder.", "decoder.", "fat_head."),
    # The image classifier is a head on the frozen SSL + segmentation encoder: training it must not
    # change the encoder the segmentation decoder (and so every SMA) depends on.
    "cls": ("cls_head.",),
    "l3": ("locator.",),
}


class SarcoModel(nn.Module):
    """Encoder + SSL heads/teacher + segmentation decoder + classifier head(s).

    Parameters
    ----------
    preset : Preset
    classifier : "vit" (head on the encoder, default) or "densenet" (MONAI DenseNet121 baseline)
    seg_classes : segmentation output channels (default: the muscle and fat heads of
        ``common.metrics.composition``, 5); 2 is a muscle-only model (background, muscle) as
        checkpoints made before body composition hold
    """

    def __init__(self, preset: Preset, classifier: str = "vit", seg_classes: int = SEG_CHANNELS) -> None:
        super().__init__()
        if classifier not in CLASSIFIERS:
            raise ConfigError(f"unknown classifier {classifier!r}; choose one of {', '.join(CLASSIFIERS)}")
        self.preset = preset
        self.classifier = classifier
        d = preset.hidden_size
        self.encoder = Encoder(preset)
        self.ssl_head = DistillHead(d, preset.head_hidden, preset.proto_dim)
        self.pixel_head = PixelHead(d, preset.patch_size)
        self.teacher_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.ssl_head).requires_grad_(False)
        self.register_buffer("center_cls", torch.zeros(1, preset.proto_dim))
        self.register_buffer("center_patch", torch.zeros(1, preset.proto_dim))
        if seg_classes not in (MUSCLE_ONLY_CHANNELS, SEG_CHANNELS):
            raise ConfigError(f"seg_classes must be 2 (muscle only) or {SEG_CHANNELS}, got {seg_classes}")
        self.seg_classes = seg_classes
        self.decoder = UnetrDecoder(preset, out_channels=MUSCLE_ONLY_CHANNELS)
        self.cls_head = nn.Sequential(nn.LayerNorm(2 * d), nn.Linear(2 * d, 2))
        self.locator = L3Locator(preset.locator_width)
        self.trained_phases: set[str] = set()  # what the weights have been trained for (checkpoints keep it)
        if classifier == "densenet":
            from monai.networks.nets import DenseNet121

            self.densenet = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        if seg_classes == SEG_CHANNELS:  # made last, so every other part starts as a muscle-only model would
            self.fat_head = FatHead(preset)

    def segment_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) normalised -> (B, seg_classes, S, S) logits (muscle head, fat head; or muscle only)."""
        tokens, _, hidden = self.encoder(x)
        muscle = self.decoder(x, tokens, hidden)
        if self.seg_classes == MUSCLE_ONLY_CHANNELS:
            return muscle
        return torch.cat([muscle, self.fat_head(x)], dim=1)

    def classify_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) normalised -> (B, 2) logits (not sarcopenic, sarcopenic)."""
        if self.classifier == "densenet":
            return self.densenet(x)
        tokens, glob, _ = self.encoder(x)
        return self.cls_head(torch.cat([glob, tokens.mean(dim=1)], dim=-1))

    def exchange_keys(self, phase: str) -> list[str]:
        """Same as the module function :func:`exchange_keys` (state_dict keys a phase trains and exchanges)."""
        return exchange_keys(self, phase)

    def reset_teacher(self) -> None:
        """Teacher := student (start of SSL from a fresh or seg/cls-trained encoder)."""
        self.teacher_encoder.load_state_dict(self.encoder.state_dict())
        self.teacher_head.load_state_dict(self.ssl_head.state_dict())


def exchange_keys(model: SarcoModel, phase: str) -> list[str]:
    """state_dict keys a phase trains and the federation exchanges, in state_dict order.

    ssl: student encoder + heads + EMA teacher + centres; seg: encoder + decoder; cls: the head on the
    frozen encoder (or the DenseNet121 alone for classifier="densenet"). Integer buffers are left out.
    """
    check_phase(phase)
    prefixes = ("densenet.",) if phase == "cls" and model.classifier == "densenet" else _PHASE_PREFIXES[phase]
    state = model.state_dict()
    return [k for k, v in state.items() if k.startswith(prefixes) and v.is_floating_point()]


def context_keys(model: SarcoModel, phase: str) -> list[str]:
    """state_dict keys a phase's training reads but does not change, in state_dict order.

    cls (classifier="vit") trains a head on the frozen encoder, so what it learns depends on that
    encoder: a cls training message carries it beside the head. ssl and seg train everything they read.
    """
    check_phase(phase)
    if phase != "cls" or model.classifier != "vit":
        return []
    return [k for k, v in model.state_dict().items() if k.startswith("encoder.") and v.is_floating_point()]


def phase_inputs(model: SarcoModel, phase: str) -> list[str]:
    """Every state_dict key a phase's training result depends on: ``context_keys`` then ``exchange_keys``."""
    return [*context_keys(model, phase), *exchange_keys(model, phase)]


def trainable_parameters(model: SarcoModel, phase: str) -> list[nn.Parameter]:
    """Parameters the optimiser updates in a phase (exchange keys minus the teacher and buffers)."""
    keys = set(exchange_keys(model, phase))
    return [p for n, p in model.named_parameters() if n in keys and not n.startswith(("teacher_", "center_"))]


def get_arrays(model: SarcoModel, keys: list[str]) -> list[np.ndarray]:
    """The tensors under ``keys`` as float32 numpy arrays, in that order."""
    state = model.state_dict()
    return [state[k].detach().cpu().float().numpy().copy() for k in keys]


def set_arrays(model: SarcoModel, keys: list[str], arrays: list[np.ndarray], what: str = "set_arrays") -> None:
    """Load ``arrays`` (from :func:`get_arrays` with the same keys) into ``model`` in place.

    Every array must be finite and of the key's shape: a model is never left half-loaded with a bad
    array (ConfigError naming the key; nothing is loaded).
    """
    if len(arrays) != len(keys):
        raise ConfigError(f"{what}: expected {len(keys)} arrays, got {len(arrays)}")
    state = model.state_dict()
    update = {}
    for k, a in zip(keys, arrays, strict=True):
        a = np.asarray(a)
        if tuple(a.shape) != tuple(state[k].shape):
            raise ConfigError(f"{what}: {k} expects shape {tuple(state[k].shape)}, got {tuple(a.shape)}")
        if not np.isfinite(a).all():
            raise ConfigError(f"{what}: {k} holds NaN or infinite values")
        update[k] = torch.as_tensor(a, dtype=state[k].dtype)
    model.load_state_dict(update, strict=False)


def get_weights(model: SarcoModel, phase: str) -> list[np.ndarray]:
    """The phase's exchanged tensors as float32 numpy arrays, in ``exchange_keys`` order."""
    return get_arrays(model, exchange_keys(model, phase))


def set_weights(model: SarcoModel, phase: str, arrays: list[np.ndarray]) -> None:
    """Load arrays made by :func:`get_weights` (same phase, same preset) into ``model`` in place."""
    set_arrays(model, exchange_keys(model, phase), arrays, what=f"set_weights({phase!r})")
