"""The paper's point, measured on one synthetic site: SSL pretraining with few labels, image vs quantitative verdict.

    python -m simulations.paper_check --preset tiny                 # about a minute on one CPU thread
    python -m simulations.paper_check --preset demo --ssl-epochs 8 --seg-epochs 60 --cls-epochs 10

Steps (one seed throughout; every number printed comes from this run):

1. Generate (or reuse from ``.cache/paper_check/sites``) one phantom hospital with enough holdout patients
   for accuracies to mean something (default 100 labelled, 35% holdout, 60 unlabelled for SSL).
2. SSL (SMIT) over the train + unlabelled images.
3. (a) Segmentation on only the first ``--labelled`` train slices (manifest order), once from the SSL
   encoder and once from scratch. Both models are built from the same initial weights (the scratch model
   is the SSL model's state before SSL), train with the same epochs, seed and augmentation stream, and
   are scored on the holdout by ``common.train.evaluate.evaluate_cases`` (HU window on; Dice raw too).
4. (c) Segmentation from the SSL encoder on *all* labelled train slices (the full local pipeline).
5. (b) Classification on all labelled train slices: the ViT head on the SSL + full-seg encoder (phase
   cls, the paper's qualitative approach) and the MONAI DenseNet121 baseline from scratch; holdout
   accuracy, balanced accuracy and AUROC of each beside the quantitative verdict (predicted SMA -> SMI
   with height -> cutoff) of every segmentation model. The reference verdict is the cutoff applied to
   the reference mask's SMI (as in ``evaluate_cases``). The quantitative verdict's AUROC ranks patients
   by the SMI margin (cutoff - SMI_pred) / cutoff.

Aggregates here are over the holdout of a simulation, so the 5-patient suppression of site reports is
off (``min_cohort=1``); the JSON gives every value's n. Writes ``--out``/paper_check.md, paper_check.json
and per-patient CSVs per model; ``paper_check.partial.json`` holds the steps done so far while it runs.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from simulations.flower_home import PROJECT_ROOT

PROFILE = "geriatric-oncology"  # older patients, about 60% sarcopenic: both classes well represented
SITE_SEED = 31
CUTOFF = "prado2008"


@dataclass
class Step:
    """One row of the report: what ran, how long it took, and its holdout numbers."""

    key: str
    label: str
    train_s: float = math.nan
    eval_s: float = math.nan
    slices: int | None = None
    epochs: int | None = None
    verdict_from: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


def _site(cache: Path, patients: int, unlabelled: int, holdout_fraction: float) -> tuple[Path, bool]:
    """(manifest of the phantom site, whether it was reused): generated once per description into ``cache``."""
    from common.phantom import ensure_consortium

    name = f"paper-check-{patients}p-{unlabelled}u"
    spec = {
        "sites": {
            name: {
                "profile": PROFILE,
                "patients": patients,
                "unlabelled": unlabelled,
                "seed": SITE_SEED,
                "holdout_fraction": holdout_fraction,
            }
        }
    }
    info = cache / name / "site.json"
    before = info.stat().st_mtime_ns if info.is_file() else None
    manifest = Path(ensure_consortium(spec, cache)[name])
    return manifest, before is not None and info.stat().st_mtime_ns == before


def verdict_metrics(pred: Sequence[object], ref: Sequence[object], scores: Sequence[float]) -> dict[str, float | int]:
    """Accuracy, balanced accuracy, sensitivity, specificity (with counts) and AUROC of one verdict."""
    from common.metrics import auroc, binary_counts

    c = binary_counts(pred, ref)
    return {
        "accuracy": c.accuracy,
        "balanced_accuracy": c.balanced_accuracy,
        "sensitivity": c.sensitivity,
        "specificity": c.specificity,
        "auroc": auroc(scores, ref),
        "n": c.n,
        "n_pos": c.n_pos,
        "n_neg": c.n_neg,
        "n_skipped": c.n_skipped,
    }


def _smi_margin(per_patient: pd.DataFrame, weights: dict[str, float], rule: Any) -> list[float]:
    """(cutoff - SMI_pred) / cutoff per patient: higher = more sarcopenic; NaN without SMI or sex.

    ``weights``: patient_id -> kg (a rule with a BMI-dependent threshold needs it; NaN when unknown).
    """
    from common.clinical import bmi, normalise_sex

    out = []
    for _, r in per_patient.iterrows():
        sex = normalise_sex(r["sex"], strict=False)
        smi = r["smi_pred"]
        if sex is None or smi is None or not math.isfinite(float(smi)):
            out.append(math.nan)
            continue
        weight = weights.get(str(r["patient_id"]))
        bmi_value = bmi(weight, r["height_m"]) if weight is not None and math.isfinite(weight) else None
        if sex == "M" and rule.men_bmi25 is not None and bmi_value is None:
            out.append(math.nan)
            continue
        thr = rule.threshold(sex, bmi_value)
        out.append((thr - float(smi)) / thr)
    return out


def _seg_step(
    key: str,
    label: str,
    model: Any,
    preset: Any,
    rows: pd.DataFrame,
    manifest: pd.DataFrame,
    epochs: int,
    seed: int,
    out: Path,
    progress: bool,
) -> tuple[Step, pd.DataFrame]:
    """Train ``model`` in phase seg on ``rows`` and score it on the holdout (quantitative verdict included).

    Returns the report row and the per-patient table of ``evaluate_cases``.
    """
    from common.clinical import get_cutoff
    from common.train.evaluate import evaluate_cases

    data, result, train_s = _timed_training(model, "seg", preset, rows, epochs, seed, progress)
    t1 = time.perf_counter()
    per_patient, summary = evaluate_cases(
        model, preset, manifest, cutoff=CUTOFF, split="holdout", min_cohort=1, muscle_hu_range=True
    )
    eval_s = time.perf_counter() - t1
    per_patient.to_csv(out / f"per_patient_{key}.csv", index=False)
    weights = dict(zip(manifest["patient_id"].astype(str), pd.to_numeric(manifest["weight_kg"]), strict=True))
    verdict = verdict_metrics(
        list(per_patient["sarcopenic_pred"]),
        list(per_patient["sarcopenic_ref"]),
        _smi_margin(per_patient, weights, get_cutoff(CUTOFF)),
    )
    metrics = {
        "n": summary["n"],
        "dice_mean": summary["dice_mean"],
        "dice_raw_mean": summary["dice_raw_mean"],
        "sma_abs_pct_err_mean": summary["sma_abs_pct_err_mean"],
        "sma_bias_cm2": summary["sma_bias_cm2"],
        **{f"verdict_{k}": v for k, v in verdict.items()},
    }
    step = Step(key, label, train_s, eval_s, len(data), epochs, "predicted SMA -> SMI -> " + CUTOFF, metrics, result)
    return step, per_patient


def _timed_training(
    model: Any, phase: str, preset: Any, rows: pd.DataFrame, epochs: int, seed: int, progress: bool
) -> tuple[Any, dict, float]:
    """Build the phase's dataset and train on it: (dataset, train_phase result + "load_s", seconds for both)."""
    from common.train.data import SliceDataset
    from common.train.loops import train_phase

    t0 = time.perf_counter()
    data = SliceDataset(rows, preset, phase, augment=True, seed=seed)
    load_s = time.perf_counter() - t0
    result = {**train_phase(model, phase, data, epochs=epochs, seed=seed, progress=progress), "load_s": load_s}
    return data, result, time.perf_counter() - t0


def _cls_step(
    key: str,
    label: str,
    model: Any,
    preset: Any,
    rows: pd.DataFrame,
    cts: list,
    ref: Sequence[object],
    ids: list[str],
    epochs: int,
    seed: int,
    out: Path,
    progress: bool,
) -> Step:
    """Train ``model`` in phase cls on ``rows``; score P(sarcopenic) >= 0.5 on the holdout CTs against ``ref``."""
    from common.train.infer import classify_batch

    data, result, train_s = _timed_training(model, "cls", preset, rows, epochs, seed, progress)
    t1 = time.perf_counter()
    probs = classify_batch(model, cts, preset)
    eval_s = time.perf_counter() - t1
    pred = [bool(p >= 0.5) for p in probs]
    pd.DataFrame({"patient_id": ids, "cls_prob": probs, "sarcopenic_pred": pred, "sarcopenic_ref": ref}).to_csv(
        out / f"per_patient_{key}.csv", index=False
    )
    metrics = {"n": len(probs), **{f"verdict_{k}": v for k, v in verdict_metrics(pred, ref, probs).items()}}
    return Step(key, label, train_s, eval_s, len(data), epochs, "image classifier P >= 0.5", metrics, result)


def run(
    preset_name: str = "tiny",
    labelled: int = 20,
    ssl_epochs: int | None = None,
    seg_epochs: int | None = None,
    cls_epochs: int | None = None,
    full_epochs: int | None = None,
    out: str | Path = "runs/paper_check",
    patients: int = 100,
    unlabelled: int = 60,
    holdout_fraction: float = 0.35,
    seed: int = 0,
    cache: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every step and write the report; returns the JSON-able result (also in ``out``/paper_check.json).

    Parameters
    ----------
    preset_name : "tiny" | "demo" | "full"
    labelled : int (default: 20) labelled train slices for the few-label comparison (a)
    ssl_epochs, seg_epochs, cls_epochs : int (default: the preset's epochs for each phase)
    full_epochs : int (default: ``seg_epochs``) seg epochs on all labelled train slices (c)
    out : folder for paper_check.md / .json and the per-patient CSVs (created)
    patients, unlabelled, holdout_fraction : size of the phantom site (labelled patients, image-only
        patients, share of labelled patients held out)
    seed : int (default: 0) seeds model initialisation, shuffling, masking and augmentation
    cache : folder for generated sites (default: .cache/paper_check/sites under the checkout)
    progress : show tqdm bars while training
    """
    import torch

    threads = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    # AdamW's second moments underflow into denormals on CPU and slow steps several-fold (simulations.bench_train).
    torch.set_flush_denormal(True)
    try:
        return _run(
            preset_name,
            labelled,
            ssl_epochs,
            seg_epochs,
            cls_epochs,
            full_epochs,
            Path(out),
            patients,
            unlabelled,
            holdout_fraction,
            seed,
            cache,
            progress,
        )
    finally:  # leave the process as it was (tests run in one interpreter)
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def _run(
    preset_name: str,
    labelled: int,
    ssl_epochs: int | None,
    seg_epochs: int | None,
    cls_epochs: int | None,
    full_epochs: int | None,
    out: Path,
    patients: int,
    unlabelled: int,
    holdout_fraction: float,
    seed: int,
    cache: str | Path | None,
    progress: bool,
) -> dict[str, Any]:
    import torch

    from common.data.manifest import load_case, read_manifest
    from common.errors import ConfigError
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel
    from common.phantom.site import summarise_site
    from common.train.data import SliceDataset, select_rows
    from common.train.loops import seed_everything, train_phase

    preset = get_preset(preset_name)
    ssl_epochs = preset.epochs("ssl") if ssl_epochs is None else int(ssl_epochs)
    seg_epochs = preset.epochs("seg") if seg_epochs is None else int(seg_epochs)
    cls_epochs = preset.epochs("cls") if cls_epochs is None else int(cls_epochs)
    full_epochs = seg_epochs if full_epochs is None else int(full_epochs)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps: list[Step] = []

    def log(text: str) -> None:
        """Print a timed line and save the steps done so far (a stopped run still leaves its numbers)."""
        print(f"[{time.perf_counter() - started:7.1f} s] {text}", flush=True)
        partial = {"steps": [vars(s) for s in steps], "elapsed_s": time.perf_counter() - started}
        (out / "paper_check.partial.json").write_text(json.dumps(partial, indent=2, default=_json_default) + "\n")

    # 1. the site
    t0 = time.perf_counter()
    manifest_path, reused = _site(
        Path(cache) if cache else PROJECT_ROOT / ".cache" / "paper_check" / "sites",
        patients,
        unlabelled,
        holdout_fraction,
    )
    manifest = read_manifest(manifest_path)
    site = summarise_site(manifest_path)
    train_rows = select_rows(manifest, "seg").reset_index(drop=True)  # labelled train slices, manifest order
    if labelled < 1 or labelled > len(train_rows):
        raise ConfigError(
            f"--labelled {labelled}: the site has {len(train_rows)} labelled train slices; "
            "choose 1..that or raise --patients"
        )
    few_rows = train_rows.head(labelled)
    holdout = manifest[(manifest["split"] == "holdout") & (manifest["mask_abspath"].str.len() > 0)]
    steps.append(
        Step(
            "site",
            f"phantom site ({PROFILE}): {site['train']} train / {site['holdout']} holdout / "
            f"{site['unlabelled']} unlabelled" + (" (reused from cache)" if reused else ""),
            train_s=time.perf_counter() - t0,
        )
    )
    log(f"site {manifest_path} ready: {site}")

    # 2. SSL over train + unlabelled; the scratch model keeps the same initial weights.
    seed_everything(seed)
    base = SarcoModel(preset)
    scratch_init = copy.deepcopy(base.state_dict())
    t0 = time.perf_counter()
    ssl_data = SliceDataset(manifest, preset, "ssl", augment=True, seed=seed)
    load_s = time.perf_counter() - t0
    ssl_result = {
        **train_phase(base, "ssl", ssl_data, epochs=ssl_epochs, seed=seed, progress=progress),
        "load_s": load_s,
    }
    steps.append(
        Step(
            "ssl",
            "SSL (SMIT) on train + unlabelled images",
            time.perf_counter() - t0,
            slices=len(ssl_data),
            epochs=ssl_epochs,
            train=ssl_result,
        )
    )
    log(f"ssl done: {ssl_result}")
    ssl_state = copy.deepcopy(base.state_dict())

    # 3. (a) few labels: from SSL vs from scratch, same everything else.
    few_ssl = SarcoModel(preset)
    few_ssl.load_state_dict(ssl_state)
    steps.append(
        _seg_step(
            "seg_ssl_few",
            f"(a) seg from SSL, {labelled} labelled",
            few_ssl,
            preset,
            few_rows,
            manifest,
            seg_epochs,
            seed,
            out,
            progress,
        )[0]
    )
    log(f"seg from SSL ({labelled} labelled): {steps[-1].metrics}")
    few_scratch = SarcoModel(preset)
    few_scratch.load_state_dict(scratch_init)
    steps.append(
        _seg_step(
            "seg_scratch_few",
            f"(a) seg from scratch, {labelled} labelled",
            few_scratch,
            preset,
            few_rows,
            manifest,
            seg_epochs,
            seed,
            out,
            progress,
        )[0]
    )
    log(f"seg from scratch ({labelled} labelled): {steps[-1].metrics}")
    del few_ssl, few_scratch

    # 4. (c) all labelled train slices, from SSL.
    full = SarcoModel(preset)
    full.load_state_dict(ssl_state)
    full_step, ref_table = _seg_step(
        "seg_ssl_full",
        f"(c) seg from SSL, all {len(train_rows)} labelled",
        full,
        preset,
        train_rows,
        manifest,
        full_epochs,
        seed,
        out,
        progress,
    )
    steps.append(full_step)
    log(f"seg from SSL (all labelled): {steps[-1].metrics}")

    # 5. (b) image classifiers on all labelled train slices, scored against the reference verdict.
    ref_by_id = dict(zip(ref_table["patient_id"].astype(str), ref_table["sarcopenic_ref"], strict=True))
    cases = [load_case(row) for _, row in holdout.iterrows()]
    cts = [ct for ct, _ in cases]
    ids = [str(p) for p in holdout["patient_id"]]
    ref = [None if _unknown(ref_by_id[i]) else bool(ref_by_id[i]) for i in ids]
    cls_rows = select_rows(manifest, "cls").reset_index(drop=True)
    vit = full  # the SSL + full-seg encoder, with the cls head
    steps.append(
        _cls_step(
            "cls_vit",
            "(b) ViT head on SSL+seg encoder (qualitative)",
            vit,
            preset,
            cls_rows,
            cts,
            ref,
            ids,
            cls_epochs,
            seed,
            out,
            progress,
        )
    )
    log(f"cls ViT: {steps[-1].metrics}")
    seed_everything(seed)
    dense = SarcoModel(preset, classifier="densenet")
    steps.append(
        _cls_step(
            "cls_densenet",
            "(b) DenseNet121 baseline from scratch",
            dense,
            preset,
            cls_rows,
            cts,
            ref,
            ids,
            cls_epochs,
            seed,
            out,
            progress,
        )
    )
    log(f"cls DenseNet121: {steps[-1].metrics}")

    total = time.perf_counter() - started
    result = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": {
            "preset": preset.name,
            "labelled": labelled,
            "ssl_epochs": ssl_epochs,
            "seg_epochs": seg_epochs,
            "full_epochs": full_epochs,
            "cls_epochs": cls_epochs,
            "patients": patients,
            "unlabelled": unlabelled,
            "holdout_fraction": holdout_fraction,
            "seed": seed,
        },
        "site": site,
        "cutoff": CUTOFF,
        "classifier_training_slices": len(cls_rows),
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "torch": str(torch.__version__),
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "steps": [vars(s) for s in steps],
        "total_s": total,
    }
    text = report_markdown(result)
    (out / "paper_check.md").write_text(text)
    (out / "paper_check.json").write_text(json.dumps(result, indent=2, default=_json_default, allow_nan=True) + "\n")
    (out / "paper_check.partial.json").unlink(missing_ok=True)
    return result


def _unknown(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _json_default(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _f(value: object, digits: int = 3, pct: bool = False, blank_nan: bool = False) -> str:
    try:
        v = float(value)  # type: ignore[arg-type]  # any object: what float() rejects gives ""
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(v):
        return "" if blank_nan else "n/a"
    return f"{v:.{max(digits - 2, 1)}f}%" if pct else f"{v:.{digits}f}"


def report_markdown(result: dict[str, Any]) -> str:
    """The report as markdown: one table (a row per step) and the comparisons the issue asks for."""
    cmd = result["command"]
    lines = [
        f"# Paper check ({cmd['preset']} preset, seed {cmd['seed']}, cutoff {result['cutoff']})",
        "",
        f"Holdout: {result['site']['holdout']} patients. Classifiers train on all "
        f"{result['classifier_training_slices']} labelled train slices. Dice after the HU window (-29..150), "
        "raw = the network's mask as it came. Verdict metrics against the cutoff applied to the reference SMI; "
        "quantitative AUROC ranks by (cutoff - SMI_pred) / cutoff. "
        f"{result['machine']['torch_threads']} torch thread(s).",
        "",
        "| step | slices x epochs | train s (load + fit) | eval s | Dice | Dice raw | SMA abs err | verdict from "
        "| acc | bal. acc | AUROC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["steps"]:
        m = s["metrics"]
        size = f"{s['slices']} x {s['epochs']}" if s["slices"] is not None else ""
        lines.append(
            f"| {s['label']} | {size} | {_f(s['train_s'], 1)} | {_f(s['eval_s'], 1, blank_nan=True)} "
            f"| {_f(m.get('dice_mean'))} | {_f(m.get('dice_raw_mean'))} "
            f"| {_f(m.get('sma_abs_pct_err_mean'), pct=True)} | {s['verdict_from']} "
            f"| {_f(m.get('verdict_accuracy'))} | {_f(m.get('verdict_balanced_accuracy'))} "
            f"| {_f(m.get('verdict_auroc'))} |"
        )
    by = {s["key"]: s["metrics"] for s in result["steps"]}
    wall = {s["key"]: s["train_s"] + (0.0 if math.isnan(s["eval_s"]) else s["eval_s"]) for s in result["steps"]}
    a, b = by["seg_ssl_few"], by["seg_scratch_few"]
    lines += [
        "",
        f"(a) {cmd['labelled']} labelled slices, SSL init minus scratch: Dice "
        f"{_f(a['dice_mean'] - b['dice_mean'])} (raw {_f(a['dice_raw_mean'] - b['dice_raw_mean'])}), "
        f"SMA abs error {_f(a['sma_abs_pct_err_mean'] - b['sma_abs_pct_err_mean'], pct=True)} points.",
        f"(b) sarcopenia accuracy on the holdout: ViT classifier {_f(by['cls_vit']['verdict_accuracy'])}, "
        f"DenseNet121 {_f(by['cls_densenet']['verdict_accuracy'])}, quantitative verdict "
        f"{_f(by['seg_ssl_full']['verdict_accuracy'])} (seg on all labelled) / "
        f"{_f(a['verdict_accuracy'])} (seg, {cmd['labelled']} labelled, SSL init).",
        f"(c) all labelled: Dice {_f(by['seg_ssl_full']['dice_mean'])}, SMA abs error "
        f"{_f(by['seg_ssl_full']['sma_abs_pct_err_mean'], pct=True)}, SSL + seg wall time "
        f"{_f(wall['ssl'] + wall['seg_ssl_full'], 1)} s (site generation {_f(wall['site'], 1)} s).",
        f"Total wall time {_f(result['total_s'], 1)} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("tiny", "demo", "full"), default="tiny")
    parser.add_argument("--labelled", type=int, default=20, help="labelled train slices for (a) (default 20)")
    parser.add_argument("--ssl-epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seg-epochs", type=int, default=None, help="seg epochs for (a); default: the preset's")
    parser.add_argument("--full-epochs", type=int, default=None, help="seg epochs for (c); default: --seg-epochs")
    parser.add_argument("--cls-epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--patients", type=int, default=100, help="labelled patients in the site (default 100)")
    parser.add_argument("--unlabelled", type=int, default=60, help="image-only patients for SSL (default 60)")
    parser.add_argument("--holdout-fraction", type=float, default=0.35, help="default 0.35 (35 of 100 held out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="site cache (default .cache/paper_check/sites)")
    parser.add_argument("--out", type=Path, default=Path("runs/paper_check"))
    parser.add_argument("--progress", action="store_true", help="tqdm bars while training")
    args = parser.parse_args(argv)
    result = run(
        args.preset,
        args.labelled,
        args.ssl_epochs,
        args.seg_epochs,
        args.cls_epochs,
        args.full_epochs,
        args.out,
        args.patients,
        args.unlabelled,
        args.holdout_fraction,
        args.seed,
        args.cache,
        args.progress,
    )
    print()
    print((Path(args.out) / "paper_check.md").read_text())
    print(f"written: {Path(args.out) / 'paper_check.md'}, {Path(args.out) / 'paper_check.json'}")
    return 0 if result else 1


if __name__ == "__main__":
    raise SystemExit(main())
