"""Secrets and TLS files in the site config: read from files only their owner can read, paths relative to
the config file, and a refusal that says what is wrong and how to fix it, through `orelane config check`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orelane.config import ConfigError, load

REPO = Path(__file__).resolve().parents[2]
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIGHdummy-key-material\n-----END PRIVATE KEY-----\n"
ENCRYPTED_KEY_PEM = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHz\n-----END ENCRYPTED PRIVATE KEY-----\n"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def site_file(directory: Path, mqtt: dict[str, str] | None = None, influx: dict[str, str] | None = None) -> Path:
    """A one-lane site file; mqtt and influx hold extra keys of those sections."""
    def section(name: str, values: dict[str, str]) -> str:
        return f"[{name}]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())

    text = '[site]\nid = "port-a"\n\n' + section("mqtt", {"host": "broker.lan", "username": "port-a-ingest",
                                                            **(mqtt or {})})
    if influx is not None:
        text += "\n" + section("influx", {"url": "https://influx.lan:8086", **influx})
    text += ('\n[[lane]]\nid = "lane-1"\nbelt_scale = { host = "10.0.0.10", port = 502 }\n'
             'robot = { host = "10.0.0.11", port = 502 }\n')
    return write(directory / "site.toml", text, 0o644)


def tls_files(directory: Path, key_mode: int = 0o600, key_text: str = KEY_PEM) -> dict[str, str]:
    """CA, client certificate and key under directory/tls, named relative to directory."""
    write(directory / "tls" / "ca.crt", CERT_PEM, 0o644)
    write(directory / "tls" / "client.crt", CERT_PEM, 0o644)
    write(directory / "tls" / "client.key", key_text, key_mode)
    return {"tls_ca_file": "tls/ca.crt", "tls_cert_file": "tls/client.crt", "tls_key_file": "tls/client.key"}


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as failure:
        load(path, environ={})
    return str(failure.value)


# ---------------------------------------------------------------- TLS keys of [mqtt]


def test_tls_files_are_found_relative_to_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    mqtt = load(site_file(tmp_path, mqtt=tls_files(tmp_path)), environ={}).mqtt
    assert mqtt.tls
    assert (mqtt.tls_ca_file, mqtt.tls_cert_file, mqtt.tls_key_file) == \
        (tmp_path / "tls" / "ca.crt", tmp_path / "tls" / "client.crt", tmp_path / "tls" / "client.key")
    assert "MIGH" not in repr(mqtt)


def test_tls_with_a_ca_only_needs_no_client_certificate(tmp_path):
    write(tmp_path / "ca.crt", CERT_PEM, 0o644)
    mqtt = load(site_file(tmp_path, mqtt={"tls_ca_file": "ca.crt"}), environ={}).mqtt
    assert mqtt.tls and mqtt.tls_cert_file is None and mqtt.tls_key_file is None


def test_without_tls_keys_the_connection_is_plain(tmp_path):
    mqtt = load(site_file(tmp_path), environ={}).mqtt
    assert not mqtt.tls and mqtt.tls_ca_file is None


@pytest.mark.parametrize("left_out,expected", [
    ("tls_key_file", "root.mqtt.tls_cert_file is set but tls_key_file is not; a client certificate needs both"),
    ("tls_cert_file", "root.mqtt.tls_key_file is set but tls_cert_file is not; a client certificate needs both"),
    ("tls_ca_file", "root.mqtt.tls_cert_file is set but tls_ca_file is not; TLS is on only with tls_ca_file"),
])
def test_incomplete_tls_settings_are_refused(tmp_path, left_out, expected):
    mqtt = tls_files(tmp_path)
    del mqtt[left_out]
    assert expected in refusal(site_file(tmp_path, mqtt=mqtt))


def test_missing_tls_file_is_refused_naming_key_and_path(tmp_path):
    mqtt = {**tls_files(tmp_path), "tls_ca_file": "tls/absent.crt"}
    message = refusal(site_file(tmp_path, mqtt=mqtt))
    assert f"root.mqtt.tls_ca_file = 'tls/absent.crt': cannot read {tmp_path / 'tls' / 'absent.crt'}" in message
    assert "No such file" in message


@pytest.mark.parametrize("key_text,expected", [
    (CERT_PEM, "is not PEM (no 'PRIVATE KEY-----' line)"),  # certificate and key swapped
    (ENCRYPTED_KEY_PEM, "is passphrase-protected; the daemons cannot prompt for it"),
])
def test_unusable_private_key_is_refused(tmp_path, key_text, expected):
    message = refusal(site_file(tmp_path, mqtt=tls_files(tmp_path, key_text=key_text)))
    assert "root.mqtt.tls_key_file = 'tls/client.key'" in message and expected in message


def test_a_key_as_ca_file_is_refused(tmp_path):
    mqtt = {**tls_files(tmp_path), "tls_ca_file": "tls/client.key"}
    assert "root.mqtt.tls_ca_file = 'tls/client.key'" in refusal(site_file(tmp_path, mqtt=mqtt))


# ---------------------------------------------------------------- `orelane config check` refuses readable secrets

SECRET_TEXT = "hunter2-secret"


def secret_setting(directory: Path, kind: str, mode: int) -> tuple[Path, Path, str]:
    """(site file, secret file, its key) for one kind of secret written with `mode`."""
    if kind == "tls_key_file":
        mqtt = tls_files(directory, key_mode=mode, key_text=KEY_PEM.replace("dummy-key-material", SECRET_TEXT))
        return site_file(directory, mqtt=mqtt), directory / "tls" / "client.key", "root.mqtt.tls_key_file"
    secret = write(directory / "secrets" / kind, SECRET_TEXT + "\n", mode)
    if kind == "password_file":
        return site_file(directory, mqtt={"password_file": "secrets/password_file"}), secret, "root.mqtt.password_file"
    return (site_file(directory, influx={"token_file": "secrets/token_file"}), secret, "root.influx.token_file")


def config_check(site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORELANE_")}  # no secret from the environment
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "orelane.cli", "config", "check", str(site)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


KINDS = ["password_file", "token_file", "tls_key_file"]


@pytest.mark.parametrize("mode,shown", [(0o644, "-rw-r--r--"), (0o640, "-rw-r-----")],
                         ids=["world-readable", "group-readable"])
@pytest.mark.parametrize("kind", KINDS)
def test_config_check_refuses_a_secret_file_others_can_read_and_says_how_to_fix_it(tmp_path, kind, mode, shown):
    site, secret, key = secret_setting(tmp_path / "etc", kind, mode)
    done = config_check(site.relative_to(tmp_path), cwd=tmp_path)  # a relative config path, run from elsewhere
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("orelane: configuration error: etc/site.toml: ")
    assert f"{key} = " in done.stderr
    assert f"mode {shown} lets others read it; run chmod 600 {secret}" in done.stderr
    assert SECRET_TEXT not in done.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_config_check_accepts_the_same_secret_file_after_chmod_600(tmp_path, kind):
    site, _, _ = secret_setting(tmp_path, kind, 0o600)
    done = config_check(site, cwd=Path("/"))
    assert done.returncode == 0, done.stderr
    assert "site port-a, lanes ['lane-1']" in done.stdout and SECRET_TEXT not in done.stdout
