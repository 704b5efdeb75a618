"""The site's access list in a real Mosquitto: a lane's devices publish only under their own lane,
users read only what they need, and the daemons' real subscriptions and publications still get through."""

from __future__ import annotations

import queue
import time
from contextlib import ExitStack

import pytest

from edge.daemon import INPUT_LEAVES
from orelane.contract import measurements, topics
from orelane.mosquitto_acl import EDGE_WRITES, device_user, edge_user, site_user
from orelane.mqtt import MqttLink, Will
from tests.security.conftest import SITE_ID

WAIT_S = 5.0
QUIET_S = 0.3  # how long a subscriber must stay silent after the reference message has arrived elsewhere


def topic(lane: str, leaf: str, site: str = SITE_ID) -> str:
    return topics.topic(site, lane, leaf)


class Links:
    """Connected MqttLinks for one test, all stopped at the end."""

    def __init__(self, broker, stack: ExitStack, test_id: str):
        self.broker, self.stack, self.test_id = broker, stack, test_id

    def __call__(self, username: str, subscriptions=(), **kwargs) -> MqttLink:
        link = MqttLink(self.broker.config(username), f"{self.test_id}-{username}"[-60:],
                        subscriptions=list(subscriptions), **kwargs)
        self.stack.enter_context(link)
        assert link.connected.wait(WAIT_S), f"{username} could not connect: {link.last_error}"
        return link


@pytest.fixture
def links(tls_broker, request):
    with ExitStack() as stack:
        yield Links(tls_broker, stack, request.node.name.replace("[", "-").rstrip("]"))


def until_subscribed(watcher: MqttLink, publisher: MqttLink, ping_topic: str) -> None:
    """Publish on ping_topic until watcher receives it (its subscription is live), then empty its inbox."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        publisher.publish(ping_topic, b"ping", qos=1).wait_for_publish(2)
        try:
            watcher.inbox.get(timeout=0.1)
            break
        except queue.Empty:
            continue
    else:
        raise AssertionError(f"{watcher.client_id} never received {ping_topic}")
    time.sleep(0.1)
    drain(watcher)


def drain(link: MqttLink) -> list[tuple[str, bytes]]:
    got = []
    while True:
        try:
            message = link.inbox.get_nowait()
        except queue.Empty:
            return got
        got.append((message.topic, message.payload))


def wait_for(link: MqttLink, wanted_topic: str, payload: bytes) -> list[tuple[str, bytes]]:
    """Everything link receives up to and including (wanted_topic, payload)."""
    got, deadline = [], time.monotonic() + WAIT_S
    while (wanted_topic, payload) not in got:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{link.client_id} did not receive {payload!r} on {wanted_topic}; got {got}"
        try:
            message = link.inbox.get(timeout=remaining)
        except queue.Empty:
            continue
        got.append((message.topic, message.payload))
    return got


# A lane-1 device trying topics it must not publish to; the lane-2 cases are what the issue asks for,
# the lane-1 ones keep a compromised camera from commanding the sampler or announcing events.
FORBIDDEN_FOR_LANE_1_DEVICE = [
    ("lane-2", "spectra/batch"),
    ("lane-2", "camera/frame"),
    ("lane-2", "spectra/reference/dark"),
    ("lane-1", "samples/request"),
    ("lane-1", "events"),
    ("lane-1", "model/deploy"),
    ("lane-1", "status"),
]


@pytest.mark.parametrize("lane,leaf", FORBIDDEN_FOR_LANE_1_DEVICE, ids=[f"{a}-{b}" for a, b in
                                                                        FORBIDDEN_FOR_LANE_1_DEVICE])
def test_device_publish_outside_its_lane_is_refused_and_delivered_to_nobody(links, lane, leaf):
    ingest = links(site_user(SITE_ID, "ingest"), [(f"{topics.ROOT}/{SITE_ID}/#", 1)])  # reads the whole site
    edge_2 = links(edge_user(SITE_ID, "lane-2"), [(topic("lane-2", leaf), 1) for leaf in INPUT_LEAVES])
    device_1 = links(device_user(SITE_ID, "lane-1"))
    device_2 = links(device_user(SITE_ID, "lane-2"))
    until_subscribed(edge_2, device_2, topic("lane-2", "spectra/json"))
    until_subscribed(ingest, device_1, topic("lane-1", "spectra/json"))  # second: it drains lane-2's pings

    forbidden = topic(lane, leaf)
    device_1.publish(forbidden, b"forged", qos=1, retain=leaf == "status").wait_for_publish(2)
    own_lane = topic("lane-1", "spectra/batch")
    device_1.publish(own_lane, b"own-lane", qos=1).wait_for_publish(2)

    # One connection's messages are handled in order: had the broker passed the forged one, the
    # site-wide reader would have it before the own-lane message.
    assert wait_for(ingest, own_lane, b"own-lane") == [(own_lane, b"own-lane")]
    time.sleep(QUIET_S)
    assert drain(edge_2) == [] and drain(ingest) == []
    assert device_1.publishes_refused == 1  # MQTT 5 PUBACK "Not authorized"


def test_users_receive_nothing_outside_their_read_grants(links):
    ingest = links(site_user(SITE_ID, "ingest"), [(f"{topics.ROOT}/{SITE_ID}/#", 1)])
    # Mosquitto grants the subscriptions and filters each message on delivery.
    snoopers = [links(device_user(SITE_ID, "lane-1"), [("#", 1)]),
                links(edge_user(SITE_ID, "lane-2"), [(f"{topics.ROOT}/{SITE_ID}/#", 1)]),
                links(site_user(SITE_ID, "operator"), [(f"{topics.ROOT}/{SITE_ID}/+/samples/request", 1)])]
    edge_1 = links(edge_user(SITE_ID, "lane-1"))
    device_1 = links(device_user(SITE_ID, "lane-1"))
    until_subscribed(ingest, device_1, topic("lane-1", "spectra/json"))

    device_1.publish(topic("lane-1", "spectra/batch"), b"spectra", qos=1).wait_for_publish(2)
    edge_1.publish(topic("lane-1", "samples/request"), b"cut", qos=1).wait_for_publish(2)

    wait_for(ingest, topic("lane-1", "samples/request"), b"cut")
    time.sleep(QUIET_S)
    assert {link.cfg.username: drain(link) for link in snoopers} == {link.cfg.username: [] for link in snoopers}


def test_the_daemons_own_subscriptions_and_publications_pass_the_access_list(links):
    """The ACL must not lock out the system: every input the edge daemon subscribes to arrives from its
    producer, and every edge output, birth and will included, reaches ingest's shared subscription."""
    share = "$share/ingest/"
    ingest = links(site_user(SITE_ID, "ingest"),
                   [(share + topics.subscription(leaf, site=SITE_ID), topics.qos(leaf))
                    for leaf in measurements.INGESTED_LEAVES])
    status = topic("lane-1", "status")
    edge_1 = links(edge_user(SITE_ID, "lane-1"), [(topic("lane-1", leaf), 1) for leaf in INPUT_LEAVES],
                   will=Will(status, b"offline"), birth=(status, b"online"))
    assert wait_for(ingest, status, b"online")[-1] == (status, b"online")

    producers = {"spectra/batch": "devices", "spectra/json": "devices", "spectra/reference/dark": "devices",
                 "spectra/reference/white": "devices", "camera/frame": "devices", "lot": "operator",
                 "model/deploy": "engineer"}
    assert set(producers) == set(INPUT_LEAVES)
    publishers = {"devices": links(device_user(SITE_ID, "lane-1")), "operator": links(site_user(SITE_ID, "operator")),
                  "engineer": links(site_user(SITE_ID, "engineer"))}
    until_subscribed(edge_1, publishers["devices"], topic("lane-1", "spectra/json"))
    for leaf, role in producers.items():
        publishers[role].publish(topic("lane-1", leaf), leaf.encode(), qos=1).wait_for_publish(2)
        wait_for(edge_1, topic("lane-1", leaf), leaf.encode())

    lab = links(site_user(SITE_ID, "lab"))
    lab.publish(topic("lane-1", "samples/record"), b"lab-record", qos=1).wait_for_publish(2)
    wait_for(ingest, topic("lane-1", "samples/record"), b"lab-record")
    for leaf in EDGE_WRITES:
        edge_1.publish(topic("lane-1", leaf), leaf.encode(), qos=1).wait_for_publish(2)
        if leaf in measurements.INGESTED_LEAVES:
            wait_for(ingest, topic("lane-1", leaf), leaf.encode())
    # The will is published by the broker on the edge's behalf when its connection dies.
    edge_1.client._sock.close()  # noqa: SLF001 - an abrupt loss, not a clean DISCONNECT
    wait_for(ingest, status, b"offline")
    assert sum(link.publishes_refused for link in (edge_1, lab, *publishers.values())) == 0
