"""Plain (non-SecAgg+) updates: allowed from simulated sites, refused by a hospital's node."""

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType

from client.app import secure_unless_simulated


@pytest.fixture(autouse=True)
def _task_identity():
    """Flower stamps messages with the running task's identity, as its ClientApp process would."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1


def _train_message() -> Message:
    content = RecordDict({"arrays": ArrayRecord(), "config": ConfigRecord({"phase": "seg"})})
    return Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN)


def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


def test_simulated_site_may_train_without_secagg():
    seen = []
    secure_unless_simulated(
        _train_message(), _context({"partition-id": 0, "num-partitions": 3}), lambda msg, ctxt: seen.append(msg) or msg
    )
    assert len(seen) == 1


def test_hospital_refuses_a_plain_training_round():
    seen = []
    with pytest.raises(PermissionError, match="secure-aggregation rounds only"):
        secure_unless_simulated(
            _train_message(),
            _context({"data-path": "/data/site/manifest.csv"}),
            lambda msg, ctxt: seen.append(msg) or msg,
        )
    assert seen == []
