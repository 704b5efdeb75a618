"""The lane daemon: MQTT and Modbus in, judged spectra and frames, events and robot cuts out.

One thread does the work (`run`); paho's thread only queues messages. The lane's
decisions are in edge.lane.LaneCore; this module owns the connections and the loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import cv2

from edge.instruments import InstrumentReader
from edge.lane import LaneCore
from orelane.config import LaneConfig, SiteConfig
from orelane.contract import messages as msg, topics
from orelane.contract.registers import BELT_SCALE, RADIATION_PORTAL
from orelane.mqtt import MqttLink, Will
from sampling_robot.driver import SamplerDriver
from sampling_robot.registry import SampleRegistry
from spectral.model import LaneModel

log = logging.getLogger(__name__)

INPUT_LEAVES = ("spectra/batch", "spectra/json", "spectra/reference/dark", "spectra/reference/white", "camera/frame",
                "lot", "model/deploy")
STATUS_INTERVAL_S = 5.0


class LaneDaemon:
    def __init__(self, site: SiteConfig, lane: LaneConfig, model: LaneModel, registry: SampleRegistry,
                 clock: Callable[[], float] = time.time, client_id: str | None = None):
        self.site, self.lane, self.clock = site, lane, clock
        self.belt_scale = InstrumentReader(lane.belt_scale, BELT_SCALE)
        self.radiation = InstrumentReader(lane.radiation, RADIATION_PORTAL) if lane.radiation else None
        self.robot = SamplerDriver(lane.robot.host, lane.robot.port, unit_id=lane.robot.unit_id,
                                   timeout_s=lane.robot.timeout_s)
        self.core = LaneCore(site.site_id, lane, model, registry, self.robot, self._publish, clock)
        status_topic = self.core.topic("status")
        self.mqtt = MqttLink(
            site.mqtt, client_id or f"orelane-edge-{site.site_id}-{lane.id}",
            subscriptions=[(self.core.topic(leaf), topics.qos(leaf)) for leaf in INPUT_LEAVES],
            will=Will(status_topic, msg.LaneStatus(lane.id, "offline", 0.0).to_json()),
            birth=(status_topic, msg.LaneStatus(lane.id, "online", self.clock()).to_json()),
            manual_ack=True)

    @property
    def counters(self):
        return self.core.counters

    @property
    def tracker(self):
        return self.core.tracker

    @property
    def closed_events(self):
        return self.core.closed_events

    def _publish(self, leaf: str, payload: bytes) -> None:
        self.mqtt.publish(self.core.topic(leaf), payload, topics.qos(leaf), topics.retained(leaf))

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set; a bad message or a failing device never ends the loop."""
        cv2.setNumThreads(1)  # the camera detector runs on this one worker thread, without an OpenCV pool beside it
        self.mqtt.start()
        poll_s = self.lane.belt_poll_interval_s
        next_poll = next_status = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + poll_s
                    self._guarded(self.poll_instruments)
                    due_s = self.core.next_cut_due_s(self.clock())
                    if due_s is not None:  # wake for the cut itself, not at the next poll after it
                        next_poll = min(next_poll, now + max(0.0, due_s - self.clock()))
                if now >= next_status:
                    next_status = now + STATUS_INTERVAL_S
                    self._guarded(self._publish, "status", self.core.status_message())
                try:
                    message = self.mqtt.inbox.get(timeout=max(0.0, min(next_poll, next_status) - time.monotonic()))
                except queue.Empty:
                    continue
                self._guarded(self.core.handle_message, message.topic, message.payload)
                # Acknowledged once handled: a message still queued when the daemon stops (or dies) stays with
                # the broker's persistent session and comes to the next run.
                self.mqtt.ack(message)
        finally:
            self.mqtt.stop(final=(self.core.topic("status"), self.core.status_message("offline")))
            self.robot.close()
            self.belt_scale.close()
            if self.radiation:
                self.radiation.close()

    def poll_instruments(self) -> None:
        now_s = self.clock()
        reading = self.belt_scale.read()
        self.core.belt_link_up = self.belt_scale.link_up
        if reading is not None:
            self.core.on_belt_reading(now_s, reading)
        elif self.belt_scale.link_up:  # the link works; the values were out of the contract's range
            self.core.on_belt_refused(self.belt_scale.last_error)
        if self.radiation is not None:
            self.core.on_radiation_reading(self.radiation.read(), self.radiation.link_up,
                                           self.radiation.values_in_range)
        self.core.step(now_s)

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # the daemon outlives any one bug; the traceback goes to the log once
            log.exception("lane %s: %s failed", self.lane.id, getattr(fn, "__name__", fn))
