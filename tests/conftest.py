"""Suite-wide settings: offline, no telemetry, few threads (CI has 2 cores)."""

import os

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
