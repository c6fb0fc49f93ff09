"""An in-process Flower Grid for protocol tests: messages go straight to ClientApp objects.

A test double of Flower's transport only (our ServerApp/ClientApp code and Flower's SecAgg+ run
unchanged). Every reply passes through ``seen`` so a test can inspect what the server received.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class LoopbackGrid(Grid):
    """Routes each message to ``apps[node_id]`` with a per-node Context kept across messages."""

    def __init__(self, apps: dict[int, Callable[[Message, Context], Message]], run_config: dict | None = None) -> None:
        self.apps = apps
        self.contexts = {
            nid: Context(
                run_id=1,
                node_id=nid,
                node_config={"partition-id": i},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i, nid in enumerate(apps)
        }
        self.seen: list[Message] = []
        self._replies: dict[str, Message] = {}
        self._counter = 0
        # Messages stamp the sender's identity; a SuperLink process sets it, here the test does.
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0

    def set_run(self, run: Run) -> None:  # pragma: no cover - not used by the legacy workflow
        pass

    @property
    def run(self) -> Run:  # pragma: no cover
        return Run.create_empty(1)

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.apps)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            self._counter += 1
            msg.metadata.__dict__["_message_id"] = str(self._counter)
            delivered = copy.deepcopy(msg)  # a real transport serialises: no content shared between nodes
            try:
                reply = self.apps[msg.metadata.dst_node_id](delivered, self.contexts[msg.metadata.dst_node_id])
            except Exception as error:  # what a SuperNode does with a ClientApp exception
                reply = Message(Error(code=0, reason=f"{type(error).__name__}: {error}"), reply_to=msg)
            self.seen.append(reply)
            self._replies[str(self._counter)] = reply
            ids.append(str(self._counter))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


import pytest  # noqa: E402


@pytest.fixture
def loopback_grid() -> type[LoopbackGrid]:
    """The LoopbackGrid class (in-process Flower transport for protocol tests)."""
    return LoopbackGrid
