"""MqttLink against a real Mosquitto: what a daemon published while the broker was away is delivered before
it stops, and a message it had not yet handled when it stopped comes to its next run."""

from __future__ import annotations

import queue
import threading
import time

from orelane.config import MqttConfig
from orelane.mqtt import MqttLink
from tests.ingest.conftest import durable_mosquitto  # noqa: F401  (fixture)

TOPIC = "orelane/v1/t/lane-1/results/spectra"


def _received(link: MqttLink, n: int, timeout_s: float) -> list:
    messages, deadline = [], time.monotonic() + timeout_s
    while len(messages) < n and time.monotonic() < deadline:
        try:
            messages.append(link.inbox.get(timeout=0.2))
        except queue.Empty:
            pass
    return messages


def test_stop_delivers_what_was_published_while_the_broker_was_down(durable_mosquitto):  # noqa: F811
    cfg = MqttConfig(host="127.0.0.1", port=durable_mosquitto.port, keepalive_s=5)
    reader = MqttLink(cfg, "t-reader", subscriptions=[(TOPIC, 1)]).start(wait_s=10)
    writer = MqttLink(cfg, "t-writer").start(wait_s=10)
    durable_mosquitto.stop()
    deadline = time.monotonic() + 10
    while writer.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    for i in range(50):
        writer.publish(TOPIC, b"%d" % i, qos=1)
    assert writer.unacked == 50, "paho holds QoS 1 messages published while disconnected"

    threading.Timer(1.0, durable_mosquitto.start).start()
    writer.stop()  # waits through the reconnection for the broker's acknowledgements

    assert writer.unacked == 0
    messages = _received(reader, 50, timeout_s=30)
    reader.stop()
    assert sorted(int(m.payload) for m in messages) == list(range(50))


def test_a_message_not_acknowledged_before_stop_comes_to_the_next_run(durable_mosquitto):  # noqa: F811
    cfg = MqttConfig(host="127.0.0.1", port=durable_mosquitto.port, keepalive_s=5)
    first = MqttLink(cfg, "t-daemon", subscriptions=[(TOPIC, 1)], manual_ack=True).start(wait_s=10)
    writer = MqttLink(cfg, "t-writer2").start(wait_s=10)
    for i in range(3):
        writer.publish(TOPIC, b"%d" % i, qos=1)
    writer.stop()
    got = _received(first, 3, timeout_s=10)
    assert [m.payload for m in got] == [b"0", b"1", b"2"]
    first.ack(got[0])
    first.ack(got[1])  # handled two, then stopped before handling the third
    time.sleep(0.5)
    first.stop()

    second = MqttLink(cfg, "t-daemon", subscriptions=[(TOPIC, 1)], manual_ack=True).start(wait_s=10)
    again = _received(second, 2, timeout_s=5)
    for message in again:
        second.ack(message)
    second.stop()
    assert [m.payload for m in again] == [b"2"], "the broker redelivers exactly the unacknowledged message"


def test_a_link_that_is_not_persistent_leaves_no_session_behind(mosquitto):
    cfg = MqttConfig(mosquitto.host, mosquitto.port)
    topic = "orelane/v1/s/lane-1/deadletter"
    for persistent, expect_queued in ((True, True), (False, False)):
        client_id = f"one-shot-{persistent}"
        with MqttLink(cfg, client_id, [(topic, 1)], persistent=persistent) as first:
            assert first.connected.wait(5)
            time.sleep(0.3)  # subscribed
        with MqttLink(cfg, "publisher", persistent=False) as pub:
            assert pub.connected.wait(5)
            pub.publish(topic, f"while {client_id} was away".encode(), qos=1)
            assert pub.drain(5) == 0
        with MqttLink(cfg, client_id, persistent=True) as again:  # resumes a session if the broker kept one
            assert again.connected.wait(5)
            got = []
            try:
                got.append(again.inbox.get(timeout=1.5).payload)
            except queue.Empty:
                pass
        assert bool(got) is expect_queued, (persistent, got)
