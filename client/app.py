"""SarcoFed ClientApp: one hospital's side of a round, wrapped in Flower's SecAgg+ mod.

``fit`` loads the global arrays of the round's phase, runs that phase's local loop (the same
``common.train`` loop as ``sarcofed train-local``) and returns ``local - global`` for the phase's
arrays (SecAgg+ clips and quantises what it sends, so deltas; see ``common.secagg.delta``) with the
number of training slices and the training loss. ``evaluate`` scores the global model on the site's
holdout and returns the site summary of ``common.metrics`` (aggregates only; anything over fewer
than 5 patients is already NaN). Any exception is left to Flower, which reports it to the server as
this site's failure; the round goes on with the other sites.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from common.secagg import compact_masked_transport, override_flower_prg

# Masks from the whole shared secret (flwr #7522) and masked vectors sent as uint32; the ServerApp
# installs the same generator and widens what it receives.
_SECAGG_MOD = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
override_flower_prg(_SECAGG_MOD)
compact_masked_transport(client_mod=_SECAGG_MOD)

_MODELS: dict[str, Any] = {}  # preset name -> model, reused across messages in one process (weights reset each call)
_DATASETS: dict[tuple[str, str, str], Any] = {}  # (manifest, preset, phase) -> resampled slices, built once per process


def _dataset(manifest: Any, preset_name: str, phase: str, seed: int) -> Any:
    """The phase's training slices, resampled to the preset grid once (rounds reuse them)."""
    from common.models.presets import get_preset
    from common.train.data import SliceDataset

    key = (str(manifest), preset_name, phase)
    if key not in _DATASETS:
        _DATASETS[key] = SliceDataset(manifest, get_preset(preset_name), phase, augment=True, seed=seed)
    return _DATASETS[key]


def _model(preset_name: str) -> Any:
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel

    if preset_name not in _MODELS:
        _MODELS[preset_name] = SarcoModel(get_preset(preset_name))
    return _MODELS[preset_name]


def _scalars(summary: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """Flower metrics carry scalars: keep numbers and strings, join lists (suppressed metric names)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in summary.items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, np.generic):
            out[key] = value.item()
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(map(str, value))
    return out


class SiteClient(NumPyClient):
    """A hospital in the federation (data found by ``client.federated_site.resolve_site``)."""

    def __init__(self, context: Context) -> None:
        from client.federated_site import resolve_site

        self.run_config = dict(context.run_config)
        self.site = resolve_site(dict(context.node_config), self.run_config)
        self.preset = str(self.run_config.get("preset", "demo"))
        self.cutoff = str(self.run_config.get("cutoff", "prado2008"))

    def _manifest(self) -> Any:
        from common.data.manifest import read_manifest

        return read_manifest(self.site.manifest)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        import torch

        from common.models.sarco import get_weights, set_weights
        from common.secagg import weight_delta
        from common.train.loops import train_phase

        from common.models.presets import get_preset

        phase = str(config["phase"])
        model = _model(self.preset)
        lr = get_preset(self.preset).lr(phase) * float(config.get("lr-scale", 1.0))
        set_weights(model, phase, parameters)
        result = train_phase(
            model, phase, _dataset(self.site.manifest, self.preset, phase, int(config.get("seed", 0))), epochs=int(config.get("local-epochs", 1)), seed=int(config.get("seed", 0)),
            device="cuda" if torch.cuda.is_available() else "cpu",
            prox_mu=float(config.get("proximal_mu", 0.0)), progress=False, lr=lr,
        )
        delta = weight_delta(get_weights(model, phase), parameters)
        return delta, int(result["num-examples"]), {"site": self.site.name, "loss": float(result["loss"])}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        from common.models.presets import get_preset
        from common.models.sarco import exchange_keys, set_weights
        from common.train.evaluate import evaluate_cases

        model = _model(self.preset)
        start = 0
        for phase in [p for p in str(config.get("eval-phases", config.get("phase", "seg"))).split(",") if p]:
            count = len(exchange_keys(model, phase))
            set_weights(model, phase, parameters[start : start + count])
            start += count
        _, summary = evaluate_cases(model, get_preset(self.preset), self._manifest(), cutoff=self.cutoff,
                                    split="holdout", with_classifier=config.get("phase") == "cls",
                                    manifest_dir=self.site.manifest.parent)
        metrics = _scalars(summary)
        metrics["site"] = self.site.name
        dice_mean = float(summary.get("dice_mean", math.nan))
        loss = 1.0 - dice_mean if math.isfinite(dice_mean) else 0.0
        return loss, int(summary.get("n", 0)), metrics


def client_fn(context: Context):  # type: ignore[no-untyped-def]
    return SiteClient(context).to_client()


def secure_unless_simulated(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+ for every training message that asks for it; a plain update only from a simulated site.

    A hospital (node config ``data-path``) never sends its update in clear: a training message without
    SecAgg+ settings fails there, whatever the server asked for. Synthetic sites in a simulation
    (``partition-id``) may, so researchers can compare plain and secure runs
    (run config ``secure-aggregation=false``).
    """
    is_train = msg.metadata.message_type == MessageType.TRAIN
    if is_train and RECORD_KEY_CONFIGS not in msg.content.config_records:
        if "data-path" in ctxt.node_config:
            raise PermissionError(
                "this site takes part in secure-aggregation rounds only; the server asked for a plain "
                "update (run config secure-aggregation=false). Nothing was sent."
            )
        return call_next(msg, ctxt)
    return secaggplus_mod(msg, ctxt, call_next)


app = ClientApp(client_fn=client_fn, mods=[secure_unless_simulated])
