"""Write a hospital's synthetic CT series (DICOM folders or NIfTI volumes) with their true levels.

Sites differ the way real ones do: slice thickness (the profile's), field of view (body and arms),
arms up or down, contrast phase, how often a series stops short of L3 (an upper-abdomen or a pelvic
scan), and how often the spine is transitional (common.phantom.spine). Every series gets

* ``series.csv``: one row per series: where it is, its split, what it shows and the true L3 body
  (``l3_z_lo_mm`` .. ``l3_z_hi_mm``, scanner z; ``has_l3`` is False when the series misses it);
* ``vertebrae.csv``: one row per series and vertebral body (name, z range in scanner mm), from which
  any per-slice target (the level of every slice) follows.

z is written in the scanner's frame (an offset table position, as real series have), never as 0 at
the sacrum: nothing in the files gives the answer away.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.data.series import SERIES_TABLE, VERTEBRAE_TABLE
from common.errors import ConfigError
from common.phantom.patient import Patient, sample_patient
from common.phantom.profiles import SiteProfile, get_profile
from common.phantom.spine import VARIANTS, Spine, build_spine
from common.phantom.volume import GRID, PHASES, build_body, paint_series

COVERAGES = ("full", "upper", "lower", "mid")


@dataclass(frozen=True)
class SeriesHabits:
    """How one site's series differ from another's (besides what its SiteProfile sets)."""

    arms_down: float = 0.3  # share of series with the arms beside the trunk
    partial: float = 0.2  # share that covers only part of T10-S1 (half of them miss L3)
    transitional: float = 0.15  # share with transitional anatomy
    phases: tuple[float, float, float] = (0.3, 0.2, 0.5)  # non-contrast, arterial, portal venous


HABITS = {
    "geriatric-oncology": SeriesHabits(arms_down=0.5, partial=0.2, transitional=0.15, phases=(0.1, 0.1, 0.8)),
    "general-surgery": SeriesHabits(arms_down=0.3, partial=0.25, transitional=0.15, phases=(0.4, 0.1, 0.5)),
    "young-trauma": SeriesHabits(arms_down=0.6, partial=0.1, transitional=0.1, phases=(0.2, 0.5, 0.3)),
    "obesity-clinic": SeriesHabits(arms_down=0.2, partial=0.3, transitional=0.2, phases=(0.8, 0.0, 0.2)),
}


@dataclass
class SeriesCase:
    """One synthetic series in memory: volume, labels, scanner z of each slice, and the truth."""

    hu: np.ndarray  # (N, H, W) float32, canonical, z ascending
    labels: np.ndarray  # (N, H, W) uint8
    z_mm: np.ndarray  # (N,) scanner z
    pixel_mm: float
    thickness_mm: float
    patient: Patient
    spine: Spine
    offset_mm: float  # scanner z = spine z + offset
    coverage: str
    phase: str
    arms_down: bool

    @property
    def l3_scanner(self) -> tuple[float, float]:
        lo, hi = self.spine.l3
        return (lo + self.offset_mm, hi + self.offset_mm)

    @property
    def has_l3(self) -> bool:
        """True when some slice centre lies inside the L3 body."""
        lo, hi = self.l3_scanner
        return bool(np.any((self.z_mm >= lo) & (self.z_mm <= hi)))


def synth_series(
    rng: np.random.Generator,
    profile: SiteProfile,
    *,
    variant: str = "normal",
    coverage: str = "full",
    phase: str | None = None,
    arms_down: bool | None = None,
    thickness_mm: float | None = None,
    grid: int = GRID,
) -> SeriesCase:
    """Draw a patient of ``profile`` and scan the part of the trunk ``coverage`` names."""
    if coverage not in COVERAGES:
        raise ConfigError(f"unknown series coverage {coverage!r}; choose one of {COVERAGES}")
    habits = HABITS.get(profile.name, SeriesHabits())
    patient = sample_patient(rng, profile)
    spine = build_spine(rng, patient.height_m, variant)
    phase = phase or str(rng.choice(PHASES, p=habits.phases))
    arms_down = bool(rng.random() < habits.arms_down) if arms_down is None else arms_down
    body = build_body(rng, patient, spine, phase, arms_down)
    step = float(thickness_mm or profile.thickness_mm)
    lv = spine.level
    bottom = min(v.z_lo for v in spine.vertebrae if v.fused)
    ranges = {
        "full": (bottom - 10.0, lv("T10").z_hi + 15.0),
        "upper": (lv("L1").z_mid + rng.normal(0, 8), lv("T10").z_hi + 15.0),
        "lower": (bottom - 10.0, lv("L4").z_hi + rng.normal(0, 8)),
        "mid": (lv("L5").z_mid + rng.normal(0, 8), lv("T12").z_mid + rng.normal(0, 8)),
    }
    lo, hi = ranges[coverage]
    lo += float(rng.uniform(-6.0, 6.0))
    z = np.arange(lo, hi, step)
    noise = float(rng.uniform(*profile.noise_hu))
    hu, labels, px = paint_series(rng, body, z, step, noise, profile.blur_mm, grid)
    hu += np.float32(profile.hu_offset)
    offset = float(np.round(rng.uniform(-900.0, -400.0), 1))
    return SeriesCase(hu, labels, z + offset, px, step, patient, spine, offset, coverage, phase, arms_down)


def _plan(rng: np.random.Generator, habits: SeriesHabits, n: int) -> list[tuple[str, str]]:
    """(variant, coverage) per series: the site's shares, at least one of each kind when n allows."""
    plan = []
    for _ in range(n):
        variant = str(rng.choice(VARIANTS[1:])) if rng.random() < habits.transitional else "normal"
        coverage = str(rng.choice(COVERAGES[1:])) if rng.random() < habits.partial else "full"
        plan.append((variant, coverage))
    return plan


def write_series_site(
    out_dir: str | Path,
    site: str,
    profile: SiteProfile | str,
    n_series: int,
    seed: int,
    *,
    fmt: str = "dicom",
    holdout_fraction: float = 0.3,
    grid: int = GRID,
    habits: SeriesHabits | None = None,
) -> Path:
    """Write ``n_series`` series of one hospital into ``out_dir``; return the path of its series.csv.

    ``fmt`` is ``dicom`` (a folder of CT Image Storage files per series, under ``series/``) or
    ``nifti`` (one volume per series under ``volumes/``, stored with z descending, as some exporters
    do, so that readers must keep the file's own slice index apart from z order). ``grid`` is the
    pixels a side (256 by default; 128 paints four times faster, enough for the locator's 64).
    ``habits`` replaces the profile's shares of partial coverage and transitional anatomy (SeriesHabits).
    """
    if fmt not in ("dicom", "nifti"):
        raise ConfigError(f"series format must be 'dicom' or 'nifti', got {fmt!r}")
    if n_series < 1:
        raise ConfigError(f"n_series must be at least 1, got {n_series}")
    if isinstance(profile, str):
        profile = get_profile(profile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    habits = habits or HABITS.get(profile.name, SeriesHabits())
    plan = _plan(np.random.default_rng([seed, 0x53]), habits, n_series)
    order = np.random.default_rng([seed, 0x5B]).permutation(n_series)
    n_hold = max(1, int(round(holdout_fraction * n_series))) if n_series > 1 else 0
    rows, vert_rows = [], []
    for i, (variant, coverage) in enumerate(plan):
        case = synth_series(np.random.default_rng([seed, i]), profile, variant=variant, coverage=coverage, grid=grid)
        sid = f"{site}-s{i:03d}"
        if fmt == "dicom":
            path = out / "series" / sid
            write_series_dicom(path, case, patient_id=sid)
        else:
            path = out / "volumes" / f"{sid}.nii.gz"
            write_series_nifti(path, case)
        lo, hi = case.l3_scanner
        rows.append(
            {
                "series_id": sid,
                "path": path.relative_to(out).as_posix(),
                "format": fmt,
                "split": "holdout" if i in set(order[:n_hold].tolist()) else "train",
                "variant": variant,
                "coverage": coverage,
                "phase": case.phase,
                "arms_down": case.arms_down,
                "thickness_mm": case.thickness_mm,
                "pixel_mm": round(case.pixel_mm, 4),
                "n_slices": len(case.z_mm),
                "z_first_mm": float(case.z_mm[0]),
                "z_last_mm": float(case.z_mm[-1]),
                "has_l3": case.has_l3,
                "l3_z_lo_mm": lo,
                "l3_z_hi_mm": hi,
                "sex": case.patient.sex,
                "height_m": case.patient.height_m,
                "site": site,
            }
        )
        off = case.offset_mm
        vert_rows += [
            {"series_id": sid, "name": v.name, "z_lo_mm": v.z_lo + off, "z_hi_mm": v.z_hi + off}
            for v in case.spine.vertebrae
        ]
    table = out / SERIES_TABLE
    pd.DataFrame(rows).to_csv(table, index=False)
    pd.DataFrame(vert_rows).to_csv(out / VERTEBRAE_TABLE, index=False)
    return table


def write_series_dicom(folder: Path, case: SeriesCase, *, patient_id: str) -> list[Path]:
    """One CT Image Storage file per slice; InstanceNumber from the head down, as scanners number them."""
    from pydicom.uid import generate_uid

    from common.data.dicom_io import write_ct_dicom

    study, series = generate_uid(), generate_uid()
    n = len(case.z_mm)
    paths = []
    for k in range(n):
        path = folder / f"{k:04d}.dcm"
        write_ct_dicom(
            path, case.hu[k], (case.pixel_mm, case.pixel_mm), patient_id=patient_id, sex=case.patient.sex,
            height_m=case.patient.height_m, weight_kg=case.patient.weight_kg, age_years=case.patient.age_years,
            slice_z_mm=float(case.z_mm[k]), study_uid=study, series_uid=series, instance_number=n - k,
            contrast=case.phase != "non-contrast", description="synthetic abdomen series",
            thickness_mm=case.thickness_mm,
        )  # fmt: skip
        paths.append(path)
    return paths


def write_series_nifti(path: Path, case: SeriesCase) -> Path:
    """The volume as (X, Y, Z) int16 HU under a RAS affine, slices stored from the head down."""
    import nibabel as nib

    n, h, w = case.hu.shape
    px = case.pixel_mm
    data = np.rint(case.hu[::-1].transpose(2, 1, 0)).astype(np.int16)  # [x, y, k], k from the top
    affine = np.array(
        [
            [-px, 0.0, 0.0, (w - 1) / 2 * px],  # LPS x of column 0 is -(w-1)/2*px; RAS negates it
            [0.0, -px, 0.0, (h - 1) / 2 * px],
            [0.0, 0.0, -case.thickness_mm, float(case.z_mm[-1])],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path
