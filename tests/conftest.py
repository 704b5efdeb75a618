"""Fixtures that start private servers on free loopback ports, and the hypothesis profiles.

Server fixtures (each yields a running server and stops it at teardown):

    mosquitto, mosquitto_session            .host .port .start() .stop() .restart()
    victoria_metrics, victoria_metrics_session
                                            .url .write(lines) .export(match, until=) .start() .stop()
    influxdb1, influxdb1_session            .url .query(q, db) .write(lines, db) .create_database(name)
    modbus_server                           factory: modbus_server(bank, unit_id=1) -> ModbusDeviceServer

The *_session variants are shared by every test of the run: they cannot be
stopped, and tests must keep to their own topics, series or databases.
A missing binary skips the test with the Debian package to install, or fails
it when CI=true, so CI never goes green by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from orelane.modbus_server import ModbusDeviceServer, RegisterBank
from tests.servers import InfluxDB1, Mosquitto, ServerProcess, VictoriaMetrics, serve, wait_for_port

# CI replays the same examples every run so a red build is reproducible; locally every run explores anew.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
# HYPOTHESIS_PROFILE=thorough: a long bug hunt before a release or after touching a codec.
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev"))

# binary, Debian package, server class, marker
_SERVERS: dict[str, tuple[str, str, type[ServerProcess], str]] = {
    "mosquitto": ("mosquitto", "mosquitto", Mosquitto, "mosquitto"),
    "victoria_metrics": ("victoria-metrics", "victoria-metrics", VictoriaMetrics, "victoriametrics"),
    "influxdb1": ("influxd", "influxdb", InfluxDB1, "influxdb"),
}


def _serve(kind: str, tmp_path_factory: pytest.TempPathFactory, shared: bool) -> Iterator[ServerProcess]:
    binary, package, cls, _ = _SERVERS[kind]
    yield from serve(cls, binary, package, tmp_path_factory.mktemp(kind), shared)


@pytest.fixture
def mosquitto(tmp_path_factory) -> Iterator[Mosquitto]:
    """A private Mosquitto broker for this test; .host, .port, .stop(), .start(), .restart()."""
    yield from _serve("mosquitto", tmp_path_factory, shared=False)


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory) -> Iterator[Mosquitto]:
    """One broker for the whole run; use topics no other test uses."""
    yield from _serve("mosquitto", tmp_path_factory, shared=True)


@pytest.fixture
def victoria_metrics(tmp_path_factory) -> Iterator[VictoriaMetrics]:
    """A private VictoriaMetrics with an empty database; .url, .write(), .export(), .stop(), .start()."""
    yield from _serve("victoria_metrics", tmp_path_factory, shared=False)


@pytest.fixture(scope="session")
def victoria_metrics_session(tmp_path_factory) -> Iterator[VictoriaMetrics]:
    """One VictoriaMetrics for the whole run; match only series this test wrote."""
    yield from _serve("victoria_metrics", tmp_path_factory, shared=True)


@pytest.fixture
def influxdb1(tmp_path_factory) -> Iterator[InfluxDB1]:
    """A private InfluxDB 1.x with no databases; .url, .query(), .write(), .create_database()."""
    yield from _serve("influxdb1", tmp_path_factory, shared=False)


@pytest.fixture(scope="session")
def influxdb1_session(tmp_path_factory) -> Iterator[InfluxDB1]:
    """One InfluxDB 1.x for the whole run; create a database named after the test."""
    yield from _serve("influxdb1", tmp_path_factory, shared=True)


@pytest.fixture
def modbus_server() -> Iterator[Callable[..., ModbusDeviceServer]]:
    """Factory: modbus_server(bank, unit_id=1) serves a RegisterBank on a free port until the test ends."""
    started: list[ModbusDeviceServer] = []

    def start(bank: RegisterBank, unit_id: int = 1) -> ModbusDeviceServer:
        server = ModbusDeviceServer(bank, unit_id=unit_id)
        started.append(server)
        server.start()
        wait_for_port(server.host, server.port)
        return server

    yield start
    for server in reversed(started):
        server.stop()


_MARKERS = {name: marker for name, (_, _, _, marker) in _SERVERS.items()}
_MARKERS.update({f"{name}_session": marker for name, marker in _MARKERS.items()})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a server fixture, so `-m "not influxdb"` deselects it."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in _MARKERS:
                item.add_marker(_MARKERS[fixture])

