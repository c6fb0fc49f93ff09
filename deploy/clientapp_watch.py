"""End a hospital's ClientApp processes once their run is over, or once they run longer than the site allows.

Why: Flower 1.42's SuperNode handles one message at a time. It starts a ``flwr-clientapp`` process for
it and then waits, with no bound, for that process's reply (``_push_messages`` in
``flwr/supernode/start_client_internal.py``). Nothing tells that process that its run has ended: its
only check is a heartbeat to the SuperNode's own task table, which knows nothing of the SuperLink's
runs. So when the SuperLink restarts (the run in flight ends ``finished:failed``) or the coordinator
stops a run, the ClientApp goes on with a message nobody will aggregate (a round of training, or a
wait of up to two hours for the message's objects), and the node takes no other message meanwhile.

``ClientAppWatch`` runs inside the SuperNode process:

- every ``RUN_CHECK_S`` it asks the SuperLink, over the node's own authenticated Fleet connection,
  about the run of each running ClientApp (``GetRun``: the SuperLink refuses it, HTTP 403, for a run
  that is finished, stopped or unknown to it; a restarted SuperLink marks the interrupted run failed
  once its ServerApp's heartbeat has lapsed, about a minute after the stop);
- every ``POLL_S`` it ends the ClientApps whose run is over, or that have run longer than
  ``max_seconds``: the node's own bound (``--max-clientapp-seconds`` of ``deploy.supernode_main``),
  never a value from the server.

Ending one: its task is marked failed (the task token stops working, so the process can no longer
reply), its message gets the error reply Flower gives a crashed ClientApp, with the reason (so the node
goes on with its next message at once; the SuperLink drops replies for a finished run), and the process
and its children get SIGKILL. Not SIGTERM: Flower's exit handler would then close the task without a
reply, and the node would wait for one for ever. A ClientApp whose task has ended by other means but
which is still alive ``GRACE_S`` later (wedged, or stopped) is killed the same way, and a message whose
ClientApp was stopped by a signal (an administrator's ``kill``) gets the error reply Flower never sends.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from logging import DEBUG, ERROR, INFO, WARN
from pathlib import Path
from typing import Any

from deploy.launch import descendants

DEFAULT_MAX_SECONDS = 3600.0  # twice the run config's default round-timeout (1800 s)
POLL_S = 2.0
RUN_CHECK_S = 10.0  # one small GetRun request per running ClientApp and period
GRACE_S = 15.0  # a ClientApp whose task ended exits by itself within Flower's 5 s force-exit
CLIENTAPP = "flwr-clientapp"


@dataclass(frozen=True)
class ClientAppProcess:
    """A ``flwr-clientapp`` process and the task token it was started with (it is on its command line)."""

    pid: int
    token: str


def clientapp_processes(root_pid: int) -> list[ClientAppProcess]:
    """The ClientApp processes below ROOT_PID (the SuperNode starts them through its SuperExec)."""
    found = []
    for pid in sorted(descendants(root_pid)):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if not any(Path(a).name == CLIENTAPP for a in args[:2]) or "--token" not in args[:-1]:
            continue
        found.append(ClientAppProcess(pid, args[args.index("--token") + 1]))
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL PID and its descendants (a ClientApp may have data-loader workers)."""
    for victim in [*descendants(pid), pid]:
        try:
            os.kill(victim, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _age_s(task: Any, now: datetime) -> float:
    """Seconds since the SuperExec claimed TASK (Flower stores ISO-8601 times in UTC)."""
    started = task.starting_at or task.running_at or task.pending_at
    try:
        return (now - datetime.fromisoformat(started)).total_seconds()
    except (TypeError, ValueError):
        return 0.0


class ClientAppWatch:
    """Ends the ClientApps of one SuperNode whose run is over or that exceed ``max_seconds`` (see module doc).

    Parameters
    ----------
    max_seconds : float (default: DEFAULT_MAX_SECONDS)
        The longest a ClientApp may work on one message, counted from its launch.
    root_pid : int | None (default: None)
        The SuperNode's process id (default: this process).
    """

    def __init__(
        self,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        *,
        root_pid: int | None = None,
        poll_s: float = POLL_S,
        run_check_s: float = RUN_CHECK_S,
        grace_s: float = GRACE_S,
    ) -> None:
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
        self.max_seconds = float(max_seconds)
        self.root_pid = root_pid or os.getpid()
        self.poll_s, self.run_check_s, self.grace_s = poll_s, run_check_s, grace_s
        self.state: Any = None
        self._get_run: Callable[[int], Any] | None = None
        self._lock = threading.Lock()
        self._running_runs: set[int] = set()
        self._over: dict[int, str] = {}  # run id -> why the run is over
        self._stale_since: dict[int, float] = {}  # pid -> monotonic time its token was first seen invalid
        self._ended: set[int] = set()  # task ids already ended
        self._open: dict[int, int] = {}  # task id -> run id of the ClientApp tasks open at the last pass
        self._stop = threading.Event()

    def attach(self, state: Any) -> None:
        """The SuperNode's NodeState (the task table its Runtime API and main loop share)."""
        self.state = state

    def use_fleet(self, get_run: Callable[[int], Any] | None) -> None:
        """The node's Fleet ``get_run(run_id)``; it raises RunNotRunningException for a run that is over."""
        self._get_run = get_run

    def start(self) -> None:
        """Watch in two daemon threads: the local checks never wait on an unreachable SuperLink."""
        _log(
            INFO,
            "ClientApp watch: a ClientApp ends when its run is over at the SuperLink or after %.0f s",
            self.max_seconds,
        )
        for target, name in ((self._watch, "clientapp-watch"), (self._check_runs, "clientapp-run-check")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def mark_over(self, run_id: int, reason: str) -> None:
        with self._lock:
            self._over.setdefault(run_id, reason)

    def check(self, now: datetime | None = None, monotonic: float | None = None) -> list[str]:
        """One pass: end what must end; returns one line per ClientApp ended."""
        from flwr.common.constant import Status
        from flwr.supercore.constant import TaskType

        now = now or datetime.now(UTC)
        monotonic = monotonic if monotonic is not None else time.monotonic()
        open_tasks = [
            t
            for t in self.state.get_tasks(statuses=[Status.PENDING, Status.STARTING, Status.RUNNING])
            if t.type == TaskType.CLIENT_APP
        ]
        tasks = [t for t in open_tasks if t.status.status != Status.PENDING]
        with self._lock:
            self._running_runs = {t.run_id for t in tasks}
            over = dict(self._over)
        self._answer_closed({t.task_id: t.run_id for t in open_tasks})
        pids: dict[int, list[int]] = {}
        ended = []
        processes = clientapp_processes(self.root_pid)
        self._stale_since = {p.pid: t for p in processes if (t := self._stale_since.get(p.pid)) is not None}
        for process in processes:
            task = self.state.get_task_by_token(process.token)
            if task is not None:
                self._stale_since.pop(process.pid, None)
                pids.setdefault(task.task_id, []).append(process.pid)
                continue
            since = self._stale_since.setdefault(process.pid, monotonic)
            if monotonic - since >= self.grace_s:
                kill_tree(process.pid)
                self._stale_since.pop(process.pid, None)
                ended.append(
                    f"ClientApp pid {process.pid}: its task had ended {self.grace_s:.0f} s before, "
                    "and it was still running"
                )
        for task in (t for t in tasks if t.task_id not in self._ended):
            age = _age_s(task, now)
            reason = over.get(task.run_id)
            if reason is None and age > self.max_seconds:
                reason = (
                    f"it ran {age:.1f} s, longer than this site's limit of {self.max_seconds:g} s "
                    "(--max-clientapp-seconds)"
                )
            if reason is not None:
                self._ended.add(task.task_id)
                self._end(task, pids.get(task.task_id, []), reason)
                ended.append(
                    f"ClientApp of run {task.run_id} (task {task.task_id}, pid "
                    f"{', '.join(map(str, pids.get(task.task_id, []))) or 'none'}): {reason}"
                )
        for line in ended:
            _log(WARN, "Ended %s", line)
        return ended

    def _end(self, task: Any, pids: Iterable[int], reason: str) -> None:
        """Close TASK with an error reply to its message, then kill its processes (see module doc)."""
        from flwr.common.constant import SubStatus

        if not hasattr(self.state, "_store_error_replies"):
            # Without Flower's reply helper, the task is left to Flower's own heartbeat expiry, which
            # replies "ClientApp stopped responding" once the killed process has missed two heartbeats.
            _log(
                ERROR,
                "ClientApp watch: this Flower's NodeState has no _store_error_replies; the node "
                "goes on only after Flower's heartbeat expiry (up to 60 s)",
            )
        elif self.state.finish_task(task.task_id, SubStatus.FAILED, f"Ended by the site: {reason}"):
            self._answer(task.run_id, f"ClientApp ended by the site: {reason}", take_unpulled=True)
        for pid in pids:
            kill_tree(pid)

    def _answer_closed(self, open_tasks: dict[int, int]) -> None:
        """Answer the messages of runs whose last ClientApp task closed without replying.

        A ClientApp stopped by SIGTERM or SIGINT (by an administrator, or Flower's own parent watch)
        closes its task through Flower's exit handler but sends no reply, and nothing else would: the
        SuperNode would wait for one for ever. Only runs with no open task are answered (one message at a
        time: an open task may still reply), and only messages a ClientApp pulled and did not answer.
        """
        closed = {run for task_id, run in self._open.items() if task_id not in open_tasks}
        for run_id in closed - set(open_tasks.values()):
            self._answer(run_id, "ClientApp ended without a reply")
        self._open = open_tasks

    def _answer(self, run_id: int, reason: str, *, take_unpulled: bool = False) -> None:
        """Give the unanswered messages of RUN_ID Flower's crashed-ClientApp error reply, with REASON.

        TAKE_UNPULLED: also the messages no ClientApp has pulled yet (the task of one was just closed).
        """
        from flwr.app import Error
        from flwr.common.constant import ErrorCode

        reply = getattr(self.state, "_store_error_replies", None)
        if reply is None:
            return
        for message in self.state.get_messages_legacy(run_ids=[run_id], is_reply=False) if take_unpulled else ():
            self.state.record_message_processing_start(message.metadata.message_id)
        reply({run_id}, Error(ErrorCode.CLIENT_APP_CRASHED, reason))

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.state is None:
                continue
            try:
                self.check()
            except Exception as err:  # noqa: BLE001 (the watch must outlive one bad pass; the node goes on)
                _log(ERROR, "ClientApp watch: %s", err)

    def _check_runs(self) -> None:
        from flwr.supercore.run import RunNotRunningException

        while not self._stop.wait(self.run_check_s):
            get_run = self._get_run
            if get_run is None:
                continue
            with self._lock:
                runs = sorted(self._running_runs - set(self._over))
            for run_id in runs:
                try:
                    get_run(run_id)  # retries by itself while the SuperLink is unreachable
                except RunNotRunningException:
                    self.mark_over(run_id, f"run {run_id} is finished, stopped or unknown at the SuperLink")
                except Exception as err:  # noqa: BLE001 (any other answer: ask again next period)
                    _log(DEBUG, "ClientApp watch: GetRun(%s) failed: %s", run_id, err)


def _log(level: int, message: str, *args: object) -> None:
    from flwr.supercore import log

    log(level, message, *args)
