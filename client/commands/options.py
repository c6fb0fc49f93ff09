"""Options that more than one hospital-side command takes, declared once so their help stays the same."""

from __future__ import annotations

from typing import Annotated

import typer

MuscleHuRange = Annotated[
    bool,
    typer.Option(
        "--muscle-hu-range/--no-muscle-hu-range",
        "--hu-window/--no-hu-window",  # the earlier name, still accepted
        help=(
            "Keep only mask pixels in the Alberta muscle range -29..+150 HU, as reference L3 masks are drawn "
            "(default); --no-muscle-hu-range measures the network's mask as is."
        ),
    ),
]
"""predict and evaluate: measure the network's mask within the Alberta muscle range, or as it is."""
