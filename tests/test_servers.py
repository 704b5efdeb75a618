"""Smoke tests of the server fixtures: each proves a real round trip through a private server."""

from __future__ import annotations

import queue
import signal
import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from pymodbus.client import ModbusTcpClient

from orelane.contract import messages, registers, topics
from orelane.modbus_server import RegisterBank
from tests import servers
from tests.servers import Mosquitto, ServerError, find_binary, http_request, require_binary

# ---------------------------------------------------------------- MQTT


class Subscriber:
    """A paho client subscribed (SUBACK received) to some filters; messages land on a queue."""

    def __init__(self, host: str, port: int, filters: list[str]):
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda client, userdata, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda client, userdata, mid, reason_codes, props: self._subscribed.set()
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in filters])
        assert self._subscribed.wait(5), f"no SUBACK from {host}:{port} for {filters}"

    def next(self, timeout_s: float = 5.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(host: str, port: int, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(host, port, keepalive=10)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published(), f"PUBACK for {topic} never came"
    finally:
        client.disconnect()
        client.loop_stop()


def belt_state(timestamp_s: float) -> messages.BeltState:
    return messages.BeltState("lane-1", timestamp_s, 1234.5, 3.2, 4100.0, 98765.4)


def test_mosquitto_delivers_a_contract_message_to_a_subscriber(mosquitto):
    topic = topics.topic("site-t", "lane-1", "belt")
    sub = Subscriber(mosquitto.host, mosquitto.port, [topics.subscription("belt")])
    try:
        publish(mosquitto.host, mosquitto.port, topic, belt_state(1.5).to_json())
        msg = sub.next()
    finally:
        sub.close()
    assert topics.parse(msg.topic) == ("site-t", "lane-1", "belt")
    assert messages.BeltState.from_json(msg.payload) == belt_state(1.5)


def test_mosquitto_restart_keeps_the_port_and_forgets_retained_messages(mosquitto):
    status = topics.topic("site-t", "lane-1", "status")
    marker = topics.topic("site-t", "lane-1", "deadletter")
    publish(mosquitto.host, mosquitto.port, status, b"before restart", retain=True)
    port = mosquitto.port

    mosquitto.restart()

    assert mosquitto.port == port and mosquitto.running
    # The broker sends retained messages right after SUBACK, so one that did not
    # arrive before the marker published after SUBACK was not retained at all.
    sub = Subscriber(mosquitto.host, mosquitto.port, [status, marker])
    try:
        publish(mosquitto.host, mosquitto.port, marker, b"marker")
        first = sub.next()
    finally:
        sub.close()
    assert (first.topic, first.payload) == (marker, b"marker")


def test_mosquitto_stop_refuses_connections_until_start(mosquitto):
    mosquitto.stop()
    with pytest.raises(OSError):
        socket.create_connection((mosquitto.host, mosquitto.port), timeout=1).close()
    mosquitto.start()
    sub = Subscriber(mosquitto.host, mosquitto.port, ["t/#"])
    try:
        publish(mosquitto.host, mosquitto.port, "t/x", b"after start")
        assert sub.next().payload == b"after start"
    finally:
        sub.close()


def test_session_broker_cannot_be_stopped_by_a_test(mosquitto_session):
    with pytest.raises(ServerError, match="shared"):
        mosquitto_session.stop()
    assert mosquitto_session.running


def test_server_whose_port_is_taken_starts_on_another_port(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = Mosquitto(require_binary("mosquitto", "mosquitto"), tmp_path)
        broker.port = squatter.getsockname()[1]
        with broker:
            assert broker.running and broker.port != squatter.getsockname()[1]


def test_killed_server_is_reported_as_died(tmp_path):
    broker = Mosquitto(require_binary("mosquitto", "mosquitto"), tmp_path)
    with broker:
        broker._proc.send_signal(signal.SIGKILL)
        broker._proc.wait(5)
        assert broker.died and not broker.running
        assert "mosquitto version" in broker.log_tail()


# ---------------------------------------------------------------- missing binaries


def test_missing_binary_fails_under_ci_naming_the_debian_package():
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install no-such-package"):
        require_binary("orelane-no-such-server", "no-such-package", environ={"CI": "true"})


def test_missing_binary_skips_outside_ci_naming_the_debian_package():
    with pytest.raises(pytest.skip.Exception,
                       match=r"install Debian package no-such-package \(apt-get install no-such-package\)"):
        require_binary("orelane-no-such-server", "no-such-package", environ={})


def test_binaries_in_sbin_are_found_without_sbin_on_path(tmp_path, monkeypatch):
    fake = tmp_path / "fake-broker"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(servers, "_SBIN_DIRS", (str(tmp_path),))
    assert find_binary("fake-broker", "fake-package", path="/nonexistent") == str(fake)


# ---------------------------------------------------------------- VictoriaMetrics


def test_victoria_metrics_names_influx_series_measurement_underscore_field(victoria_metrics):
    t_ns = 1_700_000_000_123_456_789
    with InfluxDBClient(victoria_metrics.url, token="x", org="o") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="b", record=f"belt,site=s1,lane=l1 speed_m_s=3.25,flow_t_h=4100 {t_ns}")

    series = victoria_metrics.export('{lane="l1"}', until=lambda s: len(s) == 2)

    by_name = {s["metric"]["__name__"]: s for s in series}
    assert sorted(by_name) == ["belt_flow_t_h", "belt_speed_m_s"]
    assert by_name["belt_speed_m_s"]["metric"] == {"__name__": "belt_speed_m_s", "site": "s1", "lane": "l1"}
    assert by_name["belt_speed_m_s"]["values"] == [3.25]
    assert by_name["belt_flow_t_h"]["values"] == [4100]
    # Stored in milliseconds: the nanoseconds are cut off.
    assert by_name["belt_speed_m_s"]["timestamps"] == [t_ns // 1_000_000]


def test_victoria_metrics_keeps_data_across_stop_and_start(victoria_metrics):
    t0_ns = 1_700_000_000_000_000_000
    victoria_metrics.write(f"belt,lane=l2 speed_m_s={i} {t0_ns + i * 10**9}" for i in range(5))
    assert len(victoria_metrics.export('{__name__="belt_speed_m_s"}',
                                       until=lambda s: s and len(s[0]["values"]) == 5)[0]["values"]) == 5

    victoria_metrics.stop()
    with pytest.raises(OSError):
        http_request("GET", f"{victoria_metrics.url}/health", timeout_s=1)
    victoria_metrics.start()

    (series,) = victoria_metrics.export('{__name__="belt_speed_m_s"}')
    assert series["values"] == [0, 1, 2, 3, 4]
    assert series["timestamps"] == [(t0_ns + i * 10**9) // 10**6 for i in range(5)]


def test_victoria_metrics_export_of_unknown_series_is_empty(victoria_metrics_session):
    assert victoria_metrics_session.export('{__name__="never_written"}', until=lambda s: True) == []


# ---------------------------------------------------------------- InfluxDB 1.x


def test_influxdb1_write_then_influxql_select(influxdb1):
    influxdb1.create_database("orelane")
    t0 = 1_700_000_000_000_000_001  # odd nanoseconds: InfluxDB keeps full precision
    influxdb1.write([f"belt,site=s1,lane=l1 speed_m_s=3.0,flow_t_h=4000 {t0}",
                     f"belt,site=s1,lane=l1 speed_m_s=3.5,flow_t_h=4200 {t0 + 1_000_000_000}",
                     f"belt,site=s1,lane=l2 speed_m_s=9.0,flow_t_h=0 {t0}"], db="orelane")

    rows = influxdb1.query("SELECT speed_m_s, flow_t_h FROM belt WHERE lane = 'l1'", db="orelane")
    (series,) = rows["results"][0]["series"]
    assert series["columns"] == ["time", "speed_m_s", "flow_t_h"]
    assert series["values"] == [[t0, 3.0, 4000], [t0 + 1_000_000_000, 3.5, 4200]]

    mean = influxdb1.query("SELECT mean(speed_m_s) FROM belt GROUP BY lane", db="orelane")
    by_lane = {s["tags"]["lane"]: s["values"][0][1] for s in mean["results"][0]["series"]}
    assert by_lane == {"l1": 3.25, "l2": 9.0}


def test_influxdb1_query_error_is_raised_with_the_query(influxdb1_session):
    with pytest.raises(ServerError, match="database not found") as failure:
        influxdb1_session.query("SELECT * FROM belt", db="no_such_db")
    assert "SELECT * FROM belt" in str(failure.value)


def test_influxdb1_refused_write_is_raised_with_the_status(influxdb1_session):
    influxdb1_session.create_database("refused_write")
    with pytest.raises(ServerError, match="answered 400"):
        influxdb1_session.write("belt speed_m_s=", db="refused_write")


def test_influxdb1_data_survives_restart(influxdb1):
    influxdb1.create_database("d")
    influxdb1.write("m,lane=l1 f=1.5 1700000000000000000", db="d")
    influxdb1.restart()
    values = influxdb1.query("SELECT f FROM m", db="d")["results"][0]["series"][0]["values"]
    assert values == [[1_700_000_000_000_000_000, 1.5]]


# ---------------------------------------------------------------- Modbus


def test_modbus_server_serves_belt_scale_input_registers(modbus_server):
    values = {"flow_t_h": 4123.5, "belt_load_kg_m": 356.25, "speed_m_s": 3.25, "totalizer_t": 98765.5,
              "status": registers.SCALE_RUNNING}
    bank = RegisterBank(registers.BELT_SCALE.count)
    bank.set_input(registers.BELT_SCALE, values)
    server = modbus_server(bank, unit_id=3)

    client = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2)
    assert client.connect()
    try:
        reply = client.read_input_registers(registers.BELT_SCALE.start, count=registers.BELT_SCALE.count,
                                            device_id=3)
        beyond = client.read_input_registers(registers.BELT_SCALE.count, count=1, device_id=3)
    finally:
        client.close()
    assert not reply.isError(), reply
    assert registers.BELT_SCALE.decode(reply.registers) == values  # all exactly representable in f32
    assert beyond.isError(), "a read past the register block must be an exception response"


def test_modbus_server_hands_holding_register_writes_to_the_device(modbus_server):
    writes: list[tuple[int, list[int]]] = []
    bank = RegisterBank(registers.SAMPLER_STATUS.count, registers.SAMPLER_COMMAND.count,
                        on_write=lambda start, words: writes.append((start, list(words))))
    server = modbus_server(bank)
    command = {"edge_heartbeat": 7, "command": registers.COMMAND_CUT, "command_seq": 42,
               "sample_id": 3_000_000_001, "sample_kind": registers.KIND_CODES["targeted"]}
    words = registers.SAMPLER_COMMAND.encode(command)

    client = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2)
    assert client.connect()
    try:
        reply = client.write_registers(registers.SAMPLER_COMMAND.start, words, device_id=1)
        readback = client.read_holding_registers(registers.SAMPLER_COMMAND.start,
                                                 count=registers.SAMPLER_COMMAND.count, device_id=1)
    finally:
        client.close()
    assert not reply.isError(), reply
    assert writes == [(0, words)]
    assert registers.SAMPLER_COMMAND.decode(bank.read(registers.SAMPLER_COMMAND)) == command
    assert readback.registers == words


def test_modbus_device_without_write_handler_refuses_writes(modbus_server):
    bank = RegisterBank(registers.BELT_SCALE.count)
    server = modbus_server(bank)
    client = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2)
    assert client.connect()
    try:
        # No on_write: the holding block refuses writes with an exception response.
        reply = client.write_registers(0, [1], device_id=1)
    finally:
        client.close()
    assert reply.isError()
    assert bank.read(registers.BELT_SCALE) == [0] * registers.BELT_SCALE.count


def test_modbus_server_stop_closes_its_port(modbus_server):
    server = modbus_server(RegisterBank(4))
    port = server.port
    server.stop()
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "Modbus server still accepts connections after stop()"
        time.sleep(0.05)
