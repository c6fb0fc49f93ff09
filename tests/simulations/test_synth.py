"""The `sarcofed synth`, `synth-consortium` and `montage` commands, end to end on real files."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from common.data.manifest import read_manifest
from sarcofed.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_synth_writes_a_site_and_prints_json(tmp_path):
    result = runner.invoke(
        app,
        [
            "synth",
            str(tmp_path / "h"),
            "--site",
            "h",
            "--profile",
            "geriatric-oncology",
            "--patients",
            "3",
            "--unlabelled",
            "1",
            "--seed",
            "4",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)[0]
    assert summary["train"] + summary["holdout"] == 3 and summary["unlabelled"] == 1
    df = read_manifest(tmp_path / "h" / "manifest.csv")
    assert len(df) == 4 and len(list((tmp_path / "h" / "images").glob("*.dcm"))) == 4
    assert len(list((tmp_path / "h" / "masks").glob("*.nii.gz"))) == 3


def test_synth_unknown_profile_is_a_config_error(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "h"), "--site", "h", "--profile", "nope", "--patients", "1"])
    assert result.exit_code != 0
    assert not (tmp_path / "h" / "manifest.csv").exists()


def test_shipped_consortia_are_valid_and_sized():
    from common.phantom import load_consortium

    demo = load_consortium(ROOT / "simulations" / "consortia" / "demo.toml")
    tiny = load_consortium(ROOT / "simulations" / "consortia" / "tiny.toml")
    sizes = sorted(s["patients"] for s in demo.values())
    assert 3 <= len(demo) <= 4 and sizes[0] >= 15 and 120 <= sizes[-1] <= 200
    assert len({s["profile"].name for s in demo.values()}) == len(demo)
    assert len(tiny) == 3 and all(10 <= s["patients"] <= 16 for s in tiny.values())
    assert tomllib.loads((ROOT / "simulations" / "consortia" / "tiny.toml").read_text())


def test_synth_consortium_and_montage(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[sites.a]\nprofile = "young-trauma"\npatients = 2\nunlabelled = 1\nseed = 1\n'
        '[sites.b]\nprofile = "obesity-clinic"\npatients = 2\nseed = 2\n'
    )
    result = runner.invoke(app, ["synth-consortium", str(config), str(tmp_path / "out"), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert {row["site"] for row in json.loads(result.output)} == {"a", "b"}
    png = tmp_path / "m.png"
    result = runner.invoke(
        app,
        [
            "montage",
            str(tmp_path / "out" / "a" / "manifest.csv"),
            str(tmp_path / "out" / "b" / "manifest.csv"),
            "--out",
            str(png),
            "-n",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
