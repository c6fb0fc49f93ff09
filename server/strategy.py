"""FedAvg / FedProx over weight deltas, phase-aware, reporting each round to the run recorder.

Sites send ``local - global`` for the phase's arrays (see ``common.secagg.delta``), so the
aggregate of a round (plain weighted mean, or the SecAgg+ sum the server can only see in total) is a
mean *delta*: this strategy adds it to the global arrays it sent. Evaluation goes to every
available site each round (seg and cls phases; the ssl phase has no holdout metric and records the
training loss only). Per-site numbers reach the recorder; the strategy itself stays thin.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from logging import ERROR, INFO, WARNING
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from flwr.common import EvaluateRes, FitRes, Parameters, Scalar, log, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg, FedProx

from common.secagg.delta import apply_delta, pack, unpack

# What a site needs to evaluate after each phase, as phases whose arrays are sent one after another:
# segmentation metrics need the decoder (trained in seg) on the current encoder; ssl has no holdout metric.
EVAL_PHASES: dict[str, str] = {"l3": "l3", "ssl": "", "seg": "seg", "cls": "seg,cls"}


class RoundRecorder(Protocol):
    """What the strategy reports to (server.recorder.Recorder implements it)."""

    def after_fit(
        self, phase: str, phase_round: int, arrays: list[np.ndarray], fits: list[dict[str, Any]], failures: list[str]
    ) -> dict[str, Any] | None: ...

    def after_evaluate(
        self, phase: str, phase_round: int, summaries: list[dict[str, Any]], failures: list[str]
    ) -> dict[str, Any]: ...

    def after_abort(self, phase: str, phase_round: int, reason: str, failures: list[str]) -> None: ...


def round_lr_scale(phase_round: int, last_round: int, floor: float = 0.1) -> float:
    """Factor on the preset's peak learning rate for a round: cosine from 1 (first round) to ``floor`` (last).

    Each site's loop warms up and decays within its round; without a decay across rounds every round
    restarts at the peak and the global model keeps oscillating between the sites' optima (non-IID
    FedAvg), so the last round is no better than the ones before it.
    """
    if last_round <= 1:
        return 1.0
    progress = min(1.0, max(0.0, (phase_round - 1) / (last_round - 1)))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


if TYPE_CHECKING:
    _MixinBase = FedAvg  # what the mixin is mixed into (FedProx is a FedAvg): lets mypy check its super() calls
else:
    _MixinBase = object


class _PhaseDeltaMixin(_MixinBase):
    """Phase bookkeeping + delta aggregation; mixed into a flwr.server.strategy class (FedAvg, FedProx)."""

    def _setup_phase(
        self,
        phase: str,
        first_round: int,
        local_epochs: int,
        seed: int,
        arrays: list[np.ndarray],
        recorder: RoundRecorder,
        eval_arrays: Callable[[], list[np.ndarray]] | None,
        last_round: int | None = None,
        context_arrays: list[np.ndarray] | None = None,
        min_sites: int = 1,
        min_sites_wait_s: float = 600.0,
        max_update_norm: float = math.inf,
    ) -> None:
        self.phase = phase
        self.max_update_norm = max_update_norm
        self.min_sites, self.min_sites_wait_s = min_sites, min_sites_wait_s
        self.aborted: dict[int, str] = {}
        # node id -> site name, from every reply that named its site (kept by the recorder for the whole run)
        self.site_names: dict[int, str] = getattr(recorder, "site_names", {})
        self.context_arrays = [np.asarray(a) for a in context_arrays or []]
        self._round_started = time.perf_counter()
        self._fit_counts = (0, 0)
        self.last_round = first_round if last_round is None else last_round
        self.eval_arrays = eval_arrays
        self.first_round = first_round
        self.local_epochs = local_epochs
        self.seed = seed
        self.global_arrays = [np.asarray(a) for a in arrays]
        self.recorder = recorder

    def phase_round(self, server_round: int) -> int:
        """Workflow rounds restart at 1 for each phase (and after a resume); this is the round within the phase."""
        return self.first_round + server_round - 1

    def _config(self, server_round: int) -> dict[str, Scalar]:
        r = self.phase_round(server_round)
        return {
            "phase": self.phase,
            "round": r,
            "local-epochs": self.local_epochs,
            "seed": self.seed * 10_000 + r,
            "eval-phases": EVAL_PHASES.get(self.phase, ""),
            "lr-scale": round_lr_scale(r, self.last_round),
        }

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return ndarrays_to_parameters([pack(self.global_arrays)])

    def update_shapes(self) -> list[tuple[int, ...]]:
        """What a site's reply to a training message holds: one vector, the phase's arrays packed."""
        return [(int(sum(np.size(a) for a in self.global_arrays)),)]

    def configure_fit(self, server_round, parameters, client_manager):
        """Send the phase's inputs: its frozen context (cls: the encoder), then the arrays it trains.

        A deployed site starts every message in a fresh process, so what the result depends on must
        travel with the message; sites send back deltas of the trained arrays only.
        """
        self._round_started = time.perf_counter()
        # num_available() refreshes the legacy client manager from the grid (else every 5 s only)
        if client_manager.num_available() < self.min_sites and not client_manager.wait_for(
            self.min_sites, timeout=self.min_sites_wait_s
        ):
            raise TooFewSitesError(
                f"[{self.phase} round {self.phase_round(server_round)}] {len(client_manager)} sites connected after "
                f"waiting {self.min_sites_wait_s:g} s; run config min-sites is {self.min_sites} (min-sites-wait sets "
                "the wait)"
            )
        parameters = ndarrays_to_parameters([pack([*self.context_arrays, *self.global_arrays])])
        return super().configure_fit(server_round, parameters, client_manager)

    def fit_aborted(self, server_round: int, reason: str, failures: list[Any]) -> None:
        """The round's update was not made (secure aggregation halted, no usable update, sites sharing a
        name): recorded as aborted, the global model unchanged, no evaluation of it."""
        r = self.phase_round(server_round)
        self.aborted[server_round] = reason
        log(ERROR, "[%s round %d] aborted: %s", self.phase, r, reason)
        self.recorder.after_abort(self.phase, r, reason, [failure_text(f, self.site_names) for f in failures])
        self._progress(r, {}, evaluated=None, aborted=reason)

    def configure_evaluate(self, server_round, parameters, client_manager):
        if not EVAL_PHASES.get(self.phase) or server_round in self.aborted:
            return []
        # the union the holdout needs (cls: the seg decoder too), packed into one vector
        parameters = ndarrays_to_parameters([pack(self.eval_arrays() if self.eval_arrays else self.global_arrays)])
        return super().configure_evaluate(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        r = self.phase_round(server_round)
        self.site_names.update(
            {proxy.node_id: str(res.metrics["site"]) for proxy, res in results if "site" in res.metrics}
        )
        reasons = [failure_text(f, self.site_names) for f in failures]
        log(INFO, "[%s round %d] received %d results and %d failures", self.phase, r, len(results), len(failures))
        for reason in reasons:
            log(WARNING, "[%s round %d] a site failed and was left out: %s", self.phase, r, reason)
        fits: list[dict[str, Any]] = [
            {
                "site": str(res.metrics.get("site", proxy.node_id)),
                "n_train": int(res.num_examples),
                "loss": float(res.metrics.get("loss", math.nan)),
                "dp_epsilon": float(res.metrics.get("dp_epsilon", math.nan)),
            }
            for proxy, res in results
        ]
        self._fit_counts = (len(results), len(failures))
        duplicate = _duplicate_sites([f["site"] for f in fits])
        if duplicate:
            self.fit_aborted(
                server_round, f"sites share a name ({duplicate}); give each SuperNode its own site-name", reasons
            )
            return None, {}
        mean_delta, metrics = super().aggregate_fit(server_round, results, failures)
        if mean_delta is None:
            self.fit_aborted(server_round, "no site's update could be aggregated", reasons)
            return None, {}
        [mean] = parameters_to_ndarrays(mean_delta)
        norm = float(np.linalg.norm(mean.astype(np.float64)))
        if not norm <= self.max_update_norm:  # NaN too: the sum hides which site, not that one is off
            self.fit_aborted(
                server_round,
                f"the aggregated update's norm {norm:.4g} is above max-update-norm "
                f"{self.max_update_norm:g}: a site sent a corrupted or hostile update",
                reasons,
            )
            return None, {}
        self.global_arrays = apply_delta(self.global_arrays, unpack(mean, [np.shape(a) for a in self.global_arrays]))
        row = self.recorder.after_fit(self.phase, r, self.global_arrays, fits, reasons)
        if not EVAL_PHASES.get(self.phase):
            self._progress(r, row or {}, evaluated=None)
        return ndarrays_to_parameters([pack(self.global_arrays)]), metrics

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        r = self.phase_round(server_round)
        summaries = [{**res.metrics, "site": str(res.metrics.get("site", proxy.node_id))} for proxy, res in results]
        self.site_names.update(
            {proxy.node_id: str(res.metrics["site"]) for proxy, res in results if "site" in res.metrics}
        )
        reasons = [failure_text(f, self.site_names) for f in failures]
        for reason in reasons:
            log(WARNING, "[%s round %d] a site failed to evaluate: %s", self.phase, r, reason)
        duplicate = _duplicate_sites([str(s["site"]) for s in summaries])
        if duplicate:
            reason = f"sites share a name ({duplicate}): the round's holdout metrics are not recorded"
            log(ERROR, "[%s round %d] %s; give each SuperNode its own site-name", self.phase, r, reason)
            summaries, reasons = [], [*reasons, reason]
        pooled = self.recorder.after_evaluate(self.phase, r, summaries, reasons)
        self._progress(r, pooled, evaluated=(len(summaries), len(reasons)))
        if not sum(res.num_examples for _, res in results):  # every site's count hidden (< 5): nothing to weigh
            return None, {}
        return super().aggregate_evaluate(server_round, results, failures)

    def _progress(
        self, phase_round: int, pooled: dict[str, Any], evaluated: tuple[int, int] | None, aborted: str = ""
    ) -> None:
        """One line per round for the coordinator (``flwr log``, ``flwr run --stream``, ``make demo``)."""
        if aborted:
            log(
                INFO,
                f"{PROGRESS_TAG} [{self.phase} {phase_round}/{self.last_round}] aborted: {aborted} "
                f"({time.perf_counter() - self._round_started:.1f} s)",
            )
            return
        trained, failed = self._fit_counts
        parts = [f"{trained} sites trained" + (f", {failed} failed" if failed else "")]
        if evaluated is not None:
            parts.append(f"{evaluated[0]} evaluated" + (f", {evaluated[1]} failed" if evaluated[1] else ""))
        parts.append(f"{time.perf_counter() - self._round_started:.1f} s")
        line = f"{PROGRESS_TAG} [{self.phase} {phase_round}/{self.last_round}] " + ", ".join(parts)
        dice, err, loss = (_float(pooled.get(k)) for k in ("dice_mean", "sma_abs_pct_err_mean", "loss"))
        inside, median = (_float(pooled.get(k)) for k in ("l3_inside_share", "l3_err_mm_median"))
        if evaluated is not None and self.phase == "l3":
            line += (
                f" | pooled L3 inside {100 * inside:.0f}%, error median {median:.1f} mm"
                if math.isfinite(inside)
                else " | pooled metrics n/a"
            )
        elif evaluated is not None:
            line += (
                f" | pooled Dice {dice:.3f}, SMA error {err:.1f}%" if math.isfinite(dice) else " | pooled metrics n/a"
            )
        elif math.isfinite(loss):
            line += f" | training loss {loss:.4f}"
        log(INFO, line)


class TooFewSitesError(RuntimeError):
    """Fewer sites than ``min-sites`` connected within ``min-sites-wait``: the run stops with this message."""


PROGRESS_TAG = "sarcofed"
"""Starts every per-round progress line the ServerApp logs (``simulations.demo`` shows those lines)."""


def _duplicate_sites(names: list[str]) -> str:
    """The names that occur more than once, comma-separated ("" when every site is named once)."""
    return ", ".join(sorted(name for name, count in Counter(names).items() if count > 1))


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


_FLOWER_REASON = re.compile(r"<class '[\w.]+'>:<'(.*)'>$", re.DOTALL)  # how Flower wraps a ClientApp's exception
_NODE = re.compile(r"\bnode (\d+)\b")


def failure_text(failure: Any, site_names: dict[int, str] | None = None) -> str:
    """A site's failure as the coordinator reads it: which node (and site, once it has been heard from),
    and what it said, without Flower's wrapping (``Error(code=2, reason="<class ...>:<'...'>")``)."""
    if isinstance(failure, tuple):
        proxy, res = failure
        text = f"node {proxy.node_id}: {res.status.message}"
    else:
        arg = failure.args[0] if getattr(failure, "args", None) else None
        text = getattr(arg, "reason", None) or str(failure).strip() or type(failure).__name__
    text = _FLOWER_REASON.sub(r"\1", text)
    names = site_names or {}
    return _NODE.sub(
        lambda m: f"node {m.group(1)} ({names[int(m.group(1))]})" if int(m.group(1)) in names else m.group(0),
        text,
        count=1,
    )


class DeltaFedAvg(_PhaseDeltaMixin, FedAvg):
    """FedAvg on deltas (see module docstring)."""


class DeltaFedProx(_PhaseDeltaMixin, FedProx):
    """FedProx on deltas: FedAvg aggregation, plus ``proximal_mu`` sent to sites for their local loss."""


def make_strategy(
    name: str,
    *,
    phase: str,
    first_round: int,
    local_epochs: int,
    seed: int,
    arrays: list[np.ndarray],
    recorder: RoundRecorder,
    min_sites: int,
    proximal_mu: float,
    eval_arrays: Callable[[], list[np.ndarray]] | None = None,
    last_round: int | None = None,
    context_arrays: list[np.ndarray] | None = None,
    min_sites_wait_s: float = 600.0,
    max_update_norm: float = math.inf,
) -> FedAvg:
    """Build the phase's strategy: every available site trains and evaluates; failures are accepted.

    Parameters
    ----------
    name : "fedavg" | "fedprox"
    phase, first_round, local_epochs, seed : the phase span being run (rounds restart per phase)
    last_round : the phase's last round (default: ``first_round``); sets the learning-rate decay across
        rounds (``round_lr_scale``), sent to sites as ``lr-scale``
    arrays : the phase's global arrays (``common.models.get_weights`` order)
    recorder : receives the new global arrays and per-site numbers each round
    min_sites : int
        Sites that must be connected before a round starts (and the smallest round that still
        aggregates, since failures are accepted).
    proximal_mu : float
        FedProx proximal term weight (ignored by FedAvg).
    eval_arrays : callable, optional
        Returns the arrays sent for evaluation: the concatenation of ``get_weights(model, p)`` for p in
        ``EVAL_PHASES[phase]`` (the sites split it by phase); None sends the phase's arrays.
    context_arrays : the arrays the phase reads but does not train (``common.models.sarco.context_keys``),
        sent before ``arrays`` in every training message
    min_sites_wait_s : how long a round waits for ``min_sites`` sites before the run stops (TooFewSitesError)
    max_update_norm : a round whose aggregated update (L2 norm, all arrays) is larger, or not finite, is
        aborted: with secure aggregation the server cannot see which site sent a corrupted update, but
        SecAgg+ bounds each value a site adds, so one hostile site shows up in the sum's norm
    """
    common: dict[str, Any] = dict(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=min_sites,
        min_evaluate_clients=min_sites,
        min_available_clients=min_sites,
        accept_failures=True,
    )
    strategy: FedAvg
    if name == "fedprox":
        strategy = DeltaFedProx(proximal_mu=proximal_mu, **common)
    else:
        strategy = DeltaFedAvg(**common)
    strategy._setup_phase(
        phase,
        first_round,
        local_epochs,
        seed,
        arrays,
        recorder,
        eval_arrays,
        last_round,
        context_arrays,
        min_sites,
        min_sites_wait_s,
        max_update_norm,
    )
    config: Callable[[int], dict[str, Scalar]] = strategy._config
    strategy.on_fit_config_fn = config
    strategy.on_evaluate_config_fn = config
    return strategy
