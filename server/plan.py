"""The run plan: what the ServerApp does with the run config (``common.run_config.RunConfig``).

Keys are kebab-case, as Flower's run config is. One run = the phases l3 -> ssl -> seg -> cls, each for
``rounds-<phase>`` rounds (0 skips a phase). A run stopped part way (the coordinator loses at most
the round in flight) goes on with ``resume-from = <its run folder>``: the phase and round come from
the folder's last checkpoint, the run continues in that folder, and its schedule must be the one the
folder's run.json records. ``resume-from = <a checkpoint file>`` + ``resume-phase`` + ``resume-round``
starts a new run folder from any checkpoint instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.run_config import RunConfig
from server.run_folder import last_checkpoint, read_run_record

PHASES: tuple[str, ...] = ("l3", "ssl", "seg", "cls")
STRATEGIES: tuple[str, ...] = ("fedavg", "fedprox")
SCHEDULE_KEYS: tuple[str, ...] = (
    "preset",
    "rounds-l3",
    "rounds-ssl",
    "rounds-seg",
    "rounds-cls",
    "local-epochs-l3",
    "local-epochs-ssl",
    "local-epochs-seg",
    "local-epochs-cls",
    "strategy",
    "proximal-mu",
    "secure-aggregation",
    "seed",
    "cutoff",
)
"""What a run resumed from its folder must share with the run that began it (the rest may change,
e.g. a site joins or the round timeout grows)."""


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
    min_sites_wait: float
    round_timeout: float
    max_update_norm: float
    seed: int
    cutoff: str
    run_dir: Path
    resume_from: Path | None
    resume_phase: str
    resume_round: int
    resume_folder: Path | None = None
    resume_global_round: int = 0

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunPlan:
        """Read the run config (``common.run_config.RunConfig``: every key present and typed) and check ranges.

        Raises
        ------
        ConfigError
            A missing, unknown or mistyped key, or a value out of range (unknown phase or strategy,
            negative rounds, resume without a checkpoint).
        """
        config = RunConfig.from_mapping(run_config)
        rounds = {p: int(getattr(config, f"rounds_{p}")) for p in PHASES}
        epochs = {p: int(getattr(config, f"local_epochs_{p}")) for p in PHASES}
        if any(r < 0 for r in rounds.values()) or any(e < 1 for e in epochs.values()):
            raise ConfigError(f"run config: rounds-* must be >= 0 and local-epochs-* >= 1, got {rounds} and {epochs}")
        strategy = config.strategy.lower()
        if strategy not in STRATEGIES:
            raise ConfigError(f"run config: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if config.min_sites < 1 or config.min_sites_wait <= 0 or config.round_timeout <= 0:
            raise ConfigError(
                f"run config: need min-sites >= 1, min-sites-wait > 0 and round-timeout > 0, got "
                f"{config.min_sites}, {config.min_sites_wait}, {config.round_timeout}"
            )
        resume_folder, resume_from, resume_phase, resume_round = None, None, config.resume_phase, config.resume_round
        if config.resume_from and Path(config.resume_from).expanduser().is_dir():
            resume_folder = Path(config.resume_from).expanduser().resolve()
            if config.resume_phase or config.resume_round:
                raise ConfigError(
                    "run config: resume-from is a run folder, which says where it stopped: leave "
                    "resume-phase and resume-round unset"
                )
            _check_same_schedule(resume_folder, run_config)
            last = last_checkpoint(resume_folder)
            resume_from, resume_phase, resume_round = last.path, last.phase, last.phase_round
        elif config.resume_from:
            if not Path(config.resume_from).expanduser().is_file():
                raise ConfigError(
                    f"run config: resume-from {config.resume_from!r} is neither a run folder nor a checkpoint file"
                )
            resume_from = Path(config.resume_from).expanduser().absolute()
            if config.resume_phase not in PHASES:
                raise ConfigError(
                    f"run config: resume-from is set, so resume-phase must be one of {PHASES}, "
                    f"got {config.resume_phase!r}"
                )
        if resume_from is not None and not 0 <= resume_round <= rounds[resume_phase]:
            raise ConfigError(
                f"run config: resume-round {resume_round} is outside 0..rounds-{resume_phase}={rounds[resume_phase]}"
            )
        return cls(
            preset=config.preset,
            rounds=rounds,
            local_epochs=epochs,
            strategy=strategy,
            proximal_mu=config.proximal_mu,
            secure_aggregation=config.secure_aggregation,
            secagg_num_shares=config.secagg_num_shares,
            secagg_reconstruction_threshold=config.secagg_reconstruction_threshold,
            secagg_clipping_range=config.secagg_clipping_range,
            secagg_quantization_range=config.secagg_quantization_range,
            secagg_max_weight=config.secagg_max_weight,
            min_sites=config.min_sites,
            min_sites_wait=config.min_sites_wait,
            round_timeout=config.round_timeout,
            max_update_norm=config.max_update_norm,
            seed=config.seed,
            cutoff=config.cutoff,
            run_dir=Path(config.run_dir).expanduser().absolute(),
            resume_from=resume_from,
            resume_phase=resume_phase,
            resume_round=resume_round,
            resume_folder=resume_folder,
            resume_global_round=(
                sum(rounds[p] for p in PHASES[: PHASES.index(resume_phase)]) + resume_round
                if resume_from is not None
                else 0
            ),
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


def _check_same_schedule(folder: Path, run_config: Mapping[str, Any]) -> None:
    """A run continued in its folder keeps the schedule its run.json records (a folder without run.json
    predates the record: nothing to check against)."""
    before = read_run_record(folder).get("run_config") or {}
    changed = [
        f"{key} {before[key]!r} -> {run_config.get(key)!r}"
        for key in SCHEDULE_KEYS
        if key in before and before[key] != run_config.get(key)
    ]
    if changed:
        raise ConfigError(
            f"run config: resume-from {folder} continues a run with another schedule ({'; '.join(changed)}): "
            f"submit it with the run config in {folder / 'run.json'}"
        )
