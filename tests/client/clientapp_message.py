"""Deliver Flower messages to SarcoFed's ClientApp in one process, as a deployed SuperNode's
``flwr-clientapp`` would (there: one process per message).

    python tests/client/clientapp_message.py SPEC.json

SPEC: {"run_config": {...}, "node_config": {...}, "messages": [{"type": "train" | "evaluate",
"arrays": "in.npz", "config": {...}, "out": "out.npz"}, ...]}. Each reply's arrays go to its ``out``
(.npz, keys a0, a1, ...) with its metrics and num_examples in ``<out>.json``. The tests run one message
per process and the same messages in one process, and compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def deliver(spec: dict) -> None:
    from flwr.app import Context, Message, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters
    from flwr.compat.common.recorddict_compat import (
        evaluateins_to_recorddict,
        fitins_to_recorddict,
        recorddict_to_evaluateres,
        recorddict_to_fitres,
    )
    from flwr.supercore.task_identity import TaskIdentity

    from client.app import app

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    context = Context(
        run_id=1, node_id=1, node_config=spec["node_config"], state=RecordDict(), run_config=spec["run_config"]
    )
    for item in spec["messages"]:
        with np.load(item["arrays"]) as data:
            arrays = [data[f"a{i}"] for i in range(len(data.files))]
        parameters = ndarrays_to_parameters(arrays)
        if item["type"] == "train":
            content = fitins_to_recorddict(FitIns(parameters, item["config"]), keep_input=True)
            message_type = MessageType.TRAIN
        else:
            content = evaluateins_to_recorddict(EvaluateIns(parameters, item["config"]), keep_input=True)
            message_type = MessageType.EVALUATE
        reply = app(Message(content=content, dst_node_id=1, message_type=message_type), context)
        if reply.has_error():
            raise RuntimeError(f"the ClientApp failed: {reply.error.reason}")
        if item["type"] == "train":
            res = recorddict_to_fitres(reply.content, keep_input=True)
            from flwr.common import parameters_to_ndarrays

            out_arrays, n, metrics = parameters_to_ndarrays(res.parameters), res.num_examples, dict(res.metrics)
        else:
            res = recorddict_to_evaluateres(reply.content)
            out_arrays, n, metrics = [], res.num_examples, {**dict(res.metrics), "loss": res.loss}
        np.savez(item["out"], **{f"a{i}": a for i, a in enumerate(out_arrays)})
        Path(item["out"] + ".json").write_text(json.dumps({"num_examples": n, "metrics": metrics}, default=str))


if __name__ == "__main__":
    deliver(json.loads(Path(sys.argv[1]).read_text()))
