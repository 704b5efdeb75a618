"""MqttLink against a real Mosquitto with TLS and passwords: the right client gets through, others do not."""

from __future__ import annotations

import logging
import time

import pytest

from orelane.contract import topics
from orelane.mqtt import MqttLink
from tests.security.conftest import SITE_ID

CONNECT_S = 5.0
EDGE_1, DEVICES_1, INGEST = f"{SITE_ID}-lane-1-edge", f"{SITE_ID}-lane-1-devices", f"{SITE_ID}-ingest"


def refusal(link: MqttLink, timeout_s: float = CONNECT_S) -> str:
    """Start `link` and return why it could not connect; fail if it connects."""
    link.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not link.last_error and not link.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not link.connected.is_set() and link.connects == 0, f"{link.client_id} was let in"
        assert link.last_error, f"{link.client_id}: neither connected nor refused within {timeout_s} s"
        return link.last_error
    finally:
        link.stop()


@pytest.mark.parametrize("broker,with_certificate", [("tls_broker", False), ("tls_broker", True),
                                                      ("tls_broker_certs", True)],
                         ids=["tls-password", "tls-password-and-certificate", "certificate-required"])
def test_client_with_tls_and_password_round_trips_a_message(request, broker, with_certificate):
    broker = request.getfixturevalue(broker)
    spectra = topics.topic(SITE_ID, "lane-1", "spectra/batch")
    edge = MqttLink(broker.config(EDGE_1, with_certificate=with_certificate), f"rt-edge-{request.node.callspec.id}",
                    subscriptions=[(spectra, 1)])
    device = MqttLink(broker.config(DEVICES_1, with_certificate=with_certificate),
                      f"rt-device-{request.node.callspec.id}")
    with edge, device:
        assert edge.connected.wait(CONNECT_S) and device.connected.wait(CONNECT_S), edge.last_error or device.last_error
        # The subscription is sent from on_connect; publish until it has taken effect.
        deadline = time.monotonic() + CONNECT_S
        while edge.inbox.empty() and time.monotonic() < deadline:
            device.publish(spectra, b"batch-1", qos=1).wait_for_publish(2)
            time.sleep(0.05)
        message = edge.inbox.get(timeout=1)
    assert (message.topic, message.payload) == (spectra, b"batch-1")
    assert device.publishes_refused == 0


@pytest.mark.parametrize("username,password", [(EDGE_1, "wrong-password"), ("nobody-at-all", "pw-nobody-at-all"),
                                               (EDGE_1, "")],
                         ids=["wrong-password", "unknown-user", "no-password"])
def test_wrong_credentials_are_refused_by_the_broker(tls_broker, caplog, username, password):
    link = MqttLink(tls_broker.config(username, password=password), f"badpw-{username}-{len(password)}")
    with caplog.at_level(logging.ERROR, logger="orelane.mqtt"):
        reason = refusal(link)
    assert reason == "broker refused the connection: Not authorized"
    assert f"broker {tls_broker.host}:{tls_broker.port}: broker refused the connection: Not authorized" in caplog.text


def test_start_names_the_refusal_when_the_wait_runs_out(tls_broker):
    link = MqttLink(tls_broker.config(EDGE_1, password="wrong-password"), "badpw-start")
    with pytest.raises(ConnectionError, match=r"within 1.5 s \(broker refused the connection: Not authorized\)"):
        try:
            link.start(wait_s=1.5)
        finally:
            link.stop()


def test_client_without_certificate_is_refused_when_the_broker_requires_one(tls_broker_certs, caplog):
    link = MqttLink(tls_broker_certs.config(EDGE_1, with_certificate=False), "nocert-edge")
    with caplog.at_level(logging.ERROR, logger="orelane.mqtt"):
        reason = refusal(link)
    assert reason.startswith("the broker closed the connection before accepting it")
    assert "missing client certificate" in reason
    # The TLS alert itself comes through paho's logger.
    assert "certificate required" in caplog.text


def test_client_certificate_from_another_ca_is_refused(tls_broker_certs, caplog):
    pki = tls_broker_certs.pki
    link = MqttLink(tls_broker_certs.config(EDGE_1, certificate=(pki.rogue_client_cert, pki.rogue_client_key)),
                    "rogue-cert-edge")
    with caplog.at_level(logging.ERROR, logger="orelane.mqtt"):
        reason = refusal(link)
    assert reason.startswith("the broker closed the connection before accepting it")
    assert "unknown ca" in caplog.text


@pytest.mark.parametrize("change,expected", [
    ({"ca": "rogue"}, "CERTIFICATE_VERIFY_FAILED"),  # a broker this site's CA did not sign
    ({"host": "localhost"}, "Hostname mismatch"),  # the certificate names 127.0.0.1 only
], ids=["untrusted-broker", "hostname-mismatch"])
def test_client_refuses_a_broker_it_cannot_verify(tls_broker, change, expected):
    if change.get("ca") == "rogue":
        change = {"ca": tls_broker.pki.rogue_ca}
    link = MqttLink(tls_broker.config(EDGE_1, **change), f"verify-{expected}")
    reason = refusal(link)
    assert reason.startswith("cannot connect:") and expected in reason
