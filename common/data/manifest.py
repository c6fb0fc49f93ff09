"""A site's manifest.csv: one row per usable CT slice, validated in one pass that lists every bad line.

Columns: ``patient_id, image_path, mask_path, sex, height_m, weight_kg, age,
split`` plus reference columns ``sma_cm2, smi_cm2_m2, sarcopenic`` (filled where a mask exists) and an
optional ``site``. Paths are relative to the manifest's folder (absolute paths are accepted).

``read_manifest`` returns the table with two extra columns, ``image_abspath`` and ``mask_abspath``
(absolute path strings, '' when no mask), and ``df.attrs["manifest_dir"]``; ``write_manifest`` drops
them again. Empty cells become None/NaN: unknown, never guessed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from common.clinical import normalise_sex
from common.data.ctslice import CTSlice
from common.errors import InputDataError

MANIFEST_COLUMNS: list[str] = [
    "patient_id",
    "image_path",
    "mask_path",
    "sex",
    "height_m",
    "weight_kg",
    "age",
    "split",
    "sma_cm2",
    "smi_cm2_m2",
    "sarcopenic",
]
REQUIRED_COLUMNS: list[str] = MANIFEST_COLUMNS[:8]
OPTIONAL_COLUMNS: list[str] = ["site"]
NUMERIC_EXTRAS: tuple[str, ...] = ("series_slice_index", "l3_confidence")
SPLITS: tuple[str, ...] = ("train", "holdout", "unlabelled")
# Plausible ranges (inclusive) with the unit mistake each catches.
RANGES: dict[str, tuple[float, float, str]] = {
    "height_m": (0.5, 2.6, "metres (a value like 172 is centimetres)"),
    "weight_kg": (2.0, 400.0, "kilograms"),
    "age": (0.0, 120.0, "years"),
    "sma_cm2": (0.0, 1000.0, "cm2"),
    "smi_cm2_m2": (0.0, 300.0, "cm2/m2"),
}
_MAX_LISTED = 40


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Load and validate a manifest.

    Returns
    -------
    DataFrame with MANIFEST_COLUMNS (+ site when present, + any extra columns), numeric columns as
    float (NaN unknown), ``sex`` 'M'/'F'/None, ``sarcopenic`` True/False/None, and ``image_abspath`` /
    ``mask_abspath``; ``df.attrs["manifest_dir"]`` is the manifest's folder.

    Raises
    ------
    InputDataError
        Missing columns, or bad rows: every bad row is listed with its line number in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError("manifest not found; create one with `sarcofed ingest DIR --out manifest.csv`", path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as error:
        raise InputDataError(f"cannot be read as CSV ({type(error).__name__}: {error})", path) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputDataError(
            f"manifest lacks column(s) {missing}; expected at least {REQUIRED_COLUMNS}, found {list(df.columns)}", path
        )
    for column in ("sma_cm2", "smi_cm2_m2", "sarcopenic"):
        if column not in df.columns:
            df[column] = ""
    base = path.resolve().parent
    errors: list[str] = []
    sexes: list[str | None] = []
    splits: list[str] = []
    images: list[str] = []
    masks: list[str] = []
    sarcopenic: list[bool | None] = []
    numbers: dict[str, list[float]] = {c: [] for c in RANGES}
    for index, row in df.iterrows():
        line = int(index) + 2  # header is line 1
        bad: list[str] = []
        if not row["patient_id"].strip():
            bad.append("patient_id empty")
        image = row["image_path"].strip()
        if not image:
            bad.append("image_path empty")
        images.append(str(_resolve(base, image)) if image else "")
        mask = row["mask_path"].strip()
        masks.append(str(_resolve(base, mask)) if mask else "")
        split = row["split"].strip().lower()
        if split not in SPLITS:
            bad.append(f"split {row['split']!r} not one of {'|'.join(SPLITS)}")
        splits.append(split)
        sex_text = row["sex"].strip()
        sex = normalise_sex(sex_text, strict=False) if sex_text else None
        if sex_text and sex is None:
            bad.append(f"sex {sex_text!r} not M/F (leave empty when unknown)")
        sexes.append(sex)
        for column, (low, high, unit) in RANGES.items():
            text = row[column].strip() if column in row else ""
            value = math.nan
            if text:
                try:
                    value = float(text)
                except ValueError:
                    bad.append(f"{column} {text!r} is not a number")
                else:
                    if not (math.isfinite(value) and low <= value <= high):
                        bad.append(f"{column} {text} outside {low}..{high} {unit}")
            numbers[column].append(value)
        verdict = row["sarcopenic"].strip().lower()
        if verdict in ("", "none", "nan"):
            sarcopenic.append(None)
        elif verdict in ("true", "1", "yes"):
            sarcopenic.append(True)
        elif verdict in ("false", "0", "no"):
            sarcopenic.append(False)
        else:
            sarcopenic.append(None)
            bad.append(f"sarcopenic {row['sarcopenic']!r} not true/false/empty")
        if bad:
            errors.append(f"line {line}: " + "; ".join(bad))
    if errors:
        listed = errors[:_MAX_LISTED] + (
            [f"... and {len(errors) - _MAX_LISTED} more"] if len(errors) > _MAX_LISTED else []
        )
        raise InputDataError(f"{len(errors)} bad row(s):\n  " + "\n  ".join(listed), path)
    df["split"] = splits
    df["sex"] = pd.Series(sexes, index=df.index, dtype=object)
    for column, values in numbers.items():
        df[column] = np.asarray(values, dtype=float)
    df["sarcopenic"] = pd.Series(sarcopenic, index=df.index, dtype=object)
    for column in NUMERIC_EXTRAS:  # written by ingest for slices taken from a series: numbers, NaN when blank
        if column in df.columns:
            df[column] = pd.to_numeric(df[column], errors="coerce")
    df["image_abspath"] = images
    df["mask_abspath"] = masks
    df.attrs["manifest_dir"] = str(base)
    return df


def _resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else (base / p)


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest CSV (MANIFEST_COLUMNS first, then site and extras; abspath helpers dropped)."""
    path = Path(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest frame lacks {missing}")
    extras = [c for c in df.columns if c not in MANIFEST_COLUMNS and c not in ("image_abspath", "mask_abspath")]
    out = df[MANIFEST_COLUMNS + extras].copy()
    out = out.astype(object).where(pd.notna(out), "")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False, float_format="%.6g")
    return path


def load_case(row: pd.Series, manifest_dir: str | Path | None = None) -> tuple[CTSlice, np.ndarray | None]:
    """Image and canonical (H, W) uint8 mask (None without mask) of one manifest row.

    Patient values in the manifest (sex, height, weight, age) override those in the DICOM header.
    ``manifest_dir`` is only needed for rows that do not come from :func:`read_manifest`.
    """
    from common.data.dicom_io import read_ct_slice
    from common.data.mask_io import read_mask

    base = Path(manifest_dir) if manifest_dir is not None else None
    image = _row_path(row, "image_abspath", "image_path", base)
    mask = _row_path(row, "mask_abspath", "mask_path", base)
    if image is None:
        raise InputDataError("manifest row has no image_path")
    ct = read_ct_slice(image)
    sex = row.get("sex")
    if isinstance(sex, str) and normalise_sex(sex, strict=False):
        ct.sex = normalise_sex(sex)
    for attr, column in (("height_m", "height_m"), ("weight_kg", "weight_kg"), ("age_years", "age")):
        value = _float(row.get(column))
        if value is not None:
            setattr(ct, attr, value)
    return ct, (read_mask(mask, ct) if mask is not None else None)


def _row_path(row: pd.Series, absolute: str, relative: str, base: Path | None) -> Path | None:
    text = str(row.get(absolute) or "").strip()
    if text and text != "nan":
        return Path(text)
    text = str(row.get(relative) or "").strip()
    if not text or text == "nan":
        return None
    p = Path(text)
    if not p.is_absolute():
        if base is None:
            raise InputDataError(f"relative path {text!r} in a row without manifest_dir; use read_manifest")
        p = base / p
    return p


def _float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]  # any object: what float() rejects gives None
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
