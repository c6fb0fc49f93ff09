"""The coordinator's live view: one page on 127.0.0.1 that follows the runs under a ``run-dir`` as they go.

Open-source Flower shows a run only as log lines (``flwr log``); the run folders the ServerApp writes
(``server.run_folder``) already hold every number a coordinator watches. This module reads them,
and nothing else, each time the page asks:

- ``GET /``: the page (inline CSS and JS, nothing fetched from the network);
- ``GET /api/state?run=NAME``: the state as JSON (``run_dir_state``): every run folder (newest first)
  with its Flower run ids, outcome, schedule and last round, the chosen run's per-site metrics by
  round with its pooled rows and failures, and the nodes when a ``nodes`` source is given.

The page asks again every ``POLL_SECONDS``, so new rows appear while a run goes, without a reload.
Every value in the JSON is already text a person reads (counts as integers, proportions as %,
empty cells as "-" with the reason where it is known); the page only places it.

Exposure: the view shows every site's aggregates, so it binds to a loopback address unless
``allow_remote`` is given, and answers only requests addressed to a loopback name (a web page
elsewhere cannot read it through DNS rebinding). Remote access goes through an SSH tunnel or the
nginx client-certificate gate (docs/live-view.md).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from common.errors import ConfigError
from common.metrics import MIN_COHORT
from server.report import PHASES, STAGES, duration, phase_name, readable_time
from server.run_folder import COLUMNS, POOLED, RUN_RECORD, read_run_record

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
POLL_SECONDS = 3
MAX_RUNS = 30
"""Run folders listed, newest first (each poll reads their metrics.csv)."""

NodesSource = Callable[[], list[dict[str, Any]]]
"""Returns the consortium's nodes, each a dict with node_id, site, status, last_seen."""

EMPTY = "-"
SUPPRESSED_SHORT = f"< {MIN_COHORT} patients"
SUPPRESSED_WHY = f"suppressed: rests on fewer than {MIN_COHORT} patients"

# metrics.csv column, heading, kind of value (see _format)
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("n", "Holdout patients", "count"),
    ("dice_mean", "Dice", "score"),
    ("sma_abs_pct_err_mean", "SMA error", "percent"),
    ("sarcopenia_accuracy", "Verdict accuracy (SMA)", "proportion"),
    ("cls_accuracy", "Classifier accuracy", "proportion"),
    ("n_train", "Training slices", "count"),
    ("loss", "Training loss", "loss"),
    ("dp_epsilon", "DP epsilon spent", "epsilon"),
)
_HOLDOUT = {"n", "dice_mean", "sma_abs_pct_err_mean", "sarcopenia_accuracy", "cls_accuracy"}


# ----------------------------------------------------------------------------- reading a run folder
@functools.lru_cache(maxsize=2 * MAX_RUNS)
def _read_metrics_cached(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    """metrics.csv as written (``mtime_ns`` and ``size`` key the cache, so a new row is a new read)."""
    try:  # only an empty cell is missing: a site may be called "NA"
        frame = pd.read_csv(
            path,
            keep_default_na=False,
            na_values=[""],
            dtype={"site": str, "phase": str, "suppressed_metrics": str, "status": str},
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame(columns=list(COLUMNS))
    return frame if _ends_with_newline(Path(path)) else frame.iloc[:-1]  # a row still being appended waits


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return True
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def read_metrics(folder: Path) -> pd.DataFrame:
    """The rows of a run folder's metrics.csv (none yet: an empty frame with its columns)."""
    path = Path(folder) / "metrics.csv"
    try:
        stat = path.stat()
    except FileNotFoundError:
        return pd.DataFrame(columns=list(COLUMNS))
    return _read_metrics_cached(str(path), stat.st_mtime_ns, stat.st_size)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when missing, half written or not an object."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def run_folders(run_dir: Path) -> list[Path]:
    """The run folders under ``run_dir``, newest first (``latest`` is a link to one of them, not another)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [
        p
        for p in run_dir.iterdir()
        if p.is_dir()
        and not p.is_symlink()
        and any((p / name).exists() for name in (RUN_RECORD, "metrics.csv", "summary.json"))
    ]
    return sorted(found, key=lambda p: p.name, reverse=True)


# ----------------------------------------------------------------------------- text a person reads
def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _format(value: float, kind: str) -> str:
    if kind == "count":
        return f"{int(round(value)):d}"
    if kind == "score":
        return f"{value:.3f}"
    if kind == "proportion":
        return f"{100.0 * value:.1f}%"
    if kind == "percent":
        return f"{value:.1f}%"
    if kind == "epsilon":
        return f"{value:.2f}"
    return f"{value:.4f}"


def _age(seconds: float) -> str:
    """How long ago, rounded to what a person needs: "12 s ago", "4 min ago", "2 h 5 min ago"."""
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min ago" if hours < 48 else f"{hours // 24} days ago"


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _suppressed(row: Mapping[str, Any]) -> set[str]:
    names = row.get("suppressed_metrics")
    return {n.strip() for n in names.split(",") if n.strip()} if isinstance(names, str) else set()


def _why_empty(row: Mapping[str, Any], name: str) -> tuple[str, str]:
    """(short reason shown beside "-", full reason shown on hover) for an empty cell."""
    suppressed = _suppressed(row)
    if name in _HOLDOUT and (name in suppressed or "n" in suppressed):
        return SUPPRESSED_SHORT, SUPPRESSED_WHY
    status = str(row.get("status") or "")
    if status.startswith("aborted"):
        return "", "the round was aborted: no update, no metrics"
    if name in _HOLDOUT and row.get("phase") == "ssl":
        return "", "not evaluated: SSL pretraining has no holdout metric"
    if name == "cls_accuracy" and row.get("phase") == "seg":
        return "", "the classifier is trained and evaluated in the cls phase"
    if name in ("n_train", "loss"):
        return "", "did not train in this round"
    if name == "dp_epsilon":
        return "", "this site adds no differential-privacy noise"
    return "", "not evaluated, or undefined (a class without patients)"


def cell(row: Mapping[str, Any], name: str, kind: str) -> dict[str, str]:
    """One table cell: ``text``, plus ``short`` and ``why`` (the reason) when the value is empty."""
    value = _number(row.get(name))
    if math.isfinite(value):
        return {"text": _format(value, kind)}
    short, why = _why_empty(row, name)
    return {"text": EMPTY, "short": short, "why": why}


def _status_text(status: Any) -> str:
    return "ok" if not isinstance(status, str) or not status.strip() else status.strip()


# ----------------------------------------------------------------------------- one run
def _schedule(record: Mapping[str, Any], summary: Mapping[str, Any] | None, running: bool) -> dict[str, int]:
    """Rounds per phase: a finished run's plan (summary.json), else the run config it started with."""
    if not running and summary and isinstance(summary.get("rounds"), Mapping):
        return {str(k): int(v) for k, v in summary["rounds"].items() if isinstance(v, int)}
    config = record.get("run_config") or {}
    return {p: int(config[f"rounds-{p}"]) for p in PHASES if isinstance(config.get(f"rounds-{p}"), int)}


def _schedule_text(schedule: Mapping[str, int]) -> str:
    parts = [f"{p} {n}" for p, n in schedule.items() if n]
    return ", ".join(parts) + " rounds" if parts else EMPTY


def _round_title(phase: Any, phase_round: Any, global_round: Any, schedule: Mapping[str, int]) -> str:
    total = schedule.get(str(phase))
    of = f" of {total}" if total else ""
    return f"{phase_name(phase)} round {int(_number(phase_round))}{of} (global round {int(_number(global_round))})"


def _flower_run_ids(record: Mapping[str, Any], summary: Mapping[str, Any] | None) -> list[str]:
    runs = record.get("flower_runs") or []
    ids = [r.get("run_id") for r in runs if isinstance(r, Mapping)]
    if not ids and summary:
        ids = list(summary.get("flower_run_ids") or [])
    return [EMPTY if i is None else str(i) for i in ids]


def run_status(folder: Path, record: Mapping[str, Any], summary: Mapping[str, Any] | None) -> str:
    """ "running" while no summary covers the folder's last Flower run or its last rows; else the outcome.

    A resumed run works in a folder that already holds the previous run's summary.json: it is running
    while run.json lists more Flower runs than that summary names.
    """
    if summary is None:
        return "running"
    if "flower_run_ids" in summary:
        running = len(record.get("flower_runs") or []) > len(summary["flower_run_ids"] or [])
    else:  # a summary from before summaries named their Flower runs
        metrics_time, summary_time = _mtime(folder / "metrics.csv"), _mtime(folder / "summary.json")
        running = bool(metrics_time and summary_time and metrics_time > summary_time)
    if running:
        return "running"
    outcome = summary.get("outcome")
    return str(outcome) if isinstance(outcome, str) and outcome else "finished"


def _last_round(metrics: pd.DataFrame, schedule: Mapping[str, int]) -> str:
    if metrics.empty:
        return "none yet"
    last = metrics.iloc[-1]
    return _round_title(last["phase"], last["round"], last["global_round"], schedule)


@dataclass(frozen=True)
class RunFiles:
    """What one run folder holds right now: run.json, summary.json (None before the run ends), the
    metrics.csv rows, and what follows from them (status, rounds per phase)."""

    folder: Path
    record: dict[str, Any]
    summary: dict[str, Any] | None
    metrics: pd.DataFrame
    status: str
    schedule: dict[str, int]

    @classmethod
    def read(cls, folder: Path) -> RunFiles:
        folder = Path(folder)
        try:
            record = read_run_record(folder)
        except ConfigError:  # half written or damaged: the rows still tell the run's progress
            record = {}
        summary = _read_json(folder / "summary.json")
        status = run_status(folder, record, summary)
        return cls(
            folder, record, summary, read_metrics(folder), status, _schedule(record, summary, status == "running")
        )


def run_overview(run: RunFiles, now: float) -> dict[str, Any]:
    """One line of the runs table: name, status, Flower run ids, schedule, last round, last change."""
    config = run.record.get("run_config") or {}
    changed = max(
        filter(None, (_mtime(run.folder / n) for n in (RUN_RECORD, "metrics.csv", "summary.json"))), default=None
    )
    return {
        "name": run.folder.name,
        "status": run.status,
        "flower_run_ids": _flower_run_ids(run.record, run.summary),
        "preset": str((run.summary or {}).get("preset") or config.get("preset") or EMPTY),
        "schedule": _schedule_text(run.schedule),
        "last_round": _last_round(run.metrics, run.schedule),
        "changed": EMPTY if changed is None else f"{_clock(changed)} ({_age(now - changed)})",
    }


def _site_rows(rows: pd.DataFrame, columns: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    records = [r for _, r in rows.iterrows()]
    records.sort(key=lambda r: (str(r["site"]) == POOLED, str(r["site"])))
    out = []
    for r in records:
        row = r.to_dict()
        out.append(
            {
                "site": str(row["site"]),
                "pooled": str(row["site"]) == POOLED,
                "cells": [cell(row, name, kind) for name, _, kind in columns],
                "status": _status_text(row.get("status")),
            }
        )
    return out


def _table_columns(metrics: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The shown columns; DP epsilon only when some site of the run reports one."""
    has_dp = "dp_epsilon" in metrics and metrics["dp_epsilon"].notna().any()
    return [c for c in TABLE_COLUMNS if c[0] != "dp_epsilon" or has_dp]


def rounds_by_site(
    metrics: pd.DataFrame, schedule: Mapping[str, int]
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(columns, rounds newest first), each round with its title, status and rows (sites, then pooled)."""
    columns = _table_columns(metrics)
    rounds = []
    for global_round, rows in metrics.groupby("global_round", sort=True):
        first = rows.iloc[0]
        statuses = {_status_text(s) for s in rows["status"]}
        rounds.append(
            {
                "global_round": int(global_round),
                "phase": str(first["phase"]),
                "title": _round_title(first["phase"], first["round"], global_round, schedule),
                "status": "ok" if statuses == {"ok"} else "; ".join(sorted(statuses - {"ok"})),
                "rows": _site_rows(rows, columns),
            }
        )
    rounds.reverse()
    return [{"key": name, "label": label} for name, label, _ in columns], rounds


def failures(metrics: pd.DataFrame, summary: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The run's failures: summary.json's (written when a run ends), else the aborted rounds so far."""
    listed = (summary or {}).get("failures")
    if isinstance(listed, list) and listed:
        return [
            {
                "when": f"{phase_name(f.get('phase'))} round {f.get('round', EMPTY)}",
                "stage": STAGES.get(str(f.get("stage")), str(f.get("stage") or EMPTY)),
                "reason": str(f.get("reason") or EMPTY),
            }
            for f in listed
            if isinstance(f, Mapping)
        ]
    if metrics.empty:
        return []
    aborted = metrics[metrics["status"].astype(str).str.startswith("aborted")]
    return [
        {
            "when": f"{phase_name(r['phase'])} round {int(_number(r['round']))}",
            "stage": STAGES["round"],
            "reason": str(r["status"]),
        }
        for _, r in aborted.iterrows()
    ]


def _settings(record: Mapping[str, Any], summary: Mapping[str, Any] | None) -> list[str]:
    """Short lines on how the run was set up: preset, strategy, secure aggregation, cutoff, resumes."""
    config = record.get("run_config") or {}
    summary = summary or {}
    preset = summary.get("preset") or config.get("preset")
    strategy = summary.get("strategy") or config.get("strategy")
    secure = summary.get("secure_aggregation", config.get("secure-aggregation"))
    cutoff = summary.get("cutoff") or config.get("cutoff")
    lines = [
        f"Preset {preset or EMPTY}, strategy {strategy or EMPTY}, secure aggregation "
        + ("on (SecAgg+)" if secure else "off" if secure is not None else EMPTY),
        f"Sarcopenia cutoff {cutoff or EMPTY}",
    ]
    for run in record.get("flower_runs") or []:
        after = run.get("resumed_after") if isinstance(run, Mapping) else None
        started = run.get("started", EMPTY) if isinstance(run, Mapping) else EMPTY
        resumed = (
            f", resumed after {phase_name(after.get('phase'))} round {after.get('round')}"
            if isinstance(after, Mapping)
            else ""
        )
        lines.append(f"Flower run {run.get('run_id', EMPTY)} started {readable_time(started)}{resumed}")
    if summary.get("wall_seconds") is not None:
        lines.append(f"Wall time {duration(summary['wall_seconds'])}")
    return lines


def run_detail(run: RunFiles, now: float) -> dict[str, Any]:
    """The chosen run: its overview plus settings, per-site metrics by round and failures."""
    columns, rounds = rounds_by_site(run.metrics, run.schedule)
    return {
        **run_overview(run, now),
        "settings": _settings(run.record, run.summary),
        "columns": columns,
        "rounds": rounds,
        "failures": failures(run.metrics, run.summary),
    }


# ----------------------------------------------------------------------------- nodes
def _last_seen(value: Any, now: float) -> str:
    if isinstance(value, datetime):
        value = value.timestamp()
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return f"{_clock(value)} ({_age(now - value)})"
    return EMPTY if value in (None, "") else str(value)


def node_rows(nodes: NodesSource, now: float) -> dict[str, Any]:
    """The nodes' table, or the error that kept it from being read (the view outlives a Control API outage)."""
    try:
        listed = nodes()
    except Exception as error:  # any failure of the source is shown on the page, not raised into the server
        return {"error": f"nodes unavailable: {error}", "rows": []}
    rows = [
        {
            "node_id": str(n.get("node_id", EMPTY)),
            "site": str(n.get("site") or EMPTY),
            "status": str(n.get("status") or EMPTY),
            "last_seen": _last_seen(n.get("last_seen"), now),
        }
        for n in listed
    ]
    return {"error": "", "rows": sorted(rows, key=lambda r: (r["site"], r["node_id"]))}


# ----------------------------------------------------------------------------- the whole state
def run_dir_state(
    run_dir: Path, run: str | None = None, nodes: NodesSource | None = None, now: float | None = None
) -> dict[str, Any]:
    """What the page shows, as JSON-ready text.

    Parameters
    ----------
    run_dir : Path
        The ServerApp's ``run-dir`` (a folder of run folders).
    run : str, optional
        The run folder to detail; default (or unknown): the newest.
    nodes : callable, optional
        Source of the nodes' health (``NodesSource``); without one the state has no ``nodes``.
    now : float, optional
        Epoch seconds the ages are counted to (default: now).

    Returns
    -------
    dict
        ``run_dir``, ``generated``, ``poll_seconds``, ``runs`` (overviews, newest first, at most
        ``MAX_RUNS``), ``more_runs`` (how many older ones are not listed), ``run`` (the detail of the
        chosen run, or None when there is none) and ``nodes`` (None without a source).
    """
    now = time.time() if now is None else now
    folders = run_folders(run_dir)
    listed = {f.name: RunFiles.read(f) for f in folders[:MAX_RUNS]}
    chosen = listed.get(run) if run else None
    if chosen is None and run:  # a folder older than the list shows
        chosen = next((RunFiles.read(f) for f in folders if f.name == run), None)
    if chosen is None:
        chosen = next(iter(listed.values()), None)
    return {
        "run_dir": str(Path(run_dir).absolute()),
        "generated": _clock(now),
        "poll_seconds": POLL_SECONDS,
        "runs": [run_overview(r, now) for r in listed.values()],
        "more_runs": max(0, len(folders) - MAX_RUNS),
        "run": None if chosen is None else run_detail(chosen, now),
        "nodes": None if nodes is None else node_rows(nodes, now),
    }


# ----------------------------------------------------------------------------- HTTP
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for a loopback address or name (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind address unless ``allow_remote``.

    Raises
    ------
    ConfigError
        ``host`` is not loopback and ``allow_remote`` is False.
    """
    if is_loopback(host) or allow_remote:
        return
    raise ConfigError(
        f"live view: refusing to listen on {host}: the page shows every site's metrics to whoever reaches "
        f"the port. Keep {DEFAULT_HOST} and reach it through an SSH tunnel "
        f"(ssh -N -L {DEFAULT_PORT}:127.0.0.1:{DEFAULT_PORT} coordinator-host) or the nginx client-certificate "
        "gate (docs/live-view.md); or pass --allow-remote."
    )


def _host_name(header: str | None) -> str:
    """The name in a Host header, without its port ("[::1]:8787" -> "::1")."""
    if not header:
        return ""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class _Handler(BaseHTTPRequestHandler):
    """GET / (the page) and GET /api/state (the JSON); everything else 404."""

    server: LiveViewServer
    server_version = "SarcoFed-live-view"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self.server.allow_remote and not is_loopback(_host_name(self.headers.get("Host"))):
            self._send(
                HTTPStatus.FORBIDDEN,
                b"live view: requests must be addressed to 127.0.0.1 or localhost\n",
                "text/plain; charset=utf-8",
            )
            return
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif url.path == "/api/state":
            self._send_state(parse_qs(url.query).get("run", [None])[0])
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _send_state(self, run: str | None) -> None:
        try:
            state = run_dir_state(self.server.run_dir, run, self.server.nodes)
        except Exception as error:  # a folder the view cannot read: say so on the page, keep serving
            self.log_error("live view: state of %s: %r", self.server.run_dir, error)
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                f"cannot read {self.server.run_dir}: {error}\n".encode(),
                "text/plain; charset=utf-8",
            )
            return
        self._send(HTTPStatus.OK, json.dumps(state, allow_nan=False).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        """Quiet: the page polls every few seconds; failures still reach stderr through log_error."""


class LiveViewServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its run-dir, its nodes source and whether remote is allowed."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], run_dir: Path, nodes: NodesSource | None, allow_remote: bool) -> None:
        self.run_dir = Path(run_dir)
        self.nodes = nodes
        self.allow_remote = allow_remote
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # a bound TCP socket's name: (host, port[, flowinfo, scope_id])
        return f"http://[{host}]:{port}/" if ":" in str(host) else f"http://{host}:{port}/"


def make_server(
    run_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    nodes: NodesSource | None = None,
    allow_remote: bool = False,
) -> LiveViewServer:
    """A bound (not yet serving) live-view server; port 0 picks a free one (``server.url`` says which).

    Raises
    ------
    ConfigError
        ``host`` is not loopback and ``allow_remote`` is False, or the port cannot be bound.
    """
    check_bind(host, allow_remote)
    try:
        return LiveViewServer((host, port), run_dir, nodes, allow_remote)
    except OSError as error:
        raise ConfigError(
            f"live view: cannot listen on {host}:{port} ({error.strerror}); pick another --port"
        ) from None


def serve(
    run_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    nodes: NodesSource | None = None,
    allow_remote: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the live view until interrupted (Ctrl-C); ``on_ready`` gets the URL once it listens."""
    server = make_server(run_dir, host, port, nodes=nodes, allow_remote=allow_remote)
    if on_ready is not None:
        on_ready(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SarcoFed live view</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; background: #f6f7f9; }
header { background: #243447; color: #fff; padding: 10px 20px; \
display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header .dir { font-family: ui-monospace, monospace; font-size: 13px; color: #c8d3df; }
header .live { margin-left: auto; font-size: 13px; color: #c8d3df; }
header .live.lost { color: #ffb4a8; font-weight: 600; }
main { padding: 12px 20px 30px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 10px 14px; margin-bottom: 14px; }
h2 { font-size: 15px; margin: 2px 0 8px; }
h3 { font-size: 13px; margin: 12px 0 4px; font-weight: 600; }
h3 .st { font-weight: normal; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #dde1e6; padding: 3px 8px; }
th { background: #eef1f5; font-weight: 600; text-align: left; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.empty { color: #8a939e; }
td.empty small { color: #a05a00; font-style: italic; }
tr.pooled td { font-weight: 600; background: #f7f6ee; }
#runs tbody tr { cursor: pointer; }
#runs tbody tr:hover td { background: #f0f5fb; }
#runs tbody tr.chosen td { background: #e2ecf8; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; font-weight: 600; }
.badge.running { background: #dbeafe; color: #1d4ed8; }
.badge.completed, .badge.finished, .badge.ok, .badge.online { background: #dcfce7; color: #166534; }
.badge.silent { background: #fef3c7; color: #92400e; }
.badge.failed, .badge.aborted, .badge.offline { background: #fee2e2; color: #991b1b; }
.badge.other { background: #eceff3; color: #3b4450; }
td.name { white-space: nowrap; font-family: ui-monospace, monospace; font-size: 12px; }
.why { font-size: 12px; color: #57606a; font-weight: normal; }
.meta { font-size: 13px; color: #3b4450; margin: 2px 0; }
.note { font-size: 12px; color: #57606a; margin: 6px 0 0; }
.none { font-size: 13px; color: #57606a; }
.error { color: #991b1b; font-size: 13px; }
details > summary { cursor: pointer; font-size: 13px; color: #3b4450; margin: 8px 0 4px; }
ul.failures { margin: 4px 0; padding-left: 18px; font-size: 13px; }
</style></head>
<body>
<header><h1>SarcoFed live view</h1><span class="dir" id="dir"></span>\
<span class="live" id="live">connecting...</span></header>
<main>
<section id="nodes-section" hidden><h2>Nodes</h2><div id="nodes"></div></section>
<section><h2>Runs</h2><div id="runs"></div></section>
<section id="detail"><div class="none">No run chosen.</div></section>
</main>
<script>
"use strict";
let chosen = null;
let pollMs = 3000;
const opened = new Set();

function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children || []) if (child) node.appendChild(child);
  return node;
}

function badgeClass(status) {
  const word = String(status).split(/[:\\s]/)[0];
  return ["running", "completed", "finished", "ok", "online", "silent", "failed", "aborted", "offline"]\
.includes(word) ? word : "other";
}

function badge(status) { return el("span", {class: "badge " + badgeClass(status), text: status}); }

function statusView(status) {
  const cut = String(status).indexOf(":");
  if (cut < 0) return badge(status);
  return el("span", {}, [badge(status.slice(0, cut)), \
el("span", {class: "why", text: " " + status.slice(cut + 1).trim()})]);
}

function table(heads, rows) {
  const head = el("tr", {}, heads.map(h => el("th", {text: h})));
  return el("table", {}, [el("thead", {}, [head]), el("tbody", {}, rows)]);
}

function metricCell(c) {
  if (c.text !== "-") return el("td", {class: "num", text: c.text});
  const td = el("td", {class: "num empty", title: c.why || ""}, [document.createTextNode("-")]);
  if (c.short) td.appendChild(el("small", {text: " (" + c.short + ")"}));
  return td;
}

function renderNodes(nodes) {
  const section = document.getElementById("nodes-section");
  section.hidden = nodes === null;
  if (nodes === null) return;
  const box = document.getElementById("nodes");
  box.replaceChildren();
  if (nodes.error) box.appendChild(el("div", {class: "error", text: nodes.error}));
  if (!nodes.rows.length) { \
if (!nodes.error) box.appendChild(el("div", {class: "none", text: "No node registered."})); return; }
  box.appendChild(table(["Site", "Node id", "Status", "Last seen"], nodes.rows.map(n =>
    el("tr", {}, [el("td", {text: n.site}), el("td", {class: "num", text: n.node_id}),
                  el("td", {}, [badge(n.status)]), el("td", {text: n.last_seen})]))));
}

function renderRuns(state) {
  const box = document.getElementById("runs");
  box.replaceChildren();
  if (!state.runs.length) {
    box.appendChild(el("div", {class: "none", text: "No run folder under " + state.run_dir + \
" yet: runs appear here as the ServerApp starts them."}));
    return;
  }
  const rows = state.runs.map(r => {
    const tr = el("tr", {class: state.run && r.name === state.run.name ? "chosen" : ""}, [
      el("td", {class: "name", text: r.name}), el("td", {}, [statusView(r.status)]), \
el("td", {text: r.flower_run_ids.join(", ") || "-"}),
      el("td", {text: r.preset}), el("td", {text: r.schedule}), el("td", {text: r.last_round}), \
el("td", {text: r.changed})]);
    tr.addEventListener("click", () => { chosen = r.name; poll(); });
    return tr;
  });
  box.appendChild(table(["Run folder", "Status", "Flower run ids", "Preset", "Schedule", "Last round", \
"Last change"], rows));
  if (state.more_runs) \
box.appendChild(el("p", {class: "note", text: state.more_runs + " older run folders not listed."}));
}

function roundTable(run, round) {
  const heads = ["Site", ...run.columns.map(c => c.label), "Status"];
  const rows = round.rows.map(r => el("tr", {class: r.pooled ? "pooled" : ""},
    [el("td", {text: r.site}), ...r.cells.map(metricCell), el("td", {text: r.status})]));
  return table(heads, rows);
}

function renderRound(run, round, index) {
  const title = el("h3", {}, [document.createTextNode(round.title + " "),
    round.status === "ok" ? null : statusView(round.status)]);
  if (index < 3) return el("div", {}, [title, roundTable(run, round)]);
  const box = el("details", {}, [\
el("summary", {text: round.title + (round.status === "ok" ? "" : " (" + round.status + ")")}), roundTable(run, round)]);
  const key = run.name + "/" + round.global_round;
  box.open = opened.has(key);
  box.addEventListener("toggle", () => { box.open ? opened.add(key) : opened.delete(key); });
  return box;
}

function renderDetail(run) {
  const box = document.getElementById("detail");
  box.replaceChildren();
  if (!run) { box.appendChild(el("div", {class: "none", text: "No run yet."})); return; }
  box.appendChild(el("h2", {}, [document.createTextNode(run.name + " "), statusView(run.status)]));
  box.appendChild(el("div", {class: "meta", text: "Flower run ids: " + (run.flower_run_ids.join(", ") || "-") +
    " | schedule: " + run.schedule + " | last round: " + run.last_round + " | last change: " + run.changed}));
  for (const line of run.settings) box.appendChild(el("div", {class: "meta", text: line}));
  box.appendChild(el("h3", {text: "Failures"}));
  if (run.failures.length) {
    box.appendChild(el("ul", {class: "failures"}, run.failures.map(f =>
      el("li", {text: f.when + ", " + f.stage + ": " + f.reason}))));
  } else {
    box.appendChild(el("div", {class: "none", text: "No failure so far."}));
  }
  if (!run.rounds.length) { box.appendChild(el("p", {class: "none", text: "No round has finished yet."})); return; }
  run.rounds.forEach((round, i) => box.appendChild(renderRound(run, round, i)));
  box.appendChild(el("p", {class: "note", text: "Newest round first. \\"-\\": no value; hover it for why. " +
    "\\"- (< 5 patients)\\": suppressed by the site, as it rests on fewer than 5 patients. " +
    "Proportions and the SMA error in %; pooled: every site's patients together."}));
}

async function poll() {
  clearTimeout(poll.timer);
  const live = document.getElementById("live");
  try {
    const response = await fetch("api/state" + (chosen ? "?run=" + encodeURIComponent(chosen) : ""), \
{cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const state = await response.json();
    pollMs = state.poll_seconds * 1000;
    if (state.run) chosen = state.run.name;
    document.getElementById("dir").textContent = state.run_dir;
    renderNodes(state.nodes);
    renderRuns(state);
    renderDetail(state.run);
    live.className = "live";
    live.textContent = "updated " + state.generated + ", every " + state.poll_seconds + " s";
  } catch (error) {
    live.className = "live lost";
    live.textContent = "no answer from the live view (" + error.message + "), retrying";
  }
  poll.timer = setTimeout(poll, pollMs);
}
poll();
</script>
</body></html>
"""
