"""What a hospital's node accepts, decided by the hospital: its own policy file, never the run config.

A coordinator sends each round its settings: SecAgg+'s share count and threshold, who is alive, the
local epochs and the learning-rate factor. Flower's client takes them as they come. A site joins a
consortium only if its node refuses what would expose it, whatever the coordinator sends. The node
config names the policy file (``--node-config "... policy='/etc/sarcofed/policy.toml'"``); without it the
defaults below hold. Keys in the file are the field names with ``-`` for ``_``.

What the floors protect against, and what not: a coordinator that follows the protocol learns only
the sum of a round's updates. One that deviates can ask for a round where one site's update is
recoverable (a threshold of 1, a share count that makes a share the secret, a node listed alive and
dead so both of its masks are revealed, every other site told to train with a zero learning rate).
The floors refuse those rounds. They cannot stop a coordinator that registers SuperNodes of its own
and so "meets" any site count: against that, only noise added at the site helps
(``dp-noise-multiplier``, see ``client.privacy``).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError


class PolicyRefusal(Exception):
    """A message the site's policy does not accept; ``rule`` names the policy key (sent to the server)."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"refused by the site's policy ({rule}): {detail}")
        self.rule = rule


class UpdateGuardError(Exception):
    """The site's update, or the model it received, failed a guard; ``category`` is what the server is told."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(f"{category}: {detail}")
        self.category = category


@dataclass(frozen=True)
class SitePolicy:
    """A hospital node's limits (defaults: what a site accepts when its policy file does not say).

    Attributes
    ----------
    min_sites : int (default: 3)
        Sites in a secure-aggregation round; with 2, each site can subtract its own update from the sum.
    min_threshold : int (default: 2)
        Floor on SecAgg+'s reconstruction threshold; it must also exceed half the share count.
    max_local_epochs : int (default: 5)
    min_lr_scale, max_lr_scale : float (default: 0.05, 1.0)
        Bounds on the server's factor on the preset's learning rate.
    max_update_norm : float (default: 100.0)
        L2 norm of the site's update (all arrays of the round); a larger one is not sent.
    min_cohort : int (default: 5)
        Smallest number of patients an aggregate sent to the server may rest on.
    dp_clip_norm : float (default: 0.0, off)
        Differential privacy: the update is clipped to this L2 norm, then
    dp_noise_multiplier : float (default: 0.0, off)
        Gaussian noise of standard deviation ``dp_noise_multiplier * dp_clip_norm`` is added to every
        value, before masking.
    dp_delta : float (default: 1e-5)
        The delta of the (epsilon, delta) the site's accountant reports.
    dp_max_epsilon : float (default: inf)
        The site stops training for a run once one more round would spend more than this.
    """

    min_sites: int = 3
    min_threshold: int = 2
    max_local_epochs: int = 5
    min_lr_scale: float = 0.05
    max_lr_scale: float = 1.0
    max_update_norm: float = 100.0
    min_cohort: int = 5
    dp_clip_norm: float = 0.0
    dp_noise_multiplier: float = 0.0
    dp_delta: float = 1e-5
    dp_max_epsilon: float = math.inf

    def __post_init__(self) -> None:
        problems = []
        if self.min_sites < 3:
            problems.append(f"min-sites {self.min_sites} < 3 (with 2 sites each one learns the other's update)")
        if self.min_threshold < 2:
            problems.append(f"min-threshold {self.min_threshold} < 2 (a share would be the secret)")
        if self.max_local_epochs < 1 or not 0 < self.min_lr_scale <= self.max_lr_scale:
            problems.append("need max-local-epochs >= 1 and 0 < min-lr-scale <= max-lr-scale")
        if not self.max_update_norm > 0 or self.min_cohort < 1:
            problems.append("need max-update-norm > 0 and min-cohort >= 1")
        if self.dp_clip_norm < 0 or self.dp_noise_multiplier < 0 or not 0 < self.dp_delta < 1:
            problems.append("need dp-clip-norm >= 0, dp-noise-multiplier >= 0 and 0 < dp-delta < 1")
        if (self.dp_clip_norm > 0) != (self.dp_noise_multiplier > 0):
            problems.append("differential privacy needs both dp-clip-norm and dp-noise-multiplier (or neither)")
        if problems:
            raise ConfigError("site policy: " + "; ".join(problems))

    @property
    def dp_enabled(self) -> bool:
        return self.dp_noise_multiplier > 0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "site policy") -> SitePolicy:
        """Read kebab-case keys; an unknown key or a value of the wrong type is a ConfigError naming it."""
        hints = typing.get_type_hints(cls)
        fields = {f.name.replace("_", "-"): f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        read: dict[str, Any] = {}
        for key, value in values.items():
            kind = hints[fields[key]]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (kind is int and not isinstance(value, int))
            ):
                raise ConfigError(
                    f"{source}: {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
                )
            read[fields[key]] = kind(value)
        return cls(**read)

    @classmethod
    def for_node(cls, node_config: Mapping[str, Any], simulated_site_policy: str = "") -> SitePolicy:
        """A hospital's policy: its node config alone. A simulated site (no ``data-path``) takes the run
        config's ``simulated-site-policy``, so researchers can simulate what sites would configure."""
        if "data-path" in node_config:
            return cls.from_node_config(node_config)
        return cls.from_node_config({"policy": simulated_site_policy})

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> SitePolicy:
        """The policy file named by the node config key ``policy``; the defaults without one."""
        path = str(node_config.get("policy") or "").strip()
        if not path:
            return cls()
        file = Path(path).expanduser()
        try:
            values = tomllib.loads(file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"site policy {file}: cannot be read ({error})") from None
        return cls.from_mapping(values, source=f"site policy {file}")

    # -- checks ---------------------------------------------------------------------------------------
    def check_secagg_setup(self, sample_num: int, share_num: int, threshold: int) -> None:
        """SecAgg+ settings of a round (its first stage): enough sites and a threshold no coalition of the
        coordinator and fewer than half the shares can meet."""
        if sample_num < self.min_sites:
            raise PolicyRefusal(
                "min-sites", f"the round has {sample_num} sites, the site needs at least {self.min_sites}"
            )
        if threshold < self.min_threshold or 2 * threshold <= share_num:
            raise PolicyRefusal(
                "min-threshold",
                f"threshold {threshold} of {share_num} shares; the site needs at least "
                f"{self.min_threshold} and more than half the shares",
            )
        if share_num > sample_num:
            raise PolicyRefusal("min-threshold", f"{share_num} shares for {sample_num} sites")

    def check_unmask(self, own_node_id: int, active: Iterable[int], dead: Iterable[int]) -> None:
        """The unmasking stage: a node never listed both alive and dead, and this node never dead (either
        would hand the coordinator both masks of one update)."""
        active_set, dead_set = set(active), set(dead)
        if active_set & dead_set:
            raise PolicyRefusal("unmask", f"{len(active_set & dead_set)} node(s) listed both active and dead")
        if own_node_id in dead_set:
            raise PolicyRefusal("unmask", "this node is listed as dead although it sent its update")

    def check_round(self, local_epochs: int, lr_scale: float) -> None:
        """The training settings the server sends with a round."""
        if not 1 <= local_epochs <= self.max_local_epochs:
            raise PolicyRefusal(
                "max-local-epochs", f"{local_epochs} local epochs (the site allows 1-{self.max_local_epochs})"
            )
        if not (math.isfinite(lr_scale) and self.min_lr_scale <= lr_scale <= self.max_lr_scale):
            raise PolicyRefusal(
                "lr-scale", f"learning-rate factor {lr_scale} outside {self.min_lr_scale}-{self.max_lr_scale}"
            )
