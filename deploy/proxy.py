"""The reverse proxy that guards the SuperLink's Control API (nginx, TLS-terminating, mutual TLS).

Why: the open-source SuperLink does not authenticate Control API users. Whoever reaches its port and
trusts the CA can register SuperNode keys and submit a run, and that run's ClientApp code then executes
inside every hospital. So the SuperLink listens on 127.0.0.1 only and nginx is what the network sees:

- ``/v1/fleet/*``   open to anyone with TLS (SuperNodes; the SuperLink itself checks their signed keys)
- ``/health``       open (monitoring)
- ``/v1/control/*`` only with a client certificate issued by the consortium CA with EKU clientAuth
                    (``coordinator.crt`` from ``sarcofed pki init``), else 403; a certificate on the
                    CA's CRL (``crl.pem``, ``sarcofed pki revoke``) gets 400 on every route
- ``/v1/runtime/*`` never (the SuperLink's own SuperExec/ServerApp use it over loopback), 403
- anything else (``/docs``, ``/openapi.json``): 404

Audit: every access-log line names the client certificate (subject DN, serial, verification result),
so the log says which certificate made each control call. nginx reads certificates and the CRL when
it starts or reloads (``nginx_command(config, reload=True)``).

Streaming: HTTP/1.1 upstream, no buffering either way and hour-long read timeouts, so
`flwr run --stream` / `flwr log --stream` and the SuperNodes' long pulls pass through unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common.errors import ConfigError
from deploy.pki import PkiPaths

NGINX_TEMPLATE = """\
# Written by SarcoFed deploy/proxy.py. Guards the SuperLink's Control API with mutual TLS.
worker_processes 1;
pid {state}/nginx.pid;
error_log {state}/error.log warn;
daemon off;

events {{ worker_connections 256; }}

http {{
    # Who called: the client certificate of every request ("-" without one; FAILED:<reason> if refused).
    log_format sarcofed_audit '$time_iso8601 $remote_addr "$request" $status $body_bytes_sent $request_time '
                              'client_verify="$ssl_client_verify" client_dn="$ssl_client_s_dn" \
client_serial="$ssl_client_serial"';
    access_log {state}/access.log sarcofed_audit;
    client_body_temp_path {state}/body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    server_tokens off;

    upstream superlink {{
        server {upstream};
        keepalive 16;
    }}

    server {{
        listen {listen} ssl;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        # Ask for a client certificate but let SuperNodes (which have none) through to the fleet route.
        ssl_client_certificate {ca_cert};
        ssl_verify_client optional;
        ssl_verify_depth 1;
        ssl_crl {crl};                    # revoked certificates: a request with one gets 400

        client_max_body_size 512m;        # model updates (a FAB is capped at 10 MB by Flower)
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_buffering off;              # streamed logs and events pass through as they come
        proxy_request_buffering off;
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
        proxy_ssl_trusted_certificate {ca_cert};
        proxy_ssl_verify on;
        proxy_ssl_name localhost;         # the SuperLink certificate always carries DNS:localhost
        proxy_ssl_server_name on;

        location /v1/fleet/ {{
            proxy_pass https://superlink;
        }}
        location = /health {{
            proxy_pass https://superlink;
        }}
        location /v1/control/ {{
            if ($ssl_client_verify != SUCCESS) {{
                return 403 "control API: a coordinator client certificate is required\\n";
            }}
            proxy_pass https://superlink;
        }}
        location /v1/runtime/ {{
            return 403 "runtime API: loopback only\\n";
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


def nginx_config(
    pki: PkiPaths,
    state_dir: Path,
    *,
    listen: str,
    upstream: str,
    pki_dir_in_config: Path | None = None,
    state_dir_in_config: Path | None = None,
) -> str:
    """nginx.conf text for a proxy on LISTEN ("0.0.0.0:9443") in front of the SuperLink at UPSTREAM
    ("127.0.0.1:9091"); STATE_DIR holds the pid file, logs and temp folders.

    ``*_in_config`` write other folders into the file than the ones checked here: for a container
    that mounts the PKI at /pki and keeps its state in /tmp/proxy (deploy/docker/compose.yaml).
    """
    for path in (pki.ca_cert, pki.superlink_cert, pki.superlink_key):
        if not path.is_file():
            raise ConfigError(
                f"the proxy needs {path.name}; run `sarcofed pki init {pki.root} --host NAME` first", path
            )
    if not pki.crl.is_file():
        raise ConfigError(
            f"the proxy needs the CA's revocation list (crl.pem); `sarcofed pki crl {pki.root}` writes an "
            "empty one where ca.key is kept: copy it here",
            pki.crl,
        )
    state = Path(state_dir_in_config) if state_dir_in_config else Path(state_dir).resolve()
    root = Path(pki_dir_in_config) if pki_dir_in_config else pki.root.resolve()
    return NGINX_TEMPLATE.format(
        state=state,
        listen=listen,
        upstream=upstream,
        ca_cert=root / pki.ca_cert.name,
        server_cert=root / pki.superlink_cert.name,
        server_key=root / pki.superlink_key.name,
        crl=root / pki.crl.name,
    )


def write_nginx_config(
    pki: PkiPaths,
    state_dir: Path,
    *,
    listen: str,
    upstream: str,
    pki_dir_in_config: Path | None = None,
    state_dir_in_config: Path | None = None,
) -> Path:
    """Write STATE_DIR/nginx.conf (and its temp folders); returns the config path."""
    state = Path(state_dir)
    for sub in ("", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    config = state / "nginx.conf"
    config.write_text(
        nginx_config(
            pki,
            state,
            listen=listen,
            upstream=upstream,
            pki_dir_in_config=pki_dir_in_config,
            state_dir_in_config=state_dir_in_config,
        )
    )
    return config


def nginx_command(config: Path, nginx: str | None = None, *, reload: bool = False) -> list[str]:
    """Run nginx in the foreground on CONFIG (its prefix and error log in the same folder).

    reload=True: the line that tells the running nginx (pid file in the same folder) to read its
    configuration, certificates and CRL again, without dropping connections (``nginx -s reload``).
    """
    binary = nginx or shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists() and shutil.which(binary) is None:
        raise ConfigError("nginx is not installed; on Debian/Ubuntu: apt-get install -y nginx-light (or nginx)")
    state = Path(config).resolve().parent
    command = [binary, "-p", str(state), "-e", str(state / "error.log"), "-c", str(Path(config).resolve())]
    return [*command, "-s", "reload"] if reload else command


# -- the coordinator's local forwarder: `flwr` (plain HTTP on loopback) -> the gate (mutual TLS) -------

FORWARDER_TEMPLATE = """\
# Written by SarcoFed deploy/proxy.py. Lets `flwr` (no client certificate) reach the gate's control
# route: plain HTTP on loopback in, HTTPS with the coordinator certificate out.
worker_processes 1;
pid {state}/nginx.pid;
error_log {state}/error.log warn;
daemon off;

events {{ worker_connections 64; }}

http {{
    access_log {state}/access.log;
    client_body_temp_path {state}/body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    server_tokens off;

    upstream gate {{
        server {gate};
        keepalive 4;
    }}

    server {{
        listen {listen};
        client_max_body_size 64m;         # a Flower App Bundle is capped at 10 MB
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;              # `flwr log --stream` passes through as it comes
        proxy_request_buffering off;
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
        proxy_ssl_certificate {client_cert};
        proxy_ssl_certificate_key {client_key};
        proxy_ssl_trusted_certificate {ca_cert};
        proxy_ssl_verify on;
        proxy_ssl_verify_depth 1;
        proxy_ssl_name {server_name};
        proxy_ssl_server_name on;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;
        proxy_ssl_session_reuse on;

        location /v1/control/ {{
            proxy_pass https://gate;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def forwarder_config(
    ca_cert: Path,
    client_cert: Path,
    client_key: Path,
    state_dir: Path,
    *,
    listen: str,
    gate: str,
    server_name: str | None = None,
) -> str:
    """nginx.conf text for a forwarder on LISTEN ("127.0.0.1:9092", loopback only) to the gate at GATE
    ("link.consortium.example:9443"), presenting CLIENT_CERT and trusting only CA_CERT.

    SERVER_NAME: the DNS name the gate's certificate must carry (default: GATE's host, or ``localhost``
    when that is an IP address: nginx matches DNS names only, and every SuperLink certificate of
    ``sarcofed pki init`` carries DNS:localhost beside its IPs; trust still rests on CA_CERT alone).
    Whoever can reach LISTEN acts with the coordinator certificate, so it may not leave the machine.
    """
    host = listen.rsplit(":", 1)[0] if ":" in listen else ""
    if host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"--listen {listen!r}: the forwarder carries the coordinator certificate and speaks plain "
            "HTTP, so it listens on loopback only (127.0.0.1:PORT, localhost:PORT or [::1]:PORT)"
        )
    if ":" not in gate or gate.startswith(("http://", "https://")):
        raise ConfigError(f"--address {gate!r}: give the gate as HOST:PORT (e.g. link.consortium.example:9443)")
    for path, what in (
        (ca_cert, "CA certificate"),
        (client_cert, "coordinator certificate"),
        (client_key, "coordinator key"),
    ):
        if not Path(path).is_file():
            raise ConfigError(f"the forwarder needs the {what} (from the PKI folder of `sarcofed pki init`)", path)
    return FORWARDER_TEMPLATE.format(
        state=Path(state_dir).resolve(),
        listen=listen,
        gate=gate,
        client_cert=Path(client_cert).resolve(),
        client_key=Path(client_key).resolve(),
        ca_cert=Path(ca_cert).resolve(),
        server_name=server_name or _dns_name(gate.rsplit(":", 1)[0].strip("[]")),
    )


def _dns_name(host: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return "localhost"


def write_forwarder_config(
    ca_cert: Path,
    client_cert: Path,
    client_key: Path,
    state_dir: Path,
    *,
    listen: str,
    gate: str,
    server_name: str | None = None,
) -> Path:
    """Write STATE_DIR/nginx.conf for the forwarder (and its temp folders); returns the config path.

    Start it with ``nginx_command(config)``, as the gate.
    """
    text = forwarder_config(
        ca_cert, client_cert, client_key, state_dir, listen=listen, gate=gate, server_name=server_name
    )
    state = Path(state_dir)
    for sub in ("", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    config = state / "nginx.conf"
    config.write_text(text)
    return config
