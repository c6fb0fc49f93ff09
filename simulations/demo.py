"""`make demo`: a synthetic consortium, a federated run through `flwr run`, baselines, one table.

    python -m simulations.demo --preset demo               # the demo consortium (make demo)
    python -m simulations.demo --preset tiny               # a few minutes (make demo PRESET=tiny)
    python -m simulations.demo --preset demo --baselines   # + centralised and local-only (make compare)

Steps: generate the consortium if missing (``.cache/sites/<preset>``); start a simulation SuperLink
we own (simulations/flower_home.py); ``flwr run . sarcofed-sim`` with SecAgg+; stop the SuperLink;
train the centralised and local-only baselines with the same budget; print per-site holdout Dice
and SMA error for federated vs centralised vs local-only, and the report path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from simulations.flower_home import PROJECT_ROOT, LocalSuperLink

# Per preset: the federated schedule (rounds and local epochs per phase); the baselines get the same budget.
SCHEDULES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {"rounds": {"ssl": 1, "seg": 2, "cls": 1}, "local_epochs": {"ssl": 1, "seg": 2, "cls": 1}},
    # Sized for 2 CPU cores and 15 minutes: segmentation gets most of the budget (24 epochs over the pooled
    # training slices, in 8 rounds so the non-IID sites meet often, with the server's learning-rate decay
    # across rounds); one SSL round warms the encoder, one classifier round fits the image classifier.
    "demo": {"rounds": {"ssl": 1, "seg": 8, "cls": 1}, "local_epochs": {"ssl": 1, "seg": 3, "cls": 2}},
}


def _consortium(toml: Path, cache: Path) -> dict[str, Path]:
    from common.phantom import ensure_consortium

    return {name: Path(p) for name, p in sorted(ensure_consortium(toml, cache).items())}


def _fmt(value: object, pct: bool = False) -> str:
    if value is None:  # NaN in summary.json: suppressed (< 5 patients) or not evaluated
        return "supp."
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    if v != v:
        return "supp."
    return f"{v:.2f}%" if pct else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(SCHEDULES), default="demo")
    parser.add_argument("--baselines", action="store_true",
                        help="also train the centralised and local-only baselines with the same budget "
                             "(about 2x the federated run's time) and print the comparison table")
    parser.add_argument("--plain", action="store_true", help="secure aggregation off")
    parser.add_argument("--consortium", type=Path, default=None,
                        help="consortium TOML (default: simulations/consortia/<preset>.toml)")
    args = parser.parse_args(argv)
    os.environ.update({"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"})
    schedule = SCHEDULES[args.preset]
    t0 = time.perf_counter()
    cache = PROJECT_ROOT / ".cache" / "sites" / args.preset
    toml = (args.consortium or PROJECT_ROOT / "simulations" / "consortia" / f"{args.preset}.toml").absolute()
    sites = _consortium(toml, cache)
    t_data = time.perf_counter() - t0
    print(f"consortium {args.preset}: {len(sites)} sites in {cache} ({t_data:.0f} s)")

    run_dir = PROJECT_ROOT / "runs"
    run_config = {
        "preset": args.preset, "consortium": str(toml), "sites-cache": str(cache), "run-dir": str(run_dir),
        "secure-aggregation": not args.plain,
        **{f"rounds-{p}": r for p, r in schedule["rounds"].items()},
        **{f"local-epochs-{p}": e for p, e in schedule["local_epochs"].items()},
    }
    t1 = time.perf_counter()
    with LocalSuperLink(PROJECT_ROOT / ".flwr_home", num_supernodes=len(sites)) as link:
        result = link.run(run_config, log_path=run_dir / "flwr-run.log")
    t_fed = time.perf_counter() - t1
    folder = (run_dir / "latest").resolve()
    summary_path = folder / "summary.json"
    if result.returncode != 0 or not summary_path.is_file():
        print(f"federated run failed (exit {result.returncode}); log: {run_dir / 'flwr-run.log'}", file=sys.stderr)
        return 1
    summary = json.loads(summary_path.read_text())
    fed = {r["site"]: r for r in summary["final_round"]["sites"]}
    print(f"federated run: {t_fed:.0f} s -> {folder}")

    cen: dict[str, dict] = {}
    loc: dict[str, dict] = {}
    t_cen = t_loc = 0.0
    if args.baselines:
        import torch

        from simulations.baselines import centralised, local_only

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        t2 = time.perf_counter()
        cen = centralised(sites, args.preset, schedule["rounds"], schedule["local_epochs"])
        t_cen = time.perf_counter() - t2
        loc = local_only(sites, args.preset, schedule["rounds"], schedule["local_epochs"])
        t_loc = time.perf_counter() - t2 - t_cen

    from rich.console import Console
    from rich.table import Table

    secure = "off" if args.plain else "on"
    if args.baselines:
        table = Table(title=f"Holdout per site: federated (SecAgg+ {secure}) vs centralised vs local-only")
        columns = ("site", "n", "Dice fed", "Dice cen", "Dice local", "SMA err fed", "SMA err cen", "SMA err local")
    else:
        table = Table(title=f"Holdout per site after the federated run (SecAgg+ {secure})")
        columns = ("site", "n", "Dice", "SMA abs err", "sarcopenia acc.")
    for col in columns:
        table.add_column(col)
    for site in sites:
        f, c, lo = fed.get(site, {}), cen.get(site, {}), loc.get(site, {})
        n = str(f.get("n", c.get("n", "-")))
        if args.baselines:
            table.add_row(site, n, _fmt(f.get("dice")), _fmt(c.get("dice_mean")), _fmt(lo.get("dice_mean")),
                          _fmt(f.get("sma_abs_pct_err"), True), _fmt(c.get("sma_abs_pct_err_mean"), True),
                          _fmt(lo.get("sma_abs_pct_err_mean"), True))
        else:
            table.add_row(site, n, _fmt(f.get("dice")), _fmt(f.get("sma_abs_pct_err"), True),
                          _fmt(f.get("sarcopenia_accuracy")))
    pooled = summary["final_round"]["pooled"]
    pooled_row = [_fmt(pooled.get("dice")), _fmt(pooled.get("sma_abs_pct_err"), True)]
    if args.baselines:
        table.add_row("pooled", str(pooled.get("n", "-")), pooled_row[0], "", "", pooled_row[1], "", "")
    else:
        table.add_row("pooled", str(pooled.get("n", "-")), *pooled_row, _fmt(pooled.get("sarcopenia_accuracy")))
    console = Console()
    console.print(table)
    total = time.perf_counter() - t0
    baselines = f", centralised {t_cen:.0f} s, local-only {t_loc:.0f} s" if args.baselines else ""
    console.print(f"times: data {t_data:.0f} s, federated {t_fed:.0f} s{baselines}, total {total:.0f} s")
    console.print(f"report: {folder / 'report.html'}")
    (folder / "comparison.json").write_text(json.dumps(
        {"federated": fed, "centralised": cen, "local_only": loc,
         "seconds": {"data": t_data, "federated": t_fed, "centralised": t_cen, "local_only": t_loc, "total": total}},
        indent=2, default=lambda o: None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
