"""SMIT-style self-supervision in 2-D: masked patch self-distillation + global self-distillation + L1 pixels.

Student and teacher share the architecture; the teacher is an exponential moving average of the
student and sees the unmasked view; the student sees masked patches (mask token). Losses:

- global token: DINO cross-view distillation, teacher output centred and sharpened (``teacher_temp``),
- masked patch tokens: iBOT distillation of the teacher's patch distribution at the masked positions,
- pixels: L1 between a light linear pixel head on the student's masked tokens and the view's pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.models.presets import Preset


class DistillHead(nn.Module):
    """DINO projection head: MLP -> L2-normalised bottleneck -> cosine logits over ``proto_dim`` prototypes.

    The last layer's weight is normalised in ``forward`` (DINO's ``norm_last_layer``) instead of with a
    weight-norm parametrisation, so state_dict keys stay plain.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, bottleneck: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck))
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim) cosine logits in [-1, 1]."""
        z = F.normalize(self.mlp(x), dim=-1)
        return z @ F.normalize(self.prototypes, dim=-1).t()


class PixelHead(nn.Module):
    """Linear patch-token -> (patch x patch) pixel predictor (SimMIM-style light decoder)."""

    def __init__(self, in_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, patch_size * patch_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, p*p)."""
        return self.proj(tokens)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 1, S, S) -> (B, N, p*p), row-major patches (the token order of the encoder)."""
    b, _, s, _ = x.shape
    g = s // patch
    return x.reshape(b, g, patch, g, patch).permute(0, 1, 3, 2, 4).reshape(b, g * g, patch * patch)


def random_patch_mask(
    batch: int,
    num_patches: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B, N) bool, exactly round(ratio * N) True per row, chosen uniformly at random."""
    k = max(1, int(round(ratio * num_patches)))
    noise = torch.rand(batch, num_patches, generator=generator).to(device)
    idx = noise.argsort(dim=1)[:, :k]
    mask = torch.zeros(batch, num_patches, dtype=torch.bool, device=device)
    mask.scatter_(1, idx, True)
    return mask


def distill_ce(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Cross-entropy H(teacher, student) per row: (..., K) x (..., K) -> (...)."""
    return -(teacher_probs * F.log_softmax(student_logits / student_temp, dim=-1)).sum(dim=-1)


def teacher_probs(logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """Centre then sharpen the teacher's logits: softmax((t - c) / temp)."""
    return F.softmax((logits - center) / temp, dim=-1)


def smit_loss(
    model, view1: torch.Tensor, view2: torch.Tensor, preset: Preset, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """The SMIT objective on two augmented views of the same slices.

    Parameters
    ----------
    model : SarcoModel
        Holds ``encoder`` (student), ``ssl_head``, ``pixel_head``, ``teacher_encoder``, ``teacher_head``
        and the buffers ``center_cls`` (1, K) and ``center_patch`` (1, K).
    view1, view2 : (B, 1, S, S) normalised images.

    Returns
    -------
    loss : scalar tensor (sum of the three terms)
    parts : {"loss-global", "loss-patch", "loss-pixel"} floats
    Side effect: updates the teacher centres (no gradient).
    """
    b = view1.shape[0]
    n = model.encoder.num_patches
    views = torch.cat([view1, view2])
    masks = random_patch_mask(2 * b, n, preset.mask_ratio, generator, views.device)

    with torch.no_grad():
        t_tok, t_glob, _ = model.teacher_encoder(views)
        t_glob_logits = model.teacher_head(t_glob).float()  # (2B, K)
        t_tok_logits = model.teacher_head(t_tok).float()  # (2B, N, K)
        t_glob_p = teacher_probs(t_glob_logits, model.center_cls, preset.teacher_temp)
        t_tok_p = teacher_probs(t_tok_logits, model.center_patch, preset.teacher_temp)

    s_tok, s_glob, _ = model.encoder(views, mask=masks)
    s_glob_logits = model.ssl_head(s_glob).float()
    s_tok_logits = model.ssl_head(s_tok).float()

    # Global: cross-view (student view 1 learns teacher view 2 and vice versa).
    t_swapped = torch.cat([t_glob_p[b:], t_glob_p[:b]])
    loss_global = distill_ce(s_glob_logits, t_swapped, preset.student_temp).mean()
    # Masked patches: same view, masked positions only.
    ce_tok = distill_ce(s_tok_logits, t_tok_p, preset.student_temp)  # (2B, N)
    m = masks.float()
    loss_patch = (ce_tok * m).sum() / m.sum()
    # Pixels: L1 on masked patches of the view itself.
    target = patchify(views, preset.patch_size)
    pred = model.pixel_head(s_tok).float()
    l1 = (pred - target.float()).abs().mean(dim=-1)
    loss_pixel = (l1 * m).sum() / m.sum()

    with torch.no_grad():
        cm = preset.center_momentum
        model.center_cls.mul_(cm).add_(t_glob_logits.mean(dim=0, keepdim=True), alpha=1 - cm)
        model.center_patch.mul_(cm).add_(t_tok_logits.mean(dim=(0, 1)).unsqueeze(0), alpha=1 - cm)

    loss = loss_global + loss_patch + loss_pixel
    return loss, {
        "loss-global": float(loss_global.detach()),
        "loss-patch": float(loss_patch.detach()),
        "loss-pixel": float(loss_pixel.detach()),
    }


@torch.no_grad()
def ema_update(model, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student (encoder and distillation head)."""
    for student, teacher in ((model.encoder, model.teacher_encoder), (model.ssl_head, model.teacher_head)):
        for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
            pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
