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

from client.federated_site import Site
from client.policy import SitePolicy, UpdateGuardError
from common.errors import ConfigError
from common.models.presets import check_phase


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


def unpack_message(arrays: list[np.ndarray], model: Any, keys: list[str]) -> list[np.ndarray]:
    """The one vector a message carries, cut into the arrays of ``keys`` (ConfigError if it does not fit)."""
    from common.secagg import unpack

    state = model.state_dict()
    if len(arrays) != 1:
        raise ConfigError(f"a message should carry one packed vector, got {len(arrays)} arrays")
    try:
        return unpack(arrays[0], [tuple(state[k].shape) for k in keys])
    except ValueError as error:
        raise ConfigError(f"the message does not fit this preset's model: {error}") from None


def check_finite(arrays: list[np.ndarray], what: str) -> None:
    """Refuse NaN or infinite values: one of them, quantised and summed, would corrupt the global model."""
    bad = sum(int(np.size(a) - np.count_nonzero(np.isfinite(a))) for a in arrays)
    if bad:
        raise UpdateGuardError(f"{what} is not finite", f"{bad} NaN or infinite values in {what}")


def train_round(
    site: Site, preset_name: str, arrays: list[np.ndarray], instructions: RoundInstructions, policy: SitePolicy
) -> tuple[list[np.ndarray], int, dict[str, float | str]]:
    """Train one round locally; returns (``local - global`` of the phase's arrays, training slices, metrics).

    ``arrays`` is one vector (``common.secagg.pack``): the phase's inputs in ``phase_inputs`` order, its
    context (cls: the frozen encoder), then the arrays it trains. Only the trained arrays' deltas go back,
    packed the same way (SecAgg+ clips what it sends, so deltas; see ``common.secagg.delta``). Guards, before
    anything is computed or sent: the round's
    settings within the site's policy, the global model finite; after training, the update finite and
    within the policy's norm bound (``UpdateGuardError`` otherwise: the site drops out of the round).
    """
    from common.models.presets import get_preset
    from common.models.sarco import context_keys, get_weights, phase_inputs, set_arrays
    from common.privacy import update_norm
    from common.secagg import pack, weight_delta
    from common.train.data import SliceDataset
    from common.train.loops import train_phase

    policy.check_round(instructions.local_epochs, instructions.lr_scale)
    check_finite(arrays, "the global model received")
    phase = instructions.phase
    model = fresh_model(preset_name)
    keys = phase_inputs(model, phase)
    arrays = unpack_message(arrays, model, keys)
    set_arrays(model, keys, arrays, what=f"{phase} round {instructions.round}")
    sent = arrays[len(context_keys(model, phase)) :]
    preset = get_preset(preset_name)
    lr = preset.lr(phase) * instructions.lr_scale
    if phase == "l3":
        from client.l3_task import train_locator_round

        result = train_locator_round(
            site, model, instructions.local_epochs, lr, instructions.seed, instructions.proximal_mu, _device()
        )
    else:
        dataset = SliceDataset(
            site.manifest, preset, phase, augment=True, seed=instructions.seed, cache_dir=site.cache_dir
        )
        result = train_phase(
            model,
            phase,
            dataset,
            epochs=instructions.local_epochs,
            seed=instructions.seed,
            device=_device(),
            prox_mu=instructions.proximal_mu,
            progress=False,
            lr=lr,
        )
    delta = weight_delta(get_weights(model, phase), sent)
    check_finite(delta, "the site's update")
    norm = update_norm(delta)
    if norm > policy.max_update_norm:
        raise UpdateGuardError(
            "the site's update norm is above the site's bound",
            f"update norm {norm:.4g} > max-update-norm {policy.max_update_norm:g}",
        )
    return [pack(delta)], int(result["num-examples"]), {"site": site.name, "loss": float(result["loss"])}


PRIVACY_RECORD = "sarcofed.privacy"
"""The site's privacy ledger for the run, in the node's own Context state (the SuperNode keeps it
between messages; it never leaves the site)."""


def add_site_noise(delta: list[np.ndarray], policy: SitePolicy, state: Any) -> tuple[list[np.ndarray], float]:
    """Differential privacy at the site, before masking: clip + Gaussian noise (``common.privacy``), one
    release more in the ledger; returns (the noised update, epsilon spent in this run so far).

    Refuses (``PolicyRefusal`` "dp-max-epsilon") a round that would spend more than the policy allows.
    """
    from flwr.app import ConfigRecord

    from client.policy import PolicyRefusal
    from common.privacy import clip_and_noise, gaussian_epsilon

    record = state.config_records.get(PRIVACY_RECORD) or ConfigRecord({"releases": 0})
    released = record["releases"]
    assert isinstance(released, int)  # only this function writes the record, always with an int
    releases = released + 1
    epsilon = gaussian_epsilon(releases, policy.dp_noise_multiplier, policy.dp_delta)
    if epsilon > policy.dp_max_epsilon:
        raise PolicyRefusal(
            "dp-max-epsilon",
            f"one more round would spend epsilon {epsilon:.3g} > {policy.dp_max_epsilon:g} in this run",
        )
    noised, _ = clip_and_noise(delta, policy.dp_clip_norm, policy.dp_noise_multiplier)
    state.config_records[PRIVACY_RECORD] = ConfigRecord({"releases": releases, "epsilon": epsilon})
    return noised, epsilon


def evaluate_round(
    site: Site,
    preset_name: str,
    cutoff: str,
    arrays: list[np.ndarray],
    instructions: RoundInstructions,
    policy: SitePolicy,
) -> tuple[float, int, dict[str, float | str]]:
    """Score the global model on the site's holdout; returns (1 - Dice, patients, the site summary's numbers).

    ``arrays`` is one vector: ``get_weights(model, p)`` for each p in ``instructions.eval_phases``, packed.
    Aggregates over fewer than the policy's ``min_cohort`` patients are suppressed before they leave.
    """
    from common.data.manifest import read_manifest
    from common.metrics import numeric_summary
    from common.models.presets import get_preset
    from common.models.sarco import exchange_keys, set_arrays
    from common.train.evaluate import evaluate_cases

    check_finite(arrays, "the global model received")
    model = fresh_model(preset_name)
    keys = [k for phase in instructions.eval_phases for k in exchange_keys(model, phase)]
    set_arrays(model, keys, unpack_message(arrays, model, keys), what=f"evaluation of {instructions.phase}")
    if instructions.phase == "l3":
        from client.l3_task import evaluate_locator

        loss, n_series, located = evaluate_locator(site, model, policy.min_cohort, _device())
        return loss, n_series, {**located, "site": site.name}
    _, summary = evaluate_cases(
        model,
        get_preset(preset_name),
        read_manifest(site.manifest),
        cutoff=cutoff,
        split="holdout",
        with_classifier=instructions.phase == "cls",
        manifest_dir=site.manifest.parent,
        min_cohort=policy.min_cohort,
    )
    metrics: dict[str, float | str] = dict(numeric_summary(summary))
    metrics["suppressed_metrics"] = ",".join(summary.get("suppressed_metrics", []))
    metrics["site"] = site.name
    dice_mean = float(summary.get("dice_mean", math.nan))
    loss = 1.0 - dice_mean if math.isfinite(dice_mean) else 0.0
    n = float(summary.get("n", math.nan))
    return loss, int(n) if math.isfinite(n) else 0, metrics  # a hidden count (< 5 patients) weighs nothing
