"""The fat head: where visceral and subcutaneous fat lie, from the image, beside the muscle decoder.

A small MONAI BasicUNet of its own, not a branch of the segmentation decoder. Trained on shared
features, the fat classes pulled the decoder toward themselves and slowed the muscle down (on one
demo site, 140 steps: muscle Dice 0.0-0.85 with a shared head against 0.91 without fat); with their
own weights, the muscle decoder trains exactly as a muscle-only one. The fat head only has to say
whether fat is inside or outside the abdominal wall (the HU windows pick the fat pixels at native
resolution), so it runs at half the network grid.
"""

from __future__ import annotations

import torch
from monai.networks.nets import BasicUNet
from torch import nn

from common.models.presets import Preset


class FatHead(nn.Module):
    """(B, 1, S, S) normalised image -> (B, 3, S, S) logits: other, visceral fat, subcutaneous fat."""

    def __init__(self, preset: Preset, classes: int = 3) -> None:
        super().__init__()
        self.pool = 2
        width = 16 if preset.image_size >= 128 else 8
        features = (width, width, 2 * width, 4 * width, 4 * width, width)
        self.net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=classes, features=features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(nn.functional.avg_pool2d(x, self.pool))
        return nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
