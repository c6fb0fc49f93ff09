"""Run config -> RunPlan: checks, and which rounds a resumed run still has to do."""

from __future__ import annotations

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
def test_resume_skips_what_the_checkpoint_holds(phase: str, done: int, want: list) -> None:
    plan = RunPlan.from_run_config(app_run_config(rounds_ssl=2, rounds_seg=3, rounds_cls=1, resume_from="/x.pt",
                                                  resume_phase=phase, resume_round=done))
    assert [(s.phase, s.first_round, s.last_round) for s in plan.spans()] == want


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"strategy": "krum"}, id="unknown-strategy"),
        pytest.param({"rounds-seg": -1}, id="negative-rounds"),
        pytest.param({"resume-from": "/x.pt", "resume-phase": "finetune"}, id="bad-resume-phase"),
        pytest.param({"resume-from": "/x.pt", "resume-phase": "seg", "resume-round": 9}, id="resume-round-too-big"),
    ],
)
def test_bad_config_is_a_config_error(config: dict) -> None:
    with pytest.raises(ConfigError):
        RunPlan.from_run_config(app_run_config(**{k.replace("-", "_"): v for k, v in config.items()}))
