"""Run report: readable holdout tables for every evaluated round, and last, the image classifier against
the sarcopenia verdict from SMA, from the last cls round."""

from __future__ import annotations

import math
from html.parser import HTMLParser

from server.report import write_report
from server.run_folder import RunFolder

HOLDOUT = {"dice_mean": 0.9, "sma_abs_pct_err_mean": 4.4, "sma_bias_cm2": 3.8, "sma_loa_low": -7.8,
           "sma_loa_high": 15.3, "sarcopenia_accuracy": 0.9, "sensitivity": 0.85, "specificity": 0.95}
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
    folder.write_summary({"preset": "tiny", "strategy": "fedavg", "rounds": {"ssl": 1, "seg": 1, "cls": 2},
                          "local_epochs": {"ssl": 1, "seg": 2, "cls": 1}, "cutoff": "prado2008",
                          "secure_aggregation": True, "wall_seconds": 12.5})
    write_report(folder.path)
    return (folder.path / "report.html").read_text()


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
SEG = ("seg", 1, {"a": {"n": 10, **HOLDOUT, "n_train": 40, "loss": 0.5},
                  "b": {"n": 6, **HOLDOUT, "sensitivity": math.nan, "suppressed_metrics": "sensitivity"},
                  "pooled": {"n": 16, **HOLDOUT}})


def test_report_ends_with_the_classifier_against_the_sma_verdict_of_the_last_cls_round(tmp_path) -> None:
    earlier = ("cls", 1, {"a": {"n": 10, **HOLDOUT, "cls_accuracy": 0.55}, "pooled": {"n": 10, **HOLDOUT}})
    last = ("cls", 2, {
        "a": {"n": 10, **HOLDOUT, **CLASSIFIER},
        "b": {"n": 6, **HOLDOUT, **CLASSIFIER, "cls_sensitivity": math.nan, "sensitivity": math.nan,
              "suppressed_metrics": "cls_sensitivity,sensitivity"},
        "pooled": {"n": 16, **HOLDOUT, **CLASSIFIER, "cls_accuracy": 0.7, "cls_auroc": math.nan},
    })

    page = _run(tmp_path, [SSL, SEG, earlier, last])

    anchor, rows = _sections(page)[-1]
    assert anchor == "comparison"
    assert "cls round 2, global round 4" in page[page.rindex("<h2"):]
    sites = _by_site(rows)
    # site, n, classifier (accuracy, sensitivity, specificity, AUROC), SMA verdict (accuracy, sensitivity,
    # specificity), accuracy difference
    assert sites["a"] == ["a", "10", "75.0%", "80.0%", "70.0%", "0.812", "90.0%", "85.0%", "95.0%", "-15.0 points"]
    assert sites["b"] == ["b", "6", "75.0%", "suppressed", "70.0%", "0.812", "90.0%", "suppressed", "95.0%",
                          "-15.0 points"]
    assert sites["pooled"] == ["pooled", "16", "70.0%", "80.0%", "70.0%", "—", "90.0%", "85.0%", "95.0%",
                               "-20.0 points"]


def test_report_tables_are_readable_for_every_evaluated_round(tmp_path) -> None:
    page = _run(tmp_path, [SSL, SEG])

    rounds = {anchor: rows for anchor, rows in _sections(page)}
    assert "nan" not in page.lower() and "None" not in page and "{" not in page.split("<body>")[1]
    text = page.split("<body>")[1]
    for name in ("dice_mean", "sma_abs_pct_err_mean", "sma_loa_low", "cls_sensitivity", "cls_specificity"):
        assert f"<code>{name}</code>" in text, name
    seg = _by_site(rounds["holdout"])
    # First table: site, n, Dice, SMA error, bias and limits, training slices and loss; second: n, SMA
    # verdict (accuracy, sensitivity, specificity), classifier (accuracy, sensitivity, specificity, AUROC).
    assert seg["a"] == ["a", "10", "0.900", "4.4%", "+3.8", "-7.8", "+15.3", "40", "0.5000",
                        "10", "90.0%", "85.0%", "95.0%", "—", "—", "—", "—"]
    assert seg["b"][7:9] == ["—", "—"] and seg["b"][11] == "suppressed"
    assert "Rounds per phase: ssl 1, seg 1, cls 2" in text


def test_report_says_the_comparison_is_not_available_without_a_cls_round(tmp_path) -> None:
    page = _run(tmp_path, [SSL, SEG])

    assert _sections(page)[-1][0] == "comparison"
    last = page[page.rindex("<h2"):]
    assert "Not available: no cls round was evaluated" in last and "<table" not in last
