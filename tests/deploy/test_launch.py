"""Command lines, config files and the nginx config: the hardened flags are there and parse."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args
from typer.testing import CliRunner

from common.errors import ConfigError
from deploy.commands.launch import deploy_app
from deploy.launch import flower_env, superlink_command, supernode_command, write_coordinator_config
from deploy.pki import PkiPaths, init_pki
from deploy.proxy import nginx_command, write_nginx_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return init_pki(tmp_path_factory.mktemp("pki") / "pki")


def test_superlink_command_has_tls_auth_database_and_no_installs(pki, tmp_path):
    command = superlink_command(pki, tmp_path / "state.db", port=1234)
    joined = " ".join(command)
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--enable-supernode-auth",
                 "--disable-runtime-dependency-installation"):
        assert flag in command
    assert f"--database {tmp_path / 'state.db'}" in joined and "--host 127.0.0.1 --port 1234" in joined
    assert "--insecure" not in command
    with pytest.raises(ConfigError, match="pki init"):
        superlink_command(PkiPaths(tmp_path / "none"), tmp_path / "s.db")


def test_supernode_command_node_config_parses_as_flower_does(pki, tmp_path):
    command = supernode_command("link:9443", pki.ca_cert, pki.root / "sites" / "x", tmp_path / "site" / "manifest.csv",
                                site_name="hospital_a", runtime_port=9111)
    node_config = command[command.index("--node-config") + 1]
    assert parse_config_args([node_config]) == {"data-path": str((tmp_path / "site" / "manifest.csv").resolve()), "site-name": "hospital_a"}
    assert command[command.index("--root-certificates") + 1] == str(pki.ca_cert)
    assert "--port" in command and command[command.index("--port") + 1] == "9111"
    with pytest.raises(ConfigError, match="spaces"):
        supernode_command("l:1", pki.ca_cert, None, tmp_path / "a b" / "manifest.csv")


def test_environment_turns_telemetry_and_installs_off(tmp_path):
    env = flower_env(tmp_path / "home", base={"PATH": "/usr/bin"})
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert env["FLWR_HOME"] == str((tmp_path / "home").resolve())


def test_coordinator_config_has_absolute_ca(pki, tmp_path, monkeypatch):
    monkeypatch.chdir(pki.root.parent)
    config = write_coordinator_config(tmp_path / "home", pki.ca_cert.relative_to(pki.root.parent), {"sarcofed": "127.0.0.1:9091"})
    data = tomllib.loads(config.read_text())
    assert data["superlink"]["default"] == "sarcofed"
    assert data["superlink"]["sarcofed"] == {"address": "127.0.0.1:9091", "root-certificates": str(pki.ca_cert.resolve())}
    with pytest.raises(ConfigError, match="CA certificate"):
        write_coordinator_config(tmp_path / "home", tmp_path / "missing.crt", {"x": "h:1"})


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="nginx not installed")
def test_nginx_config_is_valid_and_guards_control(pki, tmp_path):
    config = write_nginx_config(pki, tmp_path / "proxy", listen="127.0.0.1:9443", upstream="127.0.0.1:9091")
    text = config.read_text()
    assert "ssl_verify_client optional" in text and "$ssl_client_verify != SUCCESS" in text
    assert "location /v1/runtime/" in text and "proxy_buffering off" in text
    assert f"ssl_crl {pki.crl.resolve()};" in text
    for field in ("$ssl_client_verify", "$ssl_client_s_dn", "$ssl_client_serial"):
        assert field in text.split("log_format sarcofed_audit", 1)[1].split(";", 1)[0]
    assert "access.log sarcofed_audit;" in text
    check = subprocess.run([*nginx_command(config), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert nginx_command(config, reload=True)[-2:] == ["-s", "reload"]


def test_proxy_refuses_to_start_without_a_crl(tmp_path):
    pki = init_pki(tmp_path / "pki")
    pki.crl.unlink()
    with pytest.raises(ConfigError, match="sarcofed pki crl"):
        write_nginx_config(pki, tmp_path / "proxy", listen="127.0.0.1:9443", upstream="127.0.0.1:9091")


def test_deploy_commands_warn_of_certificates_about_to_expire(tmp_path):
    pki = init_pki(tmp_path / "pki", client_days=10)
    runner = CliRunner()
    result = runner.invoke(deploy_app, ["superlink", str(pki.root), "--database", str(tmp_path / "s.db"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "coordinator.crt" in result.stderr and "expires in 10 days" in result.stderr
    assert "flower-superlink" in result.stdout
    result = runner.invoke(deploy_app, ["proxy", str(pki.root), "--state-dir", str(tmp_path / "proxy"), "--container"])
    assert result.exit_code == 0 and "expires in 10 days" in result.stderr
    fresh = init_pki(tmp_path / "fresh")
    result = runner.invoke(deploy_app, ["superlink", str(fresh.root), "--database", str(tmp_path / "s.db"), "--dry-run"])
    assert result.exit_code == 0 and result.stderr == ""


def test_the_supernode_idle_poll_is_shortened_on_the_installed_flower():
    """deploy.supernode_main replaces Flower 1.42's 3 s idle sleep; an upgrade that moves it must be noticed."""
    import inspect
    import subprocess
    import sys

    import flwr.supernode.start_client_internal as loop

    assert "time.sleep(3)" in inspect.getsource(loop)
    code = ("import time, flwr.supernode.start_client_internal as loop\n"
            "from deploy.supernode_main import shorten_idle_poll\n"
            "assert shorten_idle_poll(loop)\n"
            "t0 = time.monotonic(); loop.time.sleep(3); assert time.monotonic() - t0 < 1.0\n"
            "assert loop.time.monotonic() > 0\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
