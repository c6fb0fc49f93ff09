"""UNETR-style segmentation decoder built from MONAI's UNETR blocks, for any ViT depth and patch size.

MONAI's ``UNETR`` fixes 12 layers and taps blocks 3/6/9 for patch 16. Here the number of upsampling
stages is log2(patch) and the skip taps are spread evenly over the encoder's actual depth, so a
6-layer demo encoder and a 12-layer full encoder both feed every decoder stage.
"""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.blocks.dynunet_block import UnetResBlock
from torch import nn

from common.models.presets import Preset


def skip_taps(num_layers: int, num_skips: int) -> list[int]:
    """0-based block indices whose outputs feed the skips, evenly spread, deepest last.

    ``skip_taps(12, 3) == [2, 5, 8]`` (MONAI's UNETR uses 3/6/9 with a 1-based count of 12 blocks);
    ``skip_taps(6, 3) == [1, 2, 3]`` for the 6-layer demo encoder. The last block feeds the bottleneck.
    """
    return [max(0, round(num_layers * (k + 1) / (num_skips + 1)) - 1) for k in range(num_skips)]


class UnetrDecoder(nn.Module):
    """Encoder tokens + image -> (B, out_channels, S, S) logits.

    Stage l (l = 0 full resolution .. L = log2(patch) token resolution) has feature_size * 2**l channels.
    Stage 0's skip comes from the image (``UnetrBasicBlock``); stages 1..L-1 from transformer taps via
    ``UnetrPrUpBlock`` (upsampled by 2**(L-l)); the bottleneck is the final normalised tokens.
    """

    def __init__(self, preset: Preset, out_channels: int = 2) -> None:
        super().__init__()
        levels = int(math.log2(preset.patch_size))
        fs, d = preset.feature_size, preset.hidden_size
        self.grid = preset.grid
        self.hidden_size = d
        self.taps = skip_taps(preset.num_layers, levels - 1)
        self.stem = UnetrBasicBlock(2, 1, fs, kernel_size=3, stride=1, norm_name="instance", res_block=True)
        self.skips = nn.ModuleList(
            UnetrPrUpBlock(
                spatial_dims=2,
                in_channels=d,
                out_channels=fs * 2**lvl,
                num_layer=levels - lvl - 1,
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                norm_name="instance",
                conv_block=True,
                res_block=True,
            )
            for lvl in range(1, levels)
        )
        self.ups = nn.ModuleList(
            UnetrUpBlock(
                spatial_dims=2,
                in_channels=d if lvl == levels - 1 else fs * 2 ** (lvl + 1),
                out_channels=fs * 2**lvl,
                kernel_size=3,
                upsample_kernel_size=2,
                norm_name="instance",
                res_block=True,
            )
            for lvl in range(levels - 1, -1, -1)
        )
        # Optional convolutional path from the image (stride 2 per stage) added to each transformer skip:
        # the tokens see 16-pixel patches, this path sees the local shape (a bowel loop against a muscle).
        self.image_path = (
            nn.ModuleList(
                UnetResBlock(2, fs * 2 ** (lvl - 1), fs * 2**lvl, kernel_size=3, stride=2, norm_name="instance")
                for lvl in range(1, levels)
            )
            if preset.image_skips
            else None
        )
        self.out = UnetOutBlock(2, fs, out_channels)
        # channels_last makes oneDNN's conv backward about 1.7x faster on CPU for these thin layers.
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
        if self.image_path is not None:
            # torch 2.13's oneDNN backward of these strided convolutions corrupts the heap in channels_last
            # (reproduced: "double free or corruption"); this thin path stays in the default layout.
            self.image_path.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # as above

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, D, g, g)."""
        b = tokens.shape[0]
        x = tokens.transpose(1, 2).reshape(b, self.hidden_size, self.grid, self.grid)
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
        """image (B, 1, S, S), tokens (B, N, D), hidden per-block (B, N, D) -> logits (B, C, S, S)."""
        image = image.contiguous(memory_format=torch.channels_last)
        skips = [self.stem(image)] + [blk(self._grid(hidden[t])) for blk, t in zip(self.skips, self.taps, strict=True)]
        if self.image_path is not None:
            local = skips[0].contiguous()
            for lvl, block in enumerate(self.image_path, start=1):
                local = block(local)
                skips[lvl] = skips[lvl] + local
        x = self._grid(tokens)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(x, skip)
        return self.out(x)
