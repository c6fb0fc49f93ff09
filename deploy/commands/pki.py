"""`sarcofed pki`: make the consortium's CA, server and client certificates and hospital keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

pki_app = typer.Typer(
    name="pki",
    help="Credentials for a real deployment: CA + SuperLink certificate, and one SuperNode key per hospital.",
    no_args_is_help=True,
)


@pki_app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the credentials; created 0700 if missing, must not hold earlier ones.")],
    host: Annotated[list[str], typer.Option("--host", help="DNS name hospitals use to reach the SuperLink (repeatable); 'localhost' is always added.")] = [],  # noqa: B006
    ip: Annotated[list[str], typer.Option("--ip", help="IP address hospitals use (repeatable); 127.0.0.1 and ::1 are always added.")] = [],  # noqa: B006
    output_format: Annotated[str, typer.Option("--format", help="'text' (default) or 'json'.")] = "text",
) -> None:
    """Create a CA (EC P-384, 5 years), the SuperLink certificate (1 year) and the coordinator client certificate (1 year)."""
    from rich.console import Console

    from deploy.pki import CA_DAYS, CLIENT_DAYS, SERVER_DAYS, init_pki, load_certificate

    paths = init_pki(directory, host, ip)
    from cryptography import x509

    sans = load_certificate(paths.superlink_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(n.value) for n in sans]
    if output_format == "json":
        typer.echo(json.dumps({
            "ca_cert": str(paths.ca_cert), "superlink_cert": str(paths.superlink_cert), "superlink_key": str(paths.superlink_key),
            "coordinator_cert": str(paths.coordinator_cert), "coordinator_key": str(paths.coordinator_key), "sans": names,
        }))
        return
    console = Console()
    console.print(f"[green]PKI created[/] in {paths.root}")
    console.print(f"  CA           {paths.ca_cert.name} / {paths.ca_key.name}   ({CA_DAYS} days; keep ca.key offline)")
    console.print(f"  SuperLink    {paths.superlink_cert.name} / {paths.superlink_key.name}   ({SERVER_DAYS} days) SANs: {', '.join(names)}")
    console.print(f"  Coordinator  {paths.coordinator_cert.name} / {paths.coordinator_key.name}   ({CLIENT_DAYS} days, client auth for the control route)")
    console.print(f"Next: sarcofed pki add-site {paths.root} <hospital-name>")


@pki_app.command("add-site")
def add_site_command(
    directory: Annotated[Path, typer.Argument(help="PKI folder made by `sarcofed pki init`.")],
    name: Annotated[str, typer.Argument(help="Hospital name: letters, digits, '_' and '-' (becomes the key's file name).")],
    federation: Annotated[str, typer.Option(help="SuperLink connection name used in the printed `flwr supernode register` line.")] = "sarcofed",
    output_format: Annotated[str, typer.Option("--format", help="'text' (default) or 'json'.")] = "text",
) -> None:
    """Create hospital NAME's SuperNode key pair (OpenSSH EC P-384) and print the line that registers it."""
    from rich.console import Console

    from deploy.pki import add_site

    keys = add_site(directory, name, federation)
    if output_format == "json":
        typer.echo(json.dumps({"site": keys.name, "private_key": str(keys.private_key), "public_key": str(keys.public_key),
                               "register_command": keys.register_command}))
        return
    console = Console()
    console.print(f"[green]Keys for {name}[/]: {keys.private_key} (private, 0600: ship to {name} only, with ca.crt) and {keys.public_key}")
    console.print("The coordinator admits this hospital with:")
    console.print(keys.register_command, markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    pki_app()
