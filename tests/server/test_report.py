"""Run report: readable holdout tables for every evaluated round, and last, the image classifier against
the sarcopenia verdict from SMA, from the last cls round."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from server.report import write_report
from server.run_folder import RoundCheckpoint, RunFolder

HOLDOUT = {
    "dice_mean": 0.9,
    "sma_abs_pct_err_mean": 4.4,
    "sma_bias_cm2": 3.8,
    "sma_loa_low": -7.8,
    "sma_loa_high": 15.3,
    "sarcopenia_accuracy": 0.9,
    "sensitivity": 0.85,
    "specificity": 0.95,
}
CLASSIFIER = {"cls_accuracy": 0.75, "cls_sensitivity": 0.8, "cls_specificity": 0.7, "cls_auroc": 0.8125}


class _Sections(HTMLParser):
    """The report as (h2 id, rows of cell texts of its tables), one entry per h2, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[tuple[str, list[list[str]]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self.sections.append((dict(attrs).get("id") or "", []))
        elif tag == "tr" and self.sections:
            self.sections[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.sections:
            self.sections[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _run(tmp_path, rounds: list[tuple[str, int, dict[str, dict]]]) -> str:
    """A run folder whose metrics.csv holds ``rounds`` (phase, round, rows by site); returns report.html."""
    folder = RunFolder(tmp_path / "run")
    for global_round, (phase, phase_round, by_site) in enumerate(rounds, start=1):
        stamp = {"round": phase_round, "phase": phase, "global_round": global_round, "status": "ok"}
        folder.append_rows([{**row, "site": site, **stamp} for site, row in by_site.items()])
    folder.write_summary(
        {
            "preset": "tiny",
            "strategy": "fedavg",
            "rounds": {"ssl": 1, "seg": 1, "cls": 2},
            "local_epochs": {"ssl": 1, "seg": 2, "cls": 1},
            "cutoff": "prado2008",
            "secure_aggregation": True,
            "wall_seconds": 12.5,
        }
    )
    write_report(folder.path)
    return (folder.path / "report.html").read_text()


class _Text(HTMLParser):
    """The visible text of a page (script, style and title left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("script", "style", "title")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style", "title")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _visible_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def _sections(page: str) -> list[tuple[str, list[list[str]]]]:
    parser = _Sections()
    parser.feed(page)
    return parser.sections


def _by_site(rows: list[list[str]]) -> dict[str, list[str]]:
    """Cells of each site's rows (the row's tables one after the other), the site name once."""
    out: dict[str, list[str]] = {}
    for row in rows:
        if row and row[0] in ("a", "b", "pooled"):
            out[row[0]] = [*out[row[0]], *row[1:]] if row[0] in out else row
    return out


SSL = ("ssl", 1, {"a": {"n_train": 40, "loss": 1.5}, "pooled": {"n_train": 40, "loss": 1.5}})
SEG = (
    "seg",
    1,
    {
        "a": {"n": 10, **HOLDOUT, "n_train": 40, "loss": 0.5},
        "b": {"n": 6, **HOLDOUT, "sensitivity": math.nan, "suppressed_metrics": "sensitivity"},
        "pooled": {"n": 16, **HOLDOUT},
    },
)


def test_report_ends_with_the_classifier_against_the_sma_verdict_of_the_last_cls_round(tmp_path) -> None:
    earlier = ("cls", 1, {"a": {"n": 10, **HOLDOUT, "cls_accuracy": 0.55}, "pooled": {"n": 10, **HOLDOUT}})
    last = (
        "cls",
        2,
        {
            "a": {"n": 10, **HOLDOUT, **CLASSIFIER},
            "b": {
                "n": 6,
                **HOLDOUT,
                **CLASSIFIER,
                "cls_sensitivity": math.nan,
                "sensitivity": math.nan,
                "suppressed_metrics": "cls_sensitivity,sensitivity",
            },
            "pooled": {"n": 16, **HOLDOUT, **CLASSIFIER, "cls_accuracy": 0.7, "cls_auroc": math.nan},
        },
    )

    page = _run(tmp_path, [SSL, SEG, earlier, last])

    anchor, rows = _sections(page)[-1]
    assert anchor == "comparison"
    assert "Classifier round 2, global round 4" in page[page.rindex("<h2") :]
    sites = _by_site(rows)
    # site, n, classifier (accuracy, sensitivity, specificity, AUROC), SMA verdict (accuracy, sensitivity,
    # specificity), accuracy difference
    assert sites["a"] == ["a", "10", "75.0%", "80.0%", "70.0%", "0.812", "90.0%", "85.0%", "95.0%", "-15.0 points"]
    assert sites["b"] == [
        "b",
        "6",
        "75.0%",
        "suppressed",
        "70.0%",
        "0.812",
        "90.0%",
        "suppressed",
        "95.0%",
        "-15.0 points",
    ]
    assert sites["pooled"] == [
        "pooled",
        "16",
        "70.0%",
        "80.0%",
        "70.0%",
        "—",
        "90.0%",
        "85.0%",
        "95.0%",
        "-20.0 points",
    ]


def test_report_tables_are_readable_for_every_evaluated_round(tmp_path) -> None:
    page = _run(tmp_path, [SSL, SEG])

    rounds = {anchor: rows for anchor, rows in _sections(page)}
    assert "nan" not in page.lower() and "None" not in page and "{" not in page.split("<body>")[1]
    text = page.split("<body>")[1]
    for name in ("dice_mean", "sma_abs_pct_err_mean", "sma_loa_low", "cls_sensitivity", "cls_specificity"):
        assert f"title='metrics.csv: {name}'" in text, name  # the heading reads "Dice, mean"; its tooltip the column
        assert name not in _visible_text(page), name
    seg = _by_site(rounds["holdout"])
    # First table: site, n, Dice, SMA error, bias and limits, training slices and loss; second: n, IMAT, VAT
    # and SAT errors, myosteatosis accuracy (not in this run's metrics); third: n, SMA verdict (accuracy,
    # sensitivity, specificity), classifier (accuracy, sensitivity, specificity, AUROC).
    assert seg["a"] == [
        "a",
        "10",
        "0.900",
        "4.4%",
        "+3.8",
        "-7.8",
        "+15.3",
        "40",
        "0.5000",
        "10",
        "—",
        "—",
        "—",
        "—",
        "10",
        "90.0%",
        "85.0%",
        "95.0%",
        "—",
        "—",
        "—",
        "—",
    ]
    assert seg["b"][7:9] == ["—", "—"] and seg["b"][16] == "suppressed"
    assert "Rounds per phase: ssl 1, seg 1, cls 2" in text


def test_report_says_the_comparison_is_not_available_without_a_cls_round(tmp_path) -> None:
    page = _run(tmp_path, [SSL, SEG])

    assert _sections(page)[-1][0] == "comparison"
    last = page[page.rindex("<h2") :]
    assert "Not available: no cls round was evaluated" in last and "<table" not in last


def _finished_run(tmp_path) -> RunFolder:
    """A run resumed once, with site failures and an aborted round, as the ServerApp leaves it."""
    folder = RunFolder(tmp_path / "20261202-041500-tiny")
    folder.record_run(8123, {"preset": "tiny"}, None)
    onco, general = "geriatric-oncology", "general-surgery"
    rounds = [
        (
            "ssl",
            1,
            {
                onco: {"n_train": 40, "loss": 1.52},
                general: {"n_train": 24, "loss": 1.61},
                "pooled": {"n_train": 64, "loss": 1.55},
            },
        ),
        (
            "seg",
            1,
            {
                onco: {"n": 10, **HOLDOUT, "n_train": 40, "loss": 0.48},
                general: {
                    "n": 6,
                    **HOLDOUT,
                    "dice_mean": 0.87,
                    "sensitivity": math.nan,
                    "specificity": math.nan,
                    "sarcopenia_accuracy": math.nan,
                    "n_train": 24,
                    "loss": 0.55,
                    "suppressed_metrics": "sarcopenia_accuracy,sensitivity,specificity",
                },
                "pooled": {"n": 16, **HOLDOUT, "dice_mean": 0.889, "n_train": 64, "loss": 0.51},
            },
        ),
        (
            "cls",
            1,
            {
                onco: {"n": 10, **HOLDOUT, **CLASSIFIER, "n_train": 40, "loss": 0.31},
                general: {
                    "n": 6,
                    **HOLDOUT,
                    **CLASSIFIER,
                    "cls_sensitivity": math.nan,
                    "sensitivity": math.nan,
                    "suppressed_metrics": "cls_sensitivity,sensitivity",
                    "n_train": 24,
                    "loss": 0.42,
                },
                "pooled": {"n": 16, **HOLDOUT, **CLASSIFIER, "n_train": 64, "loss": 0.35},
            },
        ),
    ]
    for global_round, (phase, phase_round, by_site) in enumerate(rounds, start=1):
        stamp = {"round": phase_round, "phase": phase, "global_round": global_round, "status": "ok"}
        folder.append_rows([{**row, "site": site, **stamp} for site, row in by_site.items()])
    folder.append_rows(
        [
            {
                "site": "pooled",
                "round": 2,
                "phase": "cls",
                "global_round": 4,
                "status": "aborted: the sum's norm exceeds max-update-norm",
            }
        ]
    )
    folder.record_failure("seg", 1, "fit", "node 7 (general-surgery): data error at the site")
    folder.record_failure("cls", 2, "round", "aborted: the sum's norm exceeds max-update-norm")
    best = folder.checkpoint_path(3, "cls", 1)
    best.write_bytes(b"weights")
    folder.offer_best(best, 0.9, "cls", 1, 3)
    folder.record_run(8124, {"preset": "tiny"}, RoundCheckpoint(folder.checkpoint_path(3, "cls", 1), 3, "cls", 1))
    folder.write_summary(
        {
            "outcome": "completed",
            "flower_run_ids": [8123, 8124],
            "preset": "tiny",
            "strategy": "fedprox",
            "proximal_mu": 0.01,
            "rounds": {"ssl": 1, "seg": 1, "cls": 2},
            "local_epochs": {"ssl": 1, "seg": 2, "cls": 1},
            "cutoff": "prado2008",
            "secure_aggregation": True,
            "wall_seconds": 4321.5,
            "phase_seconds": {"ssl": 600.25, "seg": 2400.0, "cls": 1321.25},
            "privacy": {"dp_epsilon_by_site": {onco: 1.234}, "note": "at its own policy's delta"},
        }
    )
    write_report(folder.path)
    return folder


def test_report_names_the_flower_runs_outcome_and_failures_readably(tmp_path) -> None:
    folder = _finished_run(tmp_path)

    text = _visible_text((folder.path / "report.html").read_text())
    md = (folder.path / "report.md").read_text()

    assert "Outcome: completed" in text
    assert re.search(
        r"Flower runs: 8123 \(started [^)]+\), 8124 \(started [^)]+, resumed after Classifier round 1\)", text
    )
    assert (
        "Wall time 72 min 02 s (SSL pretraining 10 min 00 s, Segmentation 40 min 00 s, Classifier 22 min 01 s)" in text
    )
    assert "strategy fedprox (proximal mu 0.01)" in text and "own policy's delta: geriatric-oncology 1.23" in text
    failures = dict(_sections((folder.path / "report.html").read_text()))["failures"]
    assert failures[1:] == [
        ["Segmentation", "1", "training", "node 7 (general-surgery): data error at the site"],
        ["Classifier", "2", "whole round", "aborted: the sum's norm exceeds max-update-norm"],
    ]
    for line in ("Outcome: completed", "Flower runs: 8123", "| Segmentation | 1 | training | node 7 (general-surgery)"):
        assert line in md, line
    assert json.loads((folder.path / "summary.json").read_text())["flower_run_ids"] == [8123, 8124]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_in_a_browser_reads_without_python_reprs(tmp_path) -> None:
    from PIL import Image

    folder = _finished_run(tmp_path)
    url = (folder.path / "report.html").as_uri()
    shots = Path(os.environ.get("SARCOFED_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    chromium = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-sync",
        "--disable-background-networking",
        "--disable-component-update",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]

    dom = subprocess.run([*chromium, "--dump-dom", url], capture_output=True, text=True, timeout=90, check=True).stdout
    shot = shots / "report.png"
    subprocess.run(
        [*chromium, f"--screenshot={shot}", "--window-size=1400,2700", url], capture_output=True, timeout=90, check=True
    )
    Image.open(shot).convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(shot, optimize=True)

    text = _visible_text(dom)
    assert "Holdout metrics by round" in text and "Image classifier against the sarcopenia verdict from SMA" in text
    assert not re.search(r"\b(nan|NaN|None|null)\b", text) and "{" not in text and "[" not in text
    cells = [cell for _, rows in _sections(dom) for row in rows for cell in row]
    assert (
        "10" in cells and "16" in cells and not [c for c in cells if re.fullmatch(r"\d+\.0", c)]
    )  # counts as integers
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size < 300_000
