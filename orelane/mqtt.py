"""One MQTT connection per object: persistent session, re-subscription, birth and last will, and
reconnection with capped exponential backoff and jitter (paho's loop thread does the reconnecting),
and TLS with an optional client certificate when the config names a CA (docs/security.md).

Callbacks only put messages on a queue; the owner does the work on its own thread.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import random
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orelane.config import MqttConfig

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600  # the broker keeps QoS 1 messages for a restarting daemon this long
DRAIN_S = 15.0  # how long `stop` waits for unacknowledged publishes: a broker restart takes a few seconds


class _ShutdownNoise(logging.Filter):
    """paho 2.2's loop thread logs 'Client is not connected' at ERROR once after a clean disconnect."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttLink:
    """A paho client owned by one component; messages arrive on `self.inbox` as paho MQTTMessage."""

    def __init__(self, cfg: MqttConfig, client_id: str, subscriptions: list[tuple[str, int]] = (),
                 will: Will | None = None, birth: tuple[str, bytes] | None = None,
                 manual_ack: bool = False, inbox_limit: int = 0, persistent: bool = True):
        """persistent=False is for one-shot tools (status, deploy): a clean session the broker forgets at
        disconnect, so no session and no queued messages are left behind for a client id never seen again."""
        self.cfg, self.client_id = cfg, client_id
        self.persistent = persistent
        self.subscriptions = list(subscriptions)
        self.birth = birth
        self.protocol = protocol = cfg.protocol
        self.inbox: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue(inbox_limit)
        self.connected = threading.Event()
        self.connects = 0
        self.last_error = ""  # why the latest connection attempt failed or was lost ("" once connected)
        self._refused = False  # the broker answered this attempt's CONNECT with a refusal
        self.publishes_refused = 0  # QoS 1 publishes the broker answered with a failure (MQTT 5), e.g. its ACL
        # QoS>0 publishes the broker has not acknowledged yet: paho holds them in memory only, so `stop` waits
        # for them. A PUBACK can beat `publish` returning; `_acked_first` keeps those mids until it does.
        self._unacked_lock = threading.Lock()
        self._unacked: set[int] = set()
        self._acked_first: set[int] = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311,
                                  clean_session=None if protocol == 5 else not persistent, manual_ack=manual_ack)
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.tls_ca_file is not None:
            # PROTOCOL_TLS_CLIENT: TLS 1.2 or newer, the broker's certificate verified and matched to cfg.host.
            self.client.tls_set(ca_certs=str(cfg.tls_ca_file),
                                certfile=str(cfg.tls_cert_file) if cfg.tls_cert_file else None,
                                keyfile=str(cfg.tls_key_file) if cfg.tls_key_file else None,
                                tls_version=ssl.PROTOCOL_TLS_CLIENT)
        elif cfg.password and not _is_loopback(cfg.host):
            log.warning("MQTT %s: the password for %r goes to %s:%s in clear text; set mqtt.tls_ca_file to use TLS",
                        client_id, cfg.username, cfg.host, cfg.port)
        if will is not None:
            self.client.will_set(will.topic, will.payload, will.qos, will.retain)
        self.client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5), max_delay=30)
        self.client.max_queued_messages_set(0)  # paho keeps unsent QoS>0 messages while disconnected
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_publish = self._on_publish
        # paho reports socket and TLS errors (a refused client certificate) only through its logger.
        paho_log = log.getChild("paho")
        if not any(isinstance(f, _ShutdownNoise) for f in paho_log.filters):
            paho_log.addFilter(_ShutdownNoise())
        self.client.enable_logger(paho_log)
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = True
            self._failed(f"broker refused the connection: {reason_code}", logging.ERROR)
            return
        self.connects += 1
        self.last_error = ""
        sock = client.socket()
        if sock is not None:  # results must not wait ~40 ms for Nagle and the broker's delayed ack
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for topic_filter, qos in self.subscriptions:
            client.subscribe(topic_filter, qos)
        if self.birth is not None:
            self.publish(self.birth[0], self.birth[1], qos=1, retain=True)
        self.connected.set()
        log.info("MQTT %s connected to %s:%s (session present: %s)", self.client_id, self.cfg.host, self.cfg.port,
                 flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected, refused = self.connected.is_set(), self._refused
        self.connected.clear()
        self._refused = False
        if reason_code == 0 or refused:
            return
        if was_connected:
            self._failed(f"lost the broker: {reason_code}; reconnecting")
        else:
            # With TLS 1.3 a broker refuses a missing or untrusted client certificate after the handshake,
            # so the client sees only a failed read; paho logs the TLS alert (logger orelane.mqtt.paho).
            self._failed(f"the broker closed the connection before accepting it ({reason_code}): often a TLS "
                         f"refusal such as a missing client certificate (see logger {log.name}.paho); retrying")

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this inside its `except OSError` block without the exception; the TLS or socket
        # error (certificate verify failed, connection refused) is what an operator needs to see.
        exc = sys.exc_info()[1]
        self._failed(f"cannot connect: {exc or 'unknown error'}; retrying")

    def _failed(self, reason: str, level: int = logging.WARNING) -> None:
        """Log a connection failure once per distinct reason, so a broker down for an hour is not 120 lines."""
        if reason != self.last_error:
            log.log(level, "MQTT %s, broker %s:%s: %s", self.client_id, self.cfg.host, self.cfg.port, reason)
        self.last_error = reason

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._unacked_lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:
                self._acked_first.add(mid)
        # An access list drops a refused message; without this the publisher would never know.
        if reason_code.is_failure:
            self.publishes_refused += 1
            if self.publishes_refused == 1:
                log.error("MQTT %s: broker %s:%s refused a publish (mid %s): %s; check the broker's acl_file "
                          "for user %r (further refusals are only counted)", self.client_id, self.cfg.host,
                          self.cfg.port, mid, reason_code, self.cfg.username)

    def _on_message(self, client, userdata, message) -> None:
        self.inbox.put(message)

    def start(self, wait_s: float = 0.0) -> "MqttLink":
        props = None
        if self.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S if self.persistent else 0
            self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s,
                                      clean_start=not self.persistent, properties=props)
        else:
            self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s)
        self.client.loop_start()
        if wait_s and not self.connected.wait(wait_s):
            raise ConnectionError(f"MQTT {self.client_id}: no connection to {self.cfg.host}:{self.cfg.port} "
                                  f"within {wait_s:g} s" + (f" ({self.last_error})" if self.last_error else ""))
        return self

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Queue a message; QoS>0 ones are kept (and resent after a reconnect) until the broker acknowledges them."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0:
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                log.error("MQTT %s: paho refused to queue a message for %s (%d messages already unacknowledged)",
                          self.client_id, topic, self.unacked)
                return info
            # Never hold our lock while calling paho: its thread holds paho's lock when it calls _on_publish.
            with self._unacked_lock:
                if info.mid in self._acked_first:
                    self._acked_first.discard(info.mid)
                else:
                    self._unacked.add(info.mid)
        return info

    @property
    def unacked(self) -> int:
        """QoS>0 messages published but not yet acknowledged by the broker (lost if the process dies now)."""
        with self._unacked_lock:
            return len(self._unacked)

    def drain(self, timeout_s: float) -> int:
        """Wait up to timeout_s (through a reconnection if need be) for every QoS>0 publish to be acknowledged;
        return how many are still unacknowledged."""
        deadline = time.monotonic() + timeout_s
        while self.unacked and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.unacked

    def received(self, wait_s: float):
        """Messages from the inbox as they arrive, for up to wait_s; one-shot tools leave the loop when they
        have what they wait for."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                yield self.inbox.get(timeout=left)
            except queue.Empty:
                return

    def ack(self, message: mqtt.MQTTMessage) -> None:
        self.client.ack(message.mid, message.qos)

    def stop(self, final: tuple[str, bytes] | None = None, drain_s: float = DRAIN_S) -> None:
        """Deliver what is still unacknowledged (waiting up to drain_s, through a reconnection), publish `final`
        (e.g. a clean 'offline' status) and disconnect without triggering the will."""
        if self.unacked:
            log.info("MQTT %s: stopping; waiting up to %g s for the broker to acknowledge %d messages",
                     self.client_id, drain_s, self.unacked)
            lost = self.drain(drain_s)
            if lost:
                log.error("MQTT %s: stopping with %d messages the broker %s:%s never acknowledged (%s); they are "
                          "lost", self.client_id, lost, self.cfg.host, self.cfg.port,
                          self.last_error or "connected, but no acknowledgement")
        if final is not None and self.connected.is_set():
            self.publish(final[0], final[1], qos=1, retain=True)
            self.drain(2.0)
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "MqttLink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
