"""Suite-wide settings: offline, no telemetry, few threads (CI has 2 cores), slow files first."""

import os
from collections import Counter

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")


def app_run_config(**overrides: object) -> dict[str, object]:
    """The app's run config as Flower builds it: pyproject.toml's ``[tool.flwr.app.config]`` defaults,
    then ``overrides`` (kebab-case keys, given with ``_`` for ``-``)."""
    import tomllib
    from pathlib import Path

    defaults = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    config = dict(defaults["tool"]["flwr"]["app"]["config"])
    config.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return config


def pytest_collection_modifyitems(config, items) -> None:
    """Run the files that hold the most slow tests first, each file's own order kept.

    ``make test`` runs two pytest-xdist workers, one file per worker at a time: the long real-process
    files (a SuperLink, SuperNodes, timeouts they wait out) start at once and the quick files fill the
    other worker around them, instead of one long file ending the suite alone. Within a file the order
    matters (the consortium's run comes after its negative tests, and the SuperLink restart last).
    """
    slow_per_file = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow_per_file[item.path])
