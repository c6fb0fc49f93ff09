"""`sarcofed evaluate`: score a model on a site's labelled slices (Dice, SMA agreement, verdicts).

Thin glue over ``common.train.evaluate.evaluate_cases``; writes DIR/per_patient.csv (stays in the
hospital) and DIR/summary.json (aggregates only, suppressed below 5 patients).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from client.commands.options import MuscleHuRange


def evaluate(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Checkpoint (.pt) trained at least through the seg phase.")
    ],
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Site manifest.csv (from `sarcofed ingest` or `sarcofed synth`).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (created): per_patient.csv and summary.json.")
    ],
    cutoff: Annotated[
        str, typer.Option("--cutoff", help="Sarcopenia rule for both verdicts: prado2008, martin2013 or derstine2018.")
    ] = "prado2008",
    split: Annotated[
        str, typer.Option("--split", help="Manifest split to evaluate: holdout, train, or all (every labelled row).")
    ] = "holdout",
    muscle_hu_range: MuscleHuRange = True,
    format: Annotated[
        str, typer.Option("--format", help="Console output: 'table' (human) or 'json' (summary.json).")
    ] = "table",
) -> None:
    """Evaluate a checkpoint on one site: per-patient Dice, SMA and verdicts, and the site summary.

    Cost: one forward pass per labelled slice (tiny: milliseconds, demo: about 0.1 s each on a CPU).
    """
    from common.clinical import get_cutoff
    from common.errors import ConfigError

    # Settings first: a typo should not wait for torch to load.
    get_cutoff(cutoff)
    if format not in ("table", "json"):
        raise ConfigError(f"--format must be 'table' or 'json', got {format!r}")
    if split not in ("holdout", "train", "all"):
        raise ConfigError(f"--split must be holdout, train or all, got {split!r}")

    from common.data.manifest import read_manifest
    from common.export.predict import has_trained_classifier, model_preset
    from common.export.result import file_sha256, write_result_json
    from common.models.checkpoint import load_checkpoint
    from common.train.evaluate import evaluate_cases

    manifest = read_manifest(data)
    net, info = load_checkpoint(model, phases=("seg", "cls"))
    preset = model_preset(net, info)
    per_patient, summary = evaluate_cases(
        net,
        preset,
        manifest,
        cutoff=cutoff,
        split=None if split == "all" else split,
        with_classifier=has_trained_classifier(info),
        muscle_hu_range=muscle_hu_range,
    )
    summary["model"] = {
        "path": str(model.resolve()),
        "sha256": file_sha256(model),
        "preset": preset.name,
        "phase": info.get("phase"),
    }
    summary["data"] = str(data.resolve())
    out.mkdir(parents=True, exist_ok=True)
    per_patient.to_csv(out / "per_patient.csv", index=False, float_format="%.6g")
    write_result_json(out / "summary.json", summary)
    if format == "json":
        typer.echo((out / "summary.json").read_text())
    else:
        _print_table(summary, out)


def _print_table(summary: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(key: str, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        value = summary.get(key)
        n = summary.get(f"{key}_n")
        if key in summary.get("suppressed_metrics", []):
            return f"suppressed (n={n} < 5)"
        if value is None or value != value:
            return f"n/a (n={n})"
        return f"{value * scale:.{digits}f}{unit}  (n={n})"

    c = summary["cutoff"]
    table = Table(title=f"SarcoFed evaluate: {summary['n']} patients ({summary['split']})")
    table.add_column("metric", style="bold")
    table.add_column("value")
    table.add_row("Dice", fmt("dice_mean"))
    if summary.get("muscle_hu_range"):
        table.add_row("Dice, network mask before the muscle HU range", fmt("dice_raw_mean"))
    table.add_row("SMA |error|", fmt("sma_abs_pct_err_mean", 2, unit=" %"))
    table.add_row("SMA bias (pred - ref)", fmt("sma_bias_cm2", 2, unit=" cm2"))
    low, high = summary.get("sma_loa_low"), summary.get("sma_loa_high")
    if low == low and high == high and low is not None:
        table.add_row("95% limits of agreement", f"{low:.2f} .. {high:.2f} cm2")
    table.add_row("Muscle HU (predicted mask)", fmt("muscle_hu_mean", 1, unit=" HU"))
    for name in ("IMAT", "VAT", "SAT"):  # over reference label maps only; n/a for muscle-only masks
        table.add_row(f"{name} area |error|", fmt(f"{name.lower()}_abs_pct_err_mean", 2, unit=" %"))
    table.add_row("Myosteatosis accuracy (Martin 2013)", fmt("myosteatosis_accuracy"))
    table.add_row(f"Verdict accuracy ({c['name']})", fmt("sarcopenia_accuracy"))
    table.add_row("Sensitivity", fmt("sensitivity"))
    table.add_row("Specificity", fmt("specificity"))
    table.add_row("Balanced accuracy", fmt("balanced_accuracy"))
    if summary.get("classifier_evaluated"):
        table.add_row("Image classifier accuracy", fmt("cls_accuracy"))
        table.add_row("Image classifier AUROC", fmt("cls_auroc"))
    Console().print(table)
    Console().print(f"cutoff {c['name']}: {c['citation']}; wrote {out / 'per_patient.csv'} and {out / 'summary.json'}")
