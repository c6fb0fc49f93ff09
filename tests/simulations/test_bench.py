"""Smoke test of the benchmark driver's plumbing (no timing assertions): rows, ratios vs targets, the table."""

from __future__ import annotations

from simulations.bench import table
from simulations.bench_common import Row, tree_rss


def test_rows_compare_ratio_with_target_in_its_direction() -> None:
    assert Row("1", "x", "1", ">= 0.95", 0.97).meets == "yes"
    assert Row("1", "x", "1", ">= 70%", 0.56).meets == "**no**"
    assert Row("4", "x", "1", "<= 0.15 s", 0.9).meets == "yes"
    assert Row("3", "x", "1", "<= 1.3", 2.0).meets == "**no**"
    assert Row("6", "x", "1").meets == ""


def test_table_is_markdown_with_one_line_per_row() -> None:
    md = table([Row("2", "b", "2 s", "<= 1.10", 1.5), Row("1", "a", "1 s")])
    lines = md.splitlines()
    assert lines[0].startswith("| # | what") and len(lines) == 4
    assert lines[2].startswith("| 1 | a") and "| 1.50 | **no** |" in lines[3]


def test_tree_rss_counts_this_process() -> None:
    import os

    assert tree_rss([os.getpid()]) > 10 * 2**20
