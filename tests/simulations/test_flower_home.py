"""The local simulation's plumbing that shortens a run: the app bundle staged from a pruned walk (same
files as Flower's own walk), and the environment the SuperLink and its children get."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simulations import flower_home


def _flower_bundle(app: Path) -> dict[str, bytes]:
    """What ``flwr run`` itself bundles: every file walked, then Flower's publish filter."""
    from flwr.cli.utils import collect_files, filter_paths_for_publish

    return {rel: Path(p).read_bytes() for rel, p in filter_paths_for_publish(collect_files(app)).items()}


def _write(root: Path, rel: str, text: str = "x = 1\n") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def app_tree(tmp_path: Path) -> Path:
    """A small app with what a checkout holds besides code: a venv, caches, runs, ignored and odd files."""
    app = tmp_path / "myapp"
    _write(
        app,
        "pyproject.toml",
        '[project]\nname = "myapp"\nversion = "0.1.0"\ndependencies = []\n\n'
        '[tool.flwr.app]\npublisher = "me"\n\n[tool.flwr.app.components]\n'
        'serverapp = "server.app:app"\nclientapp = "client.app:app"\n\n[tool.flwr.app.config]\nx = 1\n',
    )
    _write(app, ".gitignore", "/.venv/\n__pycache__/\n*.pyc\n/runs/\n/.cache/\n*.egg-info/\n")
    for rel in (
        "client/app.py",
        "server/app.py",
        "common/data/io.py",
        "README.md",
        "conf/a.yaml",
        "client/build/keep.py",
        "tests/test_x.py",
        "deep/a/b/c/d/e.py",
    ):
        _write(app, rel)
    for rel in (
        ".venv/lib/site.py",
        ".venv/pyvenv.cfg",
        "runs/r1/summary.json",
        ".cache/sites/s/manifest.toml",
        "client/__pycache__/app.cpython-311.pyc",
        "x.egg-info/PKG-INFO.md",
        "client/mod.pyc",
        "data.csv",
        "image.png",
    ):
        _write(app, rel)
    (app / "linked.py").symlink_to(app / "client" / "app.py")
    return app


def test_bundle_files_match_flowers_own_walk(app_tree: Path) -> None:
    ours = {rel: p.read_bytes() for rel, p in flower_home.bundle_files(app_tree).items()}
    assert ours == _flower_bundle(app_tree)
    assert "client/app.py" in ours and "client/build/keep.py" in ours  # /build/ is not client/build/
    assert not any(rel.startswith((".venv/", "runs/", ".cache/")) or rel.endswith(".pyc") for rel in ours)
    assert "linked.py" not in ours  # symlinks are skipped, as Flower does


def test_negated_gitignore_patterns_turn_pruning_off(app_tree: Path) -> None:
    (app_tree / ".gitignore").write_text("/runs/\n!/runs/keep.py\n")
    _write(app_tree, "runs/keep.py")
    ours = {rel: p.read_bytes() for rel, p in flower_home.bundle_files(app_tree).items()}
    assert ours == _flower_bundle(app_tree)


def test_staged_app_builds_the_same_fab(app_tree: Path, tmp_path: Path) -> None:
    from flwr.cli.build import build_fab_from_disk

    staged = flower_home.stage_app(app_tree, tmp_path / "stage")
    assert staged.name == app_tree.name  # flwr run checks the folder name
    assert build_fab_from_disk(staged) == build_fab_from_disk(app_tree)


@pytest.mark.slow
def test_staged_project_builds_the_same_fab_as_the_checkout(tmp_path: Path) -> None:
    """The real checkout (with .venv, .cache, runs): byte-identical bundle, so the same FAB hash."""
    from flwr.cli.build import build_fab_from_disk

    staged = flower_home.stage_app(flower_home.PROJECT_ROOT, tmp_path)
    assert build_fab_from_disk(staged) == build_fab_from_disk(flower_home.PROJECT_ROOT)


def test_flower_env_is_quiet_and_fast_unless_the_caller_says_otherwise(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAY_prestart_worker_first_driver", raising=False)
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "1")
    env = flower_home.flower_env(tmp_path)
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["RAY_USAGE_STATS_ENABLED"] == "0"  # telemetry: always off
    assert env["RAY_prestart_worker_first_driver"] == "0"
    monkeypatch.setenv("RAY_prestart_worker_first_driver", "1")
    assert flower_home.flower_env(tmp_path)["RAY_prestart_worker_first_driver"] == "1"  # the caller's value wins
    assert env["FLWR_HOME"] == str(tmp_path) and env["PATH"].split(os.pathsep)[0].endswith("bin")


def test_simulation_and_deployment_share_one_environment_but_the_superexec_poll(monkeypatch, tmp_path: Path) -> None:
    from deploy.launch import QUIET_ENV
    from deploy.launch import flower_env as deployed_env

    monkeypatch.delenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", raising=False)
    simulated, deployed = flower_home.flower_env(tmp_path), deployed_env(tmp_path)
    assert all(simulated[k] == deployed[k] == v for k, v in QUIET_ENV.items())
    assert "FLWR_SUPEREXEC_TASK_POLL_INTERVAL" not in simulated  # Flower's 1 s: polling costs the sites CPU
    assert deployed["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "0.2"


def test_the_simulation_config_is_the_toml_flower_reads(tmp_path: Path) -> None:
    import tomllib

    config = tomllib.loads(flower_home.write_config(tmp_path, 9999, num_supernodes=4).read_text())
    assert config["superlink"]["default"] == flower_home.CONNECTION
    link = config["superlink"][flower_home.CONNECTION]
    assert (link["address"], link["insecure"], link["options"]["num-supernodes"]) == ("127.0.0.1:9999", True, 4)
    local = tomllib.loads(flower_home.write_config(tmp_path, None, num_supernodes=3).read_text())
    assert local["superlink"][flower_home.CONNECTION]["address"] == ":local:"
    assert local["superlink"][flower_home.CONNECTION]["options"]["backend"]["client-resources"]["num-gpus"] == 0.0
