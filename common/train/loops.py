"""One training loop for the three phases (ssl, seg, cls): what a site runs locally and in a federated round.

Shared machinery: seeded shuffling and augmentation, AdamW with linear warm-up then cosine decay,
bf16 autocast on CUDA (fp32 on CPU), a tqdm progress bar, and an optional FedProx proximal term
(mu / 2 * ||w - w_start||^2 over the phase's trainable weights, w_start = weights at call start).
Phase-specific parts are the loss: SMIT (ssl), cross-entropy + weighted Dice on soft (partial-volume)
compartment targets (seg: the muscle head weighted by ``Preset.seg_dice_weight``, the fat head with
Dice and CE; :func:`seg_loss`), class-weighted CE (cls).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.metrics.composition import FAT_HEAD, MUSCLE_HEAD
from common.models.presets import check_phase
from common.models.sarco import SarcoModel, trainable_parameters
from common.models.ssl import ema_update, smit_loss
from common.train.data import SliceDataset


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto"/None -> cuda when available, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy's legacy global state."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_phase(
    model: SarcoModel,
    phase: str,
    data: SliceDataset | str | Path | pd.DataFrame,
    *,
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    lr: float | None = None,
    prox_mu: float = 0.0,
    progress: bool = True,
    max_steps: int | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Train ``model`` in place for one phase.

    Parameters
    ----------
    model : SarcoModel
    phase : "ssl" | "seg" | "cls"
    data : SliceDataset of that phase, or a manifest path / DataFrame (a dataset is built and cached)
    epochs : int (default: the preset's epochs for the phase)
    seed : int (default: 0) seeds shuffling, masking and augmentation
    device : "auto" | "cpu" | "cuda" ... (default: auto)
    lr : float (default: the preset's learning rate for the phase)
    prox_mu : float (default: 0.0) FedProx coefficient; 0 disables the proximal term
    progress : bool (default: True) show a progress bar
    max_steps : int or None; stop after this many optimiser steps (quick checks, federated budgets)
    batch_size : int (default: the preset's)

    Returns
    -------
    {"loss": mean loss over the last epoch, "loss-first": mean loss over the first epoch,
     "num-examples": slices in the dataset (not batches), "steps", "epochs", "seconds", "slices-per-s"}
     plus phase parts (ssl: "loss-global", "loss-patch", "loss-pixel", last epoch means).
    """
    from monai.losses import DiceCELoss
    from tqdm.auto import tqdm

    check_phase(phase)
    preset = model.preset
    epochs = preset.epochs(phase) if epochs is None else int(epochs)
    lr = preset.lr(phase) if lr is None else float(lr)
    dev = resolve_device(device)
    seed_everything(seed)
    dataset = data if isinstance(data, SliceDataset) else SliceDataset(data, preset, phase, augment=True, seed=seed)
    dataset.reseed(seed)
    bs = min(batch_size or preset.batch_size, len(dataset))
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=bs, shuffle=True, drop_last=len(dataset) >= 2 * bs, generator=gen, num_workers=0
    )
    total = epochs * len(loader) if max_steps is None else min(max_steps, epochs * len(loader))

    model.to(dev).train()
    params = trainable_parameters(model, phase)
    # The fat head shares no weight with the muscle decoder; clipped on its own, its gradients never
    # rescale the muscle's, which then trains exactly as in a muscle-only model.
    fat_ids = {id(p) for p in model.fat_head.parameters()} if hasattr(model, "fat_head") else set()
    split = ([p for p in params if id(p) not in fat_ids], [p for p in params if id(p) in fat_ids])
    clip_groups = [group for group in split if group]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=preset.weight_decay if phase == "ssl" else 1e-4)
    warmup = max(1, min(total // 10, 50))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, total, warmup))
    anchor = [p.detach().clone() for p in params] if prox_mu > 0 else None
    dice_ce = DiceCELoss(
        to_onehot_y=False, softmax=True, include_background=False, lambda_dice=preset.seg_dice_weight, lambda_ce=1.0
    )
    # The fat compartments (a thin SAT ring in lean patients, VAT between bowel loops) get Dice beside CE
    # whatever the preset's muscle weighting: CE alone leaves them to the large "other" class for long.
    fat_dice_ce = DiceCELoss(to_onehot_y=False, softmax=True, include_background=False, lambda_dice=1.0, lambda_ce=1.0)
    cls_weight = _class_weights(dataset).to(dev) if phase == "cls" else None
    mask_gen = torch.Generator().manual_seed(seed + 1)
    amp = dev.type == "cuda"

    step, t0 = 0, time.perf_counter()
    epoch_losses: list[float] = []
    first_loss = math.nan
    parts_sum: dict[str, float] = {}
    n_batches = 1
    bar = tqdm(total=total, desc=f"{phase} ({preset.name})", unit="step", disable=not progress, leave=False)
    # Parameters outside this phase do not learn (cls: the encoder under the head), and autograd
    # need not trace them; they are restored whatever happens, since a client reuses its model.
    learning = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in learning]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for epoch in range(epochs):
            losses, parts_sum = [], {}
            for batch in loader:
                if step >= total:
                    break
                x = batch["image"].to(dev, non_blocking=True)
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                    if phase == "ssl":
                        loss, parts = smit_loss(model, x, batch["image2"].to(dev), preset, generator=mask_gen)
                        for k, v in parts.items():
                            parts_sum[k] = parts_sum.get(k, 0.0) + v
                    elif phase == "seg":
                        loss = seg_loss(
                            dice_ce,
                            fat_dice_ce,
                            model.segment_logits(x).float(),
                            batch["mask"].to(dev),
                            batch["tissues"].to(dev),
                        )
                    else:
                        loss = torch.nn.functional.cross_entropy(
                            model.classify_logits(x).float(), batch["label"].to(dev), weight=cls_weight
                        )
                total_loss = loss
                if anchor is not None:
                    prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                    total_loss = loss + 0.5 * prox_mu * prox
                opt.zero_grad(set_to_none=True)
                total_loss.backward()
                for group in clip_groups:
                    torch.nn.utils.clip_grad_norm_(group, 3.0)
                opt.step()
                sched.step()
                if phase == "ssl":
                    ema_update(model, preset.ema_momentum)
                losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")
            if losses:
                epoch_losses.append(float(np.mean(losses)))
                if math.isnan(first_loss):
                    first_loss = epoch_losses[-1]
                n_batches = len(losses)
            if step >= total:
                break
    finally:
        for p in frozen:
            p.requires_grad_(True)
    bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    result = {
        "loss": epoch_losses[-1] if epoch_losses else math.nan,
        "loss-first": first_loss,
        "num-examples": len(dataset),
        "steps": step,
        "epochs": len(epoch_losses),
        "seconds": seconds,
        "slices-per-s": step * bs / seconds if seconds > 0 else math.nan,
    }
    if phase == "ssl" and parts_sum:
        result.update({k: v / n_batches for k, v in parts_sum.items()})
    return result


def seg_loss(
    muscle_loss: torch.nn.Module,
    fat_loss: torch.nn.Module,
    logits: torch.Tensor,
    fractions: torch.Tensor,
    tissues: torch.Tensor,
) -> torch.Tensor:
    """Loss of (B, C, S, S) logits against (B, 3, S, S) soft fractions (muscle fascia, visceral, subcutaneous fat).

    The muscle head (``common.metrics.composition.MUSCLE_HEAD``) scores every row against its muscle
    fascia, as a muscle-only network is trained. The fat head scores only the rows whose mask is a
    full label map (``tissues``): a muscle-only mask says nothing about fat, so those rows leave it
    alone (the head's loss is weighted by the share of rows it is over). A 2-channel model has no fat head.
    """
    muscle = fractions[:, :1]
    loss = muscle_loss(logits[:, MUSCLE_HEAD], torch.cat([1.0 - muscle, muscle], dim=1))
    full = tissues.bool()
    if logits.shape[1] > MUSCLE_HEAD.stop and full.any():
        fat = fractions[full][:, 1:]
        other = (1.0 - fat.sum(dim=1, keepdim=True)).clamp(min=0.0)
        share = full.float().mean()
        loss = loss + share * fat_loss(logits[full][:, FAT_HEAD], torch.cat([other, fat], dim=1))
    return loss


def _class_weights(dataset: SliceDataset) -> torch.Tensor:
    """Inverse-frequency weights for (not sarcopenic, sarcopenic) so a rare class still counts."""
    labels = dataset.labels[dataset.labels >= 0]
    counts = torch.bincount(labels, minlength=2).float().clamp(min=1)
    return counts.sum() / (2 * counts)
