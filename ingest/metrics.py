"""Ingest's own health: Prometheus text metrics on an HTTP port, and the `ingest_health` point.

The service thread publishes a `HealthSnapshot` after every loop; the HTTP
thread only renders the latest snapshot, so it never touches the buffer or
the connection.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthSnapshot:
    messages_in: int = 0
    messages_refused: int = 0
    points_written: int = 0
    points_replayed: int = 0
    batches_buffered: int = 0  # batches waiting in the disk buffer now
    batches_buffered_total: int = 0  # batches ever put in the buffer
    buffer_bytes: int = 0
    buffer_limit_bytes: int = 0
    buffer_alarm: bool = False
    buffer_full: bool = False
    replay_lag_s: float = 0.0  # age of the oldest batch waiting in the buffer
    unacked_messages: int = 0
    dead_lettered_lines: int = 0
    corrupt_records_skipped: int = 0
    write_errors: dict[str, int] = field(default_factory=dict)  # HTTP status (or timeout/connection) -> count


_METRICS = (
    # name, type, help, snapshot attribute
    ("orelane_ingest_messages_in_total", "counter", "MQTT messages received", "messages_in"),
    ("orelane_ingest_messages_refused_total", "counter", "messages sent to the dead-letter topic",
     "messages_refused"),
    ("orelane_ingest_points_written_total", "counter", "points the database accepted (live and replayed)",
     "points_written"),
    ("orelane_ingest_points_replayed_total", "counter", "points written from the disk buffer", "points_replayed"),
    ("orelane_ingest_batches_buffered", "gauge", "batches waiting in the disk buffer", "batches_buffered"),
    ("orelane_ingest_batches_buffered_total", "counter", "batches put in the disk buffer", "batches_buffered_total"),
    ("orelane_ingest_buffer_bytes", "gauge", "bytes the disk buffer takes", "buffer_bytes"),
    ("orelane_ingest_buffer_limit_bytes", "gauge", "most bytes the disk buffer may take", "buffer_limit_bytes"),
    ("orelane_ingest_buffer_alarm", "gauge", "1 when the disk buffer is 80 % full or more", "buffer_alarm"),
    ("orelane_ingest_buffer_full", "gauge", "1 when a batch did not fit the buffer: messages are not acknowledged",
     "buffer_full"),
    ("orelane_ingest_replay_lag_seconds", "gauge", "age of the oldest batch waiting in the disk buffer",
     "replay_lag_s"),
    ("orelane_ingest_unacked_messages", "gauge", "messages received and not yet acknowledged", "unacked_messages"),
    ("orelane_ingest_dead_lettered_lines_total", "counter", "lines the database refused (dead-letter file)",
     "dead_lettered_lines"),
    ("orelane_ingest_buffer_corrupt_records_total", "counter", "damaged buffer records skipped",
     "corrupt_records_skipped"),
)


def render(snapshot: HealthSnapshot) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines = []
    for name, kind, help_text, attribute in _METRICS:
        value = getattr(snapshot, attribute)
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {float(value):g}"]
    lines += ["# HELP orelane_ingest_write_errors_total failed writes by HTTP status (or timeout, connection)",
              "# TYPE orelane_ingest_write_errors_total counter"]
    for status, count in sorted(snapshot.write_errors.items()):
        lines.append(f'orelane_ingest_write_errors_total{{status="{status}"}} {count}')
    return "\n".join(lines) + "\n"


def health_fields(snapshot: HealthSnapshot) -> dict:
    """Fields of the `ingest_health` point (integers as int, so the field types never change)."""
    return {"messages_in": snapshot.messages_in, "messages_refused": snapshot.messages_refused,
            "points_written": snapshot.points_written, "points_replayed": snapshot.points_replayed,
            "batches_buffered": snapshot.batches_buffered, "buffer_bytes": snapshot.buffer_bytes,
            "buffer_limit_bytes": snapshot.buffer_limit_bytes, "buffer_alarm": int(snapshot.buffer_alarm),
            "buffer_full": int(snapshot.buffer_full), "replay_lag_s": float(snapshot.replay_lag_s),
            "unacked_messages": snapshot.unacked_messages, "dead_lettered_lines": snapshot.dead_lettered_lines,
            "write_errors": sum(snapshot.write_errors.values())}


class MetricsServer:
    """GET /metrics on host:port (port 0: any free port, see .port) from a daemon thread."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], HealthSnapshot]):
        get_snapshot = snapshot

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                body = render(get_snapshot()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args) -> None:
                log.debug("metrics %s: " + fmt, self.client_address[0], *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise RuntimeError(f"ingest metrics: cannot listen on {host}:{port}: {exc.strerror}; choose another "
                               f"metrics_port (0: any free port)") from None
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="ingest-metrics",
                                        daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        log.info("ingest: Prometheus metrics on http://%s:%s/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
