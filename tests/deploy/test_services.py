"""Service definitions: the systemd units of `sarcofed deploy services` and deploy/docker/compose.yaml.

The units must be valid for systemd, name every file by an absolute path, run exactly the command lines
of deploy/launch.py and deploy/proxy.py, give every SuperNode its own FLWR_HOME and keep telemetry off.
The SuperLink unit's ExecStart is also started for real, with the unit's environment and working
directory, so the unit cannot drift from a working command. compose.yaml must parse, restart every
service and run the same programs and flags as the units.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from flwr.common.config import parse_config_args
from typer.testing import CliRunner

from deploy.commands.launch import deploy_app
from deploy.launch import free_port, https_ok, start, stop_all, superlink_command, supernode_command, wait_for_log
from deploy.pki import PkiPaths, add_site, init_pki
from deploy.proxy import nginx_command
from deploy.services import (
    SUPERLINK_UNIT,
    prepare_commands,
    proxy_unit,
    render_unit,
    superlink_unit,
    supernode_unit,
    systemd_word,
    write_units,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
HAS_NGINX = shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()
FLOWER_OFF = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


# -- reading a unit file as systemd does (for the subset deploy/services.py writes) -------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """KEY -> values of a unit file, continuation lines joined (systemd replaces "\\<newline>" by a space)."""
    settings: dict[str, list[str]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def exec_argv(value: str) -> list[str]:
    """An Exec line as the argv systemd starts: words unquoted, then %% and $$ taken literally."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(value)]


def unit_environment(settings: dict[str, list[str]]) -> dict[str, str]:
    words = [w.replace("%%", "%") for value in settings.get("Environment", []) for w in shlex.split(value)]
    return dict(w.split("=", 1) for w in words)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PkiPaths:
    pki = init_pki(tmp_path_factory.mktemp("pki") / "pki")
    for site in ("hospital_a", "hospital_b"):
        add_site(pki.root, site)
    return pki


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("site") / "manifest.csv"
    path.write_text("patient_id,image_path\n")
    return path


def _hospital(pki: PkiPaths, manifest: Path, site: str, port: int, **kwargs):
    return supernode_unit(
        site,
        "link.consortium.example:9443",
        pki.ca_cert,
        pki.site_key(site),
        manifest,
        checkout=ROOT,
        port=port,
        **kwargs,
    )


@pytest.fixture(scope="module")
def units(pki, manifest, tmp_path_factory) -> dict:
    """The coordinator's two units and two hospitals' on one host, with the default folders (nothing is
    written under /var: only the proxy's nginx.conf is, in a temporary folder)."""
    proxy_state = tmp_path_factory.mktemp("proxy")
    found = {"superlink": superlink_unit(pki.root)}
    if HAS_NGINX:
        found["proxy"] = proxy_unit(pki.root, proxy_state)
    found["hospital_a"] = _hospital(pki, manifest, "hospital_a", 9094)
    found["hospital_b"] = _hospital(pki, manifest, "hospital_b", 9095, max_clientapp_seconds=900)
    return found


def test_units_pass_systemd_analyze_verify(units, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the units' syntax is checked by the other tests only")
    paths = write_units(list(units.values()), tmp_path)
    out = subprocess.run([analyze, "verify", *map(str, paths)], capture_output=True, text=True, timeout=60)
    # verify also loads the units ours pull in (network-online.target): only lines about ours count.
    ours = [line for line in (out.stdout + out.stderr).splitlines() if any(p.name in line for p in paths)]
    assert out.returncode == 0 and not ours, out.stdout + out.stderr


def test_every_path_in_the_units_is_absolute(units):
    for unit in units.values():
        settings = unit_settings(render_unit(unit))
        assert Path(settings["WorkingDirectory"][0]).is_absolute(), unit.name
        for key in ("ExecStart", "ExecStartPre", "ExecReload"):
            for value in settings.get(key, []):
                argv = exec_argv(value)
                assert Path(argv[0]).is_absolute(), (unit.name, key, argv[0])
                for arg in argv[1:]:
                    if "/" in arg and "=" not in arg and ":" not in arg:  # a path, not a host:port or node config
                        assert Path(arg).is_absolute(), (unit.name, key, arg)
                if "--node-config" in argv:
                    node_config = parse_config_args([argv[argv.index("--node-config") + 1]])
                    for key_ in ("data-path", "cache-dir"):
                        assert Path(node_config[key_]).is_absolute(), (unit.name, node_config)
        env = unit_environment(settings)
        for key in ("FLWR_HOME", "MPLCONFIGDIR"):
            if key in env:
                assert Path(env[key]).is_absolute(), (unit.name, key, env[key])
        assert all(Path(p).is_absolute() for p in env.get("PATH", "/").split(":")), env.get("PATH")
        for value in settings.get("ReadWritePaths", []):
            assert all(Path(p).is_absolute() for p in shlex.split(value)), value


def test_exec_lines_are_the_command_lines_of_deploy_launch(units, pki, manifest):
    superlink = unit_settings(render_unit(units["superlink"]))
    assert exec_argv(superlink["ExecStart"][0]) == superlink_command(
        PkiPaths(pki.root), Path("/var/lib/sarcofed/coordinator/superlink-state.db")
    )
    hospital = unit_settings(render_unit(units["hospital_b"]))
    assert exec_argv(hospital["ExecStart"][0]) == supernode_command(
        "link.consortium.example:9443",
        pki.ca_cert,
        pki.site_key("hospital_b"),
        manifest,
        site_name="hospital_b",
        runtime_port=9095,
        cache_dir=Path("/var/cache/sarcofed/hospital_b"),
        max_clientapp_seconds=900,
    )
    if "proxy" in units:
        proxy = unit_settings(render_unit(units["proxy"]))
        config = units["proxy"].working_directory / "nginx.conf"
        assert exec_argv(proxy["ExecStart"][0]) == nginx_command(config)
        assert exec_argv(proxy["ExecReload"][0]) == nginx_command(config, reload=True)


@pytest.mark.skipif(not HAS_NGINX, reason="nginx not installed")
def test_the_proxy_unit_checks_its_config_before_it_starts(units):
    check = exec_argv(unit_settings(render_unit(units["proxy"]))["ExecStartPre"][0])
    assert check[-2:] == ["-t", "-q"]
    out = subprocess.run(check, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    "text",
    ["plain", "50%", "$HOME", 'say "hi"', "a b", "back\\slash", "it's", 'k="v w" x=1'],
    ids=["plain", "percent", "dollar", "quotes", "space", "backslash", "apostrophe", "node-config"],
)
def test_a_word_survives_systemd_quoting(text):
    assert exec_argv(systemd_word(text)) == [text]


def test_two_supernodes_on_one_host_keep_apart(units):
    a, b = units["hospital_a"], units["hospital_b"]
    assert a.name != b.name
    assert a.environment["FLWR_HOME"] != b.environment["FLWR_HOME"]
    assert set(a.writable).isdisjoint(b.writable)
    ports = [u.command[u.command.index("--port") + 1] for u in (a, b)]
    assert ports[0] != ports[1]


def test_flower_units_keep_telemetry_updates_and_installs_off(units):
    for name in ("superlink", "hospital_a", "hospital_b"):
        env = unit_environment(unit_settings(render_unit(units[name])))
        assert {k: env[k] for k in FLOWER_OFF} == FLOWER_OFF, name
        assert env["FLWR_HOME"].endswith("/flwr_home"), env


def test_units_restart_on_failure_as_one_user_with_hardening(units):
    for unit in units.values():
        settings = {k: v[-1] for k, v in unit_settings(render_unit(unit)).items()}
        assert settings["Restart"] == "on-failure" and int(settings["RestartSec"]) >= 5
        assert settings["User"] == "sarcofed" == settings["Group"]
        for key, value in (
            ("NoNewPrivileges", "yes"),
            ("PrivateTmp", "yes"),
            ("ProtectSystem", "strict"),
            ("CapabilityBoundingSet", ""),
        ):
            assert settings[key] == value, (unit.name, key)
    superlink = unit_settings(render_unit(units["superlink"]))
    assert superlink["StateDirectory"] == ["sarcofed/coordinator"]  # made by systemd, owned by User=
    assert superlink["KillSignal"] == ["SIGINT"]  # a SuperLink with a streaming client ignores SIGTERM
    hospital = unit_settings(render_unit(units["hospital_a"]))
    assert hospital["StateDirectory"] == ["sarcofed/hospital_a"] and hospital["CacheDirectory"] == [
        "sarcofed/hospital_a"
    ]
    assert "PrivateDevices" not in hospital  # GPU hospitals need /dev/nvidia*


def test_folders_outside_var_are_writable_and_listed_to_create(pki, tmp_path):
    unit = superlink_unit(pki.root, tmp_path / "state", runs_dir=Path("/srv/sarcofed/runs"))
    settings = unit_settings(render_unit(unit))
    assert settings["ReadWritePaths"] == [f"{tmp_path / 'state'} /srv/sarcofed/runs"]
    assert "StateDirectory" not in settings
    assert prepare_commands([unit]) == [
        f"install -d -o sarcofed -g sarcofed -m 0750 {tmp_path / 'state'}",
        "install -d -o sarcofed -g sarcofed -m 0750 /srv/sarcofed/runs",
    ]


def test_the_command_writes_both_sides_and_says_how_to_start_them(pki, manifest, tmp_path):
    runner = CliRunner()
    coordinator = [
        "services",
        "coordinator",
        str(pki.root),
        "--out",
        str(tmp_path / "units"),
        "--proxy-state-dir",
        str(tmp_path / "proxy"),
        "--user",
        "flower",
    ]
    if not HAS_NGINX:
        pytest.skip("nginx not installed: the proxy unit needs its path")
    result = runner.invoke(deploy_app, coordinator)
    assert result.exit_code == 0, result.output
    assert "systemctl enable --now sarcofed-superlink.service sarcofed-proxy.service" in result.stdout
    assert "journalctl -u sarcofed-superlink.service" in result.stdout
    assert (tmp_path / "proxy" / "nginx.conf").is_file()
    assert "User=flower" in (tmp_path / "units" / SUPERLINK_UNIT).read_text()
    hospital = [
        "services",
        "hospital",
        "--superlink",
        "link:9443",
        "--ca",
        str(pki.ca_cert),
        "--key",
        str(pki.site_key("hospital_a")),
        "--data-path",
        str(manifest),
        "--site-name",
        "hospital_a",
        "--port",
        "9111",
        "--out",
        str(tmp_path / "units"),
    ]
    result = runner.invoke(deploy_app, hospital)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "units" / "sarcofed-supernode-hospital_a.service").read_text()
    assert "--max-clientapp-seconds 3600" in text and "--port 9111" in text
    bad_name = [("a b" if arg == "hospital_a" else arg) for arg in hospital[:-1]] + [str(tmp_path / "other")]
    result = runner.invoke(deploy_app, bad_name)
    assert result.exit_code != 0 and not (tmp_path / "other").exists()


def test_the_superlink_unit_starts_as_written(pki, tmp_path):
    """ExecStart with the unit's Environment and WorkingDirectory (made first, as systemd's StateDirectory=)."""
    port = free_port()
    unit = superlink_unit(pki.root, tmp_path / "state", port=port)
    settings = unit_settings(render_unit(unit))
    workdir = Path(settings["WorkingDirectory"][0])
    workdir.mkdir(parents=True)
    superlink = start(
        "superlink-unit",
        exec_argv(settings["ExecStart"][0]),
        unit_environment(settings),
        tmp_path / "logs",
        cwd=workdir,
    )
    try:
        assert wait_for_log(superlink, "Uvicorn running", 60), superlink.log_text()[-3000:]
        assert https_ok(f"https://127.0.0.1:{port}/health", pki.ca_cert) == 200
        assert (workdir / "superlink-state.db").is_file()
    finally:
        stop_all([superlink])


# -- deploy/docker/compose.yaml -----------------------------------------------------------------------


def _dockerfile_entrypoint(name: str) -> list[str]:
    text = (DOCKER / name).read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ENTRYPOINT"))
    return json.loads(line.split(None, 1)[1])


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_restarts_every_service_in_its_own_working_directory(compose):
    services = compose["services"]
    assert {"superlink", "proxy", "hospital_a", "hospital_b", "hospital_c"} <= set(services)
    for name, service in services.items():
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name
        assert str(service.get("working_dir", "")).startswith("/"), name
        assert service.get("logging", {}).get("options", {}).get("max-size"), name


def test_compose_gives_each_flower_service_its_own_flwr_home_volume(compose):
    homes = {}
    for name, service in compose["services"].items():
        if name == "proxy":
            continue
        home = service["environment"]["FLWR_HOME"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        volume = next(source for target, source in mounts.items() if home.startswith(target + "/"))
        assert volume in compose["volumes"], (name, volume)  # a named volume: state outlives the container
        homes[name] = volume
    assert len(set(homes.values())) == len(homes), homes


def test_compose_runs_the_programs_and_flags_of_deploy_launch(compose, pki, manifest):
    """The SuperNode containers run deploy.supernode_main with supernode_command's flags and node-config keys;
    the SuperLink container flower-superlink with superlink_command's flags."""
    expected = supernode_command(
        "proxy:9443",
        pki.ca_cert,
        pki.site_key("hospital_a"),
        manifest,
        site_name="a",
        cache_dir=Path("/state/cache"),
        max_clientapp_seconds=3600,
    )
    entry = _dockerfile_entrypoint("Dockerfile.supernode")
    assert entry[1:3] == expected[1:3] == ["-m", "deploy.supernode_main"]
    for name in ("hospital_a", "hospital_b", "hospital_c"):
        argv = [*entry, *compose["services"][name]["command"]]
        assert sorted(a for a in argv if a.startswith("--")) == sorted(a for a in expected if a.startswith("--")), name
        node_config = parse_config_args([argv[argv.index("--node-config") + 1]])
        assert node_config["site-name"] == name and set(node_config) == {"data-path", "site-name", "cache-dir"}
        assert argv[argv.index("--host") + 1] == "127.0.0.1"
    text = (DOCKER / "Dockerfile.superlink").read_text().replace("\\\n", " ")
    cmd = json.loads(next(line for line in text.splitlines() if line.startswith("CMD")).split(None, 1)[1])
    argv = [*_dockerfile_entrypoint("Dockerfile.superlink"), *cmd]
    flags = sorted(a for a in superlink_command(pki, Path("/state/db")) if a.startswith("--"))
    assert Path(argv[0]).name == "flower-superlink" and sorted(a for a in argv if a.startswith("--")) == flags
    database = argv[argv.index("--database") + 1]
    assert database.startswith(compose["services"]["superlink"]["working_dir"] + "/")  # on the state volume
