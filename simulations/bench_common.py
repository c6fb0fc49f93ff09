"""Shared pieces of the benchmark scripts: one result row, the machine line, timing and memory helpers.

Every benchmark module returns a list of :class:`Row` (what was measured, the number, the target and
their ratio); ``simulations.bench`` prints them as one markdown table. Ratios are oriented so that
``meets`` compares them with the target in the direction the target states (>= or <=).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One line of the benchmark table.

    ratio : measured / reference (None when the row is informative only)
    target : e.g. ">= 0.95" or "<= 1.3"; "" when there is no target
    """

    item: str
    what: str
    measured: str
    target: str = ""
    ratio: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def meets(self) -> str:
        if self.ratio is None or not self.target:
            return ""
        op, value = self.target.split()[:2]  # ">= 0.95", "<= 1.3x", ">= 70%", "<= 0.15 s"
        bound = float(value.rstrip("x%")) / (100.0 if value.endswith("%") else 1.0)
        if self.target.endswith(" s"):  # a time target: ratio is already measured / target
            bound = 1.0
        ok = self.ratio >= bound if op == ">=" else self.ratio <= bound
        return "yes" if ok else "**no**"


def cpu_model() -> str:
    """CPU model name from lscpu (falls back to platform.processor())."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """One line naming the machine: CPU model, cores, memory, torch threads, load average now."""
    import torch

    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    la = os.getloadavg()
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
        f"load average {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1/5/15 min)"
    )


def best_of(fn: Callable[[], float], repeats: int) -> float:
    """Smallest of ``repeats`` calls of ``fn`` (each returns seconds): the least-disturbed run on a shared box."""
    return min(fn() for _ in range(repeats))


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---- memory of a process tree ---------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, session id, RSS bytes) for every process we can read."""
    page = os.sysconf("SC_PAGE_SIZE")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            rest = stat[stat.rindex(")") + 2 :].split()
            ppid, sid, rss_pages = int(rest[1]), int(rest[3]), int(rest[21])
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry)] = (ppid, sid, rss_pages * page)
    return out


def tree_rss(roots: list[int]) -> int:
    """Sum of RSS (bytes) of ``roots``, their descendants, and processes in the roots' sessions."""
    table = _proc_table()
    members = {r for r in roots if r in table}
    sessions = {r for r in roots}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, sid, _) in table.items():
            if pid not in members and (ppid in members or sid in sessions):
                members.add(pid)
                changed = True
    return sum(table[p][2] for p in members)


class RssSampler:
    """Samples :func:`tree_rss` of a set of root pids every ``interval_s`` in a thread; ``peak`` in bytes."""

    def __init__(self, roots: Callable[[], list[int]], interval_s: float = 0.5) -> None:
        self.roots, self.interval_s = roots, interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, tree_rss(self.roots()))
            except Exception:  # a process vanishing mid-read: skip the sample
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_dir() -> Path:
    """runs/bench under the checkout (created)."""
    from simulations.flower_home import PROJECT_ROOT

    path = PROJECT_ROOT / "runs" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def synthetic_site(name: str, profile: str, n_patients: int, n_unlabelled: int, seed: int) -> Path:
    """A phantom site cached under .cache/bench/sites/<name> (reused when it exists); its manifest path."""
    from common.phantom import ensure_consortium
    from simulations.flower_home import PROJECT_ROOT

    spec = {"sites": {name: {"profile": profile, "patients": n_patients, "unlabelled": n_unlabelled, "seed": seed}}}
    return Path(ensure_consortium(spec, PROJECT_ROOT / ".cache" / "bench" / "sites")[name])
