"""`orelane ingest run`: subscribe, map messages to points, write in batches, acknowledge once stored.

A message is acknowledged to the broker only once its points are in the
database or durably (fsync) in the disk buffer, in the order the messages
arrived. When the database is down, slow (no answer within the InfluxDB
timeout_s) or answers 429/503/5xx, batches go to the disk buffer and a
circuit opens for a backoff (at least the server's Retry-After); the first
write after it is the probe. While the database takes data, new batches are
written directly and the buffer is replayed oldest first in time slices
between them. When the buffer is full, batches stay in memory and their
messages are not acknowledged: the broker stops sending after
`receive_maximum` unacknowledged messages and holds the rest.

With the embedded store (no InfluxDB configured) batches are written to
SQLite and retried in memory on failure; there is no disk buffer.
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import paho.mqtt.client as paho_mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest import lineprotocol
from ingest.buffer import SEGMENT_SUFFIX, BufferFull, DiskBuffer
from ingest.deadletter import DeadLetterFile, one_line
from ingest.influx import InfluxSink, Outcome, WriteResult, write_batch
from ingest.metrics import HealthSnapshot, MetricsServer, health_fields
from ingest.policy import BatchPolicy, BufferAlarm, RetryPolicy, TimestampWindow
from ingest.store import EmbeddedStore
from orelane.config import SiteConfig
from orelane.contract import ContractError, measurements, messages as m, topics
from orelane.contract.measurements import Point
from orelane.mqtt import SESSION_EXPIRY_S, MqttLink

log = logging.getLogger(__name__)

__all__ = ["IngestCounters", "IngestOptions", "IngestService", "InfluxSink", "Sink", "sink_for"]


class Sink(Protocol):
    def write(self, points: list[Point]) -> int: ...


@dataclass(frozen=True)
class IngestOptions:
    """Ingest settings a worker takes from [ingest] (`from_site`), and four that have no TOML key yet:
    buffer_segment_bytes, retry_initial_s, retry_max_s, replay_slice_s.

    Paths default under the site's data_dir: the buffer in <[ingest] buffer_dir>/<client id> (one per worker:
    a worker locks its directory), the dead-letter file at [ingest] deadletter_file.
    """

    buffer_dir: Path | None = None
    buffer_limit_bytes: int = 1 << 30  # on disk; at the limit messages are not acknowledged
    buffer_segment_bytes: int | None = None  # default limit/16, within 1-64 MiB
    buffer_alarm_fraction: float = 0.8  # alarm (log, metric, ingest_health) at this fill
    deadletter_file: Path | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # Prometheus /metrics; None: off, 0: any free port
    health_interval_s: float = 10.0  # ingest_health point every this often
    flush_jitter_s: float = 0.1
    max_timestamp_past_s: float = 366 * 86400.0
    max_timestamp_future_s: float = 3600.0
    receive_maximum: int = 1000  # MQTT 5: unacknowledged messages the broker may send this worker
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    replay_slice_s: float = 0.25  # longest replay runs between two live batches

    @classmethod
    def from_site(cls, site: SiteConfig, **overrides) -> "IngestOptions":
        """The site file's [ingest] keys, then `overrides` (command-line options). The buffer directory and the
        dead-letter file stay unset unless overridden: the service puts them under data_dir per its client id."""
        ig = site.ingest
        keys = dict(buffer_limit_bytes=ig.buffer_limit_bytes, buffer_alarm_fraction=ig.buffer_alarm_fraction,
                    metrics_host=ig.metrics_host, metrics_port=ig.metrics_port,
                    health_interval_s=ig.health_interval_s, flush_jitter_s=ig.flush_jitter_s,
                    max_timestamp_past_s=ig.max_timestamp_past_s, max_timestamp_future_s=ig.max_timestamp_future_s,
                    receive_maximum=ig.receive_maximum)
        return cls(**{**keys, **overrides})


def _warn_of_unclaimed_segments(buffer_root: Path) -> None:
    """Releases before 2026-12 buffered every worker straight in <buffer_dir>; no worker reads that any more."""
    segments = sorted(buffer_root.glob("*" + SEGMENT_SUFFIX)) if buffer_root.is_dir() else []
    if segments:
        log.warning("%d buffered segment(s) in %s belong to no worker (an older release wrote there): replay them "
                    "with `orelane ingest replay %s --config <site file>` while no worker runs", len(segments),
                    buffer_root, buffer_root)


@dataclass
class IngestCounters:
    messages_in: int = 0
    messages_refused: int = 0
    points_written: int = 0
    points_replayed: int = 0
    write_errors: int = 0
    write_errors_by_status: dict[str, int] = field(default_factory=dict)
    batches_buffered_total: int = 0
    dead_lettered_lines: int = 0
    refusals: list[str] = field(default_factory=list)  # the first REFUSALS_KEPT reasons


REFUSALS_KEPT = 1000


class _Waiter:
    """A received QoS 1 message until it may be acknowledged: its batch stored, its dead letter published."""

    __slots__ = ("message", "holds", "published")

    def __init__(self, message):
        self.message = message
        self.holds = 0
        self.published: list[paho_mqtt.MQTTMessageInfo] = []

    @property
    def done(self) -> bool:
        return self.holds == 0 and all(_delivered(info) for info in self.published)


_QUEUED = (paho_mqtt.MQTT_ERR_SUCCESS, paho_mqtt.MQTT_ERR_NO_CONN, paho_mqtt.MQTT_ERR_AGAIN)


def _delivered(info: paho_mqtt.MQTTMessageInfo) -> bool:
    """True once the broker acknowledged a QoS 1 publish.

    paho queues a message published while disconnected (rc NO_CONN) and sends it
    after the reconnect, but its is_published() raises for that rc even after
    the acknowledgement, so the flag paho sets on PUBACK is read directly. A
    publish paho refused for good must not hold acknowledgements forever.
    """
    if info.rc in _QUEUED:
        return info._published
    return True


@dataclass
class _Batch:
    opened_s: float
    deadline_s: float
    chunks: list[bytes] = field(default_factory=list)  # line protocol
    lines: int = 0
    results: dict[tuple, list[m.SpectrumResults]] = field(default_factory=dict)  # (site, lane, model, classes)
    result_rows: int = 0
    points: list[Point] = field(default_factory=list)  # embedded store
    waiters: list[_Waiter] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.lines + self.result_rows + len(self.points)


@dataclass
class _Sealed:
    body: bytes
    lines: int
    points: list[Point]
    waiters: list[_Waiter]


class _IngestLink(MqttLink):
    """MqttLink that also asks the broker (MQTT 5 Receive Maximum) to send at most so many unacknowledged messages."""

    def __init__(self, *args, receive_maximum: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.receive_maximum = receive_maximum

    def start(self, wait_s: float = 0.0) -> "MqttLink":
        if self.protocol != 5:
            return super().start(wait_s)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = self.receive_maximum
        self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, clean_start=False,
                                  properties=props)
        self.client.loop_start()
        if wait_s and not self.connected.wait(wait_s):
            raise ConnectionError(f"MQTT {self.client_id}: no connection to {self.cfg.host}:{self.cfg.port} "
                                  f"within {wait_s:.0f} s")
        return self


class IngestService:
    """One ingest worker. `run(stop)` until stop is set; `counters` and `snapshot()` say how it went."""

    def __init__(self, site: SiteConfig, sink: Sink, client_id: str | None = None, share_group: str | None = None,
                 clock: Callable[[], float] = time.monotonic, options: IngestOptions | None = None,
                 wall_clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        self.site, self.sink, self.clock, self.wall_clock = site, sink, clock, wall_clock
        self.options = options = options or IngestOptions()
        self.rng = rng or random.Random()
        self.client_id = client_id or f"orelane-ingest-{site.site_id}"
        self.batch_policy = BatchPolicy(site.ingest.batch_size, site.ingest.flush_interval_s, options.flush_jitter_s)
        self.retry_policy = RetryPolicy(options.retry_initial_s, options.retry_max_s)
        self.window = TimestampWindow(options.max_timestamp_past_s, options.max_timestamp_future_s)
        # backwards-compatible names
        self.batch_size = self.batch_policy.batch_size
        self.flush_interval_s = self.batch_policy.flush_interval_s
        self.counters = IngestCounters()
        self.lines_path = hasattr(sink, "post")  # line protocol to a database, with the disk buffer
        self.buffer: DiskBuffer | None = None
        if self.lines_path:
            directory = options.buffer_dir or site.data_dir / site.ingest.buffer_dir / self.client_id
            if options.buffer_dir is None:
                _warn_of_unclaimed_segments(site.data_dir / site.ingest.buffer_dir)
            self.buffer = DiskBuffer(directory, options.buffer_limit_bytes, options.buffer_segment_bytes,
                                     BufferAlarm(options.buffer_alarm_fraction,
                                                 min(options.buffer_alarm_fraction, 0.7)))
        self.deadletters = DeadLetterFile(options.deadletter_file or site.data_dir / site.ingest.deadletter_file)
        prefix = f"$share/{share_group}/" if share_group else ""
        subs = [(prefix + topics.subscription(leaf, site=site.site_id), topics.qos(leaf))
                for leaf in measurements.INGESTED_LEAVES]
        self.mqtt = _IngestLink(site.mqtt, self.client_id, subs, manual_ack=True,
                                receive_maximum=options.receive_maximum)
        self.metrics: MetricsServer | None = None
        self._batch: _Batch | None = None
        self._stuck: collections.deque[_Sealed] = collections.deque()  # stored nowhere yet, oldest first
        self._unacked: collections.deque[_Waiter] = collections.deque()
        self._down_until = -float("inf")  # no write attempt before this (clock)
        self._failures = 0
        self._buffer_full = False
        self._next_health_s: float | None = None
        self._snapshot = HealthSnapshot()
        self._snapshot_lock = threading.Lock()

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        """Take messages until stop is set; then store (or buffer) what is pending and disconnect."""
        if self.options.metrics_port is not None:
            self.metrics = MetricsServer(self.options.metrics_host, self.options.metrics_port, self.snapshot).start()
        self.mqtt.start()
        self._next_health_s = self.clock() + self.options.health_interval_s
        try:
            while not stop.is_set():
                self._receive(self._wait_s())
                now = self.clock()
                if self._batch is not None and self.batch_policy.due(self._batch.size, self._batch.deadline_s, now):
                    self._stuck.append(self._seal())
                self._store_stuck()
                self._replay()
                self._ack_ready()
                self._health()
                self._publish_snapshot()
            self._shutdown()
        finally:
            self.mqtt.stop()
            if self.metrics is not None:
                self.metrics.stop()
            if self.buffer is not None:
                self.buffer.close()

    def _wait_s(self) -> float:
        now = self.clock()
        wait = 0.2
        if self._batch is not None:
            wait = min(wait, self._batch.deadline_s - now)
        if self._stuck or (self.buffer is not None and len(self.buffer)):
            wait = min(wait, max(self._down_until - now, 0.0) if self._down_until > now else 0.0)
        if self._unacked and not self._unacked[0].done and self._unacked[0].holds == 0:
            wait = min(wait, 0.02)  # a dead letter on its way to the broker
        return max(0.0, wait)

    def _receive(self, wait_s: float) -> None:
        try:
            message = self.mqtt.inbox.get(timeout=wait_s) if wait_s > 0 else self.mqtt.inbox.get_nowait()
        except queue.Empty:
            return
        self._take(message)
        for _ in range(10_000):  # take what is queued, up to a full batch
            if self._batch is not None and self._batch.size >= self.batch_policy.batch_size:
                return
            try:
                message = self.mqtt.inbox.get_nowait()
            except queue.Empty:
                return
            self._take(message)

    def _open_batch(self) -> _Batch:
        if self._batch is None:
            now = self.clock()
            self._batch = _Batch(now, self.batch_policy.deadline(now, self.rng.random()))
        return self._batch

    # ------------------------------------------------------------------ messages to points

    def _take(self, message) -> None:
        self.counters.messages_in += 1
        waiter = None
        if message.qos > 0:
            waiter = _Waiter(message)
            self._unacked.append(waiter)
        try:
            site, lane, leaf = topics.parse(message.topic)
        except ContractError as exc:
            self._refuse(message, None, None, str(exc), waiter)
            return
        try:
            if leaf == "results/spectra" and self.lines_path:
                self._take_results(message, site, lane, waiter)
            else:
                self._take_points(message, site, lane, leaf, waiter)
        except ContractError as exc:
            self._refuse(message, lane, leaf, str(exc), waiter)
        except Exception as exc:  # a bug must cost one message, not the worker
            log.exception("ingest: unexpected error on a message on %s", message.topic)
            self._refuse(message, lane, leaf, f"ingest could not read it ({type(exc).__name__}: {exc})", waiter)

    def _take_results(self, message, site: str, lane: str, waiter: _Waiter | None) -> None:
        res = m.SpectrumResults.from_bytes(message.payload)
        if not len(res):
            return
        now_s = self.wall_clock()
        low, high = self.window.bounds_ns(now_s)
        time_ns = np.asarray(res.timestamp_ns, dtype=np.int64)
        in_window = (time_ns >= low) & (time_ns <= high)
        keep, refused = lineprotocol.check_spectrum_results(site, lane, res, in_window)
        for row in np.flatnonzero(~in_window)[:3].tolist():
            refused[row] = self.window.reason(int(time_ns[row]), now_s) or "timestamp outside the window"
        if not in_window.all() or refused:
            n_bad = int((~keep).sum())
            first = sorted(refused)[:3]
            reason = (f"spectrum_results: {n_bad} of {len(res)} rows refused: "
                      + "; ".join(f"seq {int(res.seq[row])}: {refused[row]}" for row in first))
            row = first[0]
            row_time = int(time_ns[row]) if in_window[row] else None
            self._refuse(message, lane, "results/spectra", reason, waiter, seq=int(res.seq[row]),
                         message_time_ns=row_time, whole=False)
        if not keep.any():
            return
        rows = res if keep.all() else lineprotocol.select_rows(res, keep)
        batch = self._open_batch()
        batch.results.setdefault((site, lane, res.model_version, res.class_names), []).append(rows)
        batch.result_rows += len(rows)
        self._hold(batch, waiter)

    def _take_points(self, message, site: str, lane: str, leaf: str, waiter: _Waiter | None) -> None:
        points = measurements.points_for(site, lane, leaf, message.payload)
        now_s = self.wall_clock()
        for p in points:
            reason = self.window.reason(p.time_ns, now_s)
            if reason is not None:
                seq = p.fields.get("seq") if isinstance(p.fields.get("seq"), int) else None
                self._refuse(message, lane, leaf, f"{p.measurement}: {reason}", waiter, seq=seq)
                return
        if not points:
            return
        batch = self._open_batch()
        if self.lines_path:
            encoded = lineprotocol.encode_lenient(points)
            if encoded.refused:
                index, reason = next(iter(encoded.refused.items()))
                self._refuse(message, lane, leaf, reason, waiter, seq=points[index].fields.get("seq"))
                return
            batch.chunks.append(encoded.body)
            batch.lines += encoded.points
        else:
            batch.points.extend(points)
        self._hold(batch, waiter)

    def _hold(self, batch: _Batch, waiter: _Waiter | None) -> None:
        if waiter is not None:
            waiter.holds += 1
            batch.waiters.append(waiter)

    def _refuse(self, message, lane: str | None, leaf: str | None, reason: str, waiter: _Waiter | None,
                seq: int | None = None, message_time_ns: int | None = None, whole: bool = True) -> None:
        """Send a refused message (or its refused rows) to the lane's dead-letter topic; keep running."""
        reason = one_line(reason)
        if whole:
            self.counters.messages_refused += 1
        if len(self.counters.refusals) < REFUSALS_KEPT:
            self.counters.refusals.append(f"{message.topic}: {reason}")
        log.warning("ingest: refused %s on %s: %s", "message" if whole else "rows of a message", message.topic,
                    reason)
        if lane is None or leaf == "deadletter":
            # no lane to address, or a dead letter about a dead letter: keep it local so nothing loops
            self.deadletters.write([{"received_s": self.wall_clock(), "topic": message.topic, "reason": reason,
                                     "payload_prefix_b64": m.DeadLetter.prefix_of(message.payload)}])
            return
        if message_time_ns is not None and self.window.reason(message_time_ns, self.wall_clock()) is not None:
            message_time_ns = None
        letter = m.DeadLetter(lane, message.topic, f"ingest: {reason}", self.wall_clock(),
                              seq if isinstance(seq, int) and not isinstance(seq, bool) else None, message_time_ns,
                              m.DeadLetter.prefix_of(message.payload))
        info = self.mqtt.publish(_deadletter_topic(message.topic), letter.to_json(), qos=1)
        if waiter is not None:
            waiter.published.append(info)

    # ------------------------------------------------------------------ storing

    def _seal(self) -> _Sealed:
        batch, self._batch = self._batch, None
        chunks = list(batch.chunks)
        lines = batch.lines
        for (site, lane, _, _), parts in batch.results.items():
            encoded = lineprotocol.encode_spectrum_results(site, lane, lineprotocol.concat_results(parts))
            if encoded.refused:  # checked on arrival; only a bug gets here
                log.error("ingest: %d result rows could not be encoded at flush: %s", len(encoded.refused),
                          next(iter(encoded.refused.values())))
            if encoded.points:
                chunks.append(encoded.body)
                lines += encoded.points
        return _Sealed(b"\n".join(chunks), lines, batch.points, batch.waiters)

    def _store_stuck(self) -> None:
        while self._stuck:
            if not self._store(self._stuck[0]):
                return
            for waiter in self._stuck.popleft().waiters:
                waiter.holds -= 1

    def _store(self, sealed: _Sealed) -> bool:
        """Put a batch where it survives a crash (database or disk buffer); False: keep it and try later."""
        now = self.clock()
        if not self.lines_path:
            if now < self._down_until:
                return False
            try:
                if sealed.points:
                    self.counters.points_written += self.sink.write(sealed.points)
                self._failures = 0
                return True
            except Exception as exc:  # database locked, disk full: keep the batch, retry with backoff
                self._note_failure(WriteResult(Outcome.RETRY, None, one_line(f"{type(exc).__name__}: {exc}")))
                return False
        if sealed.lines == 0:
            return True
        if now < self._down_until:
            return self._to_buffer([sealed.body], sealed.lines)
        delivery = write_batch(self.sink.post, sealed.body, sealed.lines)
        self._account(delivery, replayed=False)
        if delivery.failure is not None:
            return self._to_buffer(delivery.unsent, sealed.lines - delivery.written_lines - len(delivery.rejected))
        return True

    def _account(self, delivery, replayed: bool) -> None:
        self.counters.points_written += delivery.written_lines
        if replayed:
            self.counters.points_replayed += delivery.written_lines
        if delivery.rejected:
            self.counters.dead_lettered_lines += len(delivery.rejected)
            for _, status, _ in delivery.rejected:
                self._count_error(str(status))
            self.deadletters.write([{"received_s": self.wall_clock(), "status": status, "reason": reason,
                                     "line": line.decode("utf-8", errors="replace")}
                                    for line, status, reason in delivery.rejected])
            log.warning("ingest: the database refused %d lines (dead-letter file %s); first: %s",
                        len(delivery.rejected), self.deadletters.path, delivery.rejected[0][2])
        if delivery.failure is not None:
            self._note_failure(delivery.failure)
        elif delivery.written_lines:
            if self._failures:
                log.warning("ingest: the database takes writes again after %d failed attempts", self._failures)
            self._failures = 0

    def _to_buffer(self, pieces: list[bytes], lines: int) -> bool:
        assert self.buffer is not None
        body = b"\n".join(pieces)
        try:
            for piece, piece_lines in _split(body, lines, self.buffer.segment_bytes):
                self.buffer.append(piece, piece_lines, self.wall_clock())
                self.counters.batches_buffered_total += 1
        except (BufferFull, OSError) as exc:  # OSError: the disk is full or failing; keep the batch in memory
            if not self._buffer_full:
                log.error("ingest: %s; not acknowledging messages until the database takes data (the broker holds "
                          "them, up to its queue limits)", exc)
            self._buffer_full = True
            return False
        if self._buffer_full:
            log.warning("ingest: the disk buffer takes batches again")
        self._buffer_full = False
        return True

    def _note_failure(self, result: WriteResult) -> None:
        self._failures += 1
        self._count_error(result.status_label)
        delay = self.retry_policy.delay(self._failures, result.retry_after_s, self.rng.random())
        self._down_until = self.clock() + delay
        log.warning("ingest: write failed (%s %s); next attempt in %.1f s%s", result.status_label, result.reason,
                    delay, f" (Retry-After {result.retry_after_s:g} s)" if result.retry_after_s is not None else "")

    def _count_error(self, label: str) -> None:
        self.counters.write_errors += 1
        self.counters.write_errors_by_status[label] = self.counters.write_errors_by_status.get(label, 0) + 1

    def _replay(self) -> None:
        """Write buffered batches, oldest first, for at most replay_slice_s while the database takes them."""
        if self.buffer is None or not len(self.buffer):
            return
        started = self.clock()
        while len(self.buffer) and self.clock() >= self._down_until:
            try:
                record = self.buffer.peek()
            except OSError as exc:
                log.error("ingest: cannot read the disk buffer %s: %s; replay paused", self.buffer.directory, exc)
                self._down_until = self.clock() + self.retry_policy.max_s
                return
            if record is None:
                return
            delivery = write_batch(self.sink.post, record.body, record.points)
            self._account(delivery, replayed=True)
            if delivery.failure is not None:
                if delivery.written_lines or delivery.rejected:  # keep only what is left, at the tail
                    left = record.points - delivery.written_lines - len(delivery.rejected)
                    try:
                        self.buffer.append(b"\n".join(delivery.unsent), left, record.enqueued_ns / 1e9)
                        self.buffer.consume(record)
                    except BufferFull:
                        pass  # replayed whole next time; the database's same-point rule makes that harmless
                return
            self.buffer.consume(record)
            if self._buffer_full:
                self._store_stuck()
            if self.clock() - started >= self.options.replay_slice_s and (
                    self._batch or self._stuck or not self.mqtt.inbox.empty()):
                return  # live data first; the rest of the backlog after the next batch

    # ------------------------------------------------------------------ acknowledging, health, shutdown

    def _ack_ready(self) -> None:
        while self._unacked and self._unacked[0].done:
            self.mqtt.ack(self._unacked.popleft().message)

    def _health(self) -> None:
        now = self.clock()
        if self._next_health_s is None or now < self._next_health_s:
            return
        self._next_health_s = now + self.options.health_interval_s
        self._publish_snapshot()
        point = Point("ingest_health", {"site": self.site.site_id, "worker": self.client_id},
                      health_fields(self.snapshot()), int(self.wall_clock() * 1e9))
        batch = self._open_batch()
        if self.lines_path:
            batch.chunks.append(lineprotocol.encode_point(point).encode())
            batch.lines += 1
        else:
            batch.points.append(point)

    def snapshot(self) -> HealthSnapshot:
        with self._snapshot_lock:
            return self._snapshot

    def _publish_snapshot(self) -> None:
        c, b = self.counters, self.buffer
        oldest = b.oldest_enqueued_s() if b is not None else None
        snap = HealthSnapshot(
            messages_in=c.messages_in, messages_refused=c.messages_refused, points_written=c.points_written,
            points_replayed=c.points_replayed, batches_buffered=len(b) if b is not None else 0,
            batches_buffered_total=c.batches_buffered_total, buffer_bytes=b.used_bytes if b is not None else 0,
            buffer_limit_bytes=b.limit_bytes if b is not None else 0, buffer_alarm=bool(b and b.alarm),
            buffer_full=self._buffer_full,
            replay_lag_s=max(0.0, self.wall_clock() - oldest) if oldest is not None else 0.0,
            unacked_messages=len(self._unacked), dead_lettered_lines=c.dead_lettered_lines,
            corrupt_records_skipped=b.corrupt_records_skipped if b is not None else 0,
            write_errors=dict(c.write_errors_by_status))
        with self._snapshot_lock:
            self._snapshot = snap

    def _shutdown(self) -> None:
        if self._batch is not None and self._batch.size:
            self._stuck.append(self._seal())
        self._down_until = -float("inf")
        self._store_stuck()
        deadline = time.monotonic() + 2.0
        while self._unacked and time.monotonic() < deadline:
            self._ack_ready()
            if not self._unacked or self._unacked[0].holds:
                break
            time.sleep(0.02)  # a dead letter still on its way to the broker
        self._ack_ready()
        if self._unacked:
            log.warning("ingest: stopping with %d messages not acknowledged; the broker delivers them again",
                        len(self._unacked))
        self._publish_snapshot()


def _deadletter_topic(topic_name: str) -> str:
    site, lane, _ = topics.parse(topic_name)
    return topics.topic(site, lane, "deadletter")


def _split(body: bytes, lines: int, max_bytes: int):
    """(piece, lines) of at most about max_bytes each, cut at line ends, for the disk buffer."""
    if len(body) <= max_bytes:
        yield body, lines
        return
    start = 0
    while start < len(body):
        end = body.rfind(b"\n", start, start + max_bytes)
        if end <= start:
            end = body.find(b"\n", start + max_bytes)
            end = len(body) if end == -1 else end
        piece = body[start:end]
        yield piece, piece.count(b"\n") + 1
        start = end + 1


def sink_for(site: SiteConfig) -> Sink:
    """InfluxDB when configured, else the embedded store in the site's data directory."""
    if site.influx is not None:
        return InfluxSink(site.influx)
    return EmbeddedStore(site.data_dir / "orelane-points.sqlite")
