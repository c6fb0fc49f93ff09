"""flower_compat installs its replacements only into the Flower it was written for, and never silently skips one."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import time
import types

import pytest

import flower_compat
from flower_compat import secagg, supernode, version


def test_another_flower_release_fails_loudly(monkeypatch) -> None:
    monkeypatch.setattr(version, "installed_flower", lambda: "1.43.0")
    for install in (flower_compat.install_secagg_client, flower_compat.install_secagg_server):
        with pytest.raises(flower_compat.FlowerVersionError, match=r"Flower 1\.42 .* flwr 1\.43\.0 is installed"):
            install()
    monkeypatch.setattr(version, "installed_flower", lambda: "1.42.3")
    flower_compat.require_flower("a patch release")  # same internals


def test_the_secagg_names_are_ours_after_install_on_both_ends() -> None:
    from common.secagg.mask_prg import mask_arrays
    from common.secagg.quantize import reproducible_quantize

    client, server = flower_compat.install_secagg_client(), flower_compat.install_secagg_server()
    assert client.pseudo_rand_gen is mask_arrays is server.pseudo_rand_gen
    assert client.quantize is reproducible_quantize and client.ndarray_to_bytes.sarcofed_compact
    send = client.ndarray_to_bytes
    flower_compat.install_secagg_client()
    assert client.ndarray_to_bytes is send  # a second install keeps one wrapper


def test_a_missing_flower_name_is_named_not_skipped() -> None:
    real = importlib.import_module(secagg.CLIENT_MODULE)
    stand_in = types.ModuleType(secagg.CLIENT_MODULE)
    for name in secagg.CLIENT_NAMES:
        if name != "quantize":
            setattr(stand_in, name, getattr(real, name))
    with pytest.raises(AttributeError, match=r"secaggplus_mod has no quantize: Flower changed"):
        flower_compat.install_secagg_client(stand_in)


def test_the_mask_generator_version_is_the_domain_separation_string() -> None:
    from common.secagg.mask_prg import MASK_PRG_INFO

    assert flower_compat.mask_prg_version() == MASK_PRG_INFO.decode() and "chacha20" in flower_compat.mask_prg_version()


def test_the_supernode_idle_poll_is_shortened_on_the_installed_flower() -> None:
    """Flower 1.42's SuperNode loop sleeps 3 s when idle; after install it sleeps at most the cap."""
    loop = importlib.import_module(supernode.LOOP_MODULE)
    assert "time.sleep(3)" in inspect.getsource(loop)
    code = (
        "import time, flwr.supernode.start_client_internal as loop\n"
        "from flower_compat.supernode import shorten_idle_poll\n"
        "shorten_idle_poll(loop, 0.5)\n"
        "t0 = time.monotonic(); loop.time.sleep(3); assert time.monotonic() - t0 < 1.0\n"
        "assert loop.time.monotonic() > 0\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    with pytest.raises(AttributeError, match="no longer sleeps 3 s"):
        supernode.shorten_idle_poll(types.ModuleType("flwr.supernode.start_client_internal"), 0.5)


def test_the_supernode_hooks_hand_over_the_node_state_and_get_run() -> None:
    """The two wrapped names call the hooks with what the watch needs, and call Flower's own functions."""
    from contextlib import contextmanager

    calls: list[tuple[str, object]] = []
    cli, loop = types.ModuleType("cli"), types.ModuleType("loop")

    def get_run(run_id: int) -> int:
        return run_id

    @contextmanager
    def connect(*_args, **_kwargs):
        yield (lambda: None, get_run)

    class Factory:
        def state(self) -> str:
            return "node-state"

    cli.start_client_internal = lambda *a, **k: calls.append(("flower start", k["state_factory"])) or "ran"
    loop.http_request_response = connect
    supernode.hook_node(cli, loop, lambda s: calls.append(("on_start", s)), lambda g: calls.append(("on_connect", g)))
    assert cli.start_client_internal(state_factory=Factory()) == "ran"
    with loop.http_request_response() as connection:
        assert connection[1] is get_run
    assert [c[0] for c in calls] == ["on_start", "flower start", "on_connect"]
    assert calls[0][1] == "node-state" and calls[2][1] is get_run
    with pytest.raises(AttributeError, match="is gone: Flower changed"):
        supernode.hook_node(types.ModuleType("cli"), loop, print, print)


def test_the_supernode_modules_of_the_installed_flower_have_what_is_wrapped() -> None:
    cli = importlib.import_module(supernode.CLI_MODULE)
    loop = importlib.import_module(supernode.LOOP_MODULE)
    assert callable(cli.start_client_internal) and callable(loop.http_request_response)
    assert "get_run" in inspect.getsource(loop.http_request_response)  # the connection still yields get_run
    assert "state_factory" in inspect.signature(cli.start_client_internal).parameters
    assert time.monotonic() > 0
