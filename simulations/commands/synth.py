"""`sarcofed synth`, `synth-consortium` and `montage`: synthetic hospitals on disk, and a look at them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def _print_summaries(manifests: dict[str, Path], format: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from common.phantom.site import summarise_site

    rows = [summarise_site(path) for path in manifests.values()]
    if format == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(
        "site",
        "profile",
        "train",
        "holdout",
        "unlabelled",
        "men %",
        "age",
        "SMA men",
        "SMA women",
        "sarcopenic %",
        title="Synthetic sites (SMA in cm2, sarcopenia by Prado 2008)",
    )

    def cell(value: object) -> str:
        return "-" if value is None else str(value)

    for row in rows:
        table.add_row(
            *(
                cell(row[k])
                for k in (
                    "site",
                    "profile",
                    "train",
                    "holdout",
                    "unlabelled",
                    "male_pct",
                    "age_mean",
                    "sma_men_cm2",
                    "sma_women_cm2",
                    "sarcopenic_pct",
                )
            )
        )
    console = Console()
    console.print(table)
    for name, path in manifests.items():
        console.print(f"{name}: {path}")


def synth(
    out: Annotated[
        Path, typer.Argument(help="Folder to write: images/*.dcm, masks/*.nii.gz, manifest.csv, site.json.")
    ],
    site: Annotated[str, typer.Option("--site", help="Site name (manifest 'site' column, pseudonym prefix).")],
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help=(
                "Site profile: geriatric-oncology | general-surgery | young-trauma | obesity-clinic. Default: "
                "general-surgery."
            ),
        ),
    ] = "general-surgery",
    patients: Annotated[
        int, typer.Option("--patients", help="Labelled patients (mask + reference SMA), about 25 per second.")
    ] = 20,
    unlabelled: Annotated[
        int, typer.Option("--unlabelled", help="Extra patients without mask, for self-supervised pretraining.")
    ] = 0,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed: patient i comes from (seed, i); same seed, same pixels.")
    ] = 0,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Share of labelled patients kept for evaluation (0..1). Default 0.3.")
    ] = 0.3,
    format: Annotated[str, typer.Option("--format", help="Summary format: text | json.")] = "text",
) -> None:
    """Write one synthetic hospital: real DICOM CT, NIfTI body-composition label maps and manifest.csv."""
    from common.phantom.site import write_site

    manifest = write_site(out, site, profile, patients, unlabelled, seed, holdout_fraction=holdout)
    _print_summaries({site: manifest}, format)


def synth_consortium(
    config: Annotated[
        Path,
        typer.Argument(help="Consortium TOML (one [sites.NAME] table per site), e.g. simulations/consortia/demo.toml."),
    ],
    out: Annotated[Path, typer.Argument(help="Folder to write one sub-folder per site into.")],
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse/--rebuild",
            help="Keep sites already in OUT whose description is unchanged (default), or rebuild all.",
        ),
    ] = True,
    format: Annotated[str, typer.Option("--format", help="Summary format: text | json.")] = "text",
) -> None:
    """Generate every site of a consortium config and print a summary table."""
    from common.phantom.site import ensure_consortium, write_consortium

    manifests = ensure_consortium(config, out) if reuse else write_consortium(config, out)
    _print_summaries(manifests, format)


def montage(
    manifest: Annotated[
        list[Path], typer.Argument(help="One or more manifest.csv files (slices are shared between them).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("montage.png"),
    n: Annotated[int, typer.Option("-n", help="Number of slices in the grid. Default 12.")] = 12,
) -> None:
    """Draw a PNG grid of slices (soft-tissue window) with their muscle, VAT and SAT outlines."""
    from common.phantom.montage import write_montage

    path = write_montage(manifest, out, n=n)
    typer.echo(f"montage: {path}")
