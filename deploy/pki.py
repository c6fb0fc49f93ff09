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
    DIR/sites/NAME        SuperNode private key, OpenSSH format (ship to hospital NAME only)
    DIR/sites/NAME.pub    one-line OpenSSH public key (registered at the SuperLink)

Lifetimes: CA 5 years, server and client certificates 1 year (renew with a fresh folder).
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
SITE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HOST_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


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
    def sites_dir(self) -> Path:
        return self.root / "sites"

    def site_key(self, name: str) -> Path:
        return self.sites_dir / validate_site_name(name)

    def site_pub(self, name: str) -> Path:
        return self.sites_dir / f"{validate_site_name(name)}.pub"

    def init_files(self) -> tuple[Path, ...]:
        return (self.ca_cert, self.ca_key, self.superlink_cert, self.superlink_key, self.coordinator_cert, self.coordinator_key)


@dataclass(frozen=True)
class SiteKeys:
    """A hospital's SuperNode key pair and the line the coordinator runs to admit it."""

    name: str
    private_key: Path
    public_key: Path
    register_command: str


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
) -> PkiPaths:
    """Create the CA, the SuperLink server certificate and the coordinator client certificate.

    hosts/ips are the names and addresses hospitals use to reach the SuperLink (or its proxy);
    localhost, 127.0.0.1 and ::1 are always added because the SuperLink's own SuperExec connects
    over loopback and verifies the certificate. Refuses to touch a folder that already holds any of
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
    now = now or dt.datetime.now(dt.timezone.utc)

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
        _builder(_name(dns_names[0]), ca_name, server_key.public_key(), now, SERVER_DAYS)
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
        _builder(_name("sarcofed-coordinator"), ca_name, client_key.public_key(), now, CLIENT_DAYS)
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
    return paths


def add_site(directory: Path, name: str, federation: str = "sarcofed") -> SiteKeys:
    """Create hospital NAME's SuperNode key pair (OpenSSH EC P-384) in an initialised PKI folder."""
    paths = PkiPaths(Path(directory))
    validate_site_name(name)
    if not paths.root.is_dir():
        raise InputDataError("expected a PKI folder made by `sarcofed pki init`, found no folder; run that first", paths.root)
    if not paths.ca_cert.is_file():
        raise ConfigError(
            "no CA here (ca.crt missing): hospitals need it to trust the SuperLink; "
            f"run `sarcofed pki init {paths.root} --host NAME` first",
            paths.root,
        )
    try:
        x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    except PermissionError as error:
        raise InputDataError(f"cannot read the CA certificate ({error.strerror}); check the folder's permissions", paths.ca_cert) from error
    except ValueError as error:
        raise ConfigError(f"expected a PEM CA certificate, could not parse it ({error}); re-create the PKI folder", paths.ca_cert) from error
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
    openssh = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
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


# -- helpers ---------------------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: dt.datetime, days: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew between hosts
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


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _check_host(host: str) -> str:
    if not HOST_NAME.fullmatch(host):
        raise ConfigError(f"--host {host!r} is not a DNS name (letters, digits, '-' and '.'); give IP addresses with --ip")
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
        raise InputDataError(f"cannot create the credentials folder ({error.strerror}); pick a writable place", path) from error
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
