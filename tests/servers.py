"""Private server processes for tests: Mosquitto, VictoriaMetrics and InfluxDB 1.x on free loopback ports.

Each server runs from its Debian binary with its own data directory and log
file, on ports chosen at construction and kept across restarts, so a test can
stop a broker or database and bring it back where its clients expect it.
tests/conftest.py turns these into fixtures.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import pytest

HOST = "127.0.0.1"

# Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# Loopback HTTP must never go through a proxy taken from http_proxy and friends.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MissingBinary(RuntimeError):
    """A server binary is not installed; names the Debian package that provides it."""

    def __init__(self, binary: str, package: str):
        super().__init__(f"{binary} not found on PATH or in {', '.join(_SBIN_DIRS)}: "
                         f"install Debian package {package} (apt-get install {package})")
        self.binary, self.package = binary, package


class ServerError(RuntimeError):
    """A server did not start, died, or answered an HTTP request with an error."""


def find_binary(binary: str, package: str, path: str | None = None) -> str:
    """Absolute path of a server binary, searching PATH then the sbin directories."""
    search = os.pathsep.join(filter(None, [path if path is not None else os.environ.get("PATH", ""),
                                           *_SBIN_DIRS]))
    found = shutil.which(binary, path=search)
    if found is None:
        raise MissingBinary(binary, package)
    return found


def require_binary(binary: str, package: str, environ: Mapping[str, str] | None = None,
                   path: str | None = None) -> str:
    """Path of a server binary; if it is missing, fail the test under CI=true and skip it otherwise."""
    environ = os.environ if environ is None else environ
    try:
        return find_binary(binary, package, path)
    except MissingBinary as exc:
        if environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(f"{binary} not installed: install Debian package {package} (apt-get install {package})")


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (the kernel's choice of an ephemeral port)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Return once a TCP connect to host:port succeeds; raise ServerError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ServerError(f"nothing listens on {host}:{port} after {timeout_s} s: {exc}") from None
            time.sleep(0.02)


def http_request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                 timeout_s: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of one HTTP request; HTTP error statuses are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _http.open(req, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _probe_http(url: str, status: int) -> bool:
    try:
        return http_request("GET", url, timeout_s=1.0)[0] == status
    except OSError:
        return False


# MQTT 3.1.1 CONNECT with an empty client id and a clean session, and the CONNACK that accepts it.
_MQTT_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
_MQTT_CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
_MQTT_DISCONNECT = b"\xe0\x00"


def _probe_mqtt(host: str, port: int) -> bool:
    """True when an MQTT broker accepts a connection on host:port (not merely a TCP listener)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(_MQTT_CONNECT)
            reply = b""
            while len(reply) < 4:
                chunk = s.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            s.sendall(_MQTT_DISCONNECT)
            return reply == _MQTT_CONNACK_ACCEPTED
    except OSError:
        return False


class ServerProcess:
    """One server child process: start and wait until ready, stop (terminate, wait, kill on timeout).

    Subclasses give the command line and the readiness probe. Ports are chosen
    once and kept, so restart() brings the server back at the same address;
    only when the very first start fails (another process took the port in the
    meantime) are new ports chosen and the start retried.
    """

    name = "server"
    start_timeout_s = 30.0
    stop_timeout_s = 10.0
    _first_start_attempts = 3

    def __init__(self, binary: str, workdir: Path, shared: bool = False):
        self.binary, self.workdir, self.shared = binary, Path(workdir), shared
        self.host = HOST
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen | None = None
        self._starts = 0
        self._pick_ports()

    # -- for subclasses

    def _pick_ports(self) -> None:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    # -- lifecycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id (for CPU accounting in benchmarks)."""
        if self._proc is None:
            raise ServerError(f"{self.name} is not started")
        return self._proc.pid

    @property
    def died(self) -> bool:
        """True when the process exited although nobody stopped it."""
        return self._proc is not None and self._proc.poll() is not None

    def start(self) -> "ServerProcess":
        if self.running:
            raise ServerError(f"{self.name} is already running on {self.host}")
        attempts = self._first_start_attempts if self._starts == 0 else 1
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return self
            except ServerError:
                if attempt == attempts:
                    raise
                self._pick_ports()
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self._starts += 1
        argv = self._argv()
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self._starts}: {shlex.join(argv)}\n".encode())
            log.flush()
            # A session of its own: a Ctrl-C in pytest does not reach the server before teardown does.
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=self.workdir, env=self._env(), start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            rc = self._proc.poll()
            if rc is not None:
                self._proc = None
                raise ServerError(f"{self.name} exited with status {rc} while starting; "
                                  f"{self.log_path} ends with:\n{self.log_tail()}")
            if self._ready() and self._proc.poll() is None:
                return
            if time.monotonic() > deadline:
                self._terminate()
                raise ServerError(f"{self.name} not ready after {self.start_timeout_s} s; "
                                  f"{self.log_path} ends with:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (it keeps its ports and data directory for start())."""
        if self.shared:
            raise ServerError(f"{self.name} is shared by the whole session; use the function-scoped "
                              f"fixture to stop or restart a server")
        self._terminate()

    def restart(self) -> "ServerProcess":
        self.stop()
        return self.start()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop for good (fixture teardown); allowed on shared servers too."""
        self._terminate()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class Mosquitto(ServerProcess):
    """Mosquitto 2.0 on a private loopback port: anonymous, no persistence, generous queues.

    With persistence off a restart loses retained messages and sessions, like a
    broker that crashed and came back empty.
    """

    name = "mosquitto"

    def _pick_ports(self) -> None:
        self.port = free_port(self.host)

    def _argv(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join([
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            # Tests publish bursts faster than a slow subscriber reads; don't drop QoS 1 messages.
            "max_queued_messages 100000",
            "max_inflight_messages 0",  # 0 = no limit (mosquitto.conf(5), 2.0)
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "",
        ]))
        return [self.binary, "-c", str(conf)]

    def _ready(self) -> bool:
        return _probe_mqtt(self.host, self.port)


class VictoriaMetrics(ServerProcess):
    """Single-node VictoriaMetrics (1.79) on a private port; accepts InfluxDB line protocol.

    Line protocol `m,lane=l1 f=1` becomes series `m_f{lane="l1"}`; timestamps
    are kept in milliseconds. Data survives stop()/start() (same data dir).
    """

    name = "victoria-metrics"

    def __init__(self, binary: str, workdir: Path, shared: bool = False):
        super().__init__(binary, workdir, shared)
        self.data_dir = self.workdir / "data"

    def _pick_ports(self) -> None:
        self.port = free_port(self.host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _argv(self) -> list[str]:
        return [self.binary, f"-httpListenAddr={self.host}:{self.port}", f"-storageDataPath={self.data_dir}",
                "-retentionPeriod=100y",
                # Queries see the newest samples at once instead of 30 s later, and never a stale cache.
                "-search.latencyOffset=0s", "-search.disableCache"]

    def _ready(self) -> bool:
        return _probe_http(f"{self.url}/health", 200)

    def write(self, lines: str | Iterable[str], precision: str = "ns") -> None:
        """Write InfluxDB line protocol through /write."""
        body = (lines if isinstance(lines, str) else "\n".join(lines)).encode()
        status, reply = http_request("POST", f"{self.url}/write?precision={precision}", body)
        if status != 204:
            raise ServerError(f"victoria-metrics /write answered {status}: {reply[:500]!r}")

    def flush(self) -> None:
        status, reply = http_request("GET", f"{self.url}/internal/force_flush")
        if status != 200:
            raise ServerError(f"victoria-metrics /internal/force_flush answered {status}: {reply[:500]!r}")

    def export(self, match: str = '{__name__!=""}', *,
               until: Callable[[list[dict]], bool] | None = None, timeout_s: float = 5.0,
               end: float | None = None) -> list[dict]:
        """Series matching `match` from /api/v1/export: [{"metric": {...}, "values": [...], "timestamps": [...]}].

        VictoriaMetrics 1.79 shows freshly written samples about a second after
        the write, even after /internal/force_flush, so this polls until
        `until(series)` holds (by default: at least one series) or timeout_s
        passes, and returns the last answer either way. Pass
        `until=lambda series: True` to read once. `end` (Unix seconds) reaches past
        now, for samples stamped by a clock that runs ahead (VictoriaMetrics stops at now by default).
        """
        until = until or bool
        deadline = time.monotonic() + timeout_s
        while True:
            self.flush()
            query = urllib.parse.urlencode({"match[]": match, **({"end": f"{end:.3f}"} if end else {})})
            status, reply = http_request("GET", f"{self.url}/api/v1/export?{query}")
            if status != 200:
                raise ServerError(f"victoria-metrics export of {match} answered {status}: {reply[:500]!r}")
            series = [json.loads(line) for line in reply.splitlines() if line.strip()]
            if until(series) or time.monotonic() > deadline:
                return series
            time.sleep(0.05)


class InfluxDB1(ServerProcess):
    """InfluxDB 1.x (Debian's 1.6) with its own config, data dirs and two private ports (HTTP and RPC)."""

    name = "influxd"

    def _pick_ports(self) -> None:
        self.port = free_port(self.host)
        self.rpc_port = free_port(self.host)
        while self.rpc_port == self.port:
            self.rpc_port = free_port(self.host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _env(self) -> dict[str, str]:
        # influxd lets INFLUXDB_* variables override its config file; keep the test config authoritative.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _argv(self) -> list[str]:
        d = self.workdir
        conf = d / "influxdb.conf"
        conf.write_text(f"""\
reporting-enabled = false
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d / 'meta'}"
  logging-enabled = false

[data]
  dir = "{d / 'data'}"
  wal-dir = "{d / 'wal'}"
  index-version = "inmem"
  wal-fsync-delay = "0s"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  unix-socket-enabled = false

[logging]
  level = "info"
  suppress-logo = true

[subscriber]
  enabled = false

[ifql]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
""")
        return [self.binary, "-config", str(conf)]

    def _ready(self) -> bool:
        return _probe_http(f"{self.url}/ping", 204)

    def query(self, q: str, db: str | None = None, epoch: str = "ns") -> dict:
        """Run InfluxQL; return the decoded JSON. Raise ServerError for an HTTP or statement error."""
        form = {"q": q, "epoch": epoch, **({"db": db} if db else {})}
        status, reply = http_request("POST", f"{self.url}/query", urllib.parse.urlencode(form).encode(),
                                     {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise ServerError(f"influxd query {q!r} on {db!r} answered {status}: {reply[:500]!r}")
        result = json.loads(reply)
        errors = [r["error"] for r in result.get("results", []) if "error" in r]
        if "error" in result or errors:
            raise ServerError(f"influxd query {q!r} on {db!r} failed: {result.get('error') or errors}")
        return result

    def write(self, lines: str | Iterable[str], db: str, precision: str = "ns") -> None:
        """Write line protocol to database db; raise ServerError unless influxd answers 204."""
        body = (lines if isinstance(lines, str) else "\n".join(lines)).encode()
        query = urllib.parse.urlencode({"db": db, "precision": precision})
        status, reply = http_request("POST", f"{self.url}/write?{query}", body)
        if status != 204:
            raise ServerError(f"influxd write to {db!r} answered {status}: {reply[:500]!r}")

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')


def serve(cls: type, binary: str, package: str, workdir: Path, shared: bool = False) -> Iterator:
    """Start a private server, yield it, stop it; fail the test if the server died under it."""
    server = cls(require_binary(binary, package), workdir, shared=shared)
    server.start()
    try:
        yield server
    finally:
        died = server.died
        server.close()
        if died:
            pytest.fail(f"{server.name} died during the test; {server.log_path} ends with:\n{server.log_tail()}",
                        pytrace=False)
