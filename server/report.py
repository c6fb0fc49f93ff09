"""The run report: report.md + report.html with PNG plots, built from the run folder's files only
(metrics.csv, summary.json, run.json).

In order: the run's outcome, its Flower run ids (run.json), settings and best round; the holdout
metrics of every evaluated round, per site and pooled, each column headed by a readable name (its
metrics.csv name, ``server.run_folder``, in the heading's tooltip); the training loss of every round;
site failures; two plots; and last, the comparison the paper makes, per site and pooled, from the
last cls round: the image classifier's verdict against the sarcopenia verdict from the predicted SMA.

Plots: per-site holdout Dice by round (pooled in black), and a Bland-Altman view of SMA built from
aggregates (each site's bias with its 95% limits, and the pooled bias and limits as lines): sites
never send per-patient points, so a scatter of patients is not available to the coordinator.

Cells: counts as integers; Dice and AUROC to three decimals; proportions (accuracy, sensitivity,
specificity) and the SMA error in percent; SMA bias and limits in cm2; training loss to four
decimals. An empty metrics.csv cell is shown as "suppressed" when the row's ``suppressed_metrics``
names it, otherwise as "—" (not evaluated, or undefined: a sensitivity without a sarcopenic
patient, an AUROC with one class).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from common.errors import ConfigError
from common.metrics import MIN_COHORT
from server.run_folder import COLUMNS, POOLED, read_run_record

NOT_AVAILABLE = "—"
SUPPRESSED = "suppressed"
PHASES = {"l3": "L3 locator", "ssl": "SSL pretraining", "seg": "Segmentation", "cls": "Classifier"}
STAGES = {"fit": "training", "evaluate": "evaluation", "round": "whole round"}

_Kind = Literal["count", "score", "proportion", "percent", "cm2", "mm", "loss", "points", "text", "written"]


@dataclass(frozen=True)
class _Column:
    """One report column: the metrics.csv ``name`` it shows, the ``label`` a reader sees, the
    ``kind`` of value (count, score, proportion, percent, cm2, loss, points; text as it is, left
    aligned; written, already formatted and right aligned) and the heading ``group`` it sits under."""

    name: str
    label: str
    kind: _Kind
    group: str = ""


_SITE = _Column("site", "Site", "text")
_N = _Column("n", "Holdout patients", "count")
_SEG = "Segmentation"
_SMA = "SMA against the reference"
_VERDICT = "Sarcopenia verdict from SMA"
_CLS = "Image classifier"
_TRAIN = "Training"
# Each evaluated round is shown as two tables, so that a page 1200 pixels wide holds them.
_SEGMENTATION_COLUMNS: tuple[_Column, ...] = (
    _SITE,
    _N,
    _Column("dice_mean", "Dice, mean", "score", _SEG),
    _Column("sma_abs_pct_err_mean", "Absolute error, mean", "percent", _SMA),
    _Column("sma_bias_cm2", "Bias (cm²)", "cm2", _SMA),
    _Column("sma_loa_low", "95% limit, low (cm²)", "cm2", _SMA),
    _Column("sma_loa_high", "95% limit, high (cm²)", "cm2", _SMA),
    _Column("n_train", "Slices", "count", _TRAIN),
    _Column("loss", "Loss", "loss", _TRAIN),
)
_VERDICT_COLUMNS: tuple[_Column, ...] = (
    _SITE,
    _N,
    _Column("sarcopenia_accuracy", "Accuracy", "proportion", _VERDICT),
    _Column("sensitivity", "Sensitivity", "proportion", _VERDICT),
    _Column("specificity", "Specificity", "proportion", _VERDICT),
    _Column("cls_accuracy", "Accuracy", "proportion", _CLS),
    _Column("cls_sensitivity", "Sensitivity", "proportion", _CLS),
    _Column("cls_specificity", "Specificity", "proportion", _CLS),
    _Column("cls_auroc", "AUROC", "score", _CLS),
)
_COMPARISON_COLUMNS: tuple[_Column, ...] = (
    _SITE,
    _N,
    _Column("cls_accuracy", "Accuracy", "proportion", _CLS),
    _Column("cls_sensitivity", "Sensitivity", "proportion", _CLS),
    _Column("cls_specificity", "Specificity", "proportion", _CLS),
    _Column("cls_auroc", "AUROC", "score", _CLS),
    _Column("sarcopenia_accuracy", "Accuracy", "proportion", _VERDICT),
    _Column("sensitivity", "Sensitivity", "proportion", _VERDICT),
    _Column("specificity", "Specificity", "proportion", _VERDICT),
    _Column("accuracy_difference", "Accuracy, classifier minus SMA", "points", "Difference"),
)


_COMPOSITION = "Body composition: absolute area error, mean"
_MYO = "Myosteatosis (Martin 2013)"
_COMPOSITION_COLUMNS: tuple[_Column, ...] = (
    _SITE,
    _N,
    _Column("imat_abs_pct_err_mean", "IMAT", "percent", _COMPOSITION),
    _Column("vat_abs_pct_err_mean", "VAT", "percent", _COMPOSITION),
    _Column("sat_abs_pct_err_mean", "SAT", "percent", _COMPOSITION),
    _Column("myosteatosis_accuracy", "Accuracy", "proportion", _MYO),
)

_L3 = "L3 locator on the holdout series"
_L3_TRANSITIONAL = "Transitional spines"
_L3_COLUMNS: tuple[_Column, ...] = (
    _SITE,
    _Column("n", "Holdout series", "count"),
    _Column("l3_presence_accuracy", "Present / absent right", "proportion", _L3),
    _Column("l3_inside_share", "Inside the L3 body", "proportion", _L3),
    _Column("l3_err_mm_median", "Error median (mm)", "mm", _L3),
    _Column("l3_err_mm_p95", "Error 95th pct (mm)", "mm", _L3),
    _Column("l3_err_slices_median", "Error median (slices)", "mm", _L3),
    _Column("l3_trans_inside_share", "Inside L3", "proportion", _L3_TRANSITIONAL),
    _Column("l3_trans_err_mm_median", "Error median (mm)", "mm", _L3_TRANSITIONAL),
)


@dataclass(frozen=True)
class _Table:
    """Columns and the rows (metrics.csv rows as mappings) they are read from."""

    columns: tuple[_Column, ...]
    rows: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class _Section:
    """A titled part of the report: paragraphs, then tables, then images (title, file name)."""

    title: str
    anchor: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[_Table, ...] = ()
    images: tuple[tuple[str, str], ...] = ()
    level: int = 2


# ----------------------------------------------------------------------------- reading metrics.csv
def evaluated_rounds(metrics: pd.DataFrame) -> list[pd.DataFrame]:
    """The rows of each evaluated round (a round where some site returned a holdout summary), in order,
    sites sorted by name and the pooled row last."""
    if "n" not in metrics:
        return []
    rounds = []
    for global_round in sorted(metrics.loc[metrics["n"].notna(), "global_round"].unique()):
        rows = metrics[metrics["global_round"] == global_round]
        rounds.append(_sites_then_pooled(rows))
    return rounds


def last_cls_round(metrics: pd.DataFrame) -> pd.DataFrame | None:
    """The rows of the last evaluated cls round, or None when no cls round was evaluated."""
    cls_rounds = [rows for rows in evaluated_rounds(metrics) if (rows["phase"] == "cls").all()]
    return cls_rounds[-1] if cls_rounds else None


def _sites_then_pooled(rows: pd.DataFrame) -> pd.DataFrame:
    order = sorted(str(s) for s in rows["site"] if s != POOLED) + [POOLED]
    indexed = rows.assign(site=rows["site"].astype(str)).set_index("site")
    return indexed.loc[[s for s in order if s in indexed.index]].reset_index()


def _value(row: Mapping[str, Any], name: str) -> float:
    try:
        return float(row.get(name, math.nan))
    except (TypeError, ValueError):
        return math.nan


def _suppressed(row: Mapping[str, Any]) -> set[str]:
    names = row.get("suppressed_metrics")
    return {n.strip() for n in names.split(",")} if isinstance(names, str) else set()


# ----------------------------------------------------------------------------- cells
def format_cell(row: Mapping[str, Any], column: _Column) -> str:
    """The text of one cell: see the module docstring for how each kind is written."""
    if column.kind in ("text", "written"):
        text = row.get(column.name)
        return NOT_AVAILABLE if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    value = _value(row, column.name)
    if math.isnan(value):
        return SUPPRESSED if column.name in _suppressed(row) else NOT_AVAILABLE
    if column.kind == "count":
        return f"{int(round(value)):d}"
    if column.kind == "score":
        return f"{value:.3f}"
    if column.kind == "proportion":
        return f"{100.0 * value:.1f}%"
    if column.kind == "percent":
        return f"{value:.1f}%"
    if column.kind == "cm2":
        return f"{value:+.1f}"
    if column.kind == "mm":
        return f"{value:.1f}"
    if column.kind == "points":
        return f"{100.0 * value:+.1f} points"
    return f"{value:.4f}"


def _plain(value: Any) -> str:
    """A summary.json value as prose: mappings as "key value, ...", lists joined, None as "—"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NOT_AVAILABLE
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items()) or NOT_AVAILABLE
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value) or NOT_AVAILABLE
    return str(value)


def phase_name(phase: Any) -> str:
    """ "Segmentation" for seg, and so on; an unknown phase as it is."""
    return PHASES.get(str(phase), str(phase))


def duration(seconds: Any) -> str:
    """Seconds as a person reads them: "48 s", "12 min 22 s", "3 h 05 min"."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return NOT_AVAILABLE
    if not math.isfinite(value):
        return NOT_AVAILABLE
    if value < 90:
        return f"{value:.0f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def readable_time(stamp: Any) -> str:
    """run.json's "2026-12-02T04:39:39+0000" as "2026-12-02 04:39:39 +0000"; anything else as prose."""
    try:
        return datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S%z").strftime("%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return _plain(stamp)


# ----------------------------------------------------------------------------- sections
def _flower_runs(record: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """The Flower runs that worked in this folder (run.json), with when each started and where it resumed."""
    runs = [r for r in record.get("flower_runs") or [] if isinstance(r, Mapping)]
    if not runs:
        return _plain(summary.get("flower_run_ids"))
    parts = []
    for run in runs:
        after = run.get("resumed_after")
        resumed = (
            f", resumed after {phase_name(after.get('phase'))} round {after.get('round')}"
            if isinstance(after, Mapping)
            else ""
        )
        parts.append(f"{_plain(run.get('run_id'))} (started {readable_time(run.get('started'))}{resumed})")
    return ", ".join(parts)


def _privacy(summary: Mapping[str, Any]) -> str | None:
    privacy = summary.get("privacy")
    spent = privacy.get("dp_epsilon_by_site") if isinstance(privacy, Mapping) else None
    if not isinstance(spent, Mapping) or not spent:
        return None
    sites = ", ".join(f"{site} {float(eps):.2f}" for site, eps in spent.items() if eps is not None)
    return f"Differential privacy at the sites: epsilon spent in this run, each at its own policy's delta: {sites}"


def _settings(summary: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    best = summary.get("best")
    if isinstance(best, Mapping) and best.get("dice_mean") is not None:
        best_text = (
            f"pooled holdout Dice {float(best['dice_mean']):.3f} after {phase_name(best.get('phase'))} round "
            f"{_plain(best.get('round'))} (global round {_plain(best.get('global_round'))}); "
            f"checkpoints/best.pt is {_plain(best.get('checkpoint'))}"
        )
    else:
        best_text = "none (no round had a pooled holdout Dice)"
    secure = "on (SecAgg+)" if summary.get("secure_aggregation") else "off"
    phase_seconds = summary.get("phase_seconds") or {}
    timing = ", ".join(f"{phase_name(k)} {duration(v)}" for k, v in phase_seconds.items())
    failures = summary.get("failures") or []
    lines = [
        f"Outcome: {_plain(summary.get('outcome', 'not recorded'))}",
        f"Flower runs: {_flower_runs(record, summary)}",
        f"Preset {_plain(summary.get('preset'))}, strategy {_plain(summary.get('strategy'))}"
        + (f" (proximal mu {summary['proximal_mu']})" if summary.get("proximal_mu") is not None else "")
        + f", secure aggregation {secure}",
        f"Rounds per phase: {_plain(summary.get('rounds'))}; local epochs: {_plain(summary.get('local_epochs'))}",
        f"Sarcopenia cutoff: {_plain(summary.get('cutoff'))}",
        f"Wall time {duration(summary.get('wall_seconds'))}" + (f" ({timing})" if timing else ""),
        f"Best round: {best_text}",
        f"Failures: {len(failures) if failures else 'none'}",
    ]
    privacy = _privacy(summary)
    return lines + ([privacy] if privacy else [])


def _holdout_sections(metrics: pd.DataFrame) -> list[_Section]:
    legend = (
        f"“{SUPPRESSED}”: the value rests on fewer than {MIN_COHORT} patients and is not shown. "
        f"“{NOT_AVAILABLE}”: not evaluated in this round, or undefined (a sensitivity without a "
        "sarcopenic patient, an AUROC with one class). The classifier columns fill after a cls round. "
        "Holdout patients: the site's patients evaluated; pooled: all sites' together. L3 locator rounds "
        "count series instead, and their pooled medians and 95th percentiles are n-weighted means of the "
        "sites' (approximate). In report.html a heading's tooltip names its column in metrics.csv."
    )
    rounds = evaluated_rounds(metrics)
    head = _Section(
        "Holdout metrics by round",
        "holdout",
        (legend,) if rounds else ("No round was evaluated on the sites' holdout data.",),
    )
    out = [head]
    for rows in rounds:
        first = rows.iloc[0]
        title = f"{phase_name(first['phase'])} round {int(first['round'])} (global round {int(first['global_round'])})"
        records = tuple(r.to_dict() for _, r in rows.iterrows())
        tables = (
            (_Table(_L3_COLUMNS, records),)
            if first["phase"] == "l3"
            else (
                _Table(_SEGMENTATION_COLUMNS, records),
                _Table(_COMPOSITION_COLUMNS, records),
                _Table(_VERDICT_COLUMNS, records),
            )
        )
        out.append(_Section(title, f"round-{int(first['global_round'])}", level=3, tables=tables))
    return out


def _training_section(metrics: pd.DataFrame) -> _Section:
    sites = sorted({str(s) for s in metrics["site"] if s != POOLED}) + [POOLED]
    columns = [
        _Column("phase", "Phase", "text"),
        _Column("round", "Round", "count"),
        _Column("global_round", "Global round", "count"),
    ]
    columns += [_Column(site, site, "written", "Training loss (training slices)") for site in sites]
    rows = []
    for (global_round, phase, phase_round), group in metrics.groupby(["global_round", "phase", "round"], sort=True):
        row: dict[str, Any] = {"phase": phase_name(phase), "round": int(phase_round), "global_round": int(global_round)}
        for _, r in group.iterrows():
            loss, slices = _value(r, "loss"), _value(r, "n_train")
            loss_text = NOT_AVAILABLE if math.isnan(loss) else f"{loss:.4f}"
            row[str(r["site"])] = loss_text + ("" if math.isnan(slices) else f" ({int(slices)})")
        rows.append(row)
    return _Section(
        "Training loss by round",
        "training",
        (
            "Mean training loss of each site's local epochs, and in brackets its training slices; "
            "pooled: weighted by slices. “—”: no training in that round (an aborted round, or a site "
            "that only evaluated).",
        ),
        (_Table(tuple(columns), tuple(rows)),),
    )


def _failures_section(summary: Mapping[str, Any]) -> _Section | None:
    failures = summary.get("failures") or []
    if not failures:
        return None
    columns = (
        _Column("phase", "Phase", "text"),
        _Column("round", "Round", "count"),
        _Column("stage", "Stage", "text"),
        _Column("reason", "Reason", "text"),
    )
    rows = tuple(
        {**f, "phase": phase_name(f.get("phase")), "stage": STAGES.get(str(f.get("stage")), f.get("stage"))}
        for f in failures
        if isinstance(f, Mapping)
    )
    return _Section(
        "Failures",
        "failures",
        ("A failed site's round went on with the other sites; a whole-round failure left the model as it was.",),
        (_Table(columns, rows),),
    )


def _comparison_section(metrics: pd.DataFrame, summary: Mapping[str, Any]) -> _Section:
    title = "Image classifier against the sarcopenia verdict from SMA"
    rows = last_cls_round(metrics)
    if rows is None:
        ran = ", ".join(dict.fromkeys(str(p) for p in metrics["phase"])) or "none"
        return _Section(
            title,
            "comparison",
            (
                f"Not available: no cls round was evaluated in this run (phases run: {ran}), so the image "
                "classifier has no holdout result to compare with the verdict from SMA.",
            ),
        )
    first = rows.iloc[0]
    table = []
    for _, r in rows.iterrows():
        row = r.to_dict()
        row["accuracy_difference"] = _value(row, "cls_accuracy") - _value(row, "sarcopenia_accuracy")
        table.append(row)
    cutoff = f" with the {summary['cutoff']} cutoff" if summary.get("cutoff") else ""
    text = (
        f"From the last evaluated classifier round ({phase_name('cls')} round {int(first['round'])}, "
        f"global round {int(first['global_round'])}), "
        "per site and pooled, on each site's holdout patients, both against the reference verdict: the "
        "qualitative approach, the image classifier (sarcopenic when its probability is at least 0.5), "
        f"and the quantitative approach, the verdict from the predicted SMA{cutoff}."
    )
    return _Section(title, "comparison", (text,), (_Table(_COMPARISON_COLUMNS, tuple(table)),))


# ----------------------------------------------------------------------------- plots
def _plot_dice(metrics: pd.DataFrame, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if "dice_mean" not in metrics:
        return False
    data = metrics[metrics["dice_mean"].notna()]
    if data.empty:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for site, rows in data.groupby("site"):
        style: dict[str, Any] = (
            dict(color="black", linewidth=2.5) if site == POOLED else dict(linewidth=1.2, marker="o", markersize=3)
        )
        ax.plot(rows["global_round"], rows["dice_mean"], label=str(site), **style)
    ax.set_xlabel("round (over all phases)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("holdout Dice, mean")
    ax.set_title("Per-site holdout Dice by round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _plot_bland_altman(table: pd.DataFrame, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "sma_bias_cm2" not in table or table["sma_bias_cm2"].isna().all():
        return False
    sites = table[(table["site"] != POOLED) & table["sma_bias_cm2"].notna()]
    pooled = table[table["site"] == POOLED]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    x = range(len(sites))
    ax.errorbar(
        list(x),
        sites["sma_bias_cm2"],
        yerr=[sites["sma_bias_cm2"] - sites["sma_loa_low"], sites["sma_loa_high"] - sites["sma_bias_cm2"]],
        fmt="o",
        capsize=4,
        label="site bias, 95% limits",
    )
    if len(pooled) and not math.isnan(float(pooled["sma_bias_cm2"].iloc[0])):
        p = pooled.iloc[0]
        ax.axhline(p["sma_bias_cm2"], color="black", label=f"pooled bias {p['sma_bias_cm2']:.2f} cm²")
        for key in ("sma_loa_low", "sma_loa_high"):
            ax.axhline(p[key], color="black", linestyle="--")
        ax.plot(
            [],
            [],
            color="black",
            linestyle="--",
            label=f"pooled 95% limits {p['sma_loa_low']:.2f} to {p['sma_loa_high']:.2f} cm²",
        )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlim(-0.5, max(len(sites), 1) - 0.5)
    ax.set_xticks(
        list(x),
        [f"{s}\n(n={int(n) if n == n else '<5'})" for s, n in zip(sites["site"], sites["n"], strict=True)],
        fontsize=7,
    )
    ax.set_ylabel("SMA, predicted minus reference (cm²)")
    ax.set_title("Bland-Altman of SMA (holdout, from site aggregates)")
    ax.legend(
        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False
    )  # below: never over a site
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- rendering
def _md_table(columns: Sequence[_Column], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    def header(c: _Column) -> str:
        return f"{c.group}: {c.label}" if c.group else c.label

    lines = [
        "| " + " | ".join(header(c) for c in columns) + " |",
        "|" + "|".join("---" if c.kind == "text" else "---:" for c in columns) + "|",
    ]
    for row in rows:
        cells = [format_cell(row, c).replace("|", "\\|") for c in columns]
        if row.get("site") == POOLED:
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _html_table(columns: Sequence[_Column], rows: Sequence[Mapping[str, Any]]) -> str:
    out = ["<table>", "<thead>"]
    if any(c.group for c in columns):
        spans: list[tuple[str, int]] = []
        for c in columns:
            if spans and spans[-1][0] == c.group:
                spans[-1] = (c.group, spans[-1][1] + 1)
            else:
                spans.append((c.group, 1))
        out.append(
            "<tr>" + "".join(f"<th colspan='{n}' class='group'>{html.escape(g)}</th>" for g, n in spans) + "</tr>"
        )
    heads = []
    for c in columns:
        tip = f" title='metrics.csv: {html.escape(c.name)}'" if c.name in COLUMNS and c.name != "site" else ""
        heads.append(f"<th{tip}>{html.escape(c.label)}</th>")
    out += ["<tr>" + "".join(heads) + "</tr>", "</thead>", "<tbody>"]
    for row in rows:
        cells = []
        for c in columns:
            text = format_cell(row, c)
            classes = ["num"] if c.kind != "text" else []
            if text == SUPPRESSED:
                classes.append("suppressed")
            elif text == NOT_AVAILABLE:
                classes.append("na")
            attr = f" class='{' '.join(classes)}'" if classes else ""
            cells.append(f"<td{attr}>{html.escape(text)}</td>")
        attr = " class='pooled'" if row.get("site") == POOLED else ""
        out.append(f"<tr{attr}>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; }
th { background: #f2f4f7; font-weight: 600; vertical-align: bottom; }
th.group { background: #e3e8ef; text-align: center; }
th[title] { cursor: help; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.na { color: #999; text-align: center; }
td.suppressed { color: #a05a00; font-style: italic; }
tr.pooled td { font-weight: 600; background: #f7f7f2; }
p.note { font-size: 13px; color: #444; max-width: 70em; }
img { display: block; margin-bottom: 1em; }
"""


def _render(run_name: str, settings: list[str], sections: list[_Section]) -> tuple[str, str]:
    md = [f"# SarcoFed run {run_name}", ""] + [f"- {line}" for line in settings] + [""]
    body = [f"<h1>SarcoFed run {html.escape(run_name)}</h1>", "<ul>"]
    body += [f"<li>{html.escape(line)}</li>" for line in settings] + ["</ul>"]
    for s in sections:
        md += ["#" * s.level + f" {s.title}", ""]
        body.append(f"<h{s.level} id='{s.anchor}'>{html.escape(s.title)}</h{s.level}>")
        for text in s.paragraphs:
            md += [text, ""]
            body.append(f"<p class='note'>{html.escape(text)}</p>")
        for table in s.tables:
            md += _md_table(table.columns, table.rows) + [""]
            body.append(_html_table(table.columns, table.rows))
        for title, name in s.images:
            md += [f"![{title}]({name})", ""]
            body.append(f"<img src='{html.escape(name)}' alt='{html.escape(title)}'>")
    page = (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>SarcoFed report "
        f"{html.escape(run_name)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    return "\n".join(md), page


def write_report(run_folder: Path) -> Path:
    """Write report.md, report.html, dice_by_round.png and bland_altman.png into ``run_folder``; return report.md.

    Parameters
    ----------
    run_folder : Path
        A run folder holding metrics.csv and summary.json, and run.json when the ServerApp wrote it
        (``server.run_folder.RunFolder``).

    Returns
    -------
    Path
        report.md; report.html and the plots lie beside it.
    """
    run_folder = Path(run_folder)
    metrics = pd.read_csv(run_folder / "metrics.csv")
    summary = json.loads((run_folder / "summary.json").read_text())
    try:
        record = read_run_record(run_folder)
    except ConfigError:  # a damaged run.json: the summary's run ids stand in
        record = {}
    sections = _holdout_sections(metrics)
    sections.append(_training_section(metrics))
    failures = _failures_section(summary)
    if failures is not None:
        sections.append(failures)
    rounds = evaluated_rounds(metrics)
    if _plot_dice(metrics, run_folder / "dice_by_round.png"):
        sections.append(
            _Section(
                "Per-site holdout Dice by round",
                "dice-plot",
                images=(("Per-site holdout Dice by round", "dice_by_round.png"),),
            )
        )
    if rounds and _plot_bland_altman(rounds[-1], run_folder / "bland_altman.png"):
        sections.append(
            _Section(
                "Bland-Altman of SMA, last evaluated round",
                "bland-altman",
                images=(("Bland-Altman of SMA", "bland_altman.png"),),
            )
        )
    sections.append(_comparison_section(metrics, summary))
    md, page = _render(run_folder.name, _settings(summary, record), sections)
    md_path = run_folder / "report.md"
    md_path.write_text(md)
    (run_folder / "report.html").write_text(page)
    return md_path
