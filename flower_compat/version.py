"""The Flower version every replacement in this package was written against, checked before any is made."""

from __future__ import annotations

from functools import cache
from importlib.metadata import version

SUPPORTED_FLOWER = "1.42"
"""major.minor of the Flower release whose internals ``flower_compat`` replaces (pyproject pins 1.42.0)."""


class FlowerVersionError(RuntimeError):
    """The installed Flower is not the one ``flower_compat`` was written for."""


@cache
def installed_flower() -> str:
    return version("flwr")


def require_flower(what: str) -> None:
    """Raise FlowerVersionError unless the installed Flower is SUPPORTED_FLOWER.x; WHAT names the caller."""
    found = installed_flower()
    if ".".join(found.split(".")[:2]) != SUPPORTED_FLOWER:
        raise FlowerVersionError(
            f"{what}: SarcoFed replaces internals of Flower {SUPPORTED_FLOWER} (flower_compat), but flwr "
            f"{found} is installed. Install flwr=={SUPPORTED_FLOWER}.0 (as pyproject.toml pins it), or port "
            "flower_compat to the new release and raise SUPPORTED_FLOWER."
        )
