"""The run configuration: ``[tool.flwr.app.config]`` read once, on each side of a run, into one typed record.

Flower hands the ServerApp and every ClientApp ``context.run_config``: the defaults of pyproject.toml
with the run's overrides (``flwr run . --run-config ...``) on top; Flower itself refuses an override
whose key pyproject.toml does not define. The defaults live in pyproject.toml only. This module says
which keys SarcoFed reads and of what type: a missing, unknown or mistyped key is a ``ConfigError``
naming it, never a silent default. Ranges and meanings are checked where they are used
(``server.plan`` for the schedule, ``client.federated_site`` for where data is).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError


@dataclass(frozen=True)
class RunConfig:
    """One run's settings; field ``a_b`` is run config key ``a-b`` (pyproject.toml documents each)."""

    preset: str
    consortium: str
    sites_cache: str
    site_manifests: str
    rounds_l3: int
    rounds_ssl: int
    rounds_seg: int
    rounds_cls: int
    local_epochs_l3: int
    local_epochs_ssl: int
    local_epochs_seg: int
    local_epochs_cls: int
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
    simulated_site_policy: str
    run_dir: str
    resume_from: str
    resume_phase: str
    resume_round: int

    @classmethod
    def keys(cls) -> list[str]:
        """The run config keys, kebab-case, in declaration order."""
        return [f.name.replace("_", "-") for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        """Check and read a run config (``context.run_config`` or a parsed TOML table).

        Raises
        ------
        ConfigError
            One line per problem: a key SarcoFed needs that is absent, a key it does not know, or a
            value of the wrong type (an int where a float is expected is accepted; a bool is never a number).
        """
        hints = typing.get_type_hints(cls)
        problems: list[str] = []
        known = {f.name.replace("_", "-"): f.name for f in dataclasses.fields(cls)}
        for key in sorted(set(values) - set(known)):
            problems.append(f"key {key!r} is not a SarcoFed setting (known: {', '.join(known)})")
        read: dict[str, Any] = {}
        for key, name in known.items():
            if key not in values:
                problems.append(f"key {key!r} is missing (pyproject.toml [tool.flwr.app.config] defines every key)")
                continue
            value, expected = values[key], hints[name]
            ok, converted = _check(value, expected)
            if not ok:
                problems.append(f"key {key!r} must be {_describe(expected)}, got {value!r} ({type(value).__name__})")
            read[name] = converted
        if problems:
            raise ConfigError("run config: " + "; ".join(problems))
        return cls(**read)


def _check(value: Any, expected: Any) -> tuple[bool, Any]:
    """(type matches, value as the field stores it)."""
    if isinstance(value, bool):
        return expected is bool, value
    if expected is float and isinstance(value, (int, float)):
        return True, float(value)
    if expected == (int | float):
        return isinstance(value, (int, float)), value
    return isinstance(value, expected), value


def _describe(expected: Any) -> str:
    if expected == (int | float):
        return "a number (int: a count, float: a fraction)"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[expected]
