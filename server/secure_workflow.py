"""Flower's SecAgg+ workflow, made to survive a bad site and to say when a round did not happen.

``GuardedSecAggPlusWorkflow`` is Flower 1.42's ``SecAggPlusWorkflow`` with four changes:

- **A malformed masked vector drops its site, not the ServerApp.** Flower sums every site's masked
  vector as it arrives (``collect_masked_vectors_stage``); one of the wrong length or shape (a bug, a
  different model, a hostile node) raised inside numpy and ended the whole run. Here each reply is
  checked against the shapes the round's arrays must have before Flower sees it; a reply that does
  not fit is turned into an error reply, which Flower already treats as a site that dropped out (its
  pairwise masks are removed with the other sites' shares, its own update is never added).
- **A site that leaves before sharing its keys no longer ends the round.** Flower lists it as dropped
  at the unmask stage, where the other sites hold no key share of it, and keeps it as a neighbour whose
  mask the server tries to rebuild (see ``__call__``).
- **A halted round is reported.** When a stage leaves fewer live sites than the threshold, Flower logs
  "Secure aggregation halted" and returns; the strategy's ``aggregate_fit`` never runs, so nothing
  recorded the round. Here the strategy is told (``fit_aborted``) which stage halted and why.

- **The mask generator is named.** Each setup-stage message carries the server's mask generator
  version (``flower_compat.MASK_PRG_CONFIG_KEY``); a node that runs another refuses the round and says
  so, where two generators would otherwise give a garbage sum without any error.

``timeout`` (seconds per stage, Flower's own argument) bounds how long a hung site can hold a round.
"""

from __future__ import annotations

from logging import INFO
from typing import Any, cast

from flwr.app import Message
from flwr.app.error import Error
from flwr.common import log
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server.workflow import SecAggPlusWorkflow

from common.secagg.transport import load_ndarray
from flower_compat import MASK_PRG_CONFIG_KEY, mask_prg_version

MALFORMED_CODE = 0


def masked_vector_problem(msg: Message, shapes: list[tuple[int, ...]], mod_range: int) -> str | None:
    """Why a site's masked-vector reply cannot be summed (None when it can).

    A masked vector is the quantisation factor (one value) followed by one integer array per model
    array of the round, every value in ``[0, mod_range)``.
    """
    try:
        arrays = [
            load_ndarray(b)
            for b in cast(list[bytes], msg.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS])
        ]
    except (KeyError, TypeError, ValueError) as error:
        return f"unreadable masked vector ({type(error).__name__})"
    expected = [(1,), *shapes]
    if [tuple(a.shape) for a in arrays] != expected:
        return f"masked vector of {len(arrays)} arrays that do not have the round's shapes"
    for a in arrays:
        if a.dtype.kind not in "iu":
            return f"masked vector of dtype {a.dtype}, expected integers"
        if a.size and (int(a.min()) < 0 or int(a.max()) >= mod_range):
            return "masked vector with values outside the modulus"
    return None


class _CheckedGrid:
    """The round's grid, noting which nodes answered with an error and, with ``shapes``, checking every
    masked-vector reply before the workflow reads it."""

    def __init__(self, grid: Any, shapes: list[tuple[int, ...]] | None = None, mod_range: int = 0) -> None:
        self._grid, self._shapes, self._mod_range = grid, shapes, mod_range
        self.errored: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        requests = list(messages)
        replies = list(self._grid.send_and_receive(requests, timeout=timeout))
        # The grid gave each request its id; an error the SuperLink writes for a node that stopped
        # answering comes "from" the SuperLink, so the node is the one the request went to.
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in requests}
        for reply in replies:
            if reply.has_error():
                node = sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
                self.errored.add(node)
                if not reply.error.reason.startswith(f"node {node}"):  # the coordinator reads which node it was
                    reply.__dict__["_error"] = Error(code=reply.error.code, reason=f"node {node}: {reply.error.reason}")
                continue
            if self._shapes is None:
                continue
            problem = masked_vector_problem(reply, self._shapes, self._mod_range)
            if problem is not None:
                node = reply.metadata.src_node_id
                self.errored.add(node)
                reply.__dict__["_content"] = None  # Message allows an error only on a reply without content
                reply.__dict__["_error"] = Error(
                    code=MALFORMED_CODE, reason=f"node {node} dropped by the server: {problem}"
                )
        return replies


class _MaskVersionGrid:
    """The round's grid, writing ``MASK_PRG_CONFIG_KEY`` into each setup-stage message before it leaves:
    a node that masks otherwise refuses the round (``client.boundary``) instead of spoiling the sum."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        requests = list(messages)
        for message in requests:
            configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
            if configs is not None and configs.get(Key.STAGE) == Stage.SETUP:
                configs[MASK_PRG_CONFIG_KEY] = mask_prg_version()
        return self._grid.send_and_receive(requests, timeout=timeout)


class GuardedSecAggPlusWorkflow(SecAggPlusWorkflow):
    """``SecAggPlusWorkflow`` that checks masked vectors and reports a halted round (see module docstring).

    The strategy in the legacy context must have ``update_shapes()`` (the shapes of a site's update)
    and ``fit_aborted(server_round, reason, failures)``.
    """

    def __call__(self, grid: Any, context: Any) -> None:
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
        from flwr.server.workflow.constant import Key as WorkflowKey
        from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

        state = WorkflowState()
        stages = (
            ("setup", self.setup_stage),
            ("share keys", self.share_keys_stage),
            ("collect masked vectors", self.collect_masked_vectors_stage),
            ("unmask", self.unmask_stage),
        )
        current_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        watched = _CheckedGrid(grid)
        for name, stage in stages:
            before = set(state.active_node_ids)
            ok = stage(watched, context, state)  # type: ignore[arg-type]  # a Grid in all but its base class
            expected = set(state.sampled_node_ids) if name == "setup" else before
            for node in sorted(expected - set(state.active_node_ids) - watched.errored):
                state.failures.append(
                    TimeoutError(
                        f"node {node} did not reply at the {name} stage within round-timeout ({self.timeout} s)"
                    )
                )
            left = sorted(expected - set(state.active_node_ids))
            if left:  # the coordinator's log says at once who the round goes on without
                log(
                    INFO,
                    "secure aggregation, round %s: the %s stage goes on with %d of %d sites, without node %s",
                    current_round,
                    name,
                    len(state.active_node_ids),
                    len(expected),
                    ", ".join(map(str, left)),
                )
            if name in ("setup", "share keys"):
                # Flower 1.42 keeps every sampled node for the unmask stage: a node that left before sharing
                # its keys is listed as dropped (each site then fails looking up its key share) and stays a
                # neighbour whose pairwise mask the server tries to rebuild (no public key: KeyError in the
                # ServerApp). Only nodes that shared their keys are in the round, as the SecAgg+ protocol has it.
                live = set(state.active_node_ids)
                state.sampled_node_ids = live
                state.nid_to_neighbours = {n: neighbours & live for n, neighbours in state.nid_to_neighbours.items()}
            if not ok:
                reason = (
                    f"secure aggregation halted at the {name} stage: {len(state.active_node_ids)} sites left, "
                    f"{state.threshold} needed; the global model is unchanged"
                )
                context.strategy.fit_aborted(current_round, reason, list(state.failures))
                return

    def setup_stage(self, grid: Any, context: Any, state: Any) -> bool:
        """Flower's setup stage, its messages also carrying this server's mask generator version."""
        tagging = _MaskVersionGrid(grid)
        return bool(super().setup_stage(tagging, context, state))  # type: ignore[arg-type]  # a Grid but by base class

    def collect_masked_vectors_stage(self, grid: Any, context: Any, state: Any) -> bool:
        shapes = context.strategy.update_shapes()
        checked = _CheckedGrid(grid, shapes, state.mod_range)
        before = len(state.failures)
        ok = super().collect_masked_vectors_stage(checked, context, state)  # type: ignore[arg-type]  # as above
        if isinstance(grid, _CheckedGrid):
            grid.errored |= checked.errored
        # Flower 1.42 appends each failed reply of this stage twice (once per loop over the replies).
        new = [str(f) for f in state.failures[before:]]
        half = len(new) // 2
        if len(new) % 2 == 0 and new[:half] == new[half:]:
            del state.failures[before + half :]
        return bool(ok)
