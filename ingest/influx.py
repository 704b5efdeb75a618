"""Writing line protocol to the InfluxDB v2 write API (InfluxDB 2.x and 3.x, VictoriaMetrics) with
influxdb-client, and finding exactly which lines a database refused.

How databases answer a batch with bad lines differs, so the search trusts a
line number only as a hint and otherwise bisects:

- InfluxDB 2.x refuses the whole batch with 400 and names the first bad line
  (JSON `line`, 1-based);
- InfluxDB 3 (and Cloud Serverless) write the good lines and answer 400 with
  up to 100 bad ones (`data[].line_number`);
- VictoriaMetrics 1.79 answers 204 and drops bad lines, logging them on its
  side, so nothing reaches the dead-letter file from it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from ingest.deadletter import one_line
from ingest.policy import Outcome, classify_status, parse_retry_after
from orelane.config import InfluxConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteResult:
    outcome: Outcome
    status: int | None  # None: no HTTP answer (refused connection, timeout)
    reason: str = ""
    retry_after_s: float | None = None
    body: bytes = b""

    @property
    def status_label(self) -> str:
        """For metrics: the HTTP status, or 'timeout' / 'connection' when there was none."""
        if self.status is not None:
            return str(self.status)
        return "timeout" if "timeout" in self.reason.lower() or "timed out" in self.reason.lower() else "connection"


Post = Callable[[bytes], WriteResult]


class InfluxWriter:
    """Posts line-protocol bodies with influxdb-client's synchronous write API; never retries on its own."""

    def __init__(self, cfg: InfluxConfig, clock: Callable[[], float] = time.time):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        self.cfg, self.clock = cfg, clock
        self.client = InfluxDBClient(url=cfg.url, token=cfg.token or "none", org=cfg.org,
                                     timeout=int(cfg.timeout_s * 1000), retries=False)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def post(self, body: bytes) -> WriteResult:
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException
        try:
            self.api.write(bucket=self.cfg.bucket, org=self.cfg.org, record=body,
                           write_precision=WritePrecision.NS)
            return WriteResult(Outcome.WRITTEN, 204)
        except ApiException as exc:
            headers = exc.headers or {}
            retry_after = parse_retry_after(headers.get("Retry-After"), self.clock())
            reply = exc.body if isinstance(exc.body, bytes) else str(exc.body or "").encode()
            return WriteResult(classify_status(exc.status), exc.status, server_reason(reply) or str(exc.reason),
                               retry_after, reply)
        except Exception as exc:  # refused connection, timeout, reset: the database is not there
            return WriteResult(Outcome.RETRY, None, one_line(f"{type(exc).__name__}: {exc}"))

    def close(self) -> None:
        self.client.close()


def server_reason(reply: bytes) -> str:
    """The error message of a write answer, on one line (InfluxDB 2.x `message`, 3.x `error` and `data`)."""
    text = reply.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return one_line(text)
    if isinstance(doc, dict):
        parts = [str(doc[key]) for key in ("message", "error") if doc.get(key)]
        return one_line("; ".join(parts) or text)
    return one_line(text)


_LINE_IN_TEXT = re.compile(r"line (\d+)")


def rejected_lines(reply: bytes, lines: int) -> dict[int, str]:
    """0-based line index -> reason, as far as a 400/422 answer names the bad lines (empty if it does not)."""
    try:
        doc = json.loads(reply.decode("utf-8", errors="replace"))
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    found: dict[int, str] = {}
    data = doc.get("data")
    if isinstance(data, list):  # InfluxDB 3: every bad line, 1-based
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("line_number"), int):
                found[item["line_number"] - 1] = one_line(str(item.get("error_message") or doc.get("error", "")))
    elif isinstance(data, dict) and isinstance(data.get("line_number"), int):
        found[data["line_number"] - 1] = one_line(str(data.get("error_message") or doc.get("error", "")))
    if not found and isinstance(doc.get("line"), int):  # InfluxDB 2.x: the first bad line, 1-based
        found[doc["line"] - 1] = server_reason(reply)
    return {index: reason for index, reason in found.items() if 0 <= index < lines}


@dataclass
class Delivery:
    """What became of a batch written with `write_batch`."""

    written_lines: int = 0
    rejected: list[tuple[bytes, int | None, str]] = field(default_factory=list)  # line, status, reason
    unsent: list[bytes] = field(default_factory=list)  # line protocol not written because the database failed
    failure: WriteResult | None = None
    requests: int = 0


def write_batch(post: Post, body: bytes, lines: int) -> Delivery:
    """Write a batch; if the database refuses lines, find exactly those and write the rest.

    The whole body goes in one request first. On 400/422 the lines the answer
    names are set aside and the rest is sent again; when the answer names no
    line, the batch is halved until each refused line stands alone (a few
    requests per bad line). 413 halves the batch. A failure of the database
    itself (no answer, 429, 5xx...) stops the search: what is left is
    returned as `unsent`, to be kept in the disk buffer.
    """
    delivery = Delivery()
    first = post(body)
    delivery.requests += 1
    if first.outcome is Outcome.WRITTEN:
        delivery.written_lines = lines
        return delivery
    if first.outcome is Outcome.RETRY:
        delivery.failure = first
        delivery.unsent = [body]
        return delivery
    pending: list[tuple[list[bytes], WriteResult | None]] = [(body.split(b"\n"), first)]
    while pending:
        chunk, answer = pending.pop(0)
        if delivery.failure is not None:
            delivery.unsent.extend(chunk)
            continue
        if answer is None:
            answer = post(b"\n".join(chunk))
            delivery.requests += 1
        if answer.outcome is Outcome.WRITTEN:
            delivery.written_lines += len(chunk)
        elif answer.outcome is Outcome.RETRY:
            delivery.failure = answer
            delivery.unsent.extend(chunk)
        elif len(chunk) == 1:
            delivery.rejected.append((chunk[0], answer.status, answer.reason or f"HTTP {answer.status}"))
        elif answer.outcome is Outcome.REJECTED_LINES and (named := rejected_lines(answer.body, len(chunk))):
            delivery.rejected.extend((chunk[i], answer.status, reason) for i, reason in sorted(named.items()))
            rest = [line for i, line in enumerate(chunk) if i not in named]
            if rest:
                pending.insert(0, (rest, None))
        else:
            half = len(chunk) // 2
            pending[0:0] = [(chunk[:half], None), (chunk[half:], None)]
    return delivery


class InfluxSink(InfluxWriter):
    """The InfluxDB sink of `sink_for`: posts line protocol (`post`), or encodes and writes points (`write`)."""

    def write(self, points) -> int:
        """Encode and write points in one request; raise RuntimeError naming the status when it fails."""
        from ingest import lineprotocol
        points = list(points)
        if not points:
            return 0
        result = self.post(lineprotocol.encode(points))
        if result.outcome is not Outcome.WRITTEN:
            raise RuntimeError(f"write of {len(points)} points to {self.cfg.url} failed: "
                               f"{result.status_label} {result.reason}")
        return len(points)
