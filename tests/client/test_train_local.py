"""`sarcofed train-local` end to end on a tiny phantom site, as a user runs it (subprocess, real files)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _sarcofed(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sarcofed", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    from common.phantom.site import write_site

    return write_site(
        tmp_path_factory.mktemp("phantom"), "site-a", "general-surgery", n_patients=10, n_unlabelled=4, seed=0
    )


@pytest.mark.slow
def test_ssl_then_seg_then_cls(site, tmp_path):
    ssl = _sarcofed(
        "train-local",
        "--phase",
        "ssl",
        "--data",
        str(site),
        "--out",
        str(tmp_path / "ssl.pt"),
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--no-progress",
    )
    assert ssl.returncode == 0, ssl.stderr
    assert "model written to" in ssl.stdout
    seg = _sarcofed(
        "train-local",
        "--phase",
        "seg",
        "--data",
        str(site),
        "--out",
        str(tmp_path / "seg.pt"),
        "--init",
        str(tmp_path / "ssl.pt"),
        "--epochs",
        "2",
        "--no-progress",
        "--format",
        "json",
    )
    assert seg.returncode == 0, seg.stderr
    summary = json.loads(seg.stdout)
    assert summary["phase"] == "seg" and summary["preset"] == "tiny" and summary["num-examples"] == 7
    from common.models.checkpoint import load_checkpoint

    _, info = load_checkpoint(tmp_path / "seg.pt", phases=("seg",))
    assert info["extra"]["init"] == str(tmp_path / "ssl.pt")
    cls = _sarcofed(
        "train-local",
        "--phase",
        "cls",
        "--data",
        str(site),
        "--out",
        str(tmp_path / "cls.pt"),
        "--init",
        str(tmp_path / "seg.pt"),
        "--epochs",
        "1",
        "--no-progress",
    )
    assert cls.returncode == 0, cls.stderr


@pytest.mark.slow
def test_errors_are_one_line(site, tmp_path):
    bad_phase = _sarcofed("train-local", "--phase", "pretrain", "--data", str(site), "--out", str(tmp_path / "x.pt"))
    assert bad_phase.returncode == 3 and "ssl, seg, cls" in bad_phase.stderr and "Traceback" not in bad_phase.stderr
    missing = _sarcofed(
        "train-local",
        "--phase",
        "seg",
        "--data",
        str(site),
        "--out",
        str(tmp_path / "x.pt"),
        "--init",
        str(tmp_path / "none.pt"),
    )
    assert missing.returncode == 4 and "none.pt" in missing.stderr and "Traceback" not in missing.stderr
    no_manifest = _sarcofed(
        "train-local",
        "--phase",
        "seg",
        "--data",
        str(tmp_path / "nope.csv"),
        "--out",
        str(tmp_path / "x.pt"),
        "--preset",
        "tiny",
    )
    assert no_manifest.returncode == 2 and "nope.csv" in no_manifest.stderr
