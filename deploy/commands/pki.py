"""`sarcofed pki`: make the consortium's CA, server and client certificates and hospital keys; revoke
them, and list what expires when."""

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
    directory: Annotated[
        Path, typer.Argument(help="Folder for the credentials; created 0700 if missing, must not hold earlier ones.")
    ],
    host: Annotated[
        list[str],
        typer.Option(
            "--host", help="DNS name hospitals use to reach the SuperLink (repeatable); 'localhost' is always added."
        ),
    ] = [],  # noqa: B006
    ip: Annotated[
        list[str],
        typer.Option("--ip", help="IP address hospitals use (repeatable); 127.0.0.1 and ::1 are always added."),
    ] = [],  # noqa: B006
    output_format: Annotated[str, typer.Option("--format", help="'text' (default) or 'json'.")] = "text",
) -> None:
    """Create a CA (EC P-384, 5 years), the SuperLink certificate (1 year), the coordinator client certificate
    (1 year) and an empty CRL."""
    from rich.console import Console

    from deploy.pki import CA_DAYS, CLIENT_DAYS, SERVER_DAYS, init_pki, load_certificate

    paths = init_pki(directory, host, ip)
    from cryptography import x509

    sans = load_certificate(paths.superlink_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(n.value) for n in sans]
    if output_format == "json":
        typer.echo(
            json.dumps(
                {
                    "ca_cert": str(paths.ca_cert),
                    "superlink_cert": str(paths.superlink_cert),
                    "superlink_key": str(paths.superlink_key),
                    "coordinator_cert": str(paths.coordinator_cert),
                    "coordinator_key": str(paths.coordinator_key),
                    "sans": names,
                }
            )
        )
        return
    console = Console()
    console.print(f"[green]PKI created[/] in {paths.root}")
    console.print(f"  CA           {paths.ca_cert.name} / {paths.ca_key.name}   ({CA_DAYS} days; keep ca.key offline)")
    console.print(
        f"  SuperLink    {paths.superlink_cert.name} / {paths.superlink_key.name}   ({SERVER_DAYS} days) SANs: "
        f"{', '.join(names)}"
    )
    console.print(
        f"  Coordinator  {paths.coordinator_cert.name} / {paths.coordinator_key.name}   ({CLIENT_DAYS} days, client "
        "auth for the control route)"
    )
    console.print(f"  CRL          {paths.crl.name}   (empty; `sarcofed pki revoke` adds to it, the proxy enforces it)")
    console.print(f"Next: sarcofed pki add-site {paths.root} <hospital-name>")


@pki_app.command("add-site")
def add_site_command(
    directory: Annotated[Path, typer.Argument(help="PKI folder made by `sarcofed pki init`.")],
    name: Annotated[
        str, typer.Argument(help="Hospital name: letters, digits, '_' and '-' (becomes the key's file name).")
    ],
    federation: Annotated[
        str, typer.Option(help="SuperLink connection name used in the printed `flwr supernode register` line.")
    ] = "sarcofed",
    output_format: Annotated[str, typer.Option("--format", help="'text' (default) or 'json'.")] = "text",
) -> None:
    """Create hospital NAME's SuperNode key pair (OpenSSH EC P-384) and print the line that registers it."""
    from rich.console import Console

    from deploy.pki import add_site

    keys = add_site(directory, name, federation)
    if output_format == "json":
        typer.echo(
            json.dumps(
                {
                    "site": keys.name,
                    "private_key": str(keys.private_key),
                    "public_key": str(keys.public_key),
                    "register_command": keys.register_command,
                }
            )
        )
        return
    console = Console()
    console.print(
        f"[green]Keys for {name}[/]: {keys.private_key} (private, 0600: ship to {name} only, with ca.crt) and "
        f"{keys.public_key}"
    )
    console.print("The coordinator admits this hospital with:")
    console.print(keys.register_command, markup=False, highlight=False, soft_wrap=True)


@pki_app.command("revoke")
def revoke_command(
    directory: Annotated[Path, typer.Argument(help="PKI folder made by `sarcofed pki init`, with ca.key.")],
    name: Annotated[
        str, typer.Argument(help="'coordinator' (the client certificate for the control route) or a hospital's name.")
    ],
    reason: Annotated[
        str,
        typer.Option(
            help=(
                "Recorded in the CRL: unspecified, key-compromise, superseded, cessation-of-operation, "
                "affiliation-changed."
            )
        ),
    ] = "unspecified",
    federation: Annotated[
        str, typer.Option(help="SuperLink connection name used in the printed `flwr supernode unregister` line.")
    ] = "sarcofed",
    output_format: Annotated[str, typer.Option("--format", help="'text' (default) or 'json'.")] = "text",
) -> None:
    """Put the coordinator certificate on the CRL (crl.pem, signed by the CA), or print how to revoke a
    hospital's SuperNode key."""
    from rich.console import Console
    from rich.markup import escape

    from deploy.pki import revoke

    done = revoke(directory, name, reason=reason, federation=federation)
    if output_format == "json":
        typer.echo(
            json.dumps(
                {
                    "name": done.name,
                    "certificate": done.certificate and str(done.certificate),
                    "serial": None if done.serial is None else f"{done.serial:X}",
                    "crl": done.crl and str(done.crl),
                    "already_revoked": done.already_revoked,
                    "next_steps": list(done.next_steps),
                }
            )
        )
        return
    console = Console(highlight=False)
    if done.certificate is None:
        console.print(
            f"{name} has no certificate (a hospital signs in with its SuperNode key). Revoke that key at the "
            "SuperLink:",
            soft_wrap=True,
        )
    elif done.already_revoked:
        console.print(
            f"{escape(str(done.certificate))} (serial {done.serial:X}) was already on {escape(str(done.crl))}. If "
            "the proxy still admits it:",
            soft_wrap=True,
        )
    else:
        console.print(
            f"[green]Revoked[/] {escape(str(done.certificate))} (serial {done.serial:X}): now on "
            f"{escape(str(done.crl))}. Then:",
            soft_wrap=True,
        )
    for step in done.next_steps:
        console.print(f"  {step}", markup=False, soft_wrap=True)


@pki_app.command("crl")
def crl_command(
    directory: Annotated[Path, typer.Argument(help="PKI folder made by `sarcofed pki init`, with ca.key.")],
) -> None:
    """Sign crl.pem again: same revocations, fresh dates; an empty one if the folder has none (folders made
    before revocation existed)."""
    from deploy.pki import issue_crl

    typer.echo(f"wrote {issue_crl(directory)}: copy it to the coordinator host and reload the proxy")


@pki_app.command("status")
def status_command(
    directory: Annotated[Path, typer.Argument(help="PKI folder (the CA holder's, or the coordinator host's copy).")],
    warn_days: Annotated[
        int, typer.Option(help="Warn about certificates and the CRL that expire within this many days.")
    ] = 30,
    output_format: Annotated[str, typer.Option("--format", help="'text' (default) or 'json'.")] = "text",
) -> None:
    """List every certificate and the CRL with its expiry. Exit code 0: nothing expires within --warn-days;
    1: something does, has expired, or the CRL is missing."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from deploy.pki import credential_warnings, pki_status

    statuses = pki_status(directory, warn_days=warn_days)
    warnings = credential_warnings(directory, warn_days=warn_days)
    if output_format == "json":
        typer.echo(
            json.dumps(
                {
                    "credentials": [
                        {
                            "path": str(s.path),
                            "subject": s.subject,
                            "serial": None if s.serial is None else f"{s.serial:X}",
                            "expires": s.expires.isoformat(),
                            "days_left": round(s.days_left, 1),
                            "state": s.state,
                        }
                        for s in statuses
                    ],
                    "warnings": warnings,
                }
            )
        )
    else:
        table = Table("file", "subject", "serial", "expires (UTC)", "days left", "state")
        style = {"ok": "green", "expiring": "yellow", "expired": "red", "revoked": "bright_black"}
        for s in statuses:
            table.add_row(
                escape(str(s.path.relative_to(directory))),
                escape(s.subject),
                "-" if s.serial is None else f"{s.serial:X}",
                s.expires.strftime("%Y-%m-%d %H:%M"),
                f"{s.days_left:.0f}",
                f"[{style[s.state]}]{s.state}[/]",
            )
        console = Console(highlight=False)
        console.print(table)
        for line in warnings:
            console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
    if warnings:
        raise typer.Exit(1)


if __name__ == "__main__":
    pki_app()
