"""The ClientApp is stateless: every message type gets the same reply in a fresh process as after other
messages in a long-lived one. Deployed, Flower starts one ``flwr-clientapp`` process per message; a
simulation keeps one process for the whole run, which hid a classifier trained on a random encoder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import app_run_config

DRIVER = Path(__file__).with_name("clientapp_message.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from common.phantom import write_site

    return write_site(
        tmp_path_factory.mktemp("stateless") / "site-a",
        "site-a",
        "general-surgery",
        n_patients=10,
        n_unlabelled=2,
        seed=5,
        holdout_fraction=0.5,
    )


def _inputs(phase: str, seed: int) -> list[np.ndarray]:
    """A phase's message from a seeded model: its context, then what it trains, packed into one vector."""
    import torch

    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel, get_arrays, phase_inputs
    from common.secagg import pack

    torch.manual_seed(seed)
    model = SarcoModel(get_preset("tiny"))
    return [pack(get_arrays(model, phase_inputs(model, phase)))]


def _eval_inputs(phases: str, seed: int) -> list[np.ndarray]:
    import torch

    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel, get_weights
    from common.secagg import pack

    torch.manual_seed(seed)
    model = SarcoModel(get_preset("tiny"))
    return [pack([a for p in phases.split(",") for a in get_weights(model, p)])]


def _run(spec: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, str(DRIVER), str(folder / "spec.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


def _reply(path: str) -> tuple[list[np.ndarray], dict]:
    with np.load(path) as data:
        arrays = [data[f"a{i}"] for i in range(len(data.files))]
    return arrays, json.loads(Path(path + ".json").read_text())


def _same_metrics(a: dict, b: dict) -> bool:
    """Equal keys and values, NaN (a suppressed or undefined metric) equal to NaN; the site's timing aside."""
    if a.keys() != b.keys():
        return False
    return all(
        x == y or (isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y))
        for x, y in ((a[k], b[k]) for k in a if k != "seconds")
    )


@pytest.mark.slow
def test_each_message_gets_the_same_reply_in_a_fresh_process(site: Path, tmp_path: Path) -> None:
    round_config = {"local-epochs": 1, "lr-scale": 1.0}
    messages = {  # name -> (type, arrays, config); one process delivers them in this order
        "ssl": ("train", _inputs("ssl", 1), {**round_config, "phase": "ssl", "round": 1, "seed": 1}),
        "seg-1": ("train", _inputs("seg", 2), {**round_config, "phase": "seg", "round": 1, "seed": 11}),
        "seg-2": ("train", _inputs("seg", 2), {**round_config, "phase": "seg", "round": 2, "seed": 12}),
        "cls": ("train", _inputs("cls", 3), {**round_config, "phase": "cls", "round": 1, "seed": 21}),
        "eval-cls": ("evaluate", _eval_inputs("seg,cls", 4), {"phase": "cls", "round": 1, "eval-phases": "seg,cls"}),
    }
    for name, (_, arrays, _) in messages.items():
        np.savez(tmp_path / f"{name}.in.npz", **{f"a{i}": a for i, a in enumerate(arrays)})
    base = {
        "run_config": app_run_config(preset="tiny", site_manifests=str(site), sites_cache=str(tmp_path / "cache")),
        "node_config": {"partition-id": 0, "num-partitions": 1},
    }

    def message(name: str, out: Path) -> dict:
        kind, _, config = messages[name]
        return {"type": kind, "arrays": str(tmp_path / f"{name}.in.npz"), "config": config, "out": str(out)}

    _run({**base, "messages": [message(n, tmp_path / "one" / f"{n}.npz") for n in messages]}, tmp_path / "one")
    for name in ("seg-2", "cls", "eval-cls"):  # what earlier messages of a long-lived process could change
        _run({**base, "messages": [message(name, tmp_path / "fresh" / f"{name}.npz")]}, tmp_path / "fresh")
        fresh, fresh_info = _reply(str(tmp_path / "fresh" / f"{name}.npz"))
        kept, kept_info = _reply(str(tmp_path / "one" / f"{name}.npz"))
        assert fresh_info["num_examples"] == kept_info["num_examples"], name
        assert _same_metrics(fresh_info["metrics"], kept_info["metrics"]), (name, fresh_info, kept_info)
        assert len(fresh) == len(kept)
        for a, b in zip(fresh, kept, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)
    [delta], info = _reply(str(tmp_path / "one" / "cls.npz"))
    head = _head_size()
    assert delta.shape == (head,)  # the head's deltas only, packed: the encoder went in, not out
    assert info["num_examples"] > 0 and np.abs(delta).max() > 0  # and the head did learn


def _head_size() -> int:
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel, get_weights

    return sum(a.size for a in get_weights(SarcoModel(get_preset("tiny")), "cls"))
