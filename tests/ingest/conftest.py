"""Fixtures for ingest: a small HTTP peer that answers like InfluxDB (to force 400/413/429/503), a broker with
persistence, a VictoriaMetrics that keeps one sample per series and timestamp (InfluxDB's rule), site configs and a
publisher of spectrum-result batches."""

from __future__ import annotations

import getpass
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from orelane import config as config_mod
from orelane.config import SiteConfig
from orelane.contract import messages as m, topics
from tests.servers import HOST, Mosquitto, VictoriaMetrics, free_port, serve

SITE = "port-t"


# ------------------------------------------------------------------ an HTTP peer that answers like InfluxDB

@dataclass
class Answer:
    status: int = 204
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    accepted: list[bytes] | None = None  # lines the "database" keeps; None: all on 2xx, none otherwise


Behaviour = Callable[[int, list[bytes]], Answer]


class FakeInflux:
    """A real HTTP server on a free port speaking the InfluxDB v2 write API, scripted by a behaviour."""

    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.accepted: list[bytes] = []
        self.requests: list[tuple[float, int, int]] = []  # (monotonic time, lines, status)
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                path = urllib.parse.urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                lines = body.split(b"\n") if body else []
                with fake.lock:
                    answer = fake.behaviour(len(fake.requests), lines)
                    if path.path != "/api/v2/write":
                        answer = Answer(404, b'{"code":"not found","message":"path not found"}')
                    fake.requests.append((time.monotonic(), len(lines), answer.status))
                    kept = answer.accepted if answer.accepted is not None else (
                        lines if 200 <= answer.status < 300 else [])
                    fake.accepted.extend(kept)
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                if answer.body:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_influx() -> Iterator[Callable[[Behaviour], FakeInflux]]:
    started: list[FakeInflux] = []

    def start(behaviour: Behaviour) -> FakeInflux:
        server = FakeInflux(behaviour)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def influxdb2(bad: bytes) -> Behaviour:
    """InfluxDB 2.x: a batch with a bad line is refused whole; 400 names the first bad line (1-based)."""
    def answer(_, lines):
        for i, line in enumerate(lines, 1):
            if bad in line:
                message = f"unable to parse '{line.decode()}': invalid field format"
                return Answer(400, json.dumps({"code": "invalid", "message": message, "line": i}).encode())
        return Answer(204)
    return answer


def influxdb3(bad: bytes) -> Behaviour:
    """InfluxDB 3: the good lines are written; 400 lists every bad line (1-based)."""
    def answer(_, lines):
        errors = [{"original_line": line.decode(), "line_number": i, "error_message": "invalid column type"}
                  for i, line in enumerate(lines, 1) if bad in line]
        if not errors:
            return Answer(204)
        good = [line for line in lines if bad not in line]
        return Answer(400, json.dumps({"error": "partial write of line protocol occurred", "data": errors}).encode(),
                      accepted=good)
    return answer


def unhelpful(bad: bytes) -> Behaviour:
    """A database that refuses a batch with a bad line and does not say which one."""
    def answer(_, lines):
        if any(bad in line for line in lines):
            return Answer(400, b'{"code":"invalid","message":"bad request"}')
        return Answer(204)
    return answer


# ------------------------------------------------------------------ servers with the settings ingest relies on

class DurableMosquitto(Mosquitto):
    """Mosquitto with persistence: sessions and queued QoS 1 messages survive a restart (saved on shutdown)."""

    def _argv(self) -> list[str]:
        argv = super()._argv()
        conf = self.workdir / "mosquitto.conf"
        # user: mosquitto started as root drops to user "mosquitto", who cannot write the test's directory
        text = conf.read_text().replace("persistence false",
                                        f"persistence true\npersistence_location {self.workdir}/\n"
                                        f"autosave_interval 1\nuser {getpass.getuser()}")
        conf.write_text(text)
        return argv


class DedupVictoriaMetrics(VictoriaMetrics):
    """VictoriaMetrics keeping one sample per series and millisecond, as InfluxDB keeps one point per series and
    timestamp: a redelivered batch then counts once."""

    def _argv(self) -> list[str]:
        return super()._argv() + ["-dedup.minScrapeInterval=1ms"]


def _serve(cls: type, binary: str, package: str, tmp_path_factory) -> Iterator:
    """Like tests/conftest.py's fixtures: start on free ports, fail the test if the server died under it."""
    yield from serve(cls, binary, package, tmp_path_factory.mktemp(cls.__name__))


@pytest.fixture
def durable_mosquitto(tmp_path_factory) -> Iterator[DurableMosquitto]:
    """A private Mosquitto with persistence on; .restart() keeps sessions and queued messages."""
    yield from _serve(DurableMosquitto, "mosquitto", "mosquitto", tmp_path_factory)


@pytest.fixture
def victoria_metrics_dedup(tmp_path_factory) -> Iterator[DedupVictoriaMetrics]:
    """A private VictoriaMetrics that keeps one sample per series and millisecond."""
    yield from _serve(DedupVictoriaMetrics, "victoria-metrics", "victoria-metrics", tmp_path_factory)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests of these fixtures like tests/conftest.py marks its own, so -m "not mosquitto" works."""
    marks = {"durable_mosquitto": pytest.mark.mosquitto, "victoria_metrics_dedup": pytest.mark.victoriametrics}
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in marks:
                item.add_marker(marks[fixture])


# ------------------------------------------------------------------ a site and a publisher

def site_config(mqtt_port: int, data_dir: Path, influx_url: str | None = None, batch_size: int = 5000,
                flush_interval_s: float = 0.2, timeout_s: float = 2.0) -> SiteConfig:
    doc = {"site": {"id": SITE, "data_dir": str(data_dir)},
           "mqtt": {"host": HOST, "port": mqtt_port, "keepalive_s": 5},
           "ingest": {"batch_size": batch_size, "flush_interval_s": flush_interval_s},
           "lane": [{"id": "lane-1", "belt_scale": {"host": HOST, "port": 1}, "robot": {"host": HOST, "port": 2}}]}
    if influx_url:
        doc["influx"] = {"url": influx_url, "org": "orelane", "bucket": "orelane", "timeout_s": timeout_s}
    return config_mod.parse(doc, "<test>", environ={}, base_dir=data_dir)


def results_batch(lane: str, first_seq: int, rows: int, t0_ns: int, rng: np.random.Generator) -> m.SpectrumResults:
    """rows results, seq first_seq.., 1 ms apart from t0_ns + first_seq ms (distinct per series in VictoriaMetrics)."""
    seq = np.arange(first_seq, first_seq + rows, dtype=np.uint64)
    decision = np.zeros(rows, dtype=np.uint8)
    class_index = np.full(rows, m.NO_CLASS, dtype=np.uint8)
    hot = rng.random(rows) < 0.05
    decision[hot], class_index[hot] = 1, 0
    return m.SpectrumResults(lane, "v1", ("plastic", "wood"), seq, t0_ns + seq.astype(np.int64) * 1_000_000,
                             seq.astype(np.float64) * 0.003, rng.random(rows).astype(np.float32),
                             rng.random(rows).astype(np.float32) * 20, rng.random(rows).astype(np.float32),
                             class_index, decision, rng.random((rows, 2)).astype(np.float32))


class Publisher:
    """Publishes spectrum-result batches at QoS 1 from its own paho client (which re-sends unacknowledged
    messages after a reconnect) and remembers every seq it published."""

    def __init__(self, port: int, lane: str = "lane-1", site: str = SITE, client_id: str = "test-publisher",
                 rows: int = 200):
        self.topic = topics.topic(site, lane, "results/spectra")
        self.lane, self.rows = lane, rows
        self.t0_ns = (int(time.time()) - 3600) * 10**9
        self.rng = np.random.default_rng(7)
        self.published: list[int] = []  # seqs
        self.next_seq = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1.0)
        self.client.connect(HOST, port)
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def publish_one(self) -> None:
        batch = results_batch(self.lane, self.next_seq, self.rows, self.t0_ns, self.rng)
        self.infos.append(self.client.publish(self.topic, batch.to_bytes(), qos=1))
        self.published.extend(range(self.next_seq, self.next_seq + self.rows))
        self.next_seq += self.rows

    def publish(self, batches: int) -> None:
        for _ in range(batches):
            self.publish_one()

    def start_steady(self, batches_per_s: float) -> None:
        def loop():
            period = 1.0 / batches_per_s
            next_at = time.monotonic()
            while not self._stop.is_set():
                self.publish_one()
                next_at += period
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop_steady(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def wait_published(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for info in self.infos:  # paho's flag: is_published() raises for messages queued while disconnected
            while not info._published:
                assert time.monotonic() < deadline, "the broker did not acknowledge every publish"
                time.sleep(0.01)

    def close(self) -> None:
        self.stop_steady()
        self.client.loop_stop()
        self.client.disconnect()


def stored_seqs(vm: VictoriaMetrics, site: str = SITE, expected: int | None = None,
                timeout_s: float = 20.0) -> dict[str, list[int]]:
    """seq values per spectrum_result series in VictoriaMetrics, read until `expected` values are there."""
    def count(series):
        return sum(len(s["values"]) for s in series)
    series = vm.export(f'{{__name__="spectrum_result_seq",site="{site}"}}',
                       until=(lambda s: count(s) >= expected) if expected else None, timeout_s=timeout_s)
    return {json.dumps(s["metric"], sort_keys=True): [int(v) for v in s["values"]] for s in series}


def lost_and_duplicated(published: list[int], per_series: dict[str, list[int]]) -> tuple[int, int]:
    seen = [v for values in per_series.values() for v in values]
    return len(set(published) - set(seen)), len(seen) - len(set(seen))


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)


def unused_port() -> int:
    return free_port(HOST)
