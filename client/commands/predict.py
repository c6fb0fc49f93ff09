"""`sarcofed predict`: one CT slice, or a whole series, in; the body-composition masks and the clinical numbers out.

Thin glue: reading is common.data, the network is common.train.infer, the numbers, picture and
DICOM SEG are common.export. Heavy imports stay inside the function so `sarcofed --help` is fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from client.commands.options import MuscleHuRange


def predict(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help=(
                "One axial CT slice (a DICOM file or a single-slice NIfTI, values in HU), or a series: a folder "
                "of one DICOM series or a NIfTI volume, in which the model's L3 locator finds the slice."
            ),
            show_default=False,
        ),
    ],
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help=(
                "Checkpoint (.pt) from `sarcofed train-local` or a federated run, trained at least through the seg "
                "phase."
            ),
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help=(
                "Output folder (created): result.json, mask.nii.gz (label map on the input's grid: 1 muscle, 2 IMAT, "
                "3 VAT, 4 SAT), overlay.png, seg.dcm (one segment per tissue; DICOM input with study/series UIDs; "
                "otherwise result.json says why not)."
            ),
        ),
    ],
    height_m: Annotated[
        float | None,
        typer.Option(
            "--height-m",
            help=(
                "Patient height in metres (default: DICOM (0010,1020) PatientSize). Without it SMI and the verdict "
                "are not given."
            ),
        ),
    ] = None,
    sex: Annotated[
        str | None,
        typer.Option(
            "--sex", help="M or F (default: DICOM (0010,0040) PatientSex). Without it the verdict is not given."
        ),
    ] = None,
    weight_kg: Annotated[
        float | None,
        typer.Option(
            "--weight-kg",
            help="Weight in kg (default: DICOM (0010,1030) PatientWeight); only martin2013 uses it (BMI, men).",
        ),
    ] = None,
    cutoff: Annotated[
        str, typer.Option("--cutoff", help="Sarcopenia rule: prado2008, martin2013 or derstine2018.")
    ] = "prado2008",
    muscle_hu_range: MuscleHuRange = True,
    format: Annotated[
        str, typer.Option("--format", help="Console output: 'table' (human) or 'json' (the result.json record).")
    ] = "table",
    insist: Annotated[
        bool,
        typer.Option(
            "--insist",
            help="Measure a series' L3 found with low confidence, and give the verdict for a single slice that "
            "does not read as L3; both stay flagged in result.json.",
        ),
    ] = False,
) -> None:
    """Measure skeletal muscle, IMAT, VAT and SAT at L3; report SMA, SMI, HU, sarcopenia and myosteatosis.

    A series is first searched for L3 (result.json "l3", series.png); when L3 is not in it, or not
    surely found, nothing is measured and the exit code is 5. Cost: one forward pass for a slice
    (well under a second for tiny/demo on a CPU); reading a series takes about a second per 100 slices.
    """
    import json

    from common.clinical import get_cutoff, normalise_sex
    from common.errors import ConfigError, InputDataError

    rule = get_cutoff(cutoff)
    if format not in ("table", "json"):
        raise ConfigError(f"--format must be 'table' or 'json', got {format!r}")
    sex_opt = normalise_sex(sex) if sex is not None else None
    if height_m is not None and not 0.5 <= height_m <= 2.6:
        hint = " (that looks like centimetres: give metres, e.g. 1.72)" if 50 <= height_m <= 260 else ""
        raise ConfigError(f"--height-m {height_m} is not a plausible height in metres (0.5-2.6){hint}")
    if weight_kg is not None and not 2 <= weight_kg <= 400:
        raise ConfigError(f"--weight-kg {weight_kg} is not a plausible weight in kg (2-400)")
    if not input_path.exists():
        raise InputDataError("no such file or folder; give a CT slice or a series", input_path)

    from common.export.predict import predict_slice
    from common.export.predict_series import is_series, predict_series

    run = predict_series if is_series(input_path) else predict_slice
    record = run(
        input_path,
        model,
        out,
        height_m=height_m,
        sex=sex_opt,
        weight_kg=weight_kg,
        cutoff=rule,
        muscle_hu_range=muscle_hu_range,
        insist=insist,
    )
    if format == "json":
        typer.echo(json.dumps(record, indent=2))
    else:
        _print_table(record, out)


def _print_table(record: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"SarcoFed predict: {Path(record['input']['path']).name}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    if record.get("l3"):
        l3 = record["l3"]
        low = " (LOW: measured because of --insist)" if l3.get("low_confidence_measured") else ""
        table.add_row(
            "L3", f"slice {l3['slice_index']} of {l3['series']['slices']}, z {l3['z_mm']} mm, "
            f"confidence {l3['confidence']:.2f}{low}; series covers {l3['covers']}",
        )  # fmt: skip
    if record.get("level_flag"):
        table.add_row("[red]Level[/]", f"[red]{record['level_flag']}[/]")
    table.add_row("SMA", f"{record['sma_cm2']:.1f} cm2")
    smi = record["smi_cm2_m2"]
    table.add_row("SMI", f"{smi:.1f} cm2/m2" if smi is not None else f"unavailable ({record['unavailable_reason']})")
    hu = record["muscle_hu_mean"]
    table.add_row("Muscle HU", f"{hu:.1f} HU" if hu is not None else "n/a (empty mask)")
    for name in ("imat", "vat", "sat"):
        area, mean = record.get(f"{name}_cm2"), record.get(f"{name}_hu_mean")
        if area is None:
            table.add_row(name.upper(), f"unavailable ({record.get('composition_unavailable_reason')})")
        else:
            table.add_row(name.upper(), f"{area:.1f} cm2" + (f", {mean:.0f} HU" if mean is not None else ""))
    c = record["cutoff"]
    threshold = f" (< {c['threshold_cm2_m2']} cm2/m2)" if c["threshold_cm2_m2"] is not None else ""
    table.add_row("Cutoff", f"{c['name']}{threshold}: {c['citation']}")
    verdict = record["sarcopenic"]
    table.add_row(
        "Verdict", "unavailable" if verdict is None else ("[red]sarcopenic[/]" if verdict else "not sarcopenic")
    )
    myo = record.get("myosteatosis") or {}
    if myo.get("present") is None:
        table.add_row("Myosteatosis", f"unavailable ({myo.get('reason')})")
    else:
        low = "[red]present[/]" if myo["present"] else "absent"
        table.add_row("Myosteatosis", f"{low} (below {myo['threshold_hu']:g} HU at BMI {myo['bmi']}: Martin 2013)")
    if record.get("image_classifier"):
        table.add_row("Image classifier", f"p(sarcopenic) = {record['image_classifier']['probability']:.2f}")
    table.add_row(
        "Model", f"{record['model']['preset']} / {record['model']['phase']}  sha256 {record['model']['sha256'][:12]}"
    )
    written = sorted(name for name in record["files"].values() if name is not None)
    table.add_row("Written", ", ".join(written) + f"  in {out}")
    if record["files"].get("seg") is None and record.get("seg_skipped"):
        table.add_row("DICOM SEG", record["seg_skipped"])
    Console().print(table)
