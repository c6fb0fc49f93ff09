"""The run plan: the run config (``[tool.flwr.app.config]`` + ``--run-config``) read once into a typed record.

Keys are kebab-case, as Flower's run config is. One run = the phases ssl -> seg -> cls, each for
``rounds-<phase>`` rounds (0 skips a phase); ``resume-from`` + ``resume-phase`` + ``resume-round``
restart after a given round from a checkpoint (the coordinator loses at most one round).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError

PHASES: tuple[str, ...] = ("ssl", "seg", "cls")
STRATEGIES: tuple[str, ...] = ("fedavg", "fedprox")


@dataclass(frozen=True)
class PhaseSpan:
    """One phase of the run: rounds ``first_round..last_round`` (1-based, inclusive) with its local epochs."""

    phase: str
    first_round: int
    last_round: int
    local_epochs: int

    @property
    def num_rounds(self) -> int:
        return self.last_round - self.first_round + 1


@dataclass(frozen=True)
class RunPlan:
    """Everything the ServerApp needs from the run config; see ``from_run_config`` for the keys."""

    preset: str
    rounds: dict[str, int]
    local_epochs: dict[str, int]
    strategy: str
    proximal_mu: float
    secure_aggregation: bool
    secagg_num_shares: int | float
    secagg_reconstruction_threshold: int | float
    secagg_clipping_range: float
    secagg_quantization_range: int
    secagg_max_weight: float
    min_sites: int
    seed: int
    cutoff: str
    run_dir: Path
    resume_from: Path | None
    resume_phase: str
    resume_round: int

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> RunPlan:
        """Read and check the run config; a missing key takes the default documented in pyproject.toml.

        Raises
        ------
        ConfigError
            A value out of range (unknown phase or strategy, negative rounds, resume without a checkpoint).
        """
        get = run_config.get
        rounds = {p: int(get(f"rounds-{p}", 1)) for p in PHASES}
        epochs = {p: int(get(f"local-epochs-{p}", 1)) for p in PHASES}
        if any(r < 0 for r in rounds.values()) or any(e < 1 for e in epochs.values()):
            raise ConfigError(f"run config: rounds-* must be >= 0 and local-epochs-* >= 1, got {rounds} and {epochs}")
        strategy = str(get("strategy", "fedavg")).lower()
        if strategy not in STRATEGIES:
            raise ConfigError(f"run config: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        resume_from = str(get("resume-from", "") or "")
        resume_phase = str(get("resume-phase", "") or "")
        resume_round = int(get("resume-round", 0))
        if resume_from:
            if resume_phase not in PHASES:
                raise ConfigError(f"run config: resume-from is set, so resume-phase must be one of {PHASES}, got {resume_phase!r}")
            if not 0 <= resume_round <= rounds[resume_phase]:
                raise ConfigError(
                    f"run config: resume-round {resume_round} is outside 0..rounds-{resume_phase}={rounds[resume_phase]}"
                )
        return cls(
            preset=str(get("preset", "demo")),
            rounds=rounds,
            local_epochs=epochs,
            strategy=strategy,
            proximal_mu=float(get("proximal-mu", 0.01)),
            secure_aggregation=bool(get("secure-aggregation", True)),
            secagg_num_shares=get("secagg-num-shares", 1.0),
            secagg_reconstruction_threshold=get("secagg-reconstruction-threshold", 0.66),
            secagg_clipping_range=float(get("secagg-clipping-range", 0.5)),
            secagg_quantization_range=int(get("secagg-quantization-range", 4194304)),
            secagg_max_weight=float(get("secagg-max-weight", 1000.0)),
            min_sites=int(get("min-sites", 2)),
            seed=int(get("seed", 0)),
            cutoff=str(get("cutoff", "prado2008")),
            run_dir=Path(str(get("run-dir", "runs"))).expanduser().absolute(),
            resume_from=Path(resume_from).expanduser().absolute() if resume_from else None,
            resume_phase=resume_phase,
            resume_round=resume_round,
        )

    def spans(self) -> list[PhaseSpan]:
        """The phases still to run, in order, skipping what a resumed checkpoint already covers."""
        out = []
        for phase in PHASES:
            first = 1
            if self.resume_from is not None:
                done = PHASES.index(phase) < PHASES.index(self.resume_phase)
                if done:
                    continue
                if phase == self.resume_phase:
                    first = self.resume_round + 1
            if first <= self.rounds[phase]:
                out.append(PhaseSpan(phase, first, self.rounds[phase], self.local_epochs[phase]))
        return out
