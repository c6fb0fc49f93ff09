"""The proxy live on loopback: nginx with the generated config in front of a small HTTPS stand-in for
the SuperLink. The coordinator certificate opens the control route until it is revoked and nginx
reloaded; every access-log line names the client certificate."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.launch import Managed, free_port, https_ok, start, stop_all
from deploy.pki import PkiPaths, init_pki, load_certificate, revoke
from deploy.proxy import nginx_command, write_nginx_config

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="nginx not installed"
)

CONTROL = "/v1/control/list-runs"  # any path under /v1/control/: the stand-in answers them all
AUDIT_LINE = re.compile(
    r'"GET (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3}) .* client_verify="(?P<verify>[^"]*)" '
    r'client_dn="(?P<dn>[^"]*)" client_serial="(?P<serial>[^"]*)"$'
)


class _Upstream(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and the path, as the SuperLink's routes would with some JSON."""

    protocol_version = "HTTP/1.1"  # nginx keeps upstream connections alive

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = f"upstream {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Proxy:
    pki: PkiPaths
    config: Path
    nginx: Managed
    base: str  # https://127.0.0.1:PORT

    @property
    def coordinator(self) -> tuple[Path, Path]:
        return self.pki.coordinator_cert, self.pki.coordinator_key

    def get(self, path: str, client: tuple[Path, Path] | None = None) -> tuple[int | None, str]:
        """(status, body) of a GET through the proxy; (None, reason) when the TLS handshake fails."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        if client is not None:
            context.load_cert_chain(str(client[0]), str(client[1]))
        try:
            with urllib.request.urlopen(self.base + path, context=context, timeout=5) as response:  # noqa: S310 (loopback)
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except (OSError, ssl.SSLError) as error:
            return None, str(error)

    def audit_lines(self, at_least: int = 0) -> list[re.Match]:
        """The access log's lines; nginx writes a request's line after it has answered, so wait (5 s at
        most) until ``at_least`` are there."""
        deadline = time.monotonic() + 5.0
        while True:
            lines = (self.config.parent / "access.log").read_text().splitlines()
            if len(lines) >= at_least or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        matches = [AUDIT_LINE.search(line) for line in lines]
        assert all(matches), f"access-log lines without the certificate fields: {lines}"
        return matches

    def reload(self) -> None:
        out = subprocess.run(nginx_command(self.config, reload=True), capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def proxy(tmp_path) -> Iterator[Proxy]:
    """A fresh PKI, the stand-in SuperLink (TLS with superlink.crt) and nginx in front of it."""
    pki = init_pki(tmp_path / "pki")
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(pki.superlink_cert), str(pki.superlink_key))
    upstream.socket = tls.wrap_socket(upstream.socket, server_side=True)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    config = write_nginx_config(
        pki, tmp_path / "proxy", listen=f"127.0.0.1:{port}", upstream=f"127.0.0.1:{upstream.server_address[1]}"
    )
    nginx = start("nginx", nginx_command(config), dict(os.environ), tmp_path / "logs")
    try:
        deadline = time.monotonic() + 15
        while https_ok(f"https://127.0.0.1:{port}/health", pki.ca_cert) != 200:
            assert time.monotonic() < deadline and nginx.alive(), (
                nginx.log_text() + (tmp_path / "proxy" / "error.log").read_text()
            )
            time.sleep(0.1)
        yield Proxy(pki, config, nginx, f"https://127.0.0.1:{port}")
    finally:
        stop_all([nginx])
        upstream.shutdown()
        upstream.server_close()


def test_access_log_names_the_client_certificate(proxy):
    assert proxy.get(CONTROL, proxy.coordinator) == (200, f"upstream {CONTROL}\n")
    assert proxy.get(CONTROL)[0] == 403

    cert = load_certificate(proxy.pki.coordinator_cert)
    with_cert, without = [m for m in proxy.audit_lines(at_least=2) if m["path"] == CONTROL]
    assert with_cert["status"] == "200" and with_cert["verify"] == "SUCCESS"
    assert with_cert["dn"] == cert.subject.rfc4514_string() == "CN=sarcofed-coordinator,O=SarcoFed consortium"
    assert int(with_cert["serial"], 16) == cert.serial_number
    assert (without["status"], without["verify"], without["dn"], without["serial"]) == ("403", "NONE", "-", "-")


def test_revoked_coordinator_certificate_is_refused_after_reload(proxy):
    assert proxy.get(CONTROL, proxy.coordinator)[0] == 200

    revoke(proxy.pki.root, "coordinator", reason="key-compromise")
    assert proxy.get(CONTROL, proxy.coordinator)[0] == 200  # nginx reads the CRL when it (re)loads, not per request
    proxy.reload()
    deadline = time.monotonic() + 15
    while (answer := proxy.get(CONTROL, proxy.coordinator))[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.2)  # the old worker may serve a moment longer

    status, body = answer
    assert status == 400 and "The SSL certificate error" in body, answer
    assert proxy.nginx.alive()
    assert proxy.get("/v1/fleet/pull-messages")[0] == 200  # SuperNodes present no certificate: unaffected
    refused = [m for m in proxy.audit_lines() if m["status"] == "400"]
    assert refused and refused[-1]["verify"] == "FAILED:certificate revoked"
    assert int(refused[-1]["serial"], 16) == load_certificate(proxy.pki.coordinator_cert).serial_number
