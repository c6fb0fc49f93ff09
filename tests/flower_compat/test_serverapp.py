"""The ServerApp's shorter waits for replies (flower_compat.serverapp): what it replaces in Flower 1.42 is
still there and used the same way, the replacement behaves like the original, deployment is untouched."""

from __future__ import annotations

import inspect
import queue
import subprocess
import sys
import threading
import time

from simulations.flower_home import PROJECT_ROOT


def test_flower_still_has_what_we_replace_and_starts_it_by_module_name() -> None:
    """flower_compat.serverapp copies three Flower 1.42 functions with the polls replaced: fail loudly on an upgrade."""
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.superlink.grid import InMemoryGrid

    assert list(inspect.signature(vce_api.add_messages_to_queue).parameters) == [
        "state",
        "queue",
        "nodes_mapping",
        "f_stop",
    ]
    assert list(inspect.signature(vce_api.put_message_into_state).parameters) == ["state", "queue", "f_stop"]
    run_api = inspect.getsource(vce_api.run_api)
    assert "target=add_messages_to_queue" in run_api and "target=put_message_into_state" in run_api
    source = inspect.getsource(vce_api.add_messages_to_queue)
    assert "get_message_ins(node_id=node_id, limit=1)" in source and "f_stop.wait(0.1)" in source
    assert "state.store_message_res(message_reply)" in inspect.getsource(vce_api.put_message_into_state)
    assert "messageins_queue: Queue[Message] = Queue()" in run_api  # the queues come from the module's name
    assert "messageins_queue.get(timeout=1.0)" in inspect.getsource(vce_api.worker)
    send = inspect.getsource(InMemoryGrid.send_and_receive)
    assert "self.push_messages(messages)" in send and "time.sleep(self.pull_interval)" in send


def _imports(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


def test_patch_applies_in_the_simulation_process_only() -> None:
    sim = _imports(
        "import flwr.simulation, server.app\n"
        "import flower_compat.serverapp as a\n"
        "from flwr.server.superlink.fleet.vce import vce_api as v\n"
        "assert v.add_messages_to_queue is a.add_messages_to_queue\n"
        "assert v.put_message_into_state is a.put_message_into_state\n"
        "assert v.Queue is a.PromptStopQueue"
    )
    assert sim.returncode == 0, sim.stderr[-2000:]
    deployed = _imports("import sys, server.app\nassert 'flwr.server.superlink.fleet.vce.vce_api' not in sys.modules")
    assert deployed.returncode == 0, deployed.stderr[-2000:]


class _State:
    """Message inbox per node, as the engine reads it (at most ``limit`` per call)."""

    def __init__(self) -> None:
        self.inbox: dict[int, list[str]] = {1: [], 2: []}
        self.lock = threading.Lock()

    def get_message_ins(self, node_id: int, limit: int) -> list[str]:
        with self.lock:
            taken, self.inbox[node_id] = self.inbox[node_id][:limit], self.inbox[node_id][limit:]
        return taken


def test_engine_takes_pushed_messages_at_once_and_stops_on_request() -> None:
    from flower_compat import serverapp as app

    state, out, stop = _State(), queue.Queue(), threading.Event()
    worker = threading.Thread(target=app.add_messages_to_queue, args=(state, out, {1: 0, 2: 1}, stop))
    worker.start()
    try:
        time.sleep(0.3)  # idle: it waits on the wake event (0.1 s at most between looks)
        with state.lock:
            state.inbox[1].append("m1")
            state.inbox[2].append("m2")
        t0 = time.perf_counter()
        app._VCE_WAKE.set()
        got = {out.get(timeout=2), out.get(timeout=2)}
        assert got == {"m1", "m2"} and time.perf_counter() - t0 < 0.09
    finally:
        stop.set()
        worker.join(timeout=2)
    assert not worker.is_alive()


def test_engine_stores_replies_and_wakes_the_server() -> None:
    from flower_compat import serverapp as app

    class Store:
        def __init__(self) -> None:
            self.stored: list[str] = []

        def store_message_res(self, message: str) -> None:
            self.stored.append(message)

    state, replies, stop = Store(), queue.Queue(), threading.Event()
    worker = threading.Thread(target=app.put_message_into_state, args=(state, replies, stop))
    worker.start()
    try:
        app._REPLY_WAKE.clear()
        replies.put("r1")
        assert app._REPLY_WAKE.wait(2) and state.stored == ["r1"]
    finally:
        stop.set()
        worker.join(timeout=3)
    assert not worker.is_alive()


def test_engine_queues_wait_at_most_a_tenth_of_a_second() -> None:
    from flower_compat import serverapp as app

    q = app.PromptStopQueue()
    t0 = time.perf_counter()
    try:
        q.get(timeout=1.0)
    except queue.Empty:
        pass
    assert time.perf_counter() - t0 < 0.5
    q.put("m")
    assert q.get(timeout=1.0) == "m" and q.empty()


class _FakeMessage:
    def __init__(self, reply_to: str) -> None:
        self.metadata = type("Metadata", (), {"reply_to_message_id": reply_to})()


def _grid():
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid import InMemoryGrid

    return InMemoryGrid(LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()))


def test_send_and_receive_returns_as_soon_as_the_last_reply_is_stored(monkeypatch) -> None:
    from flower_compat import serverapp as app

    grid = _grid()
    pending: list[_FakeMessage] = []
    monkeypatch.setattr(grid, "push_messages", lambda messages: ["a", "b"])
    monkeypatch.setattr(grid, "pull_messages", lambda ids: [pending.pop() for _ in list(pending)])
    app.tune_grid(grid)

    def reply_later() -> None:
        for reply_to in ("a", "b"):
            time.sleep(0.25)
            pending.append(_FakeMessage(reply_to))
            app._REPLY_WAKE.set()

    threading.Thread(target=reply_later).start()
    app._VCE_WAKE.clear()
    t0 = time.perf_counter()
    got = grid.send_and_receive(["m1", "m2"])
    elapsed = time.perf_counter() - t0
    assert sorted(m.metadata.reply_to_message_id for m in got) == ["a", "b"]
    assert 0.45 < elapsed < 0.58  # two replies 0.25 s apart, no poll interval on top
    assert app._VCE_WAKE.is_set()  # the push woke the engine


def test_send_and_receive_keeps_its_timeout(monkeypatch) -> None:
    from flower_compat import serverapp as app

    grid = _grid()
    monkeypatch.setattr(grid, "push_messages", lambda messages: ["a"])
    monkeypatch.setattr(grid, "pull_messages", lambda ids: [])
    app.tune_grid(grid)
    t0 = time.perf_counter()
    assert grid.send_and_receive(["m"], timeout=0.3) == []
    assert 0.28 < time.perf_counter() - t0 < 0.45


def test_tune_grid_leaves_other_grids_alone() -> None:
    from flower_compat import serverapp as app

    class OtherGrid:  # a grid of some other kind
        pull_interval = 1.0

    other = OtherGrid()
    app.tune_grid(other)  # type: ignore[arg-type]  # deliberately not a Grid
    assert not vars(other)


def test_a_deployed_serverapp_looks_for_replies_every_fifth_of_a_second(monkeypatch) -> None:
    """Flower 1.42's HttpGrid sleeps 3 s between looks; five exchanges per SecAgg+ round each waited on it."""
    import inspect

    from flwr.superlink.grid.http_grid import HttpGrid

    from flower_compat import serverapp as app

    assert "time.sleep(3)" in inspect.getsource(HttpGrid.send_and_receive)  # what tune_grid replaces
    grid = HttpGrid.__new__(HttpGrid)  # no SuperLink: push and pull are replaced below
    pending: list[_FakeMessage] = []
    monkeypatch.setattr(grid, "push_messages", lambda messages: ["a"], raising=False)
    monkeypatch.setattr(grid, "pull_messages", lambda ids: [pending.pop() for _ in list(pending)], raising=False)
    app.tune_grid(grid)
    threading.Timer(0.5, lambda: pending.append(_FakeMessage("a"))).start()
    t0 = time.perf_counter()
    got = grid.send_and_receive(["m"])
    assert [m.metadata.reply_to_message_id for m in got] == ["a"]
    assert 0.45 < time.perf_counter() - t0 < 0.9
