"""The consortium PKI: files, permissions, SANs, key types, a chain that verifies, no overwrites, clear errors;
revocation (the CRL) and expiry warnings."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store
from typer.testing import CliRunner

from common.errors import ConfigError, InputDataError
from deploy.commands.pki import pki_app
from deploy.pki import PkiPaths, add_site, credential_warnings, init_pki, issue_crl, pki_status, revoke


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PkiPaths:
    return init_pki(tmp_path_factory.mktemp("pki") / "consortium", ["superlink.example.org"], ["10.1.2.3"])


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _crl(path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _openssl_verify(pki: PkiPaths, cert, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "verify", *flags, "-CAfile", str(pki.ca_cert), str(cert)], capture_output=True, text=True
    )


def test_init_writes_every_file_with_private_keys_0600(pki):
    for path in pki.init_files():
        assert path.is_file(), path
    for key in (pki.ca_key, pki.superlink_key, pki.coordinator_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8 PEM, unencrypted
        loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey) and loaded.curve.name == "secp384r1"
    assert stat.S_IMODE(pki.root.stat().st_mode) == 0o700


def test_server_certificate_sans_and_purposes(pki):
    cert = _cert(pki.superlink_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["superlink.example.org", "localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("10.1.2.3", "127.0.0.1", "::1")
    }
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) < lifetime < dt.timedelta(days=367)


def test_ca_is_a_ca_with_five_year_lifetime(pki):
    ca = _cert(pki.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert ca.issuer == ca.subject
    assert dt.timedelta(days=5 * 365) <= ca.not_valid_after_utc - ca.not_valid_before_utc < dt.timedelta(days=5 * 366)


def test_chain_verifies_for_the_server_and_the_coordinator_client(pki):
    store = Store([_cert(pki.ca_cert)])
    server_chain = (
        PolicyBuilder()
        .store(store)
        .build_server_verifier(x509.DNSName("superlink.example.org"))
        .verify(_cert(pki.superlink_cert), [])
    )
    assert server_chain[-1] == _cert(pki.ca_cert)
    PolicyBuilder().store(store).build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(
        _cert(pki.superlink_cert), []
    )
    client = PolicyBuilder().store(store).build_client_verifier().verify(_cert(pki.coordinator_cert), [])
    assert client.chain[-1] == _cert(pki.ca_cert)
    if shutil.which("openssl"):  # the same check with the tool hospital IT will use
        for cert, purpose in ((pki.superlink_cert, "sslserver"), (pki.coordinator_cert, "sslclient")):
            out = subprocess.run(
                ["openssl", "verify", "-purpose", purpose, "-CAfile", str(pki.ca_cert), str(cert)],
                capture_output=True,
                text=True,
            )
            assert out.returncode == 0, out.stdout + out.stderr
        # The server certificate must not pass as a coordinator client certificate (the proxy relies on it).
        out = subprocess.run(
            ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(pki.ca_cert), str(pki.superlink_cert)],
            capture_output=True,
            text=True,
        )
        assert out.returncode != 0


def test_add_site_writes_openssh_p384_pair_and_register_line(pki):
    keys = add_site(pki.root, "hospital_a")
    assert stat.S_IMODE(keys.private_key.stat().st_mode) == 0o600
    assert keys.private_key.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    private = serialization.load_ssh_private_key(keys.private_key.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    line = keys.public_key.read_text()
    assert line.startswith("ecdsa-sha2-nistp384 ") and line.count("\n") == 1 and line.strip().endswith(" hospital_a")
    public = serialization.load_ssh_public_key(line.encode())
    assert public.public_numbers() == private.public_key().public_numbers()
    assert keys.register_command == f"flwr supernode register {keys.public_key.resolve()} sarcofed"


def test_never_overwrites(pki):
    before = {p: p.read_bytes() for p in pki.init_files()}
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        init_pki(pki.root, ["other.example.org"])
    add_site(pki.root, "hospital_b")
    key_before = pki.site_key("hospital_b").read_bytes()
    with pytest.raises(ConfigError, match="already has keys"):
        add_site(pki.root, "hospital_b")
    assert pki.site_key("hospital_b").read_bytes() == key_before
    assert {p: p.read_bytes() for p in pki.init_files()} == before


@pytest.mark.parametrize("name", ["bad name", "../escape", "", "a" * 65, "hospital\n", "ümlaut"])
def test_bad_site_names_are_refused(pki, name):
    with pytest.raises(ConfigError, match="not allowed"):
        add_site(pki.root, name)


def test_missing_ca_and_bad_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no CA here"):
        add_site(empty, "hospital_a")
    with pytest.raises(InputDataError, match="found no folder"):
        add_site(tmp_path / "missing", "hospital_a")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    with pytest.raises(InputDataError, match="found a file"):
        init_pki(afile)
    with pytest.raises(InputDataError, match="cannot create"):
        init_pki(afile / "below")
    (empty / "ca.crt").write_text("garbage")
    with pytest.raises(ConfigError, match="could not parse"):
        add_site(empty, "hospital_a")
    with pytest.raises(ConfigError, match="not an IPv4"):
        init_pki(tmp_path / "x", ips=["300.1.1.1"])
    with pytest.raises(ConfigError, match="not a DNS name"):
        init_pki(tmp_path / "y", hosts=["bad host"])


def test_cli_init_and_add_site(tmp_path):
    runner = CliRunner()
    target = tmp_path / "pki"
    result = runner.invoke(pki_app, ["init", str(target), "--host", "link.example.org", "--ip", "192.0.2.7"])
    assert result.exit_code == 0, result.output
    assert "link.example.org" in result.output
    result = runner.invoke(pki_app, ["add-site", str(target), "hospital_c", "--federation", "consortium"])
    assert result.exit_code == 0, result.output
    assert f"flwr supernode register {(target / 'sites' / 'hospital_c.pub').resolve()} consortium" in result.output
    again = runner.invoke(pki_app, ["init", str(target)])
    assert again.exit_code != 0 and isinstance(again.exception, ConfigError)


# -- revocation ----------------------------------------------------------------------------------------


def test_init_writes_an_empty_crl_signed_by_the_ca_valid_as_long_as_the_ca(pki):
    crl, ca = _crl(pki.crl), _cert(pki.ca_cert)
    assert len(crl) == 0 and _crl_number(crl) == 1
    assert crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())
    assert crl.next_update_utc == ca.not_valid_after_utc  # an expired CRL would lock every client out
    assert stat.S_IMODE(pki.crl.stat().st_mode) == 0o644


def test_revoke_puts_the_coordinator_certificate_on_the_crl(tmp_path):
    pki = init_pki(tmp_path / "pki")
    serial = _cert(pki.coordinator_cert).serial_number

    done = revoke(pki.root, "coordinator", reason="key-compromise")

    assert (done.certificate, done.serial, done.crl, done.already_revoked) == (
        pki.coordinator_cert,
        serial,
        pki.crl,
        False,
    )
    assert any("reload" in step for step in done.next_steps)
    crl = _crl(pki.crl)
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None and len(crl) == 1 and _crl_number(crl) == 2
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.is_signature_valid(_cert(pki.ca_cert).public_key())
    assert not list(pki.root.glob(".*.tmp"))

    before = pki.crl.read_bytes()
    assert revoke(pki.root, "coordinator").already_revoked and pki.crl.read_bytes() == before
    issue_crl(pki.root)  # re-signed: same entry, next number
    assert (
        _crl(pki.crl).get_revoked_certificate_by_serial_number(serial) is not None and _crl_number(_crl(pki.crl)) == 3
    )
    if shutil.which("openssl"):
        out = _openssl_verify(pki, pki.coordinator_cert, "-crl_check", "-CRLfile", str(pki.crl))
        assert out.returncode != 0 and "certificate revoked" in out.stdout + out.stderr
        assert _openssl_verify(pki, pki.superlink_cert, "-crl_check_all", "-CRLfile", str(pki.crl)).returncode == 0


def test_revoking_a_site_names_the_unregister_line_and_changes_no_file(tmp_path):
    pki = init_pki(tmp_path / "pki")
    add_site(pki.root, "hospital_a")
    before = {p: p.read_bytes() for p in pki.root.rglob("*") if p.is_file()}

    done = revoke(pki.root, "hospital_a", federation="consortium")

    assert (done.certificate, done.serial, done.crl) == (None, None, None)
    assert done.next_steps[0].startswith("flwr supernode unregister NODE_ID consortium")
    assert {p: p.read_bytes() for p in pki.root.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("ca", "cannot revoke itself", id="ca"),
        pytest.param("superlink", "not checked against a CRL", id="superlink"),
        pytest.param("hospital_x", "nothing called 'hospital_x'", id="unknown-site"),
        pytest.param("../ca", "not allowed", id="bad-name"),
    ],
)
def test_revoke_refuses_what_a_crl_cannot_revoke(pki, name, message):
    before = pki.crl.read_bytes()
    with pytest.raises(ConfigError, match=message):
        revoke(pki.root, name)
    assert pki.crl.read_bytes() == before


def test_revoke_needs_the_ca_key_a_known_reason_and_the_folders_own_crl(tmp_path):
    pki, other = init_pki(tmp_path / "pki"), init_pki(tmp_path / "other")
    with pytest.raises(ConfigError, match="reason 'lost'"):
        revoke(pki.root, "coordinator", reason="lost")
    shutil.copyfile(other.crl, pki.crl)
    with pytest.raises(ConfigError, match="not signed by the folder's CA"):
        revoke(pki.root, "coordinator")
    pki.ca_key.unlink()
    with pytest.raises(ConfigError, match="needs the CA key"):
        revoke(pki.root, "coordinator")


def test_cli_revoke_and_crl(tmp_path):
    runner = CliRunner()
    pki = init_pki(tmp_path / "pki")
    add_site(pki.root, "hospital_a")
    result = runner.invoke(pki_app, ["revoke", str(pki.root), "coordinator", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert int(json.loads(result.output)["serial"], 16) == _cert(pki.coordinator_cert).serial_number
    result = runner.invoke(pki_app, ["revoke", str(pki.root), "hospital_a"])
    assert result.exit_code == 0 and "flwr supernode unregister NODE_ID sarcofed" in result.output
    pki.crl.unlink()  # a folder made before the CRL existed
    result = runner.invoke(pki_app, ["crl", str(pki.root)])
    assert result.exit_code == 0 and len(_crl(pki.crl)) == 0


# -- expiry ----------------------------------------------------------------------------------------------


def test_status_warns_of_a_certificate_that_expires_in_10_days(tmp_path):
    pki = init_pki(tmp_path / "pki", client_days=10)

    statuses = {s.path.name: s for s in pki_status(pki.root)}

    assert set(statuses) == {"ca.crt", "superlink.crt", "coordinator.crt", "crl.pem"}
    assert statuses["coordinator.crt"].state == "expiring" and 9.9 < statuses["coordinator.crt"].days_left <= 10
    assert {n: s.state for n, s in statuses.items() if n != "coordinator.crt"} == {
        "ca.crt": "ok",
        "superlink.crt": "ok",
        "crl.pem": "ok",
    }
    (warning,) = credential_warnings(pki.root)
    assert "CN=sarcofed-coordinator" in warning and "expires in 10 days" in warning
    result = CliRunner().invoke(pki_app, ["status", str(pki.root)])
    assert result.exit_code == 1 and "expires in 10 days" in result.output and "coordinator.crt" in result.output
    result = CliRunner().invoke(pki_app, ["status", str(pki.root), "--warn-days", "7", "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.output)["warnings"] == []


def test_status_of_a_fresh_folder_is_quiet(tmp_path):
    pki = init_pki(tmp_path / "pki")
    assert credential_warnings(pki.root) == []
    result = CliRunner().invoke(pki_app, ["status", str(pki.root)])
    assert result.exit_code == 0 and "warning" not in result.output


def test_status_expired_revoked_and_missing_crl(tmp_path):
    now = dt.datetime.now(dt.UTC)
    pki = init_pki(tmp_path / "pki", now=now - dt.timedelta(days=400))
    revoke(pki.root, "coordinator")

    states = {s.path.name: s.state for s in pki_status(pki.root)}

    assert states == {"ca.crt": "ok", "superlink.crt": "expired", "coordinator.crt": "revoked", "crl.pem": "ok"}
    (warning,) = credential_warnings(pki.root)  # a revoked certificate's expiry does not matter
    assert "superlink.crt" in warning and "expired on" in warning
    pki.crl.unlink()
    assert any("no CRL" in w for w in credential_warnings(pki.root))
    with pytest.raises(InputDataError, match="found no folder"):
        pki_status(tmp_path / "missing")
