"""Baselines with the federated run's compute budget: centralised (all sites pooled) and local-only.

Budget: in the federated run each site makes ``rounds[p] * local_epochs[p]`` passes over its own
data in phase p. The centralised model makes the same number of passes over the pooled data (so it
sees every slice as often as the federation does, in total); a local-only model makes them over its
own site alone. Both use the same loops (``common.train``) and the same per-site holdout evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

PHASES = ("ssl", "seg", "cls")


def _pooled_manifest(manifests: Mapping[str, Path]) -> pd.DataFrame:
    from common.data.manifest import read_manifest

    frames = []
    for site, path in manifests.items():
        df = read_manifest(path)
        df["patient_id"] = site + "/" + df["patient_id"].astype(str)
        frames.append(df)
    pooled = pd.concat(frames, ignore_index=True)
    return pooled


def train_budget(
    data: Any, preset: str, rounds: Mapping[str, int], local_epochs: Mapping[str, int], seed: int = 0
) -> Any:
    """One model through ssl -> seg -> cls on ``data`` (manifest path or DataFrame) with the federated budget."""
    import torch

    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel
    from common.train.loops import train_phase

    torch.manual_seed(seed)
    model = SarcoModel(get_preset(preset))
    for phase in PHASES:
        epochs = int(rounds[phase]) * int(local_epochs[phase])
        if epochs > 0:
            train_phase(model, phase, data, epochs=epochs, seed=seed, progress=False)
    return model


def evaluate_sites(
    model: Any, preset: str, manifests: Mapping[str, Path], cutoff: str = "prado2008"
) -> dict[str, dict[str, Any]]:
    """Site -> holdout summary (``common.metrics.site_summary``) of ``model``."""
    from common.data.manifest import read_manifest
    from common.models.presets import get_preset
    from common.train.evaluate import evaluate_cases

    out = {}
    for site, path in manifests.items():
        _, summary = evaluate_cases(
            model,
            get_preset(preset),
            read_manifest(path),
            cutoff=cutoff,
            split="holdout",
            manifest_dir=Path(path).parent,
        )
        out[site] = summary
    return out


def centralised(
    manifests: Mapping[str, Path],
    preset: str,
    rounds: Mapping[str, int],
    local_epochs: Mapping[str, int],
    seed: int = 0,
    cutoff: str = "prado2008",
) -> dict[str, dict[str, Any]]:
    """All sites' training data pooled (what the federation avoids), evaluated per site."""
    model = train_budget(_pooled_manifest(manifests), preset, rounds, local_epochs, seed)
    return evaluate_sites(model, preset, manifests, cutoff)


def local_only(
    manifests: Mapping[str, Path],
    preset: str,
    rounds: Mapping[str, int],
    local_epochs: Mapping[str, int],
    seed: int = 0,
    cutoff: str = "prado2008",
) -> dict[str, dict[str, Any]]:
    """Each site trains alone and is evaluated on its own holdout."""
    out = {}
    for site, path in manifests.items():
        model = train_budget(path, preset, rounds, local_epochs, seed)
        out[site] = evaluate_sites(model, preset, {site: path}, cutoff)[site]
    return out
