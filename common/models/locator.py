"""The L3 locator: reads a whole series, says for every slice which vertebral level it is at.

Method (against the published ones): Kanavati et al. and Belharbi et al. reduce a series to one
maximum-intensity projection and regress the L3 row from it; Comp2Comp segments the spine and cuts
through each body's centre. Both need context along z, which a single slice lacks: a slice at L3 and
one at L2 look alike, what tells them apart is how far the ribs, the kidneys, the iliac crests and the
sacrum are. The locator keeps the slices but sees the whole series at once:

1. a small 2-D CNN (MONAI ``Convolution`` blocks) turns each slice, resampled to a coarse 64 x 64
   grid in two HU windows (soft tissue, bone), into a feature vector;
2. a stack of dilated 1-D convolutions along z (on a fixed millimetre step) mixes features over
   about +/- 25 cm, i.e. from any lumbar slice to the last rib and to the sacrum;
3. two heads per slice: the continuous level (0 at the middle of L3, +1 per vertebra toward the head;
   body-part regression) and the logit that the slice lies inside the L3 body.

A level for every slice, not only the answer, makes "L3 is not in this series" a reading of the
output (no slice near level 0) and lets a report say what the series covers instead. The network is
small (about 0.1 M weights) so that it trains federated on CPUs in a minute per round.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

LOCATOR_GRID = 64  # pixels a side of the coarse slice the locator reads
LOCATOR_PIXEL_MM = 7.5  # its pixel size: 480 mm, a large abdomen with the arms down
LOCATOR_STEP_MM = 4.0  # distance between the slices it reads, along z
LOCATOR_WINDOWS = ((-200.0, 300.0), (100.0, 1100.0))  # soft tissue, bone


class L3Locator(nn.Module):
    """(B, N, C, 64, 64) slices on a 4 mm z grid -> (B, N) level and (B, N) inside-L3 logit."""

    def __init__(self, width: int = 32, in_channels: int = len(LOCATOR_WINDOWS)) -> None:
        super().__init__()
        w = width
        self.slice_encoder = nn.Sequential(
            Convolution(2, in_channels, w // 2, strides=2, kernel_size=3, norm="instance", act="prelu"),  # 32
            Convolution(2, w // 2, w, strides=2, kernel_size=3, norm="instance", act="prelu"),  # 16
            Convolution(2, w, w, strides=2, kernel_size=3, norm="instance", act="prelu"),  # 8
            Convolution(2, w, 2 * w, strides=2, kernel_size=3, norm="instance", act="prelu"),  # 4
            nn.Flatten(),
            nn.Linear(2 * w * 16, 2 * w),
            nn.PReLU(),
        )
        self.context = nn.ModuleList(
            nn.Sequential(nn.Conv1d(2 * w, 2 * w, 5, padding=2 * d, dilation=d), nn.GroupNorm(4, 2 * w), nn.PReLU())
            for d in (1, 2, 4, 8, 16)  # receptive field +/- 62 slices of 4 mm
        )
        self.head = nn.Conv1d(2 * w, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = x.shape[:2]
        f = self.slice_encoder(x.flatten(0, 1)).view(b, n, -1).transpose(1, 2)  # (B, F, N)
        for block in self.context:
            f = f + block(f)  # residual: each block adds context from farther away
        out = self.head(f)
        return out[:, 0], out[:, 1]
