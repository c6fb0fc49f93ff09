"""A ClientApp for the plain-FedAvg benchmark run only: SecAgg+ mod when the server speaks SecAgg+, else none.

Why: ``client.app:app`` always wraps fit in Flower's ``secaggplus_mod``, which fails a plain train
message with ``KeyError: 'secaggplus_configs'`` (so a site refuses to send its update in the clear).
The benchmark needs a plain round to compare SecAgg+ with, so ``simulations.bench_fed`` runs this app
from a copy of the project whose pyproject names it; the hospital's app is unchanged.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.client import ClientApp
from flwr.client.mod import secaggplus_mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from client.app import client_fn


def secagg_if_requested(msg: Message, ctxt: Context, call_next):  # type: ignore[no-untyped-def]
    if msg.has_content() and RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, ctxt)
    return secaggplus_mod(msg, ctxt, call_next)


app = ClientApp(client_fn=client_fn, mods=[secagg_if_requested])
