"""Turn a hospital's folder of DICOM / NIfTI (and masks) into a checked manifest.csv + rejected.csv.

What becomes a row
------------------
* A DICOM CT series of one slice (grouped by SeriesInstanceUID) is one row.
* A series of several slices (slices ordered by ImagePositionPatient along the slice normal) becomes
  one row only when the meta CSV names its L3 slice: a meta row whose key is that slice's file name,
  path or SOPInstanceUID, or whose key is the SeriesInstanceUID with ``l3_instance`` (InstanceNumber)
  or ``l3_z_mm`` (nearest slice position). Otherwise the series is rejected with that reason.
* A NIfTI file (not named like a mask) is an image when it holds one slice; volumes are rejected
  (extract the L3 slice first).
* A DICOM SEG, or a NIfTI whose name ends in ``_mask``, ``_seg``, ``_label`` or ``_muscle`` (or any
  NIfTI/SEG under ``masks_dir``), is a mask. It belongs to the image whose file stem equals its own
  stem without that suffix, or whose SOPInstanceUID equals its stem; a SEG also to the image it
  references. A mask whose geometry disagrees is rejected; its image stays, without mask.
* A symbolic link counts as its target when the target lies inside the folder scanned (input or masks
  folder). Links out of it, dangling links and what is not a regular file are rejected, as is any image
  or mask with a NaN or infinite pixel or a header that declares more than one slice of at most
  ``MAX_SLICE_SIDE`` pixels a side (checked before anything is decoded).

The meta CSV (``--meta``)
-------------------------
Column ``key`` (required): file name, path relative to the input folder, file stem, SOPInstanceUID or
SeriesInstanceUID (no accession numbers or patient names). Optional columns, each overriding the DICOM
header: ``patient_key`` (any site identifier; it is pseudonymised), ``split``, ``sex``, ``height_m``,
``weight_kg``, ``age``, ``site``, and ``l3_instance`` / ``l3_z_mm`` for multi-slice series.

Outputs
-------
``manifest.csv`` (see common.data.manifest; paths relative to it) and ``rejected.csv`` (path, reason)
beside it. patient_id is HMAC(site salt, DICOM PatientID or patient_key or relative path): no
PatientName, PatientID or BirthDate appears in anything written. Split: the meta's, else ``holdout``
for a stable ``holdout_fraction`` of masked patients (by pseudonym), ``train`` for the other masked
ones, ``unlabelled`` without a mask. Inputs are only ever read.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.clinical import area_cm2, bmi, get_cutoff, normalise_sex, smi
from common.data.ctslice import CTSlice
from common.data.dicom_io import is_nifti, read_ct_slice, read_dataset
from common.data.folder_walk import is_under, walk_files
from common.data.manifest import MANIFEST_COLUMNS, SPLITS, write_manifest
from common.data.mask_io import SEG_STORAGE, read_mask, referenced_sop_uids
from common.data.pseudonym import Pseudonymiser
from common.errors import InputDataError, SarcoFedError

MASK_SUFFIXES = ("_mask", "_seg", "_label", "_muscle", ".seg")
META_COLUMNS = ("key", "patient_key", "split", "sex", "height_m", "weight_kg", "age", "site", "l3_instance", "l3_z_mm")
REJECTED_NAME = "rejected.csv"


@dataclass
class IngestResult:
    """What ``ingest`` wrote and why: ``manifest`` and ``rejected`` are the tables written to disk."""

    manifest_path: Path
    rejected_path: Path
    manifest: pd.DataFrame
    rejected: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def n_accepted(self) -> int:
        return len(self.manifest)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)

    @property
    def exit_code(self) -> int:
        """0 when at least one image is usable, 2 when none."""
        return 0 if self.n_accepted else 2


@dataclass
class _Header:
    path: Path
    rel: str
    sop: str
    series: str
    patient: str
    instance: int | None
    z: float
    copies: list[Path] = field(default_factory=list)  # other files with the same SOPInstanceUID


@dataclass
class _Mask:
    path: Path
    keys: set[str]
    refs: set[str]
    used: bool = False


def ingest(
    input_dir: str | Path,
    out_manifest: str | Path,
    masks_dir: str | Path | None = None,
    meta_csv: str | Path | None = None,
    *,
    salt_file: str | Path | None = None,
    holdout_fraction: float = 0.2,
    cutoff: str = "prado2008",
    site: str | None = None,
    progress: bool = True,
) -> IngestResult:
    """Scan ``input_dir`` recursively and write ``out_manifest`` and ``rejected.csv`` beside it.

    Parameters
    ----------
    input_dir : folder of DICOM files / NIfTI slices (and optionally masks); only read.
    out_manifest : manifest CSV to write; paths in it are relative to its folder.
    masks_dir : folder of NIfTI / DICOM SEG masks (default: masks are looked for in ``input_dir``).
    meta_csv : per-image overrides (see module docstring).
    salt_file : pseudonym salt file (default: common.data.pseudonym.default_salt_path()).
    holdout_fraction : float (default: 0.2) share of masked patients put in ``holdout``.
    cutoff : sarcopenia rule for the reference ``sarcopenic`` column (default: prado2008).
    site : optional value of the ``site`` column.
    progress : show a progress bar (rich).
    """
    input_dir = Path(input_dir).resolve()
    out_manifest = Path(out_manifest).resolve()
    if not input_dir.is_dir():
        raise InputDataError("input folder not found", input_dir)
    if not 0.0 <= holdout_fraction < 1.0:
        raise InputDataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    rule = get_cutoff(cutoff)
    rejected: list[tuple[str, str]] = []
    warnings: list[str] = []
    meta = _read_meta(Path(meta_csv)) if meta_csv else {}
    pz = Pseudonymiser(salt_file)
    masks_root = Path(masks_dir).resolve() if masks_dir else None
    if masks_root is not None and not masks_root.is_dir():
        raise InputDataError("masks folder not found", masks_root)
    skip = {out_manifest, out_manifest.parent / REJECTED_NAME}
    if meta_csv:
        skip.add(Path(meta_csv).resolve())

    files = [
        p
        for p in walk_files(input_dir, rejected, "input folder", prune=masks_root)
        if p not in skip and not (masks_root and is_under(p, masks_root))
    ]
    mask_files = list(walk_files(masks_root, rejected, "masks folder")) if masks_root else []

    headers: list[_Header] = []
    nifti_images: list[Path] = []
    masks: list[_Mask] = []
    for path in _track(files + mask_files, "Scanning files", progress):
        in_masks = masks_root is not None and is_under(path, masks_root)
        if is_nifti(path):
            if in_masks or _strip_mask_suffix(_stem(path)) != _stem(path):
                masks.append(_Mask(path, {_strip_mask_suffix(_stem(path))}, set()))
            else:
                nifti_images.append(path)
            continue
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except InputDataError as error:
            rejected.append((str(path), _reason(error, path)))
            continue
        if str(ds.get("SOPClassUID", "")) == SEG_STORAGE:
            masks.append(_Mask(path, {_strip_mask_suffix(_stem(path))}, referenced_sop_uids(ds)))
            continue
        if in_masks:
            rejected.append((str(path), "file in the masks folder is neither NIfTI nor DICOM SEG"))
            continue
        modality = str(ds.get("Modality", ""))
        if modality != "CT":
            rejected.append(
                (
                    str(path),
                    f"(0008,0060) 'Modality' is {modality or 'missing'!r} "
                    f"({getattr(ds.get('SOPClassUID'), 'name', 'unknown SOP class')}), expected 'CT'",
                )
            )
            continue
        headers.append(_header(ds, path, input_dir))

    chosen = _choose_slices(headers, meta, rejected)
    images = [(h.path, h) for h in chosen] + [(p, None) for p in nifti_images]
    images.sort(key=lambda item: str(item[0]))

    rows: list[dict] = []
    for path, header in _track(images, "Reading images", progress):
        ct = _read_first_good([path] + (header.copies if header else []), rejected)
        if ct is None:
            continue
        assert ct.path is not None  # read_ct_slice records the file it read
        path = ct.path
        rel = path.relative_to(input_dir).as_posix()
        info = _lookup(meta, path, rel, header)
        mask_path, mask = _match_mask(ct, path, masks, rejected)
        rows.append(_row(ct, rel, path, header, info, mask_path, mask, out_manifest, pz, holdout_fraction, rule, site))

    for m in masks:
        if not m.used:
            rejected.append(
                (
                    str(m.path),
                    "mask matches no accepted image (name it <image file stem>_mask.nii.gz "
                    "or <SOPInstanceUID>.nii.gz, or reference the image from the DICOM SEG)",
                )
            )
    used_keys = {r.pop("_meta_key") for r in rows}
    for key in meta:
        if key not in used_keys:
            warnings.append(f"meta row with key {key!r} matched no accepted image")

    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + (["site"] if any("site" in r for r in rows) else []))
    if len(manifest):
        manifest = manifest.sort_values("image_path", kind="stable").reset_index(drop=True)
    write_manifest(manifest, out_manifest)
    rejected_df = pd.DataFrame(sorted(set(rejected)), columns=["path", "reason"])  # a folder can be walked twice
    rejected_path = out_manifest.parent / REJECTED_NAME
    rejected_df.to_csv(rejected_path, index=False)
    return IngestResult(out_manifest, rejected_path, manifest, rejected_df, warnings)


# ---- scanning ---------------------------------------------------------------------------------------
def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".dicom", ".ima"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _strip_mask_suffix(stem: str) -> str:
    for suffix in MASK_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _reason(error: SarcoFedError, path: Path) -> str:
    """The error's message without the leading 'path: ' (the path has its own column)."""
    text = str(error)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _track(items: list, label: str, enabled: bool):
    if not enabled or not items:
        return items
    from rich.progress import track

    return track(items, description=label, transient=True)


def _header(ds, path: Path, root: Path) -> _Header:
    z = 0.0
    try:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        z = float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient]))
    except (AttributeError, ValueError, TypeError):
        pass  # read_ct_slice reports the missing tag later
    try:
        number = int(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        number = None
    return _Header(
        path=path,
        rel=path.relative_to(root).as_posix(),
        sop=str(ds.get("SOPInstanceUID", "")),
        series=str(ds.get("SeriesInstanceUID", "")) or f"no-series:{path}",
        patient=str(ds.get("PatientID", "") or ""),
        instance=number,
        z=z,
    )


def _choose_slices(headers: list[_Header], meta: dict[str, dict], rejected: list[tuple[str, str]]) -> list[_Header]:
    """One header per series: the only slice, or the L3 slice the meta CSV names."""
    series: dict[str, list[_Header]] = defaultdict(list)
    by_sop: dict[tuple[str, str], _Header] = {}
    for h in sorted(headers, key=lambda h: h.rel):
        first = by_sop.get((h.series, h.sop)) if h.sop else None
        if first is not None:  # the same instance twice (a copy): one slice, several candidate files
            first.copies.append(h.path)
            continue
        if h.sop:
            by_sop[(h.series, h.sop)] = h
        series[h.series].append(h)
    chosen = []
    for uid, items in series.items():
        items.sort(key=lambda h: h.z)
        if len(items) == 1:
            chosen.append(items[0])
            continue
        named = [h for h in items if any(k in meta for k in (h.rel, h.path.name, _stem(h.path), h.sop))]
        pick = None
        if len(named) == 1:
            pick = named[0]
        elif uid in meta:
            row = meta[uid]
            if row.get("l3_instance") is not None:
                pick = next((h for h in items if h.instance == int(row["l3_instance"])), None)
            elif row.get("l3_z_mm") is not None:
                pick = min(items, key=lambda h: abs(h.z - float(row["l3_z_mm"])))
        folder = items[0].path.parent
        if pick is None:
            why = (
                f"{len(named)} slices of it are named in --meta; name exactly one"
                if len(named) > 1
                else "name its L3 slice in --meta (key = file name or SOPInstanceUID, or key = SeriesInstanceUID "
                "with l3_instance / l3_z_mm)"
            )
            rejected.append(
                (str(folder), f"CT series of {len(items)} slices (z {items[0].z:.1f}..{items[-1].z:.1f} mm): {why}")
            )
            continue
        chosen.append(pick)
    return chosen


def _read_first_good(paths: list[Path], rejected: list[tuple[str, str]]) -> CTSlice | None:
    """Read copies of one instance in order; the first readable one is used, the rest are rejected."""
    used: CTSlice | None = None
    for path in paths:
        try:
            ct = read_ct_slice(path)
        except InputDataError as error:
            rejected.append((str(path), _reason(error, path)))
            continue
        if used is None:
            used = ct
        else:
            rejected.append((str(path), f"same SOPInstanceUID as {used.path} (a copy); only that file is used"))
    return used


# ---- meta -------------------------------------------------------------------------------------------
def _read_meta(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise InputDataError("meta CSV not found", path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "key" not in df.columns:
        raise InputDataError(
            f"meta CSV needs a 'key' column (file name, stem, SOPInstanceUID or "
            f"SeriesInstanceUID); found {list(df.columns)}",
            path,
        )
    unknown = [c for c in df.columns if c not in META_COLUMNS]
    if unknown:
        raise InputDataError(f"meta CSV has unknown column(s) {unknown}; allowed: {list(META_COLUMNS)}", path)
    meta: dict[str, dict] = {}
    errors = []
    for index, row in df.iterrows():
        line = int(index) + 2
        values: dict[str, object] = {}
        bad = []
        for column in df.columns:
            text = row[column].strip()
            if column == "key" or not text:
                continue
            if column == "split":
                if text.lower() not in SPLITS:
                    bad.append(f"split {text!r} not one of {'|'.join(SPLITS)}")
                values[column] = text.lower()
            elif column == "sex":
                values[column] = normalise_sex(text, strict=False)
                if values[column] is None:
                    bad.append(f"sex {text!r} not M/F")
            elif column in ("patient_key", "site"):
                values[column] = text
            else:
                try:
                    values[column] = float(text)
                except ValueError:
                    bad.append(f"{column} {text!r} is not a number")
        if column_ok := values.get("height_m"):
            assert isinstance(column_ok, float)  # only the float(text) branch above sets it
            if not 0.5 <= column_ok <= 2.6:
                bad.append(f"height_m {column_ok} outside 0.5..2.6 metres")
        key = row["key"].strip()
        if not key:
            bad.append("key empty")
        if bad:
            errors.append(f"line {line}: " + "; ".join(bad))
        meta[key] = values
    if errors:
        raise InputDataError("bad meta row(s):\n  " + "\n  ".join(errors), path)
    return meta


def _lookup(meta: dict[str, dict], path: Path, rel: str, header: _Header | None) -> dict:
    keys = [rel, path.name, _stem(path)]
    if header is not None:
        keys += [header.sop]
    for key in keys:
        if key and key in meta:
            return {**meta[key], "_meta_key": key}
    if header is not None and header.series in meta:
        return {**meta[header.series], "_meta_key": header.series}
    return {"_meta_key": None}


# ---- masks and rows ---------------------------------------------------------------------------------
def _match_mask(ct: CTSlice, path: Path, masks: list[_Mask], rejected: list[tuple[str, str]]):
    stems = {_stem(path)}
    if ct.sop_instance_uid:
        stems.add(ct.sop_instance_uid)
    candidates = [m for m in masks if ct.sop_instance_uid and ct.sop_instance_uid in m.refs]
    candidates += [m for m in masks if m.keys & stems and m not in candidates]
    for m in candidates:
        m.used = True
        try:
            return m.path, read_mask(m.path, ct)
        except InputDataError as error:
            rejected.append((str(m.path), _reason(error, m.path) + f"; image {path.name} kept without mask"))
    return None, None


def _row(ct, rel, path, header, info, mask_path, mask, out_manifest, pz, holdout_fraction, rule, site) -> dict:
    if info.get("patient_key"):
        identity = "key:" + str(info["patient_key"])
    elif header is not None and header.patient:
        identity = "dicom:" + header.patient
    else:
        identity = "file:" + rel
    patient_id = pz(identity)
    sex = info.get("sex") or ct.sex
    height = info.get("height_m", ct.height_m)
    weight = info.get("weight_kg", ct.weight_kg)
    age = info.get("age", ct.age_years)
    split = info.get("split")
    if split is None:
        split = "unlabelled" if mask is None else ("holdout" if pz.fraction(identity) < holdout_fraction else "train")
    sma = smi_value = verdict = None
    if mask is not None:
        sma = area_cm2(mask, ct.spacing_mm)
        smi_value = smi(sma, height)
        verdict = rule.is_sarcopenic(smi_value, sex, bmi(weight, height))
    row = {
        "patient_id": patient_id,
        "image_path": _relative(path, out_manifest),
        "mask_path": _relative(mask_path, out_manifest) if mask_path else "",
        "sex": sex or "",
        "height_m": height,
        "weight_kg": weight,
        "age": age,
        "split": split,
        "sma_cm2": sma,
        "smi_cm2_m2": smi_value,
        "sarcopenic": verdict,
        "_meta_key": info.get("_meta_key"),
    }
    if site or info.get("site"):
        row["site"] = info.get("site") or site
    return row


def _relative(path: Path, manifest: Path) -> str:
    return Path(os.path.relpath(path, manifest.parent)).as_posix()
