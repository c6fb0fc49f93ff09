"""Live view: its JSON follows a run folder as the ServerApp's own writers fill it, it stays on loopback,
and a real browser shows the rows (headless Chromium, skipped where it is not installed)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from common.errors import ConfigError
from common.metrics import site_summary
from deploy.commands.live_view import live_view
from deploy.live_view import LiveViewServer, make_server, run_dir_state
from server.recorder import Recorder
from server.run_folder import RunFolder

SITES = {"general": (12, 6), "onco": (10, 5), "obesity": (8, 2), "trauma": (3, 1)}
"""Holdout patients and how many are sarcopenic: obesity's verdict rests on 2 sarcopenic patients and
trauma's whole summary on 3, so the sites suppress them."""
SCHEDULE = {"ssl": 1, "seg": 3, "cls": 1}
RUN_CONFIG = {
    "preset": "tiny",
    "consortium": "demo",
    "strategy": "fedavg",
    "secure-aggregation": True,
    "cutoff": "prado2008",
    **{f"rounds-{p}": n for p, n in SCHEDULE.items()},
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
SCREENSHOTS = os.environ.get("SARCOFED_SCREENSHOTS")
"""A folder (docs/img) to keep the screenshots in; without it they go to the test's tmp folder."""


@pytest.fixture(scope="module")
def model():
    """The tiny union model: the recorder loads each round's arrays into it, as in a run."""
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel

    return SarcoModel(get_preset("tiny"))


def _holdout(n: int, n_pos: int, seed: int, dice: float, classifier: bool) -> pd.DataFrame:
    """A site's per-patient holdout table as common.train.evaluate writes it."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(90, 180, n)
    pred = ref * (1 + rng.normal(0.02, (1 - dice), n))
    sarcopenic = np.array([True] * n_pos + [False] * (n - n_pos))
    table = pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "dice": rng.uniform(dice - 0.03, dice + 0.03, n),
            "sma_ref_cm2": ref,
            "sma_pred_cm2": pred,
            "sma_abs_pct_err": np.abs(pred - ref) / ref * 100,
            "sarcopenic_ref": sarcopenic,
            "sarcopenic_pred": sarcopenic,
        }
    )
    table.loc[n - 1, "sarcopenic_pred"] = True  # one false positive from SMA
    if classifier:
        table["cls_prob"] = np.where(sarcopenic, 0.7, 0.3)
        table.loc[0, "cls_prob"] = 0.4  # one sarcopenic patient the classifier misses
    return table


class _Run:
    """A run folder filled round by round through the ServerApp's writers (RunFolder, Recorder)."""

    def __init__(self, run_dir: Path, model, flower_run_id: int = 4711) -> None:
        self.folder = RunFolder.create(run_dir, "tiny")
        self.folder.record_run(flower_run_id, RUN_CONFIG, None)
        self.recorder = Recorder(self.folder, model, lambda model, path, phase, r: path.write_bytes(phase.encode()))
        self.model = model
        self.flower_run_id = flower_run_id

    def _fit(self, phase: str, phase_round: int, failures: tuple[str, ...] = ()) -> None:
        from common.models.sarco import get_weights

        fits = [
            {
                "site": site,
                "n_train": 4 * n,
                "loss": 1.5 / (phase_round + i),
                "dp_epsilon": 0.6 * phase_round if site == "onco" else math.nan,
            }
            for i, (site, (n, _)) in enumerate(SITES.items())
        ]
        self.recorder.after_fit(phase, phase_round, get_weights(self.model, phase), fits, list(failures))

    def ssl(self) -> None:
        self._fit("ssl", 1)

    def evaluated(self, phase: str, phase_round: int, dice: float, failures: tuple[str, ...] = ()) -> None:
        self._fit(phase, phase_round, failures)
        summaries = []
        for seed, (site, (n, n_pos)) in enumerate(SITES.items()):
            summary = site_summary(_holdout(n, n_pos, seed, dice - 0.01 * seed, classifier=phase == "cls"))
            summaries.append({**summary, "site": site, "suppressed_metrics": ",".join(summary["suppressed_metrics"])})
        self.recorder.after_evaluate(phase, phase_round, summaries, [])

    def finish(self, outcome: str = "completed") -> None:
        self.folder.write_summary(
            {
                "outcome": outcome,
                "flower_run_ids": [self.flower_run_id],
                "preset": "tiny",
                "rounds": SCHEDULE,
                "strategy": "fedavg",
                "secure_aggregation": True,
                "cutoff": "prado2008",
                "wall_seconds": 742.5,
            }
        )


@contextmanager
def _serving(run_dir: Path, **options) -> Iterator[LiveViewServer]:
    """The live view on a free loopback port, in a thread, for the length of the block."""
    server = make_server(run_dir, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _state(server: LiveViewServer, run: str | None = None) -> dict:
    url = server.url + "api/state" + ("" if run is None else f"?run={run}")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        text = response.read().decode()
    assert not re.search(r"\bnan\b|\bNone\b|\bnull\b", text.replace('"nodes": null', ""), re.IGNORECASE), text
    return json.loads(text)


def _rows(state: dict, global_round: int) -> dict[str, dict[str, str]]:
    """site -> {column label: cell text (with its short reason)} for one round of the chosen run."""
    run = state["run"]
    labels = [c["label"] for c in run["columns"]]
    (round_,) = [r for r in run["rounds"] if r["global_round"] == global_round]
    return {
        r["site"]: {
            label: c["text"] + (f" ({c['short']})" if c.get("short") else "")
            for label, c in zip(labels, r["cells"], strict=True)
        }
        | {"Status": r["status"]}
        for r in round_["rows"]
    }


def test_state_follows_the_run_as_rounds_arrive(tmp_path, model) -> None:
    run = _Run(tmp_path / "runs", model)
    run.ssl()
    run.evaluated("seg", 1, dice=0.82)

    with _serving(tmp_path / "runs") as server:
        before = _state(server)
        run.evaluated("seg", 2, dice=0.88, failures=("node 9 (trauma): data error at the site",))
        after = _state(server)
        run.finish()
        done = _state(server)

    (listed,) = before["runs"]
    assert listed["name"] == run.folder.path.name and listed["status"] == "running"
    assert listed["flower_run_ids"] == ["4711"] and listed["schedule"] == "ssl 1, seg 3, cls 1 rounds"
    assert listed["last_round"] == "Segmentation round 1 of 3 (global round 2)"
    assert [r["global_round"] for r in before["run"]["rounds"]] == [2, 1]
    assert after["runs"][0]["last_round"] == "Segmentation round 2 of 3 (global round 3)"
    assert [r["global_round"] for r in after["run"]["rounds"]] == [3, 2, 1]
    assert after["run"]["failures"] == []  # failures reach summary.json when the run ends
    assert done["runs"][0]["status"] == "completed"
    assert done["run"]["failures"] == [
        {"when": "Segmentation round 2", "stage": "training", "reason": "node 9 (trauma): data error at the site"}
    ]


def test_cells_read_as_text_with_the_reason_when_empty(tmp_path, model) -> None:
    run = _Run(tmp_path / "runs", model)
    run.ssl()
    run.evaluated("seg", 1, dice=0.9)

    with _serving(tmp_path / "runs") as server:
        state = _state(server)

    labels = [c["label"] for c in state["run"]["columns"]]
    assert labels == [
        "Holdout patients",
        "Dice",
        "SMA error",
        "Verdict accuracy (SMA)",
        "Classifier accuracy",
        "Training slices",
        "Training loss",
        "DP epsilon spent",
    ]
    seg = _rows(state, 2)
    assert list(seg) == ["general", "obesity", "onco", "trauma", "pooled"]
    general = seg["general"]
    assert general["Holdout patients"] == "12" and general["Training slices"] == "48"
    assert re.fullmatch(r"0\.\d{3}", general["Dice"]) and re.fullmatch(r"\d+\.\d%", general["SMA error"])
    assert general["Verdict accuracy (SMA)"] == "91.7%"  # 11 of 12: one false positive
    assert general["Classifier accuracy"] == "-" and general["DP epsilon spent"] == "-"
    assert seg["onco"]["DP epsilon spent"] == "0.60"
    assert seg["obesity"]["Verdict accuracy (SMA)"] == "- (< 5 patients)" and seg["obesity"]["Holdout patients"] == "8"
    assert seg["trauma"]["Holdout patients"] == "- (< 5 patients)" and seg["trauma"]["Dice"] == "- (< 5 patients)"
    assert seg["pooled"]["Holdout patients"] == "30" and seg["pooled"]["Training slices"] == "132"
    ssl = _rows(state, 1)
    assert ssl["general"]["Dice"] == "-" and ssl["general"]["Training loss"] == "1.5000"
    why = state["run"]["rounds"][-1]["rows"][0]["cells"][1]["why"]
    assert why == "not evaluated: SSL pretraining has no holdout metric"


def test_runs_newest_first_with_nodes_and_a_chosen_run(tmp_path, model) -> None:
    older = _Run(tmp_path / "runs", model, flower_run_id=11)
    older.ssl()
    older.finish("failed: the SuperLink went away")
    (tmp_path / "runs" / "notes").mkdir()  # not a run folder: left out
    newer_path = tmp_path / "runs" / "20991231-235959-tiny"
    newer_path.mkdir()
    RunFolder(newer_path).record_run(12, RUN_CONFIG, None)
    nodes = [
        {"node_id": 7, "site": "onco", "status": "online", "last_seen": 1_700_000_000.0},
        {"node_id": 3, "site": "general", "status": "offline", "last_seen": None},
    ]

    state = run_dir_state(tmp_path / "runs", nodes=lambda: nodes, now=1_700_000_030.0)
    chosen = run_dir_state(tmp_path / "runs", run=older.folder.path.name)
    broken = run_dir_state(tmp_path / "runs", nodes=lambda: 1 / 0)

    assert [r["name"] for r in state["runs"]] == [newer_path.name, older.folder.path.name]
    assert [r["status"] for r in state["runs"]] == ["running", "failed: the SuperLink went away"]
    assert state["run"]["name"] == newer_path.name and state["run"]["last_round"] == "none yet"
    assert [(n["site"], n["node_id"], n["status"]) for n in state["nodes"]["rows"]] == [
        ("general", "3", "offline"),
        ("onco", "7", "online"),
    ]
    assert state["nodes"]["rows"][1]["last_seen"].endswith("(30 s ago)")
    assert state["nodes"]["rows"][0]["last_seen"] == "-"
    assert chosen["run"]["name"] == older.folder.path.name and chosen["nodes"] is None
    assert broken["nodes"] == {"error": "nodes unavailable: division by zero", "rows": []}


def test_a_resumed_run_is_running_again_in_its_finished_folder(tmp_path, model) -> None:
    run = _Run(tmp_path / "runs", model)
    run.ssl()
    run.finish("failed: stopped")
    assert run_dir_state(tmp_path / "runs")["runs"][0]["status"] == "failed: stopped"

    RunFolder.reopen(run.folder.path).record_run(4712, RUN_CONFIG, None)

    listed = run_dir_state(tmp_path / "runs")["runs"][0]
    assert listed["status"] == "running" and listed["flower_run_ids"] == ["4711", "4712"]


def test_a_half_written_row_waits_until_its_line_is_complete(tmp_path, model) -> None:
    run = _Run(tmp_path / "runs", model)
    run.ssl()
    with run.folder.metrics_csv.open("a") as handle:  # a round's rows as they are being appended
        handle.write("1,seg,2,general,12,0.9")

    state = run_dir_state(tmp_path / "runs")

    assert [r["global_round"] for r in state["run"]["rounds"]] == [1]
    assert state["runs"][0]["last_round"] == "SSL pretraining round 1 of 1 (global round 1)"


def test_refuses_a_public_address_without_allow_remote(tmp_path) -> None:
    with pytest.raises(ConfigError, match="refusing to listen on 0.0.0.0.*SSH tunnel.*--allow-remote"):
        make_server(tmp_path, "0.0.0.0", 0)
    app = typer.Typer()
    app.command()(live_view)
    result = CliRunner().invoke(app, [str(tmp_path), "--host", "0.0.0.0", "--port", "0"])
    assert isinstance(result.exception, ConfigError)
    server = make_server(tmp_path, "0.0.0.0", 0, allow_remote=True)
    server.server_close()


def test_answers_only_requests_addressed_to_loopback(tmp_path) -> None:
    with _serving(tmp_path) as server:
        port = server.server_address[1]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/state", headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        with urllib.request.urlopen(f"http://localhost:{port}/", timeout=10) as page:
            headers, body = page.headers, page.read().decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics.csv", timeout=10)

    assert refused.value.code == 403 and missing.value.code == 404
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<script>" in body and not re.search(r"(src|href)=[\"']?https?:", body)  # nothing from the network
    assert "innerHTML" not in body  # values are placed as text, never parsed as markup


# ----------------------------------------------------------------------------- in a browser
class _Text(HTMLParser):
    """The visible text of a page (script and style left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        self._skip += tag in ("script", "style", "title")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style", "title")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return " ".join(" ".join(parser.parts).split())


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a throwaway profile and nothing fetched in the background."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-sync",
        "--disable-background-networking",
        "--disable-component-update",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


def _screenshot(profile: Path, url: str, path: Path, size: str = "1400,900") -> Path:
    """A PNG of ``url`` after its scripts ran, in 128 colours so that a docs page stays small."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    _chromium(profile, f"--screenshot={path}", f"--window-size={size}", url)
    Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return path


@needs_chromium
def test_the_page_shows_the_run_while_it_goes(tmp_path, model) -> None:
    finished = _Run(tmp_path / "runs", model, flower_run_id=4702)
    finished.ssl()
    finished.evaluated("seg", 1, dice=0.8, failures=("node 5 (trauma) did not reply within round-timeout",))
    finished.finish("failed: too few sites (1 of min-sites 3) after min-sites-wait")
    run = _Run(tmp_path / "runs", model)
    run.ssl()
    run.evaluated("seg", 1, dice=0.84)
    now = time.time()
    nodes = [
        {"node_id": 1017 + i, "site": site, "status": "online", "last_seen": now - 2 - 3 * i}
        for i, site in enumerate(SITES)
    ]
    nodes[-2].update(status="silent", last_seen=now - 75)
    nodes[-1].update(status="offline", last_seen=now - 1900)

    with _serving(tmp_path / "runs", nodes=lambda: nodes) as server:
        first = _visible_text(_chromium(tmp_path / "profile", "--dump-dom", server.url).stdout)
        run.evaluated("seg", 2, dice=0.9)
        second = _visible_text(_chromium(tmp_path / "profile", "--dump-dom", server.url).stdout)
        shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
        shot = _screenshot(tmp_path / "profile", server.url, shots / "live-view.png")

    assert "Segmentation round 1 of 3 (global round 2)" in first and "global round 3" not in first
    assert "Segmentation round 2 of 3 (global round 3)" in second
    for text in (
        run.folder.path.name,
        "running",
        "4711",
        "general",
        "pooled",
        "Verdict accuracy (SMA)",
        "(< 5 patients)",
        "1017",
        "online",
    ):
        assert text in second, text
    assert not re.search(r"\b(nan|None|null|undefined|NaN)\b", second) and "{" not in second
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size < 300_000
