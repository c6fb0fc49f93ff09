"""`make bench`: what each part of SarcoFed costs, measured side by side in one run, as one markdown table.

    python -m simulations.bench              # everything (~15-25 min on 2 shared cores)
    python -m simulations.bench --quick      # fewer steps, 3 sites only (~5-10 min)
    python -m simulations.bench --only 3,4   # some items

Items: 1 training loops vs a plain PyTorch loop and FLOP rate vs matmul peak (simulations.bench_train),
2 federated round vs local compute and 5 scaling with sites (simulations.bench_fed), 3 SecAgg+ cost
(simulations.bench_secagg), 4 predict latency (simulations.bench_predict), 6 phantom and ingestion
speed (simulations.bench_data). The table goes to stdout and runs/bench/bench.md, with the machine
(CPU model, cores, load average at start and end) it came from; raw numbers to runs/bench/bench.json.

Threads: on a machine that is already busy (1-minute load >= half the cores), OpenMP's spinning
threads slow torch down many-fold (measured 20-40x for a demo forward at load 7.8 on 2 cores), so
``--threads auto`` uses 1 thread then and all cores otherwise; the table says which.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

ITEMS = {
    "1": "simulations.bench_train",
    "2": "simulations.bench_fed",  # also gives item 5 and the whole-run SecAgg+ ratio of item 3
    "3": "simulations.bench_secagg",
    "4": "simulations.bench_predict",
    "6": "simulations.bench_data",
}


def table(rows) -> str:
    lines = ["| # | what | measured | target | ratio | meets | note |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r.item):
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"| {r.item} | {r.what} | {r.measured} | {r.target} | {ratio} | {r.meets} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and sizes, 3 sites only")
    parser.add_argument("--only", default="", help="comma-separated items (1,2,3,4,5,6; 5 runs with 2)")
    parser.add_argument("--threads", default="auto", help="torch threads: auto (default), or a number")
    args = parser.parse_args(argv)
    os.environ.update({"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"})
    import importlib

    import torch

    from simulations.bench_common import bench_dir, machine_line

    cores = os.cpu_count() or 1
    threads = (1 if os.getloadavg()[0] >= cores / 2 else cores) if args.threads == "auto" else int(args.threads)
    torch.set_num_threads(threads)
    wanted = {s.strip() for s in args.only.split(",") if s.strip()} or set(ITEMS) | {"5"}
    if "5" in wanted:
        wanted.add("2")
    start_line = machine_line()
    print(f"machine at start: {start_line}", flush=True)
    rows, raw, t0 = [], {}, time.perf_counter()
    for item, module in ITEMS.items():
        if item not in wanted:
            continue
        t = time.perf_counter()
        print(f"item {item}: {module} ...", flush=True)
        try:
            got = importlib.import_module(module).run(quick=args.quick)
        except Exception as error:  # one failing item must not lose the others' numbers
            traceback.print_exc()
            from simulations.bench_common import Row

            got = [Row(item, f"{module} failed", f"{type(error).__name__}: {error}"[:200])]
        rows.extend(got)
        raw[item] = {"seconds": time.perf_counter() - t, "rows": [r.__dict__ for r in got]}
        print(f"item {item}: {time.perf_counter() - t:.0f} s", flush=True)
    end_line = machine_line()
    md = (
        f"### SarcoFed benchmark{' (--quick)' if args.quick else ''}\n\n"
        f"Machine: {end_line.split(', load average')[0]}.\n"
        f"Load average at start: {start_line.split('load average ')[1]}; at end: {end_line.split('load average ')[1]}. "
        f"Benchmark wall time {time.perf_counter() - t0:.0f} s.\n\n" + table(rows) + "\n"
    )
    print(md)
    out = bench_dir()
    (out / "bench.md").write_text(md)
    (out / "bench.json").write_text(json.dumps(raw, indent=2, default=str))
    print(f"written: {out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
