"""SarcoFed ClientApp: one hospital's side of a round (``client.task``), wrapped in Flower's SecAgg+ mod.

``fit`` trains the round's phase on the site's data and returns ``local - global`` of the phase's
arrays with the number of training slices; ``evaluate`` scores the global model on the site's holdout
and returns the site summary (aggregates only; anything over fewer than 5 patients is already NaN).
The run config is read once per message into ``common.run_config.RunConfig``; where the data is comes
from the node config (``client.federated_site``). Nothing is kept in this module between messages:
deployed, each message runs in a fresh process. An exception is left to Flower, which reports it to
the server as this site's failure (``client.boundary``: a category, never paths or values); the round
goes on with the other sites.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import Client, ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

import flower_compat
from client.boundary import site_boundary
from client.federated_site import resolve_site
from client.policy import SitePolicy
from client.task import RoundInstructions, add_site_noise, evaluate_round, train_round
from common.run_config import RunConfig


class SiteClient(NumPyClient):
    """A hospital in the federation, under its own policy (``client.policy``, from the node config)."""

    def __init__(self, context: Context) -> None:
        self.run_config = RunConfig.from_mapping(context.run_config)
        self.site = resolve_site(context.node_config, self.run_config)
        self.policy = SitePolicy.for_node(context.node_config, self.run_config.simulated_site_policy)
        self.state = context.state

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        delta, n, metrics = train_round(
            self.site, self.run_config.preset, parameters, RoundInstructions.from_config(config), self.policy
        )
        if self.policy.dp_enabled:
            delta, metrics["dp_epsilon"] = add_site_noise(delta, self.policy, self.state)
        return delta, n, metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        return evaluate_round(
            self.site,
            self.run_config.preset,
            self.run_config.cutoff,
            parameters,
            RoundInstructions.from_config(config),
            self.policy,
        )


def client_fn(context: Context) -> Client:
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
    flower_compat.install_secagg_client()  # SarcoFed's mask generator and uint32 masked vectors (idempotent)
    return secaggplus_mod(msg, ctxt, call_next)


# Mods wrap in list order: the boundary sees every message first and every reply (or error) last.
app = ClientApp(client_fn=client_fn, mods=[site_boundary, secure_unless_simulated])
