"""Turn a hospital's folder of DICOM / NIfTI (and masks) into a checked manifest.csv + rejected.csv.

What becomes a row
------------------
* A DICOM CT series of one slice is one row. Slices are grouped by SeriesInstanceUID; where it is
  blank, by patient, frame of reference, orientation, pixel spacing and size (a blank frame of
  reference too: each file on its own, as anonymised single slices are).
* A series of several slices (ordered by ImagePositionPatient along the slice normal) becomes one row,
  its L3 slice, chosen in this order (column ``slice_chosen_by``): ``meta``, a meta row whose key is
  that slice's file name, path or SOPInstanceUID, or whose key is the SeriesInstanceUID with
  ``l3_instance`` (InstanceNumber) or ``l3_z_mm`` (nearest slice position); ``annotated``, the one
  slice a mask is drawn on; ``located``, the slice the ``locator`` finds (``l3_confidence``), when
  one is given. Otherwise, or when L3 is not in the series, the series is rejected with the reason.
* A NIfTI file (not named like a mask) is an image when it holds one slice. A volume is located the
  same way: the chosen slice is written to ``extracted/`` beside the manifest and that file is the
  row's image. Without a locator volumes are rejected (extract the L3 slice first).
* Rows from series carry ``source_series`` (UID, or the volume's path) and ``series_slice_index``
  (place in the sorted series; for a NIfTI volume the index along its third array axis).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from common.clinical import MUSCLE, area_cm2, bmi, get_cutoff, normalise_sex, smi
from common.data.ctslice import CTSlice
from common.data.dicom_io import is_nifti, read_ct_slice, read_dataset
from common.data.folder_walk import is_under, walk_files
from common.data.manifest import MANIFEST_COLUMNS, SPLITS, write_manifest
from common.data.mask_io import SEG_STORAGE, read_mask, referenced_sop_uids
from common.data.pseudonym import Pseudonymiser
from common.data.series import (
    CTSeries,
    group_key,
    is_nifti_volume,
    nifti_volume_header,
    read_nifti_series,
    series_from_files,
)
from common.errors import InputDataError, SarcoFedError

if TYPE_CHECKING:  # torch loads only when a locator is given
    from common.train.locate import L3Location

MASK_SUFFIXES = ("_mask", "_seg", "_label", "_muscle", ".seg")
SERIES_COLUMNS = ("source_series", "series_slice_index", "slice_chosen_by", "l3_confidence")
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
    how: dict = field(default_factory=dict)  # for a slice chosen from a series: SERIES_COLUMNS values


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
    locator: Callable[[CTSeries], L3Location] | None = None,
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
    locator : finds L3 in a series (``common.train.locate.locate_l3`` with a trained model), for
        series and volumes whose L3 slice neither the meta CSV nor a mask names.
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

    chosen = _choose_slices(headers, meta, masks, locator, rejected)
    volumes = {}
    for path in list(nifti_images):
        if is_nifti_volume(path):
            nifti_images.remove(path)
            extracted = _extract_from_volume(path, input_dir, out_manifest.parent, locator, rejected)
            if extracted is not None:
                nifti_images.append(extracted[0])
                volumes[extracted[0]] = extracted[1]
    images = [(h.path, h) for h in chosen] + [(p, None) for p in nifti_images]
    images.sort(key=lambda item: str(item[0]))

    rows: list[dict] = []
    for path, header in _track(images, "Reading images", progress):
        ct = _read_first_good([path] + (header.copies if header else []), rejected)
        if ct is None:
            continue
        assert ct.path is not None  # read_ct_slice records the file it read
        path = ct.path
        origin = volumes.get(path)
        rel = (origin["volume"] if origin else path).relative_to(input_dir).as_posix()
        info = _lookup(meta, origin["volume"] if origin else path, rel, header)
        mask_path, mask = _match_mask(ct, path, masks, rejected)
        row = _row(ct, rel, path, header, info, mask_path, mask, out_manifest, pz, holdout_fraction, rule, site)
        if origin:
            row.update(origin["how"])
        elif header is not None and header.how:
            row.update(header.how)
        rows.append(row)

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

    extra = [c for c in ("site", *SERIES_COLUMNS) if any(c in r for r in rows)]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + extra)
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
        series=_series_key(ds, path),
        patient=str(ds.get("PatientID", "") or ""),
        instance=number,
        z=z,
    )


def _series_key(ds, path: Path) -> str:
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if uid:
        return uid
    if str(ds.get("FrameOfReferenceUID", "") or "").strip():  # one scan of one patient: group its slices
        return f"no-series-uid:{ds.get('PatientID', '')}:{group_key(ds)}"
    return f"no-series:{path}"


def _choose_slices(
    headers: list[_Header],
    meta: dict[str, dict],
    masks: list[_Mask],
    locator: Callable[[CTSeries], L3Location] | None,
    rejected: list[tuple[str, str]],
) -> list[_Header]:
    """One header per series: the only slice, or its L3 slice (module docstring: meta, annotated, located)."""
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
        source = uid if not uid.startswith("no-series") else items[0].path.parent.name
        folder = items[0].path.parent
        pick, how, why = _pick_slice(uid, items, meta, masks, locator)
        if pick is None:
            rejected.append(
                (str(folder), f"CT series of {len(items)} slices (z {items[0].z:.1f}..{items[-1].z:.1f} mm): {why}")
            )
            continue
        pick.how = {"source_series": source, "series_slice_index": items.index(pick), **how}
        chosen.append(pick)
    return chosen


def _pick_slice(uid, items, meta, masks, locator) -> tuple[_Header | None, dict, str]:
    named = [h for h in items if any(k in meta for k in (h.rel, h.path.name, _stem(h.path), h.sop))]
    if len(named) == 1:
        return named[0], {"slice_chosen_by": "meta"}, ""
    if len(named) > 1:
        return None, {}, f"{len(named)} slices of it are named in --meta; name exactly one"
    if uid in meta:
        row = meta[uid]
        if row.get("l3_instance") is not None:
            pick = next((h for h in items if h.instance == int(row["l3_instance"])), None)
            return pick, {"slice_chosen_by": "meta"}, f"no slice has InstanceNumber {row['l3_instance']}"
        if row.get("l3_z_mm") is not None:
            return min(items, key=lambda h: abs(h.z - float(row["l3_z_mm"]))), {"slice_chosen_by": "meta"}, ""
    drawn = [h for h in items if any(m.keys & {_stem(h.path), h.sop} or h.sop in m.refs for m in masks)]
    if len(drawn) == 1:
        return drawn[0], {"slice_chosen_by": "annotated"}, ""
    if len(drawn) > 1:
        return None, {}, f"masks are drawn on {len(drawn)} of its slices; keep the L3 one"
    if locator is None:
        return (
            None,
            {},
            (
                "name its L3 slice in --meta (key = file name or SOPInstanceUID, or key = SeriesInstanceUID with "
                "l3_instance / l3_z_mm), draw its mask, or give --locator MODEL to find it"
            ),
        )
    try:
        series = series_from_files(items[0].path.parent, [h.path for h in items])
    except InputDataError as error:
        return None, {}, _reason(error, error.path or items[0].path)
    location = locator(series)
    if not location.found or location.slice_k is None:
        return None, {}, f"L3 not in this series (it covers about {location.covers[0]}-{location.covers[1]})"
    if location.low_confidence:
        return None, {}, f"L3 found with low confidence ({location.confidence:.2f}); name the slice in --meta"
    path = series.paths[location.slice_k]
    pick = next(h for h in items if h.path == path)
    return pick, {"slice_chosen_by": "located", "l3_confidence": round(location.confidence, 3)}, ""


def _extract_from_volume(
    path: Path, root: Path, out_dir: Path, locator: Callable[[CTSeries], L3Location] | None, rejected: list
) -> tuple[Path, dict] | None:
    """Locate L3 in a NIfTI volume and write that slice to ``out_dir/extracted/`` (None: rejected, why)."""
    import nibabel as nib

    try:
        nifti_volume_header(path)
        if locator is None:
            rejected.append((str(path), "NIfTI volume: extract the L3 slice first, or give --locator MODEL to find it"))
            return None
        series = read_nifti_series(path)
    except InputDataError as error:
        rejected.append((str(path), _reason(error, path)))
        return None
    location = locator(series)
    if not location.found or location.slice_k is None or location.slice_index is None:
        covers = f"{location.covers[0]}-{location.covers[1]}"
        rejected.append((str(path), f"L3 not in this volume (it covers about {covers})"))
        return None
    if location.low_confidence:
        rejected.append((str(path), f"L3 found with low confidence ({location.confidence:.2f}); extract it by hand"))
        return None
    img = nib.load(str(path))
    k = location.slice_index
    data = np.asarray(img.dataobj)[:, :, k : k + 1]  # type: ignore[attr-defined]  # a Nifti1Image here
    affine = img.affine.copy()  # type: ignore[attr-defined]
    affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(k)]) + affine[:3, 3]
    target = out_dir / "extracted" / f"{_stem(path)}.slice{k:04d}.nii.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine, header=img.header), str(target))
    how = {
        "source_series": path.relative_to(root).as_posix(),
        "series_slice_index": k,
        "slice_chosen_by": "located",
        "l3_confidence": round(location.confidence, 3),
    }
    return target, {"volume": path, "how": how}


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
        sma = area_cm2(mask == MUSCLE, ct.spacing_mm)
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
