"""Fixtures shared by the hospital-side command tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from common.data.series import read_series
from common.models.checkpoint import save_checkpoint
from common.models.presets import get_preset
from common.models.sarco import SarcoModel
from common.phantom.profiles import get_profile
from common.phantom.series_site import synth_series, write_series_dicom, write_series_nifti
from common.train.locate import LocatorSample, level_targets, locator_input, train_locator


@pytest.fixture(scope="module")
def body():
    """Factory of a small asymmetric HU image (H, W) float32 and its muscle mask (H, W) uint8."""

    def make(h: int = 48, w: int = 40):
        yy, xx = np.mgrid[0:h, 0:w]
        hu = np.full((h, w), -1000.0, dtype=np.float32)
        inside = ((yy - h / 2) / (h * 0.45)) ** 2 + ((xx - w / 2) / (w * 0.45)) ** 2 < 1
        hu[inside] = -100.0
        mask = inside & (yy > h * 0.6) & (xx < w * 0.45)
        hu[mask] = 45.0
        return hu, mask.astype(np.uint8)

    return make


def _vertebrae(case) -> pd.DataFrame:
    off = case.offset_mm
    return pd.DataFrame(
        [{"name": v.name, "z_lo_mm": v.z_lo + off, "z_hi_mm": v.z_hi + off} for v in case.spine.vertebrae]
    )


@pytest.fixture(scope="session")
def series_inputs(tmp_path_factory) -> dict:
    """Two phantom series (T10-S1 as NIfTI and DICOM, and one stopping above L3) and a tiny checkpoint
    whose locator is really trained on them, briefly (its segmentation is untrained)."""
    root = tmp_path_factory.mktemp("predict_series")
    profile = get_profile("obesity-clinic")
    full = synth_series(np.random.default_rng(21), profile, coverage="full", thickness_mm=5.0, grid=96)
    upper = synth_series(np.random.default_rng(22), profile, coverage="upper", thickness_mm=5.0, grid=96)
    write_series_nifti(root / "full.nii.gz", full)
    write_series_dicom(root / "full_dicom", full, patient_id="p1")
    write_series_nifti(root / "upper.nii.gz", upper)
    samples = []
    for case, name in ((full, "full.nii.gz"), (upper, "upper.nii.gz")):
        x, grid = locator_input(read_series(root / name))
        samples.append(LocatorSample(x, grid, *level_targets(grid, _vertebrae(case))))
    torch.manual_seed(0)
    model = SarcoModel(get_preset("tiny"))
    train_locator(model.locator, samples, epochs=150, lr=3e-3, seed=0)
    model.trained_phases = {"l3"}
    save_checkpoint(root / "tiny-l3.pt", model, phase="seg")
    save_checkpoint(root / "tiny-no-l3.pt", SarcoModel(get_preset("tiny")), phase="seg")
    return {"root": root, "full": full, "upper": upper, "model": root / "tiny-l3.pt"}
