"""A site's CT series as the L3 locator trains and is scored on them: tables checked, inputs cached.

The tables (``series.csv``, ``vertebrae.csv``: common.data.series) lie beside the site's manifest.csv.
Reading a series and resampling it for the locator takes about a second; a deployed site starts
every round in a fresh process, so the locator's input is kept on disk under the site's cache folder,
keyed by the series' files (names, sizes, modification times): a changed file is read again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.data.series import SERIES_TABLE, VERTEBRAE_TABLE, read_series
from common.errors import InputDataError
from common.train.locate import LocatorSample, level_targets, locator_input

SERIES_COLUMNS = ("series_id", "path", "split", "l3_z_lo_mm", "l3_z_hi_mm")
VERTEBRAE_COLUMNS = ("series_id", "name", "z_lo_mm", "z_hi_mm")


@dataclass
class SiteSeries:
    """One series of a site: its table row, the locator's input and targets, and the slices' own z."""

    row: pd.Series
    sample: LocatorSample
    z_mm: np.ndarray  # every slice of the series, z ascending
    file_index: list[int]


def read_series_table(folder: Path) -> pd.DataFrame | None:
    """``series.csv`` of a site folder (None when the site has none), its columns checked."""
    path = folder / SERIES_TABLE
    if not path.is_file():
        return None
    table = _read(path, SERIES_COLUMNS)
    if table["series_id"].duplicated().any():
        raise InputDataError(f"series_id {table['series_id'][table['series_id'].duplicated()].iloc[0]!r} twice", path)
    return table


def site_series(folder: Path, split: str, cache_dir: Path | None = None) -> list[SiteSeries]:
    """The site's series of ``split`` (train | holdout) with the locator's input and targets."""
    table = read_series_table(folder)
    if table is None:
        raise InputDataError(
            f"no {SERIES_TABLE} beside the manifest: the l3 phase needs CT series with their vertebral levels", folder
        )
    vertebrae = _read(folder / VERTEBRAE_TABLE, VERTEBRAE_COLUMNS) if split == "train" else None
    out = []
    for _, row in table[table["split"] == split].iterrows():
        path = folder / str(row["path"])
        x, grid, z_mm, file_index = _cached_input(path, cache_dir)
        if vertebrae is not None:
            level, inside = level_targets(grid, vertebrae[vertebrae["series_id"] == row["series_id"]])
        else:
            level = np.full(len(grid), np.nan, np.float32)
            inside = ((grid >= row["l3_z_lo_mm"]) & (grid <= row["l3_z_hi_mm"])).astype(np.float32)
        out.append(SiteSeries(row, LocatorSample(x, grid, level, inside), z_mm, file_index))
    return out


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise InputDataError(f"cannot be read as CSV ({type(error).__name__}: {error})", path) from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputDataError(f"lacks column(s) {', '.join(missing)} (has {', '.join(table.columns)})", path)
    return table


def _cached_input(path: Path, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    key = hashlib.sha256(
        "\n".join(f"{p.resolve()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files).encode()
    ).hexdigest()[:24]
    cached = cache_dir / "series" / f"{key}.npz" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        with np.load(cached) as data:
            return data["x"], data["grid"], data["z_mm"], data["file_index"].tolist()
    series = read_series(path)
    x, grid = locator_input(series)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, x=x, grid=grid, z_mm=series.z_mm, file_index=np.array(series.file_index))
        tmp.replace(cached)
    return x, grid, series.z_mm, series.file_index
