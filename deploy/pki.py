"""The consortium's credentials: one CA, the SuperLink's TLS certificate, the coordinator's client
certificate and one SSH-format key pair per hospital SuperNode.

Why these formats: Flower 1.42 reads the SuperLink certificate and key as PEM (``--ssl-*``), the
SuperNode key with ``load_ssh_private_key`` (EC only) and the registered public key with
``load_ssh_public_key`` (NIST curves only), so every key here is EC P-384. The coordinator client
certificate is for the reverse proxy that guards the Control API (``deploy/proxy.py``); Flower itself
never sees it.

Layout of a PKI folder (private keys 0600, never overwritten)::

    DIR/ca.crt            CA certificate (ship to every hospital and the coordinator)
    DIR/ca.key            CA private key (stays with whoever runs `sarcofed pki`)
    DIR/superlink.crt     SuperLink / proxy server certificate, EKU serverAuth
    DIR/superlink.key
    DIR/coordinator.crt   coordinator client certificate, EKU clientAuth
    DIR/coordinator.key
    DIR/crl.pem           revoked certificates, signed by the CA (the proxy enforces it; empty at init)
    DIR/sites/NAME        SuperNode private key, OpenSSH format (ship to hospital NAME only)
    DIR/sites/NAME.pub    one-line OpenSSH public key (registered at the SuperLink)

Lifetimes: CA 5 years, server and client certificates 1 year (renew with a fresh folder); the CRL is
valid until the CA expires. ``pki_status`` lists what expires when.

Revocation: a certificate goes on the CRL (``revoke``); a hospital has no certificate, its SuperNode
key is revoked at the SuperLink (``flwr supernode unregister``), which ``revoke`` spells out.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError, InputDataError

CA_DAYS = 5 * 365 + 1
SERVER_DAYS = 365
CLIENT_DAYS = 365
DEFAULT_HOSTS = ("localhost",)
DEFAULT_IPS = ("127.0.0.1", "::1")
ORGANISATION = "SarcoFed consortium"
COORDINATOR_URI = "urn:sarcofed:coordinator"  # SAN of the coordinator client certificate
CERTIFICATE_NAMES = ("ca", "superlink", "coordinator")  # DIR/<name>.crt; any other name is a site
WARN_DAYS = 30  # pki_status warns when a certificate or the CRL expires within this many days
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates and CRLs start this early: hosts' clocks differ a little
REVOCATION_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
}
SITE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class PkiPaths:
    """Where each credential of a PKI folder lives (the files need not exist yet)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def superlink_cert(self) -> Path:
        return self.root / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        return self.root / "superlink.key"

    @property
    def coordinator_cert(self) -> Path:
        return self.root / "coordinator.crt"

    @property
    def coordinator_key(self) -> Path:
        return self.root / "coordinator.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def sites_dir(self) -> Path:
        return self.root / "sites"

    def site_key(self, name: str) -> Path:
        return self.sites_dir / validate_site_name(name)

    def site_pub(self, name: str) -> Path:
        return self.sites_dir / f"{validate_site_name(name)}.pub"

    def init_files(self) -> tuple[Path, ...]:
        return (
            self.ca_cert,
            self.ca_key,
            self.superlink_cert,
            self.superlink_key,
            self.coordinator_cert,
            self.coordinator_key,
            self.crl,
        )


@dataclass(frozen=True)
class SiteKeys:
    """A hospital's SuperNode key pair and the line the coordinator runs to admit it."""

    name: str
    private_key: Path
    public_key: Path
    register_command: str


@dataclass(frozen=True)
class Revocation:
    """What ``revoke`` did for NAME, and what is left for people to do.

    certificate/serial/crl are set for a certificate (now on the CRL); for a hospital they are None,
    and next_steps holds the `flwr supernode unregister` line that revokes its SuperNode key.
    """

    name: str
    certificate: Path | None
    serial: int | None
    crl: Path | None
    already_revoked: bool
    next_steps: tuple[str, ...]


@dataclass(frozen=True)
class CredentialStatus:
    """One certificate (or the CRL) of a PKI folder and how long it has left.

    state: 'ok'; 'expiring' (within the warning window); 'expired'; 'revoked' (on the CRL: its
    expiry no longer matters).
    """

    path: Path
    subject: str
    serial: int | None  # None for the CRL
    expires: dt.datetime  # the certificate's notAfter, the CRL's nextUpdate (UTC)
    days_left: float
    state: str

    @property
    def warning(self) -> str | None:
        """The line to show for an expired or expiring item; None when it is ok or revoked."""
        what = (
            "the CRL (without a valid one the proxy refuses every client certificate)"
            if self.serial is None
            else self.subject
        )
        when = self.expires.strftime("%Y-%m-%d %H:%M UTC")
        renew = "renew with a new PKI folder (deploy/README.md, section 1)"
        if self.state == "expired":
            return f"{self.path}: {what} expired on {when}; {renew}"
        if self.state == "expiring":
            return f"{self.path}: {what} expires in {self.days_left:.0f} days ({when}); {renew} before then"
        return None


def validate_site_name(name: str) -> str:
    """Site names become file names and node-config values: letters, digits, '_' and '-' only."""
    if not SITE_NAME.fullmatch(name):
        raise ConfigError(
            f"site name {name!r} is not allowed: expected 1-64 characters from A-Z a-z 0-9 _ - "
            "(it becomes a file name); pick e.g. 'hospital_a'"
        )
    return name


def register_command(public_key: Path, federation: str = "sarcofed") -> str:
    """The exact `flwr supernode register` line that admits this key at the SuperLink."""
    return f"flwr supernode register {shlex.quote(str(public_key))} {shlex.quote(federation)}"


def init_pki(
    directory: Path,
    hosts: Sequence[str] = (),
    ips: Sequence[str] = (),
    *,
    now: dt.datetime | None = None,
    server_days: int = SERVER_DAYS,
    client_days: int = CLIENT_DAYS,
) -> PkiPaths:
    """Create the CA, the SuperLink server certificate, the coordinator client certificate and an
    empty CRL.

    hosts/ips are the names and addresses hospitals use to reach the SuperLink (or its proxy);
    localhost, 127.0.0.1 and ::1 are always added because the SuperLink's own SuperExec connects
    over loopback and verifies the certificate. server_days/client_days: lifetimes of the SuperLink
    and coordinator certificates (default 365). Refuses to touch a folder that already holds any of
    the files.
    """
    paths = PkiPaths(Path(directory))
    dns_names = _unique([*(_check_host(h) for h in hosts), *DEFAULT_HOSTS])
    addresses = _unique([*(_check_ip(a) for a in ips), *(ipaddress.ip_address(a) for a in DEFAULT_IPS)])
    _ensure_dir(paths.root)
    existing = [p for p in paths.init_files() if p.exists()]
    if existing:
        raise ConfigError(
            f"refusing to overwrite existing credentials ({', '.join(p.name for p in existing)}); "
            "keys are never replaced in place: use a new, empty folder",
            paths.root,
        )
    now = now or dt.datetime.now(dt.UTC)

    ca_key = _new_key()
    ca_name = _name("SarcoFed consortium CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)

    server_key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(a) for a in addresses]
    server_cert = (
        _builder(_name(dns_names[0]), ca_name, server_key.public_key(), now, server_days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    client_key = _new_key()
    client_cert = (
        _builder(_name("sarcofed-coordinator"), ca_name, client_key.public_key(), now, client_days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(COORDINATOR_URI)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(client_key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    _write(paths.ca_key, _pkcs8(ca_key), 0o600)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(paths.superlink_key, _pkcs8(server_key), 0o600)
    _write(paths.superlink_cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(paths.coordinator_key, _pkcs8(client_key), 0o600)
    _write(paths.coordinator_cert, client_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(paths.crl, _sign_crl(ca_cert, ca_key, [], 1, now).public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def add_site(directory: Path, name: str, federation: str = "sarcofed") -> SiteKeys:
    """Create hospital NAME's SuperNode key pair (OpenSSH EC P-384) in an initialised PKI folder."""
    paths = PkiPaths(Path(directory))
    validate_site_name(name)
    if not paths.root.is_dir():
        raise InputDataError(
            "expected a PKI folder made by `sarcofed pki init`, found no folder; run that first", paths.root
        )
    if not paths.ca_cert.is_file():
        raise ConfigError(
            "no CA here (ca.crt missing): hospitals need it to trust the SuperLink; "
            f"run `sarcofed pki init {paths.root} --host NAME` first",
            paths.root,
        )
    try:
        x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    except PermissionError as error:
        raise InputDataError(
            f"cannot read the CA certificate ({error.strerror}); check the folder's permissions", paths.ca_cert
        ) from error
    except ValueError as error:
        raise ConfigError(
            f"expected a PEM CA certificate, could not parse it ({error}); re-create the PKI folder", paths.ca_cert
        ) from error
    _ensure_dir(paths.sites_dir)
    private, public = paths.site_key(name), paths.site_pub(name)
    existing = [p for p in (private, public) if p.exists()]
    if existing:
        raise ConfigError(
            f"site {name!r} already has keys ({', '.join(str(p) for p in existing)}); keys are never "
            "overwritten: choose another name, or delete them yourself and unregister the old key "
            "(`flwr supernode unregister`)",
            paths.sites_dir,
        )
    key = _new_key()
    openssh = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    pub_line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(private, openssh, 0o600)
    _write(public, pub_line + f" {name}\n".encode(), 0o644)
    return SiteKeys(name, private, public, register_command(public.resolve(), federation))


def load_certificate(path: Path) -> x509.Certificate:
    """Read one PEM certificate with a SarcoFed error when it is missing or not a certificate."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError as error:
        raise InputDataError("expected a PEM certificate, the file does not exist", path) from error
    except ValueError as error:
        raise InputDataError(f"expected a PEM certificate, could not parse it ({error})", path) from error


def revoke(
    directory: Path,
    name: str,
    *,
    reason: str = "unspecified",
    federation: str = "sarcofed",
    now: dt.datetime | None = None,
) -> Revocation:
    """Revoke NAME: the coordinator's client certificate, or hospital NAME's SuperNode key.

    The certificate goes on DIR/crl.pem, re-signed by the CA (needs ca.key); the proxy refuses it
    once reloaded with the new CRL. A hospital has no certificate: its key is revoked at the SuperLink
    with `flwr supernode unregister`, which the result spells out (nothing in the folder changes).
    Revoking twice is not an error (already_revoked is set). reason: one of REVOCATION_REASONS.

    Raises
    ------
    ConfigError
        NAME is the CA or the SuperLink certificate (no CRL protects anyone from those), is neither a
        certificate nor a site of this folder, the reason is unknown, or the certificate or the CRL
        was not made by this folder's CA.
    InputDataError
        The CA key or a certificate cannot be read.
    """
    paths = PkiPaths(Path(directory))
    if name not in CERTIFICATE_NAMES:
        validate_site_name(name)
        if not (paths.site_pub(name).exists() or paths.site_key(name).exists()):
            sites = sorted(p.stem for p in paths.sites_dir.glob("*.pub")) if paths.sites_dir.is_dir() else []
            raise ConfigError(
                f"nothing called {name!r} to revoke: expected 'coordinator' or a site of this folder "
                f"({', '.join(sites) or 'none yet'})",
                paths.root,
            )
        return Revocation(
            name,
            None,
            None,
            None,
            False,
            (
                f"flwr supernode unregister NODE_ID {shlex.quote(federation)}   "
                f"(on the coordinator host; NODE_ID is the id printed when {name}'s key was registered)",
            ),
        )
    if name == "ca":
        raise ConfigError(
            "the CA cannot revoke itself: if ca.key leaked, make a new PKI folder and ship its ca.crt "
            "and new site keys to every hospital",
            paths.root,
        )
    if name == "superlink":
        raise ConfigError(
            "the SuperLink certificate is not checked against a CRL (SuperNodes have no CRL option in "
            "Flower 1.42), so revoking it protects nobody: if superlink.key leaked, make a new PKI folder "
            "and ship its ca.crt and new site keys to every hospital",
            paths.root,
        )
    if reason not in REVOCATION_REASONS:
        raise ConfigError(f"revocation reason {reason!r} is unknown: expected one of {', '.join(REVOCATION_REASONS)}")
    now = now or dt.datetime.now(dt.UTC)
    ca_cert, ca_key = _load_ca(paths)
    path = paths.coordinator_cert
    cert = load_certificate(path)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise ConfigError(
            "this certificate was not issued by the folder's CA (ca.crt); nothing to revoke here", path
        ) from error
    crl = _read_crl(paths, ca_cert) if paths.crl.exists() else None
    entries = list(crl) if crl is not None else []
    next_steps = (
        f"copy {paths.crl} to the PKI folder on the coordinator host, beside ca.crt",
        "reload the proxy: nginx -p STATE_DIR -e STATE_DIR/error.log -c STATE_DIR/nginx.conf -s reload "
        "(STATE_DIR: `sarcofed deploy proxy --state-dir`), or restart it",
    )
    if any(entry.serial_number == cert.serial_number for entry in entries):
        return Revocation(name, path, cert.serial_number, paths.crl, True, next_steps)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(cert.serial_number)
        .revocation_date(now)
        .add_extension(x509.CRLReason(REVOCATION_REASONS[reason]), critical=False)
        .build()
    )
    crl_pem = _sign_crl(ca_cert, ca_key, [*entries, entry], _crl_number(crl) + 1, now).public_bytes(
        serialization.Encoding.PEM
    )
    _replace(paths.crl, crl_pem, 0o644)
    return Revocation(name, path, cert.serial_number, paths.crl, False, next_steps)


def issue_crl(directory: Path, *, now: dt.datetime | None = None) -> Path:
    """Sign DIR/crl.pem again with the same revocations and fresh dates (an empty one if there is none
    yet: folders made before the CRL existed). Needs ca.key. Returns the CRL's path."""
    paths = PkiPaths(Path(directory))
    now = now or dt.datetime.now(dt.UTC)
    ca_cert, ca_key = _load_ca(paths)
    crl = _read_crl(paths, ca_cert) if paths.crl.exists() else None
    entries = list(crl) if crl is not None else []
    _replace(
        paths.crl,
        _sign_crl(ca_cert, ca_key, entries, _crl_number(crl) + 1, now).public_bytes(serialization.Encoding.PEM),
        0o644,
    )
    return paths.crl


def pki_status(
    directory: Path, *, warn_days: int = WARN_DAYS, now: dt.datetime | None = None
) -> list[CredentialStatus]:
    """Every certificate of the folder (``*.crt``, sub-folders included) and the CRL, with expiry and state.

    A certificate on the CRL is 'revoked' whatever its dates; any other is 'expired', 'expiring'
    (within WARN_DAYS days) or 'ok'. The CRL's expiry is its nextUpdate. Site keys (OpenSSH) do not
    expire and are not listed.
    """
    paths = PkiPaths(Path(directory))
    if not paths.root.is_dir():
        raise InputDataError("expected a PKI folder made by `sarcofed pki init`, found no folder", paths.root)
    now = now or dt.datetime.now(dt.UTC)
    crl = _read_crl(paths, None) if paths.crl.exists() else None
    revoked = {entry.serial_number for entry in crl} if crl is not None else set()
    statuses = []
    for path in sorted(paths.root.rglob("*.crt")):
        cert = load_certificate(path)
        state = "revoked" if cert.serial_number in revoked else None
        statuses.append(
            _status(
                path, cert.subject.rfc4514_string(), cert.serial_number, cert.not_valid_after_utc, now, warn_days, state
            )
        )
    if crl is not None and crl.next_update_utc is not None:
        subject = f"CRL #{_crl_number(crl)}, {len(revoked)} revoked"
        statuses.append(_status(paths.crl, subject, None, crl.next_update_utc, now, warn_days, None))
    return statuses


def credential_warnings(directory: Path, *, warn_days: int = WARN_DAYS, now: dt.datetime | None = None) -> list[str]:
    """One line per certificate or CRL that expires within WARN_DAYS days or has expired, and one when
    the folder has a CA but no CRL (the proxy will not start without it). Empty: nothing to do."""
    paths = PkiPaths(Path(directory))
    warnings = [s.warning for s in pki_status(paths.root, warn_days=warn_days, now=now) if s.warning]
    if paths.ca_cert.is_file() and not paths.crl.exists():
        warnings.append(
            f"{paths.crl}: no CRL, and the proxy needs one; `sarcofed pki crl {paths.root}` writes it "
            "(where ca.key is kept)"
        )
    return warnings


# -- helpers ---------------------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: dt.datetime, days: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _status(
    path: Path,
    subject: str,
    serial: int | None,
    expires: dt.datetime,
    now: dt.datetime,
    warn_days: int,
    state: str | None,
) -> CredentialStatus:
    days_left = (expires - now).total_seconds() / 86400
    if state is None:
        state = "expired" if days_left <= 0 else "expiring" if days_left <= warn_days else "ok"
    return CredentialStatus(path, subject, serial, expires, days_left, state)


def _sign_crl(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    entries: Sequence[x509.RevokedCertificate],
    number: int,
    now: dt.datetime,
) -> x509.CertificateRevocationList:
    """A CRL valid until the CA expires: an expired CRL would make the proxy refuse every client certificate."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(ca_cert.not_valid_after_utc)
        .add_extension(x509.CRLNumber(number), critical=False)
        # ca_key is ca_cert's key (made together, or checked by _load_ca): the same identifier as from ca_cert
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, hashes.SHA384())


def _crl_number(crl: x509.CertificateRevocationList | None) -> int:
    if crl is None:
        return 0
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _read_crl(paths: PkiPaths, ca_cert: x509.Certificate | None) -> x509.CertificateRevocationList:
    """The folder's CRL; with CA_CERT, also checked to be signed by it (before it is extended and re-signed)."""
    try:
        crl = x509.load_pem_x509_crl(paths.crl.read_bytes())
    except OSError as error:
        raise InputDataError(f"cannot read the CRL ({error.strerror})", paths.crl) from error
    except ValueError as error:
        raise ConfigError(
            f"expected a PEM CRL, could not parse it ({error}); restore it from the coordinator host's "
            "copy (or move it away, run `sarcofed pki crl` and revoke again)",
            paths.crl,
        ) from error
    if ca_cert is not None:
        ca_public_key = ca_cert.public_key()
        assert isinstance(ca_public_key, ec.EllipticCurvePublicKey)  # ca_cert comes from _load_ca, which checked it
        if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_public_key):
            raise ConfigError("this CRL was not signed by the folder's CA (ca.crt); refusing to extend it", paths.crl)
    return crl


def _load_ca(paths: PkiPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = load_certificate(paths.ca_cert)
    try:
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    except FileNotFoundError as error:
        raise ConfigError(
            "signing the CRL needs the CA key (ca.key), which is not here: run this where ca.key is "
            "kept, then copy crl.pem to the coordinator host",
            paths.ca_key,
        ) from error
    except PermissionError as error:
        raise InputDataError(
            f"cannot read the CA key ({error.strerror}); check the folder's permissions", paths.ca_key
        ) from error
    except (ValueError, TypeError) as error:
        raise ConfigError(f"expected an unencrypted PEM CA key, could not load it ({error})", paths.ca_key) from error
    cert_key = cert.public_key()
    if (
        not isinstance(key, ec.EllipticCurvePrivateKey)
        or not isinstance(cert_key, ec.EllipticCurvePublicKey)
        or key.public_key().public_numbers() != cert_key.public_numbers()
    ):
        raise ConfigError("ca.key does not belong to ca.crt; use the folder that made this CA", paths.ca_key)
    return cert, key


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _check_host(host: str) -> str:
    if not HOST_NAME.fullmatch(host):
        raise ConfigError(
            f"--host {host!r} is not a DNS name (letters, digits, '-' and '.'); give IP addresses with --ip"
        )
    return host.lower()


def _check_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(address)
    except ValueError as error:
        raise ConfigError(f"--ip {address!r} is not an IPv4 or IPv6 address; give DNS names with --host") from error


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))


def _ensure_dir(path: Path) -> None:
    """Create the folder (0700) or check it is a writable folder, with a SarcoFed error otherwise."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as error:
        raise InputDataError("expected a folder for the credentials, found a file", path) from error
    except OSError as error:  # NotADirectoryError, PermissionError, read-only file system
        raise InputDataError(
            f"cannot create the credentials folder ({error.strerror}); pick a writable place", path
        ) from error
    if not path.is_dir():
        raise InputDataError("expected a folder for the credentials, found something else", path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputDataError("the credentials folder is not writable; fix its permissions or pick another", path)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create PATH with MODE from the start (O_EXCL: never replace, never a window with wider rights)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as error:
        raise ConfigError("refusing to overwrite an existing key or certificate", path) from error
    except OSError as error:
        raise InputDataError(f"cannot write ({error.strerror}); check the folder's permissions", path) from error
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask may have narrowed it; 0600 stays 0600


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write PATH anew in one step (a temporary file renamed over it): readers see the old file or the new."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    _write(temporary, data, mode)
    os.replace(temporary, path)
