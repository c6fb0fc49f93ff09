"""Run config -> RunPlan: checks, and which rounds a resumed run still has to do (from a checkpoint file, or
from a run folder, which says itself where it stopped)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import ConfigError
from server.plan import RunPlan
from tests.conftest import app_run_config


def test_spans() -> None:
    plan = RunPlan.from_run_config(app_run_config(rounds_ssl=2, rounds_seg=3, rounds_cls=0, secure_aggregation=True))
    assert plan.secure_aggregation and plan.strategy == "fedavg"
    assert [(s.phase, s.first_round, s.last_round) for s in plan.spans()] == [("ssl", 1, 2), ("seg", 1, 3)]


@pytest.mark.parametrize(
    ("phase", "done", "want"),
    [
        pytest.param("ssl", 2, [("seg", 1, 3), ("cls", 1, 1)], id="after-last-ssl-round"),
        pytest.param("seg", 1, [("seg", 2, 3), ("cls", 1, 1)], id="mid-seg"),
        pytest.param("cls", 1, [], id="all-done"),
    ],
)
def test_resume_skips_what_the_checkpoint_holds(phase: str, done: int, want: list, tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"")
    plan = RunPlan.from_run_config(
        app_run_config(
            rounds_ssl=2,
            rounds_seg=3,
            rounds_cls=1,
            resume_from=str(tmp_path / "x.pt"),
            resume_phase=phase,
            resume_round=done,
        )
    )
    assert [(s.phase, s.first_round, s.last_round) for s in plan.spans()] == want


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"strategy": "krum"}, id="unknown-strategy"),
        pytest.param({"rounds-seg": -1}, id="negative-rounds"),
        pytest.param({"resume-from": "{tmp}/x.pt", "resume-phase": "finetune"}, id="bad-resume-phase"),
        pytest.param(
            {"resume-from": "{tmp}/x.pt", "resume-phase": "seg", "resume-round": 9}, id="resume-round-too-big"
        ),
        pytest.param({"resume-from": "{tmp}/missing.pt", "resume-phase": "seg", "resume-round": 1}, id="no-such-file"),
    ],
)
def test_bad_config_is_a_config_error(config: dict, tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"")
    config = {
        k.replace("-", "_"): v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in config.items()
    }
    with pytest.raises(ConfigError):
        RunPlan.from_run_config(app_run_config(**config))


SCHEDULE = {"rounds_ssl": 1, "rounds_seg": 3, "rounds_cls": 1}


def _stopped_run(tmp_path: Path, *checkpoints: str, record: dict | None = None) -> Path:
    """A run folder as a run stopped part way leaves it: its round checkpoints (empty files) and run.json."""
    folder = tmp_path / "runs" / "20261202-040000-tiny"
    (folder / "checkpoints").mkdir(parents=True)
    for name in ("best.pt", *checkpoints):
        (folder / "checkpoints" / name).write_bytes(b"")
    config = app_run_config(**SCHEDULE)
    (folder / "run.json").write_text(json.dumps({"run_config": {**config, **(record or {})}, "flower_runs": []}))
    return folder


def test_a_run_folder_says_where_to_go_on(tmp_path: Path) -> None:
    folder = _stopped_run(tmp_path, "round-001-ssl-01.pt", "round-002-seg-01.pt", "round-003-seg-02.pt")
    plan = RunPlan.from_run_config(app_run_config(**SCHEDULE, resume_from=str(folder)))
    assert plan.resume_folder == folder.resolve() and plan.resume_from == folder / "checkpoints" / "round-003-seg-02.pt"
    assert (plan.resume_phase, plan.resume_round, plan.resume_global_round) == ("seg", 2, 3)
    assert [(s.phase, s.first_round, s.last_round) for s in plan.spans()] == [("seg", 3, 3), ("cls", 1, 1)]
    latest = folder.parent / "latest"
    latest.symlink_to(folder.name)
    assert (
        RunPlan.from_run_config(app_run_config(**SCHEDULE, resume_from=str(latest))).resume_folder == folder.resolve()
    )


def test_a_run_folder_with_phase_or_round_typed_by_hand_is_refused(tmp_path: Path) -> None:
    folder = _stopped_run(tmp_path, "round-001-ssl-01.pt")
    with pytest.raises(ConfigError, match="leave resume-phase and resume-round unset"):
        RunPlan.from_run_config(app_run_config(**SCHEDULE, resume_from=str(folder), resume_phase="seg", resume_round=1))


def test_a_run_folder_without_a_finished_round_is_refused(tmp_path: Path) -> None:
    folder = _stopped_run(tmp_path)
    with pytest.raises(ConfigError, match="no round of this run finished"):
        RunPlan.from_run_config(app_run_config(**SCHEDULE, resume_from=str(folder)))
    with pytest.raises(ConfigError, match="not a run folder"):
        RunPlan.from_run_config(app_run_config(**SCHEDULE, resume_from=str(tmp_path)))


def test_a_run_folder_continues_only_with_its_own_schedule(tmp_path: Path) -> None:
    folder = _stopped_run(tmp_path, "round-001-ssl-01.pt", record={"rounds-seg": 4, "seed": 7})
    with pytest.raises(ConfigError) as error:
        RunPlan.from_run_config(app_run_config(**SCHEDULE, resume_from=str(folder)))
    assert "rounds-seg 4 -> 3" in str(error.value) and "seed 7 -> 0" in str(error.value)
    assert str(folder / "run.json") in str(error.value)
    # What may change on a resume: who takes part, how long a round may wait.
    plan = RunPlan.from_run_config(
        app_run_config(rounds_ssl=1, rounds_seg=4, rounds_cls=1, seed=7, resume_from=str(folder), round_timeout=60.0)
    )
    assert plan.resume_phase == "ssl" and plan.round_timeout == 60.0
