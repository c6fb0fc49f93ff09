"""`sarcofed`: one console script over the commands of each layer.

Each command lives in its own module as a plain function with typer annotations; heavy imports
(torch, MONAI, Flower) happen inside the functions so that `sarcofed --help` stays instant.
Errors a person can fix (``common.errors.SarcoFedError``) are printed without a traceback and
exit with their own code: 1 generic, 2 input data, 3 configuration, 4 model file.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from sarcofed import __version__

# name -> "module:function", in the order `--help` lists them.
COMMANDS: dict[str, str] = {
    "synth": "simulations.commands.synth:synth",
    "synth-consortium": "simulations.commands.synth:synth_consortium",
    "montage": "simulations.commands.synth:montage",
    "ingest": "client.commands.ingest:ingest",
    "check": "client.commands.check:check",
    "train-local": "client.commands.train_local:train_local",
    "evaluate": "client.commands.evaluate:evaluate",
    "predict": "client.commands.predict:predict",
}

app = typer.Typer(
    name="sarcofed",
    help="Federated L3 skeletal muscle segmentation and sarcopenia detection.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sarcofed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """SarcoFed: skeletal muscle at L3, learned across hospitals without moving a single CT."""


for _name, _target in COMMANDS.items():
    _module, _func = _target.split(":")
    app.command(_name)(getattr(importlib.import_module(_module), _func))

# Command groups: `sarcofed pki ...` (credentials), `sarcofed deploy ...` (SuperLink, SuperNode, proxy) and
# `sarcofed coordinator ...` (runs and hospitals, through the gate with the coordinator certificate).
GROUPS: dict[str, str] = {
    "pki": "deploy.commands.pki:pki_app",
    "deploy": "deploy.commands.launch:deploy_app",
    "coordinator": "deploy.commands.coordinator:coordinator_app",
}
for _name, _target in GROUPS.items():
    _module, _attr = _target.split(":")
    app.add_typer(getattr(importlib.import_module(_module), _attr), name=_name)


def main() -> None:
    """Console entry point: run the app, turning known errors into one clear line and an exit code."""
    # Hospital networks: nothing leaves unless we say so.
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    from common.errors import SarcoFedError

    try:
        app()
    except SarcoFedError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
