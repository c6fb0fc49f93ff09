"""Benchmark: synthetic L3 slice generation speed at 512 x 512 (slices/s on one core) and write speed.

Run: ``python -m simulations.bench_phantom [--n 40]``. Generation is single-threaded numpy/scipy, so
slices/s per core is the number to compare; writing adds a DICOM file and a NIfTI mask per slice.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, before numpy/scipy load their thread pools

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="slices per measurement (default 40)")
    parser.add_argument("--profile", default="general-surgery", help="site profile (default general-surgery)")
    args = parser.parse_args()

    from common.phantom import PROFILES, synth_case, write_site

    profile = PROFILES[args.profile]
    synth_case(0, profile)  # warm-up (imports, FFT plans)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(args.n):
        synth_case((1, i), profile)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(
        f"phantom generation, {args.profile}, 512 x 512: {args.n / cpu:.1f} slices/s per core "
        f"(CPU {1000 * cpu / args.n:.0f} ms/slice; wall {args.n / wall:.1f} slices/s)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        write_site(Path(tmp) / "site", "bench", profile, args.n, 0, seed=2)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(
        f"write_site (generate + DICOM + NIfTI mask + manifest): {args.n / cpu:.1f} slices/s per core "
        f"(CPU {1000 * cpu / args.n:.0f} ms/slice; wall {args.n / wall:.1f} slices/s)"
    )


if __name__ == "__main__":
    main()
