"""One hospital's work in a federated round, as plain functions over arrays: train, then evaluate.

Stateless by design. Deployed, Flower runs every message in a fresh ``flwr-clientapp`` process; in a
simulation one process serves the whole run. So nothing here is kept between calls: each call builds
the model, loads every array its result depends on from the message (``common.models.sarco.phase_inputs``:
for the classifier, the frozen encoder it is trained on) and reads the site's slices. The one thing
that outlives a call is the resampled-slice cache on disk, keyed by content
(``common.train.data.load_slices``), which saves time and never changes a result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import ConfigError
from common.models.presets import check_phase

from client.federated_site import Site


@dataclass(frozen=True)
class RoundInstructions:
    """What the server asks of a site for one round (the message's config record)."""

    phase: str
    round: int
    local_epochs: int
    seed: int
    lr_scale: float
    proximal_mu: float
    eval_phases: tuple[str, ...]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RoundInstructions:
        """Read a round's config record (keys set by ``server.strategy``); ConfigError names a bad key."""
        try:
            phase = str(config["phase"])
            check_phase(phase)
            return cls(
                phase=phase,
                round=int(config.get("round", 1)),
                local_epochs=int(config.get("local-epochs", 1)),
                seed=int(config.get("seed", 0)),
                lr_scale=float(config.get("lr-scale", 1.0)),
                proximal_mu=float(config.get("proximal_mu", 0.0)),
                eval_phases=tuple(p for p in str(config.get("eval-phases", phase)).split(",") if p),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"round instructions from the server are malformed: {error}") from None


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def fresh_model(preset_name: str) -> Any:
    """The preset's model with nothing learned: every array a result depends on comes from the message."""
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel

    return SarcoModel(get_preset(preset_name))


def train_round(site: Site, preset_name: str, arrays: list[np.ndarray],
                instructions: RoundInstructions) -> tuple[list[np.ndarray], int, dict[str, float | str]]:
    """Train one round locally; returns (``local - global`` of the phase's arrays, training slices, metrics).

    ``arrays`` are the phase's inputs in ``phase_inputs`` order: its context (cls: the frozen encoder),
    then the arrays it trains. Only the trained arrays' deltas go back (SecAgg+ clips what it sends, so
    deltas; see ``common.secagg.delta``).
    """
    from common.models.presets import get_preset
    from common.models.sarco import context_keys, get_weights, phase_inputs, set_arrays
    from common.secagg import weight_delta
    from common.train.data import SliceDataset
    from common.train.loops import train_phase

    phase = instructions.phase
    model = fresh_model(preset_name)
    set_arrays(model, phase_inputs(model, phase), arrays, what=f"{phase} round {instructions.round}")
    sent = arrays[len(context_keys(model, phase)):]
    preset = get_preset(preset_name)
    dataset = SliceDataset(site.manifest, preset, phase, augment=True, seed=instructions.seed, cache_dir=site.cache_dir)
    result = train_phase(
        model, phase, dataset, epochs=instructions.local_epochs, seed=instructions.seed, device=_device(),
        prox_mu=instructions.proximal_mu, progress=False, lr=preset.lr(phase) * instructions.lr_scale,
    )
    delta = weight_delta(get_weights(model, phase), sent)
    return delta, int(result["num-examples"]), {"site": site.name, "loss": float(result["loss"])}


def evaluate_round(site: Site, preset_name: str, cutoff: str, arrays: list[np.ndarray],
                   instructions: RoundInstructions) -> tuple[float, int, dict[str, float | str]]:
    """Score the global model on the site's holdout; returns (1 - Dice, patients, the site summary's numbers).

    ``arrays`` are ``get_weights(model, p)`` for each p in ``instructions.eval_phases``, one after another.
    """
    from common.data.manifest import read_manifest
    from common.metrics import numeric_summary
    from common.models.presets import get_preset
    from common.models.sarco import exchange_keys, set_weights
    from common.train.evaluate import evaluate_cases

    model = fresh_model(preset_name)
    start = 0
    for phase in instructions.eval_phases:
        count = len(exchange_keys(model, phase))
        set_weights(model, phase, arrays[start : start + count])
        start += count
    if start != len(arrays):
        raise ConfigError(f"evaluation got {len(arrays)} arrays, phases {instructions.eval_phases} need {start}")
    _, summary = evaluate_cases(model, get_preset(preset_name), read_manifest(site.manifest), cutoff=cutoff,
                                split="holdout", with_classifier=instructions.phase == "cls",
                                manifest_dir=site.manifest.parent)
    metrics: dict[str, float | str] = dict(numeric_summary(summary))
    metrics["suppressed_metrics"] = ",".join(summary.get("suppressed_metrics", []))
    metrics["site"] = site.name
    dice_mean = float(summary.get("dice_mean", math.nan))
    loss = 1.0 - dice_mean if math.isfinite(dice_mean) else 0.0
    return loss, int(summary.get("n", 0)), metrics
