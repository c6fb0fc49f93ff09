"""`sarcofed train-local`: train one phase on this site's data, without any federation.

The same loop the federated client runs per round (common.train.loops.train_phase); useful to check a
site's data, to build baselines (local-only) and to resume from any SarcoFed checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def train_local(
    phase: Annotated[
        str,
        typer.Option(
            "--phase", help="Phase to train: ssl (unlabelled + train), seg (masks), cls (labels), l3 (series.csv)."
        ),
    ],
    data: Annotated[Path, typer.Option("--data", help="Site manifest.csv (see `sarcofed ingest`).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (one .pt file).")],
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Start from this checkpoint (resume, or ssl -> seg/cls). Its preset wins."),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="Model size without --init: tiny (tests, seconds), demo (CPU, minutes), full (GPU). Default demo.",
        ),
    ] = "demo",
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Epochs (default: the preset's for this phase).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Peak learning rate (default: the preset's for this phase).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed for shuffling, masking and augmentation.")] = 0,
    classifier: Annotated[
        str,
        typer.Option(
            "--classifier",
            help="cls phase: vit (head on the SSL encoder) or densenet (DenseNet121 baseline from scratch).",
        ),
    ] = "vit",
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after this many optimiser steps (quick checks).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    output_format: Annotated[str, typer.Option("--format", help="Summary as text or json.")] = "text",
) -> None:
    """Train one phase (ssl | seg | cls | l3) locally and write a self-contained checkpoint."""
    import json
    import time

    from common.errors import ConfigError
    from common.models.presets import check_phase, get_preset

    # Cheap checks first: a typo should not wait for torch to import.
    check_phase(phase)
    if output_format not in ("text", "json"):
        raise ConfigError(f"unknown --format {output_format!r}; choose text or json")
    if init is None:
        get_preset(preset)

    from rich.console import Console

    from common.models.checkpoint import load_checkpoint, save_checkpoint
    from common.models.sarco import SarcoModel
    from common.train.loops import resolve_device, train_phase

    console = Console(stderr=output_format == "json")
    if init is not None:
        model, info = load_checkpoint(init)
        if classifier != model.classifier and phase == "cls":
            # A ViT checkpoint carries the encoder; a DenseNet baseline needs its own network.
            rebuilt = SarcoModel(model.preset, classifier=classifier)
            rebuilt.load_state_dict(model.state_dict(), strict=False)
            rebuilt.trained_phases = set(model.trained_phases)
            model = rebuilt
        start = f"from {init} ({info['phase']}, preset {model.preset.name})"
    else:
        model = SarcoModel(get_preset(preset), classifier=classifier)
        start = f"from scratch (preset {preset})"
    dev = resolve_device(device)
    t0 = time.perf_counter()
    if phase == "l3":  # the locator reads the site's series (series.csv beside the manifest), not its slices
        from common.train.locate import train_locator
        from common.train.series_data import site_series

        series = site_series(Path(data).parent, "train")
        if not series:
            raise ConfigError(f"{Path(data).parent / 'series.csv'}: no train series for the l3 phase")
        preset_l3 = model.preset
        result = train_locator(
            model.locator, [s.sample for s in series], epochs=epochs or preset_l3.epochs("l3"),
            lr=lr or preset_l3.lr("l3"), seed=seed, device=str(dev),
        )  # fmt: skip
        result["epochs"] = float(epochs or preset_l3.epochs("l3"))
    else:
        result = train_phase(
            model, phase, data, epochs=epochs, seed=seed, device=dev, lr=lr, progress=progress, max_steps=max_steps
        )
    path = save_checkpoint(
        out,
        model.cpu(),
        phase=phase,
        extra={
            "trained_on": str(data),
            "init": str(init) if init else None,
            "seed": seed,
            "device": str(dev),
            **{k: float(v) for k, v in result.items()},
        },
    )
    elapsed = time.perf_counter() - t0
    summary = {
        "phase": phase,
        "preset": model.preset.name,
        "out": str(path),
        "device": str(dev),
        "start": start,
        "wall-seconds": elapsed,
        **result,
    }
    if output_format == "json":
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(
        f"[bold]{phase}[/bold] {start}: {result['num-examples']} slices, {result['epochs']} epochs, "
        f"{result['steps']} steps on {dev}, loss {result['loss-first']:.4f} -> {result['loss']:.4f}, "
        f"{result['slices-per-s']:.1f} slices/s"
    )
    console.print(f"Finished in {elapsed:.1f} s; model written to [green]{path}[/green]")
