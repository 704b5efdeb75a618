"""The lab desk's steps on MQTT: collected, received, analysed (with the lab's result class) and archived.

The registry is the record. The feed publishes its history entries for these statuses in id order, from a
cursor kept in the registry, and moves the cursor only once the broker has acknowledged a page: a broker
that is down, or a desk restarted meanwhile, loses nothing. A page may go out twice; ingest stores the same
point again (same tags and time), so the database does not double count.
"""

from __future__ import annotations

import logging
import re
import threading

from orelane.contract import messages as m, topics
from orelane.mqtt import MqttLink
from sampling_robot.labdesk.desk import DESK_STATUSES
from sampling_robot.registry import HistoryEntry, LabResult, SampleRegistry

log = logging.getLogger(__name__)

CURSOR = "mqtt_feed_history_id"  # the registry counter: the last history id the broker acknowledged
PAGE = 500
LEAF = "samples/record"


def result_class(result: LabResult | None) -> str | None:
    """'clean', or the lab's contaminant type folded to a tag value ('Plastic (PE)' -> 'plastic pe')."""
    if result is None:
        return None
    if not result.contaminant_found:
        return "clean"
    folded = re.sub(r"[^a-z0-9_-]+", " ", result.contaminant_type.lower()).strip()[:40].rstrip()
    return folded or "unspecified"


def sample_record(registry: SampleRegistry, entry: HistoryEntry) -> m.SampleRecord:
    row = registry.sample(entry.sample_id)
    klass = None
    if entry.status == "analysed":  # the result the sample was analysed with: the latest up to that moment
        results = [r for r in registry.results(entry.sample_id) if r.at_s <= entry.at_s]
        klass = result_class(results[-1] if results else None)
    return m.SampleRecord(row.sample_id, row.lane, row.kind, entry.status, entry.at_s,
                          belt_position_m=row.belt_position_m, tonnage_t=row.tonnage_t, event_id=row.event_id,
                          result_class=klass)


class RecordFeed:
    """Publishes the registry's lab-desk history as SampleRecords on each lane's samples/record topic."""

    def __init__(self, registry: SampleRegistry, link: MqttLink, site_id: str, ack_wait_s: float = 10.0):
        self.registry, self.link, self.site_id, self.ack_wait_s = registry, link, site_id, ack_wait_s
        self.published = 0  # records the broker acknowledged, since start
        self._sent: tuple[int, int] | None = None  # (last history id, records) of a page not yet acknowledged

    def publish_pending(self) -> int:
        """Send the next page of history; return how many records the broker acknowledged in this call."""
        if self._sent is not None:  # a page is out: wait for its acknowledgements, never send it twice
            if self.link.unacked:
                return 0
            self._acknowledged()
        if not self.link.connected.is_set():
            return 0
        entries = self.registry.history_after(self.registry.counter(CURSOR), DESK_STATUSES, PAGE)
        if not entries:
            return 0
        for entry in entries:
            record = sample_record(self.registry, entry)
            self.link.publish(topics.topic(self.site_id, record.lane, LEAF), record.to_json(), topics.qos(LEAF))
        self._sent = (entries[-1].id, len(entries))
        if self.link.drain(self.ack_wait_s):
            log.warning("lab desk feed: the broker has not acknowledged %d of %d sample records yet; the cursor "
                        "stays at history id %d until it does", self.link.unacked, len(entries),
                        self.registry.counter(CURSOR))
            return 0
        return self._acknowledged()

    def _acknowledged(self) -> int:
        last_id, n = self._sent
        self.registry.set_counter(CURSOR, last_id)
        self._sent = None
        self.published += n
        return n

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Publish until `stop` is set; a failure is logged and retried, never ends the desk."""
        while True:
            try:
                while self.publish_pending():
                    pass
            except Exception:
                log.exception("lab desk feed: publishing sample records failed; retrying in %g s", interval_s)
            if stop.wait(interval_s):
                return
