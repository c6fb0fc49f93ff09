"""`make demo`: a synthetic consortium, a federated run through `flwr run`, baselines, one table.

    python -m simulations.demo --preset demo               # the demo consortium (make demo)
    python -m simulations.demo --preset tiny               # a few minutes (make demo PRESET=tiny)
    python -m simulations.demo --preset demo --baselines   # + centralised and local-only (make compare)

The federated run is ``flwr run . sarcofed-sim --stream --run-config simulations/profiles/<preset>.toml``
(the profile holds the whole schedule; the rest is pyproject.toml's defaults), against a simulation
SuperLink this script owns (simulations/flower_home.py), so anyone can repeat it with ``flwr run``.
Steps: generate the consortium if missing (``.cache/sites/<consortium>``); run, printing the
ServerApp's line per round; stop the SuperLink; optionally train the centralised and local-only
baselines with the same budget; print the per-site holdout table and the report path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from simulations.flower_home import CONNECTION, PROJECT_ROOT, LocalSuperLink, flwr_run_command

PROFILES_DIR = PROJECT_ROOT / "simulations" / "profiles"
PROGRESS_TAG = " sarcofed ["  # the ServerApp's per-round lines (server.strategy.PROGRESS_TAG)


def load_profile(name: str) -> dict[str, object]:
    """A named run schedule, simulations/profiles/<name>.toml, as run config overrides."""
    path = PROFILES_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise SystemExit(f"no profile {path}; known profiles: {known}")
    return tomllib.loads(path.read_text())


def _schedule(profile: dict[str, object]) -> tuple[dict[str, int], dict[str, int]]:
    def count(key: str) -> int:
        return int(profile[key])  # type: ignore[call-overload]  # a TOML value: int() checks it

    rounds = {p: count(f"rounds-{p}") for p in ("ssl", "seg", "cls")}
    epochs = {p: count(f"local-epochs-{p}") for p in ("ssl", "seg", "cls")}
    return rounds, epochs


def _show_progress(line: str) -> None:
    """Print the ServerApp's per-round lines and its errors as they arrive; the rest goes to the log."""
    if PROGRESS_TAG in line:
        print("  " + line[line.index(PROGRESS_TAG) + 1 :], flush=True)
    elif line.startswith("ERROR"):
        print("  " + line, flush=True)


def _consortium(toml: Path, cache: Path) -> dict[str, Path]:
    from common.phantom import ensure_consortium

    return {name: Path(p) for name, p in sorted(ensure_consortium(toml, cache, workers=os.cpu_count() or 1).items())}


def _fmt(value: object, pct: bool = False) -> str:
    if value is None:  # NaN in summary.json: suppressed (< 5 patients) or not evaluated
        return "supp."
    try:
        v = float(value)  # type: ignore[arg-type]  # any object: what float() rejects gives "-"
    except (TypeError, ValueError):
        return "-"
    if v != v:
        return "supp."
    return f"{v:.2f}%" if pct else f"{v:.3f}"


def _print_l3(console: Any, final: dict, toml: Path, cache: Path, folder: Path) -> None:
    """The L3 locator: per training site (their holdout series, as the federation scored them), then on
    hospitals that never trained (``[unseen_series]`` of the consortium), scored here with exact pooling."""
    from rich.table import Table

    from simulations.l3_unseen import describe, ensure_unseen, score_unseen

    table = Table(title="L3 locator, each site's holdout series (federated evaluation, last l3 round)")
    for col in ("site", "series", "L3 there?", "inside L3", "median mm", "p95 mm", "median slices"):
        table.add_column(col, justify="left" if col == "site" else "right")
    for row in [*final["sites"], final["pooled"]]:
        table.add_row(
            str(row["site"]),
            _fmt_n(row.get("l3_n")),
            _fmt(row.get("l3_presence_accuracy")),
            _fmt(row.get("l3_inside_share")),
            _fmt1(row.get("l3_err_mm_median")),
            _fmt1(row.get("l3_err_mm_p95")),
            _fmt1(row.get("l3_err_slices_median")),
        )
    console.print(table)
    folders = ensure_unseen(toml, cache.parent / f"{cache.name}-unseen")
    if not folders:
        return
    rows = score_unseen(folder / "checkpoints" / _last_checkpoint(folder), folders)
    rows.to_csv(folder / "l3_unseen_sites.csv", index=False)
    table = Table(title="L3 locator, hospitals that never trained (all their series, exact pooling)")
    for col in ("sites", "series (L3)", "L3 there?", "inside L3", "mm median/p95", "slices median/p95"):
        table.add_column(col, justify="left" if col == "sites" else "right")
    groups = [(name, rows[rows["site"] == name]) for name in folders]
    groups += [("all", rows), ("transitional spines", rows[rows["variant"] != "normal"])]
    for name, part in groups:
        d = describe(part)
        table.add_row(
            name,
            f"{d['series']:.0f} ({d['with_l3']:.0f})",
            _fmt(d["presence_accuracy"]),
            _fmt(d["inside_share"]),
            f"{_fmt1(d['err_mm_median'])} / {_fmt1(d['err_mm_p95'])}",
            f"{_fmt1(d['err_slices_median'])} / {_fmt1(d['err_slices_p95'])}",
        )
    console.print(table)


def _last_checkpoint(folder: Path) -> str:
    from server.run_folder import last_checkpoint

    return last_checkpoint(folder).path.name


def _fmt_n(value: object) -> str:
    return "supp." if value is None else f"{float(value):.0f}"  # type: ignore[arg-type]  # a JSON number


def _fmt1(value: object) -> str:
    text = _fmt(value)
    return text if text in ("supp.", "-") else f"{float(text):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        choices=sorted(p.stem for p in PROFILES_DIR.glob("*.toml")),
        default="demo",
        help="the profile simulations/profiles/<preset>.toml (schedule, model preset, consortium)",
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="also train the centralised and local-only baselines with the same budget "
        "(about 2x the federated run's time) and print the comparison table",
    )
    parser.add_argument("--plain", action="store_true", help="secure aggregation off")
    parser.add_argument(
        "--consortium", type=Path, default=None, help="consortium TOML (default: the profile's consortium)"
    )
    parser.add_argument(
        "--site-policy",
        type=Path,
        default=None,
        help="a site policy file every simulated site applies (e.g. differential privacy: "
        "simulations/policies/dp.toml)",
    )
    args = parser.parse_args(argv)
    os.environ.update({"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"})
    profile_path = PROFILES_DIR / f"{args.preset}.toml"
    profile = load_profile(args.preset)
    overrides: dict[str, object] = {}
    if args.plain:
        overrides["secure-aggregation"] = False
    if args.consortium is not None:
        overrides["consortium"] = str(args.consortium.absolute())
    if args.site_policy is not None:
        overrides["simulated-site-policy"] = str(args.site_policy.absolute())
    rounds, epochs = _schedule(profile)
    t0 = time.perf_counter()
    consortium = str(overrides.get("consortium", profile["consortium"]))
    toml = (
        Path(consortium)
        if consortium.endswith(".toml")
        else PROJECT_ROOT / "simulations" / "consortia" / f"{consortium}.toml"
    )
    cache = PROJECT_ROOT / ".cache" / "sites" / toml.stem  # pyproject's sites-cache, as the ClientApp resolves it
    sites = _consortium(toml, cache)
    t_data = time.perf_counter() - t0
    print(f"consortium {toml.stem}: {len(sites)} sites in {cache} ({t_data:.0f} s)")

    run_dir = PROJECT_ROOT / "runs"
    with tempfile.TemporaryDirectory(prefix="sarcofed-profile-") as tmp:
        run_config: Path = profile_path
        if overrides:  # flwr takes one TOML file or key=value pairs, not both: the profile plus the overrides
            run_config = Path(tmp) / profile_path.name
            run_config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in {**profile, **overrides}.items()))
        command = " ".join(
            flwr_run_command(
                Path("."),
                CONNECTION,
                run_config.relative_to(PROJECT_ROOT) if run_config.is_relative_to(PROJECT_ROOT) else run_config,
            )
        )
        print(
            f"federated run: {command}  ({len(sites)} simulated sites; full log: {run_dir / 'flwr-run.log'})",
            flush=True,
        )
        t1 = time.perf_counter()
        with LocalSuperLink(PROJECT_ROOT / ".flwr_home", num_supernodes=len(sites)) as link:
            result = link.run(run_config, log_path=run_dir / "flwr-run.log", on_line=_show_progress)
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
        cen = centralised(sites, str(profile["preset"]), rounds, epochs)
        t_cen = time.perf_counter() - t2
        loc = local_only(sites, str(profile["preset"]), rounds, epochs)
        t_loc = time.perf_counter() - t2 - t_cen

    from rich.console import Console
    from rich.table import Table

    secure = "off" if args.plain else "on"
    columns: tuple[str, ...]
    if args.baselines:
        table = Table(title=f"Holdout per site: federated (SecAgg+ {secure}) vs centralised vs local-only")
        columns = ("site", "n", "Dice fed", "Dice cen", "Dice local", "SMA err fed", "SMA err cen", "SMA err local")
    else:
        table = Table(
            title=f"Holdout per site after the federated run (SecAgg+ {secure}): sarcopenia from the "
            "estimated SMA vs from the image classifier"
        )
        columns = ("site", "n", "Dice", "SMA abs err", "SMA verdict acc.", "image classifier acc.", "classifier AUROC")
    for col in columns:
        table.add_column(col, justify="left" if col == "site" else "right")
    pooled = summary["final_round"]["pooled"]
    for site, f in [*((s, fed.get(s, {})) for s in sites), ("pooled", pooled)]:
        c, lo = cen.get(site, {}), loc.get(site, {})
        n = str(f.get("n", c.get("n", "-")))
        if args.baselines:
            table.add_row(
                site,
                n,
                _fmt(f.get("dice_mean")),
                _fmt(c.get("dice_mean")),
                _fmt(lo.get("dice_mean")),
                _fmt(f.get("sma_abs_pct_err_mean"), True),
                _fmt(c.get("sma_abs_pct_err_mean"), True),
                _fmt(lo.get("sma_abs_pct_err_mean"), True),
            )
        else:
            table.add_row(
                site,
                n,
                _fmt(f.get("dice_mean")),
                _fmt(f.get("sma_abs_pct_err_mean"), True),
                _fmt(f.get("sarcopenia_accuracy")),
                _fmt(f.get("cls_accuracy")),
                _fmt(f.get("cls_auroc")),
            )
    console = Console()
    console.print(table)
    if not args.baselines:
        console.print(_composition_table(sites, fed, pooled))
    if summary.get("privacy"):
        spent = ", ".join(f"{site} {eps:.3g}" for site, eps in summary["privacy"]["dp_epsilon_by_site"].items())
        console.print(f"differential privacy at the sites: epsilon spent in this run: {spent}")
    t_l3 = 0.0
    if summary.get("l3_final_round"):
        t3 = time.perf_counter()
        _print_l3(console, summary["l3_final_round"], toml, cache, folder)
        t_l3 = time.perf_counter() - t3
    total = time.perf_counter() - t0
    baselines = f", centralised {t_cen:.0f} s, local-only {t_loc:.0f} s" if args.baselines else ""
    unseen = f", L3 on unseen sites {t_l3:.0f} s" if t_l3 else ""
    console.print(f"times: data {t_data:.0f} s, federated {t_fed:.0f} s{baselines}{unseen}, total {total:.0f} s")
    console.print(f"report: {folder / 'report.html'}")
    (folder / "comparison.json").write_text(
        json.dumps(
            {
                "federated": fed,
                "centralised": cen,
                "local_only": loc,
                "seconds": {
                    "data": t_data,
                    "federated": t_fed,
                    "centralised": t_cen,
                    "local_only": t_loc,
                    "total": total,
                },
            },
            indent=2,
            default=lambda o: None,
        )
    )
    return 0


def _composition_table(sites: Iterable[str], fed: dict, pooled: dict) -> object:
    """IMAT, VAT and SAT area errors and the myosteatosis verdict per site (empty where masks are muscle only)."""
    from rich.table import Table

    table = Table(title="Body composition on the holdout: absolute area error per tissue, myosteatosis (Martin 2013)")
    for col in ("site", "n", "IMAT err", "VAT err", "SAT err", "myosteatosis acc."):
        table.add_column(col, justify="left" if col == "site" else "right")
    for site, f in [*((s, fed.get(s, {})) for s in sites), ("pooled", pooled)]:
        table.add_row(
            site,
            str(f.get("n", "-")),
            *(_fmt_drawn(f, f"{t}_abs_pct_err_mean", True) for t in ("imat", "vat", "sat")),
            _fmt_drawn(f, "myosteatosis_accuracy"),
        )
    return table


def _fmt_drawn(row: dict, key: str, pct: bool = False) -> str:
    """``_fmt``, but "n/a" for a value that is empty without being suppressed (the site's masks are muscle only)."""
    text = _fmt(row.get(key), pct)
    hidden = str(row.get("suppressed_metrics") or "").split(",")
    return "n/a" if text == "supp." and key not in hidden and "suppressed_metrics" in row else text


if __name__ == "__main__":
    sys.exit(main())
