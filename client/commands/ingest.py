"""`sarcofed ingest DIR --out manifest.csv`: build a site's manifest from a folder of DICOM / NIfTI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def ingest(
    input_dir: Annotated[
        Path,
        typer.Argument(
            help=(
                "Folder of DICOM slices/series and NIfTI slices; searched recursively, never modified. Symbolic "
                "links are followed only to files inside it."
            )
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Manifest CSV to write; rejected.csv is written beside it.")
    ] = Path("manifest.csv"),
    masks: Annotated[
        Path | None,
        typer.Option(
            "--masks",
            help=(
                "Folder of masks (NIfTI or DICOM SEG: muscle only, or label maps 1 muscle, 2 IMAT, 3 VAT, 4 SAT). "
                "Default: masks are looked for in INPUT_DIR (*_mask.nii.gz, SEG)."
            ),
        ),
    ] = None,
    meta: Annotated[
        Path | None,
        typer.Option(
            "--meta",
            help=(
                "CSV of per-image overrides: key (file name, stem, SOPInstanceUID or SeriesInstanceUID), "
                "patient_key, split, sex, height_m (metres), weight_kg, age, site, l3_instance / l3_z_mm."
            ),
        ),
    ] = None,
    salt_file: Annotated[
        Path | None,
        typer.Option(
            "--salt-file",
            help=(
                "Site pseudonym salt (created once, 0600). Default: $SARCOFED_SALT_FILE or "
                "~/.config/sarcofed/pseudonym.salt."
            ),
        ),
    ] = None,
    holdout: Annotated[
        float,
        typer.Option(
            "--holdout", help="Share of masked patients put in the holdout split (stable per patient). Default 0.2."
        ),
    ] = 0.2,
    cutoff: Annotated[
        str,
        typer.Option(
            "--cutoff", help="Sarcopenia rule for the reference column: prado2008 | martin2013 | derstine2018."
        ),
    ] = "prado2008",
    site: Annotated[str | None, typer.Option("--site", help="Value of the optional 'site' column.")] = None,
    format: Annotated[str, typer.Option("--format", help="Summary format: text | json.")] = "text",
    locator: Annotated[
        Path | None,
        typer.Option(
            "--locator",
            help="Checkpoint with a trained L3 locator (a run with rounds-l3 > 0): finds the L3 slice of series "
            "and NIfTI volumes that neither --meta nor a mask names.",
        ),
    ] = None,
) -> None:
    """Check every file in INPUT_DIR and write manifest.csv + rejected.csv. Exit 0 when at least one image is
    usable, 2 when none."""
    from rich.console import Console
    from rich.table import Table

    from common.data.ingest import ingest as run_ingest

    find_l3 = _load_locator(locator) if locator is not None else None
    result = run_ingest(
        input_dir,
        out,
        masks_dir=masks,
        meta_csv=meta,
        salt_file=salt_file,
        holdout_fraction=holdout,
        cutoff=cutoff,
        site=site,
        progress=format == "text",
        locator=find_l3,
    )
    df = result.manifest
    if format == "json":
        typer.echo(
            json.dumps(
                {
                    "manifest": str(result.manifest_path),
                    "rejected_csv": str(result.rejected_path),
                    "accepted": result.n_accepted,
                    "rejected": result.n_rejected,
                    "splits": {k: int(v) for k, v in df["split"].value_counts().items()} if len(df) else {},
                    "with_mask": int((df["mask_path"] != "").sum()) if len(df) else 0,
                    "rejections": result.rejected.to_dict(orient="records"),
                    "warnings": result.warnings,
                },
                indent=2,
            )
        )
    else:
        console = Console()
        console.print(f"[bold]{result.n_accepted}[/] image(s) accepted -> {result.manifest_path}")
        if len(df):
            table = Table("split", "images", "with mask", "M", "F", "sex unknown")
            for split, part in df.groupby("split"):
                table.add_row(
                    str(split),
                    str(len(part)),
                    str(int((part["mask_path"] != "").sum())),
                    str(int((part["sex"] == "M").sum())),
                    str(int((part["sex"] == "F").sum())),
                    str(int((part["sex"] == "").sum())),
                )
            console.print(table)
        if result.n_rejected:
            console.print(f"[yellow]{result.n_rejected} rejected[/] -> {result.rejected_path}")
            for _, row in result.rejected.head(20).iterrows():
                console.print(f"  {row['path']}: {row['reason']}", markup=False)
            if result.n_rejected > 20:
                console.print(f"  ... and {result.n_rejected - 20} more in {result.rejected_path}")
        for warning in result.warnings:
            console.print(f"warning: {warning}", style="yellow", markup=False)
    if result.exit_code:
        if format == "text":
            Console(stderr=True).print("[red]no usable image: see rejected.csv for what to fix[/]")
        raise typer.Exit(result.exit_code)


def _load_locator(path: Path):
    """The locate function of a checkpoint whose locator was trained (CheckpointError otherwise)."""
    from common.errors import CheckpointError
    from common.models.checkpoint import load_checkpoint
    from common.train.locate import locate_l3

    model, info = load_checkpoint(path)
    if "l3" not in info["trained_phases"]:
        raise CheckpointError("this model has no trained L3 locator (its run had no l3 rounds)", path)
    return lambda series: locate_l3(model.locator, series)
