"""The L3 locator's input, targets, reading of its output, training and the site's cached series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from common.data.series import read_series
from common.models.locator import LOCATOR_GRID, LOCATOR_STEP_MM, L3Locator
from common.phantom.profiles import get_profile
from common.phantom.series_site import synth_series, write_series_nifti, write_series_site
from common.train.locate import (
    LocatorSample,
    level_name,
    level_targets,
    locate_l3,
    locator_input,
    predict_levels,
    read_location,
    score_location,
    train_locator,
)
from common.train.series_data import site_series


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series_site")
    write_series_site(folder, "s", "obesity-clinic", 4, seed=7, fmt="nifti", grid=64, holdout_fraction=0.5)
    return folder


def _vertebrae(case) -> pd.DataFrame:
    off = case.offset_mm
    return pd.DataFrame(
        [{"name": v.name, "z_lo_mm": v.z_lo + off, "z_hi_mm": v.z_hi + off} for v in case.spine.vertebrae]
    )


def test_input_is_a_fixed_grid_whatever_the_slice_thickness(site):
    table = pd.read_csv(site / "series.csv")
    series = read_series(site / table["path"][0])
    x, grid = locator_input(series)
    assert x.shape == (len(grid), 2, LOCATOR_GRID, LOCATOR_GRID) and x.dtype == np.float32
    assert np.allclose(np.diff(grid), LOCATOR_STEP_MM) and grid[0] == series.z_mm[0] and grid[-1] <= series.z_mm[-1]
    assert 0.0 <= x.min() and x.max() <= 1.0
    body = x[len(grid) // 2, 0] > 0
    rows, cols = np.nonzero(body)
    assert abs(rows.mean() - LOCATOR_GRID / 2) < 6 and abs(cols.mean() - LOCATOR_GRID / 2) < 6  # centred
    assert x[:, 1].max() > 0.3  # bone shows in the bone window


def test_targets_follow_the_vertebrae():
    case = synth_series(np.random.default_rng(1), get_profile("general-surgery"), thickness_mm=5.0, grid=48)
    table = _vertebrae(case)
    lo, hi = case.l3_scanner
    z = np.array([0.5 * (lo + hi), hi + 1.0, case.spine.level("T12").z_mid + case.offset_mm])
    level, inside = level_targets(z, table)
    assert level[0] == pytest.approx(0.0) and 0 < level[1] < 0.5 and level[2] == pytest.approx(3.0)
    assert inside.tolist() == [1.0, 0.0, 0.0]
    far, _ = level_targets(np.array([case.z_mm[-1] + 200.0]), table)  # above T7: extrapolated, still rising
    assert far[0] > level[2]
    assert [level_name(v) for v in (0.2, 3.4, -2.6, 40.0)] == ["L3", "T12", "S1", "T1"]


def test_reading_the_output():
    z_mm = np.arange(0.0, 100.0, 2.0)
    grid = np.arange(0.0, 97.0, 4.0)
    level = (grid - 50.0) / 30.0  # crosses 0 at z = 50
    inside = np.where(np.abs(grid - 50) < 12, 0.9, 0.05)
    found = read_location(z_mm, list(range(len(z_mm)))[::-1], grid, level, inside)
    assert found.found and found.z_mm == pytest.approx(50.0) and found.slice_k == 25
    assert found.slice_index == len(z_mm) - 1 - 25  # reported as the source numbers it
    assert found.confidence == pytest.approx(0.9) and not found.low_confidence
    assert found.to_dict()["covers"] == "L5-L1"
    missing = read_location(z_mm, list(range(len(z_mm))), grid, level + 3.0, inside)
    assert not missing.found and missing.slice_index is None and missing.covers == ("L2", "T10")
    unsure = read_location(z_mm, list(range(len(z_mm))), grid, level, inside * 0.3)
    assert unsure.found and unsure.low_confidence
    score = score_location(found, z_mm, 40.0, 62.0)
    assert score["present"] and score["presence_correct"] and score["inside_l3"]
    assert score["error_mm"] == pytest.approx(1.0) and score["error_slices"] == pytest.approx(0.5)
    assert score_location(missing, z_mm, 140.0, 162.0) == {"present": False, "found": False, "presence_correct": True}


def test_training_learns_the_levels_of_a_series(tmp_path):
    case = synth_series(np.random.default_rng(3), get_profile("general-surgery"), thickness_mm=5.0, grid=64)
    series = read_series(write_series_nifti(tmp_path / "v.nii.gz", case))
    x, grid = locator_input(series)
    level, inside = level_targets(grid, _vertebrae(case))
    sample = LocatorSample(x, grid, level, inside)
    torch.manual_seed(0)
    model = L3Locator(width=8)
    before = np.abs(predict_levels(model, x)[0] - level).mean()
    train_locator(model, [sample], epochs=150, lr=3e-3, seed=1)
    after = np.abs(predict_levels(model, x)[0] - level).mean()
    assert after < 0.3 * before and after < 0.7  # from two vertebrae off on average to about half of one
    located = locate_l3(model, series)
    assert located.found and abs(located.z_mm - np.mean(case.l3_scanner)) < 20.0


def test_site_series_cached_on_disk_with_the_same_result(site, tmp_path):
    fresh = site_series(site, "train", tmp_path)
    cached = site_series(site, "train", tmp_path)
    assert len(fresh) == 2 and len(list((tmp_path / "series").glob("*.npz"))) == 2
    for a, b in zip(fresh, cached, strict=True):
        assert np.array_equal(a.sample.x, b.sample.x) and np.array_equal(a.sample.level, b.sample.level)
        assert a.file_index == b.file_index and np.array_equal(a.z_mm, b.z_mm)
    holdout = site_series(site, "holdout", tmp_path)
    assert len(holdout) == 2 and all(np.isnan(s.sample.level).all() for s in holdout)
