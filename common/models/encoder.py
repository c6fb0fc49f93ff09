"""The ViT encoder: MONAI's ``ViT`` (2-D, no classification head) plus a global token and a mask token.

MONAI's ``ViT.forward`` embeds patches and runs the blocks in one go; SSL needs to swap masked patch
embeddings for a learnable mask token *before* position embeddings are added (as in iBOT/SMIT), and
all phases want a global token. So this module reuses MONAI's patch embedding, transformer blocks and
final norm, and only re-orders the calls.

Attention runs through torch's fused ``scaled_dot_product_attention`` (the ``use_flash_attention``
path of MONAI's ``SABlock``) rather than MONAI's default two ``einsum`` calls around a softmax: the
same ``softmax(q k^T / sqrt(d)) v``, without materialising the (B, heads, N, N) score matrices and
their copies. On the project's 2-core CPU machine (one torch thread) it lifted the demo encoder's
training step from about 64% to 70-76% of the fp32 matmul rate, level with a bare MONAI ViT at 192 px
(simulations/bench_train.py); a full-preset step (512 px, 1025 tokens) is about a quarter shorter.
MONAI 1.6.1's ``ViT`` does not pass the flag on to its blocks, and ``SABlock`` reads it at call time,
so it is set after construction; no parameter or buffer changes, so state_dict keys and checkpoints
are as before.
"""

from __future__ import annotations

import torch
from monai.networks.blocks.selfattention import SABlock
from monai.networks.nets import ViT
from torch import nn

from common.models.presets import Preset


class Encoder(nn.Module):
    """ViT over (B, 1, S, S) normalised images -> patch tokens, global token, per-block hidden states.

    Parameters
    ----------
    preset : Preset
        Fixes image size, patch size, width, depth, heads and MLP width.
    """

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.vit = ViT(
            in_channels=1,
            img_size=(preset.image_size, preset.image_size),
            patch_size=(preset.patch_size, preset.patch_size),
            hidden_size=preset.hidden_size,
            mlp_dim=preset.mlp_dim,
            num_layers=preset.num_layers,
            num_heads=preset.num_heads,
            proj_type="conv",
            pos_embed_type="learnable",
            classification=False,
            spatial_dims=2,
            qkv_bias=True,
            dropout_rate=0.0,  # SABlock's fused path applies its dropout even in eval mode: keep it at 0
        )
        for block in self.vit.blocks:
            attn = block.attn
            assert isinstance(attn, SABlock)  # MONAI's TransformerBlock attention
            attn.use_flash_attention = True
        d = preset.hidden_size
        # Global token (a DINO-style [CLS]) with its own position embedding; mask token for SSL.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        for p in (self.cls_token, self.cls_pos, self.mask_token):
            nn.init.trunc_normal_(p, std=0.02)
        self.num_patches = preset.grid**2

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Encode images.

        Parameters
        ----------
        x : (B, 1, S, S) float, normalised intensities.
        mask : (B, N) bool or None
            True where a patch embedding is replaced by the mask token (N = grid**2, row-major).

        Returns
        -------
        tokens : (B, N, D) patch tokens after the final LayerNorm.
        global_token : (B, D) the [CLS] token after the final LayerNorm.
        hidden : list of (B, N, D), the patch tokens after each block (UNETR skip taps).
        """
        pe = self.vit.patch_embedding
        t = pe.patch_embeddings(x).flatten(2).transpose(1, 2)  # (B, N, D)
        if mask is not None:
            t = torch.where(mask.unsqueeze(-1), self.mask_token.to(t.dtype), t)
        t = pe.dropout(t + pe.position_embeddings)
        g = (self.cls_token + self.cls_pos).expand(t.shape[0], -1, -1)
        h = torch.cat([g, t], dim=1)
        hidden: list[torch.Tensor] = []
        for blk in self.vit.blocks:
            h = blk(h)
            hidden.append(h[:, 1:])
        h = self.vit.norm(h)
        return h[:, 1:], h[:, 0], hidden
