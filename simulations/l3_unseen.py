"""The L3 locator on hospitals that never took part in training: the test a new site's first day is.

A consortium TOML may list such sites under ``[unseen_series.NAME]`` (``profile``, ``seed``, ``series``,
optional ``series_format``, ``series_grid`` and ``overrides`` of the profile, as in ``[sites.NAME]``,
and ``transitional`` / ``partial``: the shares of transitional spines and partial scans).
They are generated beside the consortium's sites, never given to the federation, and scored here
with the run's final model. In a simulation every series is at hand, so the pooled numbers are exact
(true medians and percentiles over all series), unlike a federated pooled row.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

UNSEEN_TABLE = "unseen_series"
_KEYS = ("profile", "seed", "series", "series_format", "series_grid", "overrides")


def unseen_specs(toml: Path) -> dict[str, dict]:
    """The ``[unseen_series.NAME]`` tables of a consortium TOML (empty when it has none)."""
    data = tomllib.loads(toml.read_text())
    out = {}
    for name, spec in (data.get(UNSEEN_TABLE) or {}).items():
        unknown = set(spec) - {*_KEYS, "transitional", "partial"}
        if unknown or not {"profile", "seed", "series"} <= set(spec):
            raise SystemExit(
                f"{toml}: [{UNSEEN_TABLE}.{name}] needs profile, seed, series (unknown: {sorted(unknown)})"
            )
        out[str(name)] = {
            "profile": str(spec["profile"]),
            "seed": int(spec["seed"]),
            "series": int(spec["series"]),
            "series_format": str(spec.get("series_format", "dicom")),
            "series_grid": int(spec.get("series_grid", 256)),
            "overrides": dict(spec.get("overrides", {})),
            "habits": {k: float(spec[k]) for k in ("transitional", "partial") if k in spec},
        }
    return out


def ensure_unseen(toml: Path, cache: Path) -> dict[str, Path]:
    """Generate the unseen sites once into ``cache/<name>`` (again when their spec changes)."""
    from dataclasses import replace

    from common.phantom.profiles import get_profile
    from common.phantom.series_site import HABITS, SeriesHabits, write_series_site

    folders = {}
    for name, spec in unseen_specs(toml).items():
        folder = cache / name
        stamp = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        marker = folder / "unseen.json"
        if not (marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == stamp):
            profile = get_profile(spec["profile"]).with_overrides(**spec["overrides"])
            habits = replace(HABITS.get(profile.name, SeriesHabits()), **spec["habits"])
            write_series_site(
                folder, name, profile, spec["series"], spec["seed"], fmt=spec["series_format"],
                grid=spec["series_grid"], holdout_fraction=0.0, habits=habits,
            )  # fmt: skip
            marker.write_text(json.dumps({"fingerprint": stamp, **spec}) + "\n")
        folders[name] = folder
    return folders


def score_unseen(checkpoint: Path, folders: dict[str, Path]) -> pd.DataFrame:
    """One row per series of every unseen site: the locator's answer scored against the truth."""
    from common.data.series import read_series
    from common.models.checkpoint import load_checkpoint
    from common.train.locate import locate_l3, score_location

    model, _ = load_checkpoint(checkpoint)
    rows = []
    for site, folder in folders.items():
        table = pd.read_csv(folder / "series.csv")
        for row in table.itertuples():
            series = read_series(folder / row.path)
            location = locate_l3(model.locator, series)
            scored = score_location(location, series.z_mm, row.l3_z_lo_mm, row.l3_z_hi_mm)
            rows.append({"site": site, "series_id": row.series_id, "variant": row.variant, **scored})
    return pd.DataFrame(rows)


def describe(rows: pd.DataFrame) -> dict[str, float]:
    """Exact summary over the rows: median / 95th percentile error (mm, slices), inside share, presence."""
    present = rows[rows["present"]]
    hit = present[present["found"]]

    def q(values: pd.Series, p: float) -> float:
        v = values.dropna().to_numpy(float)
        return float(np.percentile(v, p)) if v.size else float("nan")

    inside = present["found"] & present.get("inside_l3", pd.Series(False, index=present.index)).fillna(False)
    return {
        "series": float(len(rows)),
        "with_l3": float(len(present)),
        "presence_accuracy": float(rows["presence_correct"].mean()) if len(rows) else float("nan"),
        "inside_share": float(inside.mean()) if len(present) else float("nan"),
        "err_mm_median": q(hit.get("error_mm", pd.Series(dtype=float)), 50),
        "err_mm_p95": q(hit.get("error_mm", pd.Series(dtype=float)), 95),
        "err_slices_median": q(hit.get("error_slices", pd.Series(dtype=float)), 50),
        "err_slices_p95": q(hit.get("error_slices", pd.Series(dtype=float)), 95),
    }
