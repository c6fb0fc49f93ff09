"""Write synthetic hospitals to disk: DICOM slices, NIfTI body-composition label maps and manifest.csv.

A site folder looks exactly like what ``sarcofed ingest`` produces from a real hospital, so every
later stage (training, evaluation, the federated simulation) reads synthetic and real data the same
way. A consortium is a set of sites described by one TOML file; ``ensure_consortium`` regenerates
only the sites whose description (or the phantom itself, via GENERATOR_VERSION) changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from common.clinical import area_cm2, bmi, get_cutoff, smi
from common.errors import ConfigError
from common.phantom.case import synth_case
from common.phantom.profiles import SiteProfile, get_profile
from common.phantom.series_site import write_series_site

# Bump whenever the phantom's output changes for a given seed: cached consortia are then rebuilt.
GENERATOR_VERSION = "phantom-2"
SITE_FILE = "site.json"
SERIES_KEYS = ("series", "series_format", "series_grid")
CUTOFF = "prado2008"
MASK_KINDS = ("tissues", "muscle")


def _split(n_labelled: int, holdout_fraction: float, seed: int) -> list[str]:
    """train/holdout labels for the labelled patients: a seeded shuffle, at least one of each when n >= 2."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ConfigError(f"holdout_fraction must be within 0..1 (exclusive of 1), got {holdout_fraction}")
    n_hold = int(round(n_labelled * holdout_fraction))
    if n_labelled >= 2 and holdout_fraction > 0:
        n_hold = min(max(n_hold, 1), n_labelled - 1)
    order = np.random.default_rng([seed, 0x5B117]).permutation(n_labelled)
    splits = ["train"] * n_labelled
    for i in order[:n_hold]:
        splits[int(i)] = "holdout"
    return splits


def write_site(
    out_dir: str | Path,
    site: str,
    profile: SiteProfile | str,
    n_patients: int,
    n_unlabelled: int,
    seed: int,
    holdout_fraction: float = 0.3,
    masks: str = "tissues",
) -> Path:
    """Generate one hospital into ``out_dir`` and return the path of its manifest.csv.

    Parameters
    ----------
    out_dir : folder to write (created); holds ``images/*.dcm``, ``masks/*.nii.gz`` (label maps: 1 muscle,
        2 IMAT, 3 VAT, 4 SAT), ``manifest.csv``
        and ``site.json`` (what made it).
    site : site name, written to the manifest's ``site`` column and into the pseudonyms.
    profile : SiteProfile or profile name (see ``PROFILES``).
    n_patients : labelled patients (mask + reference SMA), split train / holdout.
    n_unlabelled : further patients with image only (split ``unlabelled``, no reference values),
        for self-supervised pretraining.
    seed : patient i is generated from ``(seed, i)``: same seed, same pixels.
    holdout_fraction : float (default: 0.3)
        Share of labelled patients kept for evaluation.
    masks : "tissues" (default) or "muscle"
        What the site's annotators drew: the full label map, or skeletal muscle only (as hospitals with
        older Slice-O-Matic-style outlines have).
    """
    from pydicom.uid import generate_uid

    from common.data.dicom_io import write_ct_dicom
    from common.data.manifest import MANIFEST_COLUMNS, write_manifest
    from common.data.mask_io import write_mask_nifti

    if isinstance(profile, str):
        profile = get_profile(profile)
    if masks not in MASK_KINDS:
        raise ConfigError(f"site {site!r}: masks must be one of {', '.join(MASK_KINDS)}, got {masks!r}")
    if n_patients < 0 or n_unlabelled < 0 or n_patients + n_unlabelled < 1:
        raise ConfigError(
            f"site {site!r}: need at least one patient, got patients={n_patients}, unlabelled={n_unlabelled}"
        )
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    cutoff = get_cutoff(CUTOFF)
    splits = _split(n_patients, holdout_fraction, seed) + ["unlabelled"] * n_unlabelled
    study_root = f"{site}/{seed}"
    rows = []
    started = time.perf_counter()
    for i, split in enumerate(splits):
        case = synth_case((int(seed), i), profile)
        pid = f"SYN-{site}-{i:04d}"
        image_rel = f"images/{pid}.dcm"
        ct = write_ct_dicom(
            out / image_rel,
            case.hu,
            case.spacing_mm,
            patient_id=pid,
            sex=case.sex,
            height_m=case.height_m,
            weight_kg=case.weight_kg,
            age_years=case.age_years,
            rows_bottom_up=case.rows_bottom_up,
            study_uid=generate_uid(entropy_srcs=[study_root, pid, "study"]),
            series_uid=generate_uid(entropy_srcs=[study_root, pid, "series"]),
            contrast=case.contrast,
            description=f"L3 synthetic ({profile.name})",
            thickness_mm=case.thickness_mm,
        )
        row: dict[str, object] = {
            "patient_id": pid,
            "image_path": image_rel,
            "mask_path": "",
            "sex": case.sex,
            "height_m": case.height_m,
            "weight_kg": case.weight_kg,
            "age": case.age_years,
            "split": split,
            "sma_cm2": None,
            "smi_cm2_m2": None,
            "sarcopenic": None,
            "site": site,
            "profile": profile.name,
            "contrast": case.contrast,
        }
        if split != "unlabelled":
            mask_rel = f"masks/{pid}.nii.gz"
            write_mask_nifti(out / mask_rel, case.tissue_map if masks == "tissues" else case.muscle, ct.geometry)
            sma = area_cm2(case.muscle, ct.spacing_mm)  # native pixel area of the file as written
            index = smi(sma, case.height_m)
            row.update(
                mask_path=mask_rel,
                sma_cm2=round(sma, 3),
                smi_cm2_m2=round(index, 3) if index is not None else None,
                sarcopenic=cutoff.is_sarcopenic(index, case.sex, bmi(case.weight_kg, case.height_m)),
            )
        rows.append(row)
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + ["site", "profile", "contrast"])
    manifest = write_manifest(df, out / "manifest.csv")
    info = {
        "generator": GENERATOR_VERSION,
        "site": site,
        "profile": profile.to_dict(),
        "patients": n_patients,
        "unlabelled": n_unlabelled,
        "seed": int(seed),
        "holdout_fraction": holdout_fraction,
        "cutoff": CUTOFF,
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / SITE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return manifest


# ---- consortia --------------------------------------------------------------------------------------


def load_consortium(config: str | Path | Mapping) -> dict[str, dict]:
    """Read a consortium description into ``{site: {profile, patients, unlabelled, seed, holdout_fraction}}``.

    The TOML (or dict) has one table per site under ``sites``::

        [sites.st-olav]
        profile = "geriatric-oncology"   # a name in PROFILES
        patients = 120                    # labelled
        unlabelled = 60
        seed = 11
        holdout_fraction = 0.3            # optional
        overrides = { noise_hu = [15, 22] }   # optional SiteProfile fields
        masks = "muscle"                  # optional: muscle-only masks (default "tissues": 0-4 label maps)
        series = 16                       # optional: CT series T10-S1 for the l3 phase (series.csv)
        series_format = "nifti"           # optional: dicom (default) | nifti
        series_grid = 128                 # optional: pixels a side of the series (default 256)

    Raises ConfigError naming the file and the site for anything missing or unknown.
    """
    source = "consortium config"
    if isinstance(config, (str, Path)):
        path = Path(config)
        source = str(path)
        if not path.is_file():
            raise ConfigError("consortium config not found; see simulations/consortia/demo.toml for the format", path)
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"not valid TOML: {error}", path) from None
    else:
        data = dict(config)
    sites = data.get("sites")
    if not isinstance(sites, Mapping) or not sites:
        raise ConfigError(f"{source}: expected a [sites.NAME] table per site, found keys {sorted(data)}")
    out: dict[str, dict] = {}
    for name, spec in sites.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{source}: site {name!r} must be a table")
        allowed = {"profile", "patients", "unlabelled", "seed", "holdout_fraction", "overrides", "masks", *SERIES_KEYS}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ConfigError(f"{source}: site {name!r} has unknown key(s) {unknown}")
        for key in ("profile", "patients", "seed"):
            if key not in spec:
                raise ConfigError(f"{source}: site {name!r} lacks {key!r}")
        profile = get_profile(str(spec["profile"])).with_overrides(**dict(spec.get("overrides", {})))
        out[str(name)] = {
            "profile": profile,
            "patients": int(spec["patients"]),
            "unlabelled": int(spec.get("unlabelled", 0)),
            "seed": int(spec["seed"]),
            "holdout_fraction": float(spec.get("holdout_fraction", 0.3)),
        }
        if spec.get("masks", "tissues") != "tissues":  # only then: a site with full label maps keeps its fingerprint
            kind = str(spec["masks"])
            if kind not in MASK_KINDS:
                kinds = ", ".join(MASK_KINDS)
                raise ConfigError(f"{source}: site {name!r}: masks must be one of {kinds}, got {kind!r}")
            out[str(name)]["masks"] = kind
        if int(spec.get("series", 0)) > 0:  # only then: a site without series keeps its fingerprint
            out[str(name)].update(
                series=int(spec["series"]),
                series_format=str(spec.get("series_format", "dicom")),
                series_grid=int(spec.get("series_grid", 256)),
            )
    return out


def _fingerprint(site: str, spec: dict) -> str:
    payload = {"generator": GENERATOR_VERSION, "site": site, **spec, "profile": spec["profile"].to_dict()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def write_consortium(config: str | Path | Mapping, out_dir: str | Path) -> dict[str, Path]:
    """Generate every site of ``config`` into ``out_dir/<site>/``; returns ``{site: manifest path}``."""
    sites = load_consortium(config)
    out = Path(out_dir)
    return {name: _write_one(out, name, spec) for name, spec in sites.items()}


def ensure_consortium(config: str | Path | Mapping, cache_dir: str | Path, workers: int = 1) -> dict[str, Path]:
    """Like :func:`write_consortium`, but reuse each site already in ``cache_dir`` with the same description.

    A site is regenerated when its folder, manifest or ``site.json`` is missing, or when the
    fingerprint of its description (profile fields, sizes, seed, generator version) differs. A folder
    that exists without ``site.json`` is not ours: it is never deleted (ConfigError). ``workers > 1``
    writes that many sites at once, each in its own process (same files: every site has its own seed).
    """
    import fcntl

    sites = load_consortium(config)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    # Simulated clients may call this at the same time: one generates, the others wait and reuse.
    with open(cache / ".consortium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(sites, cache, workers)


def _ensure_locked(sites: dict[str, dict], cache: Path, workers: int) -> dict[str, Path]:
    manifests: dict[str, Path] = {}
    todo: dict[str, dict] = {}
    for name, spec in sites.items():
        folder = cache / name
        info = folder / SITE_FILE
        manifest = folder / "manifest.csv"
        if info.is_file() and manifest.is_file():
            try:
                done = json.loads(info.read_text()).get("fingerprint")
            except json.JSONDecodeError:
                done = None
            if done == _fingerprint(name, spec):
                manifests[name] = manifest
                continue
        todo[name] = spec
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: the caller may hold threads (torch, Ray) that a forked child must not inherit
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {name: pool.submit(_write_one, cache, name, spec) for name, spec in todo.items()}
            manifests.update({name: future.result() for name, future in futures.items()})
    else:
        manifests.update({name: _write_one(cache, name, spec) for name, spec in todo.items()})
    return {name: manifests[name] for name in sites}


def _write_one(out: Path, name: str, spec: dict) -> Path:
    """Write a site into a temporary folder, then swap it in, so a crash never leaves half a site."""
    folder = out / name
    if folder.exists() and any(folder.iterdir()) and not (folder / SITE_FILE).is_file():
        raise ConfigError(
            f"{folder} exists and was not written by the phantom (no {SITE_FILE}); "
            "choose another output folder or remove it yourself"
        )
    partial = out / f".{name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    write_site(
        partial,
        name,
        spec["profile"],
        spec["patients"],
        spec["unlabelled"],
        spec["seed"],
        spec["holdout_fraction"],
        masks=spec.get("masks", "tissues"),
    )
    if spec.get("series"):
        write_series_site(
            partial,
            name,
            spec["profile"],
            spec["series"],
            spec["seed"],
            fmt=spec["series_format"],
            grid=spec["series_grid"],
        )
    info_path = partial / SITE_FILE
    info = json.loads(info_path.read_text())
    info["fingerprint"] = _fingerprint(name, spec)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder / "manifest.csv"


def summarise_site(manifest_path: str | Path) -> dict[str, object]:
    """The numbers a person checks first about a site: sizes, sex and age mix, SMA and prevalence.

    Reads the manifest and ``site.json`` beside it; SMA means are over labelled patients (cm2).
    """
    from common.data.manifest import read_manifest

    path = Path(manifest_path)
    df = read_manifest(path)
    info_path = path.parent / SITE_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    labelled = df[df["split"] != "unlabelled"]

    def mean(series: pd.Series) -> float | None:
        return round(float(series.mean()), 1) if len(series) else None

    verdicts = labelled["sarcopenic"].dropna()
    return {
        "site": str(df["site"].iloc[0]) if "site" in df.columns and len(df) else path.parent.name,
        "profile": (info.get("profile") or {}).get("name"),
        "manifest": str(path),
        "train": int((df["split"] == "train").sum()),
        "holdout": int((df["split"] == "holdout").sum()),
        "unlabelled": int((df["split"] == "unlabelled").sum()),
        "male_pct": round(100.0 * float((df["sex"] == "M").mean()), 1) if len(df) else None,
        "age_mean": mean(df["age"]),
        "sma_men_cm2": mean(labelled.loc[labelled["sex"] == "M", "sma_cm2"]),
        "sma_women_cm2": mean(labelled.loc[labelled["sex"] == "F", "sma_cm2"]),
        "sarcopenic_pct": round(100.0 * float(verdicts.astype(bool).mean()), 1) if len(verdicts) else None,
        "cutoff": info.get("cutoff", CUTOFF),
    }
