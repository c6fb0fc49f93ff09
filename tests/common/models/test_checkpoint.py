"""Checkpoints load with nothing but the file, in a fresh process, and fail clearly."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import CheckpointError
from common.models.checkpoint import load_checkpoint, save_checkpoint
from common.models.presets import get_preset
from common.models.sarco import SarcoModel

ROOT = Path(__file__).resolve().parents[3]


def test_round_trip_in_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = SarcoModel(get_preset("tiny")).eval()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model.segment_logits(x)
    torch.save(x, tmp_path / "x.pt")
    ckpt = save_checkpoint(tmp_path / "m.pt", model, phase="seg", extra={"round": 3})
    script = (
        "import sys, torch\n"
        "from common.models.checkpoint import load_checkpoint\n"
        "m, info = load_checkpoint(sys.argv[1])\n"
        "assert info['phase'] == 'seg' and info['extra']['round'] == 3 and info['spacing_mm'] == 6.4\n"
        "with torch.no_grad():\n"
        "    torch.save(m.segment_logits(torch.load(sys.argv[2])), sys.argv[3])\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(ckpt), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")], cwd=ROOT, check=True
    )
    assert torch.equal(torch.load(tmp_path / "y.pt"), ref)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert "nope.pt" in str(info.value)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a SarcoFed checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_wrong_phase(tmp_path):
    path = save_checkpoint(tmp_path / "ssl.pt", SarcoModel(get_preset("tiny")), phase="ssl")
    with pytest.raises(CheckpointError, match="phase 'ssl', expected seg"):
        load_checkpoint(path, phases=("seg",))


def test_checkpoint_from_before_the_locator_loads_without_one(tmp_path):
    model = SarcoModel(get_preset("tiny"))
    path = save_checkpoint(tmp_path / "old.pt", model, phase="seg")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("locator.")}
    torch.save(payload, path)
    loaded, info = load_checkpoint(path, phases=("seg",))
    assert info["has_locator"] is False
    assert torch.equal(
        loaded.state_dict()["decoder.out.conv.conv.weight"], model.state_dict()["decoder.out.conv.conv.weight"]
    )
    assert load_checkpoint(save_checkpoint(tmp_path / "new.pt", model, phase="l3"))[1]["has_locator"] is True
    payload["state_dict"].pop(next(k for k in payload["state_dict"] if k.startswith("decoder.")))
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(path)
