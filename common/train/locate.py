"""Train, run and score the L3 locator (common.models.locator) on CT series.

A series (common.data.series.CTSeries) becomes the locator's input in three steps: in-plane
resampling to the coarse grid (area averaging), centring on the body, and linear interpolation onto a
fixed z step. Its targets come from the vertebral bodies' z ranges (``vertebrae.csv`` for synthetic
series, an annotation for real ones): the continuous level of every slice and whether it lies inside
the L3 body.

Reading the output (``read_location``): the L3 estimate is where the predicted level crosses 0; no
slice within half a level of 0 means "L3 not in this series"; the confidence is the inside-L3
probability there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from common.data.series import CTSeries
from common.models.locator import LOCATOR_GRID, LOCATOR_PIXEL_MM, LOCATOR_STEP_MM, LOCATOR_WINDOWS, L3Locator

# Vertebral names from the head down; level = (index of L3) - (index of the name).
LEVEL_NAMES: tuple[str, ...] = tuple(f"T{i}" for i in range(1, 13)) + ("L1", "L2", "L3", "L4", "L5", "S1", "S2", "S3")
_L3 = LEVEL_NAMES.index("L3")
FOUND_WITHIN = 0.5  # |level| at the estimate above which L3 is "not in this series"
MIN_CONFIDENCE = 0.5  # inside-L3 probability below which a found L3 is flagged "low confidence"
SHORT_WINDOW_SHARE = 0.05  # training windows of one to four slices


def level_name(level: float) -> str:
    """The vertebra nearest a continuous level (0 = L3)."""
    k = int(np.clip(_L3 - round(level), 0, len(LEVEL_NAMES) - 1))
    return LEVEL_NAMES[k]


def locator_input(series: CTSeries) -> tuple[np.ndarray, np.ndarray]:
    """(M, C, 64, 64) float32 in 0..1 on a LOCATOR_STEP_MM grid from the first slice up, and the grid's z (M,)."""
    hu = torch.from_numpy(np.ascontiguousarray(series.hu, dtype=np.float32))[:, None]
    sy, sx = series.geometry.spacing_mm
    size = (max(1, round(hu.shape[2] * sy / LOCATOR_PIXEL_MM)), max(1, round(hu.shape[3] * sx / LOCATOR_PIXEL_MM)))
    small = F.interpolate(hu, size=size, mode="area")[:, 0].numpy()  # (N, h, w)
    body = (small > -500).mean(axis=0)
    cy, cx = (np.array(np.nonzero(body > 0.2))).mean(axis=1) if (body > 0.2).any() else np.array(size) / 2
    out = np.full((small.shape[0], LOCATOR_GRID, LOCATOR_GRID), -1024.0, np.float32)
    oy, ox = int(round(cy)) - LOCATOR_GRID // 2, int(round(cx)) - LOCATOR_GRID // 2
    ys, xs = slice(max(oy, 0), min(oy + LOCATOR_GRID, size[0])), slice(max(ox, 0), min(ox + LOCATOR_GRID, size[1]))
    out[:, ys.start - oy : ys.stop - oy, xs.start - ox : xs.stop - ox] = small[:, ys, xs]
    z = series.z_mm
    grid = z[0] + np.arange(int(math.floor((z[-1] - z[0]) / LOCATOR_STEP_MM + 1e-6)) + 1) * LOCATOR_STEP_MM
    upper = np.clip(np.searchsorted(z, grid, side="right"), 1, len(z) - 1) if len(z) > 1 else np.zeros(len(grid), int)
    if len(z) > 1:
        lower = upper - 1
        t = np.clip((grid - z[lower]) / np.maximum(z[upper] - z[lower], 1e-6), 0.0, 1.0)[:, None, None]
        resampled = (1 - t) * out[lower] + t * out[upper]
    else:
        resampled = out[:1]
    x = np.stack([np.clip((resampled - lo) / (hi - lo), 0.0, 1.0) for lo, hi in LOCATOR_WINDOWS], axis=1)
    return x.astype(np.float32), grid


def level_targets(z: np.ndarray, vertebrae: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(level at every z, inside-L3 body 0/1) from a table of ``name, z_lo_mm, z_hi_mm`` rows."""
    v = vertebrae[vertebrae["name"].isin(LEVEL_NAMES)]
    levels = np.array([_L3 - LEVEL_NAMES.index(n) for n in v["name"]], dtype=float)
    mids = 0.5 * (v["z_lo_mm"].to_numpy(float) + v["z_hi_mm"].to_numpy(float))
    order = np.argsort(mids)
    mids, levels = mids[order], levels[order]
    level = np.interp(z, mids, levels)
    below, above = z < mids[0], z > mids[-1]  # beyond the bodies given: extend with the end spacing
    level[below] = levels[0] - (mids[0] - z[below]) / (mids[1] - mids[0]) * (levels[1] - levels[0])
    level[above] = levels[-1] + (z[above] - mids[-1]) / (mids[-1] - mids[-2]) * (levels[-1] - levels[-2])
    l3 = v[v["name"] == "L3"]
    inside = np.zeros(len(z), np.float32)
    if len(l3):
        inside = ((z >= float(l3["z_lo_mm"].iloc[0])) & (z <= float(l3["z_hi_mm"].iloc[0]))).astype(np.float32)
    return level.astype(np.float32), inside


@dataclass
class LocatorSample:
    """One series ready for the locator: input, grid z and targets."""

    x: np.ndarray
    z: np.ndarray
    level: np.ndarray
    inside: np.ndarray


def train_locator(
    model: L3Locator,
    samples: list[LocatorSample],
    *,
    epochs: int,
    lr: float,
    seed: int,
    device: str = "cpu",
    min_window: int = 24,
    prox_mu: float = 0.0,
) -> dict[str, float]:
    """Train on random z windows of the series (a window is what a partial scan sees), one series a step.

    A share of the windows (``SHORT_WINDOW_SHARE``) is one to four slices long, so that the locator
    also gives a (coarse) level for a single slice, which ``predict`` uses to flag a slice far from L3.

    Augmentation: window length and position, a shift of up to 4 coarse pixels in-plane, and a
    contrast / brightness jitter per HU window (sites' scanners and kernels differ).
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    anchor = [p.detach().clone() for p in model.parameters()] if prox_mu > 0 else None
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total, steps = 0.0, 0
    for _ in range(epochs):
        for i in rng.permutation(len(samples)):
            s = samples[int(i)]
            m = len(s.z)
            if rng.random() < SHORT_WINDOW_SHARE:  # a few slices, down to one: what a single-slice check sees
                length = int(rng.integers(1, min(4, m) + 1))
            else:
                length = int(rng.integers(min(min_window, m), m + 1))
            start = int(rng.integers(0, m - length + 1))
            x = s.x[start : start + length].copy()
            x = np.roll(x, tuple(rng.integers(-4, 5, 2)), axis=(2, 3))
            gain = rng.uniform(0.85, 1.15, (1, x.shape[1], 1, 1)).astype(np.float32)
            x = np.clip(x * gain + rng.uniform(-0.05, 0.05, (1, x.shape[1], 1, 1)).astype(np.float32), 0, 1)
            level_t = torch.from_numpy(s.level[start : start + length]).to(device)[None]
            inside_t = torch.from_numpy(s.inside[start : start + length]).to(device)[None]
            level, logit = model(torch.from_numpy(x).to(device)[None])
            loss = F.smooth_l1_loss(level, level_t, beta=0.5) + F.binary_cross_entropy_with_logits(
                logit, inside_t, pos_weight=torch.tensor(4.0, device=device)
            )
            if anchor is not None:
                loss = loss + 0.5 * prox_mu * sum(
                    ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            steps += 1
    return {"loss": total / max(steps, 1), "num-examples": float(len(samples))}


@dataclass
class L3Location:
    """Where the locator puts L3 in a series, or that it is not there."""

    found: bool
    z_mm: float | None  # the estimate (mm, the series' z), None when not found
    slice_k: int | None  # the nearest slice, in the series' z order
    slice_index: int | None  # that slice as the source numbers it (CTSeries.file_index)
    confidence: float  # inside-L3 probability at the estimate (0 when not found)
    covers: tuple[str, str]  # the levels at the series' lower and upper ends
    method: str = "series level regression"

    @property
    def low_confidence(self) -> bool:
        return self.found and self.confidence < MIN_CONFIDENCE

    def to_dict(self) -> dict:
        return {
            "found": self.found,
            "slice_index": self.slice_index,
            "z_mm": None if self.z_mm is None else round(self.z_mm, 2),
            "confidence": round(self.confidence, 3),
            "covers": f"{self.covers[0]}-{self.covers[1]}",
            "method": self.method,
        }


@torch.no_grad()
def predict_levels(model: L3Locator, x: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(level, inside-L3 probability) per grid slice."""
    model.to(device).eval()
    level, logit = model(torch.from_numpy(x).to(device)[None])
    return level[0].cpu().numpy(), torch.sigmoid(logit[0]).cpu().numpy()


def read_location(
    z_mm: np.ndarray, file_index: list[int], grid_z: np.ndarray, level: np.ndarray, inside: np.ndarray
) -> L3Location:
    """The L3 estimate from per-slice levels (module docstring); ``z_mm`` and ``file_index`` are the series'."""
    covers = (level_name(float(level[0])), level_name(float(level[-1])))
    k = int(np.argmin(np.abs(level)))
    if abs(float(level[k])) > FOUND_WITHIN:
        return L3Location(False, None, None, None, 0.0, covers)
    z = float(grid_z[k])
    for j in (k - 1, k + 1):  # refine where the level crosses 0 between grid slices
        if 0 <= j < len(level) and (level[k] > 0) != (level[j] > 0):
            z = float(grid_z[k] + (grid_z[j] - grid_z[k]) * level[k] / (level[k] - level[j]))
            break
    confidence = float(np.max(inside[max(k - 1, 0) : k + 2]))
    slice_k = int(np.argmin(np.abs(z_mm - z)))
    return L3Location(True, z, slice_k, file_index[slice_k], confidence, covers)


def locate_l3(model: L3Locator, series: CTSeries, device: str = "cpu") -> L3Location:
    """Run the locator on a whole series and read its answer."""
    x, grid = locator_input(series)
    level, inside = predict_levels(model, x, device)
    return read_location(series.z_mm, series.file_index, grid, level, inside)


def score_location(location: L3Location, z_mm: np.ndarray, l3_lo: float, l3_hi: float) -> dict[str, object]:
    """One series' result against the truth (its slices at ``z_mm``): error (mm, slices), inside, presence."""
    present = bool(np.any((z_mm >= l3_lo) & (z_mm <= l3_hi)))
    step = float(np.median(np.diff(z_mm))) if len(z_mm) > 1 else 1.0
    row: dict[str, object] = {"present": present, "found": location.found}
    row["presence_correct"] = present == location.found
    if present and location.found and location.z_mm is not None and location.slice_k is not None:
        err = abs(location.z_mm - 0.5 * (l3_lo + l3_hi))
        row.update(
            error_mm=err,
            error_slices=err / max(step, 1e-6),
            inside_l3=bool(l3_lo <= z_mm[location.slice_k] <= l3_hi),
        )
    return row
