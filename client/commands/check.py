"""`sarcofed check MANIFEST`: open every row as training would, and say which rows cannot be used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def check(
    manifest: Annotated[Path, typer.Argument(help="manifest.csv to verify (paths in it are relative to its folder).")],
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            help="Allowed relative difference between the reference sma_cm2 and the mask's area. Default 0.01 (1%).",
        ),
    ] = 0.01,
    format: Annotated[str, typer.Option("--format", help="Output format: text | json.")] = "text",
) -> None:
    """Read every image and mask, check mask geometry and the reference SMA/SMI against the mask; print a
    per-split table. Exit 2 if any row is bad."""
    from rich.console import Console
    from rich.table import Table

    from common.data.check import check_manifest

    report = check_manifest(manifest, sma_tolerance=tolerance)
    if format == "json":
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console = Console()
        table = Table("split", "rows", "ok", "bad", "with mask", "M", "F", "mean SMA cm2", "sarcopenic")
        for split in report.splits:
            s = report.per_split[split]
            table.add_row(
                split,
                str(s["rows"]),
                str(s["ok"]),
                str(s["bad"]),
                str(s["with_mask"]),
                str(s["M"]),
                str(s["F"]),
                "-" if s["mean_sma_cm2"] is None else f"{s['mean_sma_cm2']:.1f}",
                str(s["sarcopenic"]),
            )
        console.print(table)
        if report.bad:
            console.print(f"[red]{len(report.bad)} bad row(s)[/] in {manifest}:")
            for item in report.bad:
                console.print(f"  line {item['line']} ({item['patient_id']}): {item['problem']}", markup=False)
        else:
            console.print(f"[green]all {report.n_rows} row(s) usable[/]")
    if report.bad:
        raise typer.Exit(2)
