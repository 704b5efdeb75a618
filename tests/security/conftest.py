"""A Mosquitto broker the way docs/security.md sets one up: TLS, passwords, the site's access list.

Fixtures:

    pki                 certificates made for this run with the openssl CLI: a CA, the broker's
                        certificate for 127.0.0.1, a client certificate, and a rogue CA with its own
                        client certificate (for refusals)
    secure_site         the SiteConfig of two lanes whose ACL the brokers load
    tls_broker          Mosquitto with TLS, password_file and acl_file; client certificate optional
    tls_broker_certs    the same with require_certificate true

Each broker is shared by the tests of one module; tests use their own client ids.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from orelane.config import MqttConfig, SiteConfig, parse
from orelane.mosquitto_acl import acl_file_text, site_grants
from tests.servers import Mosquitto, ServerError, require_binary

SITE_ID = "port-a"
LANES = ("lane-1", "lane-2")
PROBE_USER = "readiness-probe"  # in the password file, not in the ACL: may connect, may do nothing


def password_of(username: str) -> str:
    return f"pw-{username}"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def _ec_key_args(key: Path) -> list[str]:
    # P-256 keys: generated in milliseconds, unlike RSA.
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]


def _make_ca(d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    _openssl("req", "-x509", *_ec_key_args(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)
    return cert, key


def _make_leaf(d: Path, name: str, ca: tuple[Path, Path], *extensions: str) -> tuple[Path, Path]:
    """A certificate signed by `ca` (openssl 3.0 `req -x509 -CA`), with mode-600 key."""
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    ext_args = [a for ext in ("basicConstraints=critical,CA:FALSE", *extensions) for a in ("-addext", ext)]
    _openssl("req", "-x509", *_ec_key_args(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
             "-CA", str(ca[0]), "-CAkey", str(ca[1]), *ext_args, cwd=d)
    key.chmod(0o600)
    return cert, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    require_binary("openssl", "openssl")
    d = tmp_path_factory.mktemp("pki")
    ca = _make_ca(d, "orelane-test-ca")
    # Named for 127.0.0.1 only, so connecting by the name "localhost" shows the hostname check at work.
    server = _make_leaf(d, "broker", ca, "subjectAltName=IP:127.0.0.1", "extendedKeyUsage=serverAuth")
    client = _make_leaf(d, "client", ca, "extendedKeyUsage=clientAuth")
    rogue_ca = _make_ca(d, "rogue-ca")
    rogue_client = _make_leaf(d, "rogue-client", rogue_ca, "extendedKeyUsage=clientAuth")
    return Pki(ca[0], *server, *client, rogue_ca[0], *rogue_client)


@pytest.fixture(scope="session")
def secure_site() -> SiteConfig:
    lanes = [{"id": lane, "belt_scale": {"host": "10.0.0.10", "port": 502},
              "robot": {"host": "10.0.0.11", "port": 502}} for lane in LANES]
    return parse({"site": {"id": SITE_ID}, "lane": lanes}, "<security tests>", environ={})


class SecureMosquitto(Mosquitto):
    """Mosquitto with a TLS listener only, no anonymous clients, a password file and the site's ACL."""

    name = "mosquitto-tls"

    def __init__(self, binary: str, workdir: Path, pki: Pki, password_file: Path, acl_file: Path,
                 require_certificate: bool):
        self.pki, self.password_file, self.acl_file = pki, password_file, acl_file
        self.require_certificate = require_certificate
        super().__init__(binary, workdir)

    def _argv(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            "persistence false",
            f"listener {self.port} {self.host}",
            f"cafile {self.pki.ca}",
            f"certfile {self.pki.server_cert}",
            f"keyfile {self.pki.server_key}",
            "tls_version tlsv1.2",
            f"require_certificate {'true' if self.require_certificate else 'false'}",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto would drop to the mosquitto user, which cannot read pytest's 0700 tmp dirs.
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        return [self.binary, "-c", str(conf)]

    def _ready(self) -> bool:
        """True once an MQTT CONNECT over TLS as the probe user is accepted."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        user, password = PROBE_USER.encode(), password_of(PROBE_USER).encode()
        body = (b"\x00\x04MQTT\x04\xc2\x00\x3c" + b"\x00\x00"
                + len(user).to_bytes(2, "big") + user + len(password).to_bytes(2, "big") + password)
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as raw, \
                    context.wrap_socket(raw, server_hostname=self.host) as s:
                s.sendall(b"\x10" + bytes([len(body)]) + body)
                reply = s.recv(4)
                s.sendall(b"\xe0\x00")
                return reply == b"\x20\x02\x00\x00"
        except OSError:
            return False

    def config(self, username: str, *, with_certificate: bool = True, password: str | None = None,
               ca: Path | None = None, host: str | None = None,
               certificate: tuple[Path, Path] | None = None) -> MqttConfig:
        """The [mqtt] settings a client of this broker would load (the test CA's client certificate by default)."""
        cert = (certificate or (self.pki.client_cert, self.pki.client_key)) if with_certificate else (None, None)
        return MqttConfig(host=host or self.host, port=self.port, username=username,
                          password=password_of(username) if password is None else password,
                          tls_ca_file=ca or self.pki.ca, tls_cert_file=cert[0], tls_key_file=cert[1])


def _password_file(d: Path, usernames: list[str]) -> Path:
    """A Mosquitto password file made the documented way: plain `user:password` lines, hashed by mosquitto_passwd -U."""
    tool = require_binary("mosquitto_passwd", "mosquitto")
    path = d / "passwd"
    path.write_text("".join(f"{u}:{password_of(u)}\n" for u in usernames))
    path.chmod(0o600)
    subprocess.run([tool, "-U", str(path)], check=True, capture_output=True)
    assert "pw-" not in path.read_text(), "mosquitto_passwd -U left a clear-text password"
    return path


def _serve_secure(tmp_path_factory, pki: Pki, site: SiteConfig, require_certificate: bool
                  ) -> Iterator[SecureMosquitto]:
    binary = require_binary("mosquitto", "mosquitto")
    d = tmp_path_factory.mktemp("mosquitto-tls")
    grants = site_grants(site)
    password_file = _password_file(d, [g.username for g in grants] + [PROBE_USER])
    acl_file = d / "acl"
    acl_file.write_text(acl_file_text(grants, site.source))
    broker = SecureMosquitto(binary, d, pki, password_file, acl_file, require_certificate)
    broker.start()
    try:
        yield broker
    finally:
        died = broker.died
        broker.close()
        if died:
            raise ServerError(f"{broker.name} died during the tests; {broker.log_path} ends with:\n"
                              f"{broker.log_tail()}")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, pki, secure_site) -> Iterator[SecureMosquitto]:
    yield from _serve_secure(tmp_path_factory, pki, secure_site, require_certificate=False)


@pytest.fixture(scope="module")
def tls_broker_certs(tmp_path_factory, pki, secure_site) -> Iterator[SecureMosquitto]:
    yield from _serve_secure(tmp_path_factory, pki, secure_site, require_certificate=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that start a secure broker like those using tests/conftest.py's mosquitto fixtures."""
    for item in items:
        if {"tls_broker", "tls_broker_certs"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mosquitto)
