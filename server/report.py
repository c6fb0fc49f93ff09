"""The run report: report.md + report.html with PNG plots, built from metrics.csv and summary.json only.

Plots: per-site holdout Dice by round (pooled in black), and a Bland-Altman view of SMA built from
aggregates (each site's bias with its 95% limits, and the pooled bias and limits as lines): sites
never send per-patient points, so a scatter of patients is not available to the coordinator.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pandas as pd

from server.run_folder import POOLED

_TABLE_COLUMNS = ("site", "n", "dice", "sma_abs_pct_err", "sarcopenia_accuracy", "sma_bias_cm2",
                  "sma_loa_low_cm2", "sma_loa_high_cm2", "n_train", "loss")


def final_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per-site rows (+ pooled) of the last evaluated round (the ssl-only rows if nothing was evaluated)."""
    evaluated = metrics[metrics["dice"].notna()] if "dice" in metrics else metrics.iloc[0:0]
    source = evaluated if len(evaluated) else metrics
    last = source["global_round"].max()
    table = source[source["global_round"] == last]
    return table[[c for c in _TABLE_COLUMNS if c in table.columns]].reset_index(drop=True)


def _plot_dice(metrics: pd.DataFrame, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = metrics[metrics["dice"].notna()]
    if data.empty:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for site, rows in data.groupby("site"):
        style = dict(color="black", linewidth=2.5) if site == POOLED else dict(linewidth=1.2, marker="o", markersize=3)
        ax.plot(rows["global_round"], rows["dice"], label=str(site), **style)
    ax.set_xlabel("round (over all phases)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("holdout Dice")
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
    ax.errorbar(list(x), sites["sma_bias_cm2"],
                yerr=[sites["sma_bias_cm2"] - sites["sma_loa_low_cm2"], sites["sma_loa_high_cm2"] - sites["sma_bias_cm2"]],
                fmt="o", capsize=4, label="site bias, 95% limits")
    if len(pooled) and not math.isnan(float(pooled["sma_bias_cm2"].iloc[0])):
        p = pooled.iloc[0]
        ax.axhline(p["sma_bias_cm2"], color="black", label=f"pooled bias {p['sma_bias_cm2']:.2f} cm2")
        for key in ("sma_loa_low_cm2", "sma_loa_high_cm2"):
            ax.axhline(p[key], color="black", linestyle="--")
        ax.plot([], [], color="black", linestyle="--", label=f"pooled 95% limits {p['sma_loa_low_cm2']:.2f} .. {p['sma_loa_high_cm2']:.2f}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(list(x), [f"{s}\n(n={int(n)})" for s, n in zip(sites["site"], sites["n"], strict=True)], fontsize=7)
    ax.set_ylabel("SMA predicted - reference (cm2)")
    ax.set_title("Bland-Altman of SMA (holdout, from site aggregates)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(run_folder: Path) -> Path:
    """Write report.md, report.html, dice_by_round.png and bland_altman.png into ``run_folder``; return report.md."""
    run_folder = Path(run_folder)
    metrics = pd.read_csv(run_folder / "metrics.csv")
    summary = json.loads((run_folder / "summary.json").read_text())
    table = final_table(metrics)
    plots = []
    if _plot_dice(metrics, run_folder / "dice_by_round.png"):
        plots.append(("Per-site holdout Dice by round", "dice_by_round.png"))
    if _plot_bland_altman(table, run_folder / "bland_altman.png"):
        plots.append(("Bland-Altman of SMA (pooled)", "bland_altman.png"))
    shown = table.round(4).astype(object).where(table.notna(), "suppressed/-")
    md = [f"# SarcoFed run {run_folder.name}", "",
          f"- preset `{summary.get('preset')}`, strategy `{summary.get('strategy')}`, "
          f"secure aggregation {'on (SecAgg+)' if summary.get('secure_aggregation') else 'off'}",
          f"- rounds {summary.get('rounds')}, local epochs {summary.get('local_epochs')}",
          f"- wall time {summary.get('wall_seconds')} s; best pooled holdout Dice: {summary.get('best')}",
          f"- site failures: {len(summary.get('failures') or [])}", "",
          "## Final per-site holdout metrics", "", shown.to_markdown(index=False) if _has_tabulate() else shown.to_string(index=False), ""]
    for title, name in plots:
        md += [f"## {title}", "", f"![{title}]({name})", ""]
    md_path = run_folder / "report.md"
    md_path.write_text("\n".join(md))
    body = [f"<h1>SarcoFed run {html.escape(run_folder.name)}</h1>", "<ul>"]
    body += [f"<li>{html.escape(line[2:])}</li>" for line in md[2:6]]
    body += ["</ul>", "<h2>Final per-site holdout metrics</h2>", shown.to_html(index=False)]
    body += [f"<h2>{title}</h2><img src='{name}' alt='{title}'>" for title, name in plots]
    (run_folder / "report.html").write_text("<!doctype html><meta charset='utf-8'><title>SarcoFed report</title>"
                                            + "\n".join(body))
    return md_path


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
