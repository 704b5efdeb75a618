"""The decisions of ingest as small pure objects: when to flush a batch, how long to wait before retrying
the database, what a write answer means, and which timestamps to accept. Time is always an argument.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class BatchPolicy:
    """Named limits of a batch, as Telegraf names them.

    batch_size: points per write; a batch is written as soon as it holds this many.
    flush_interval_s: longest a point waits in an unfilled batch.
    flush_jitter_s: up to this much is added to each batch's interval, drawn per
        batch, so workers started together do not write in lockstep.
    """

    batch_size: int = 5000
    flush_interval_s: float = 1.0
    flush_jitter_s: float = 0.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size {self.batch_size} must be >= 1 point")
        if not self.flush_interval_s > 0:
            raise ValueError(f"flush_interval_s {self.flush_interval_s} must be > 0 s")
        if not 0 <= self.flush_jitter_s <= 60:
            raise ValueError(f"flush_jitter_s {self.flush_jitter_s} must be within 0-60 s")

    def deadline(self, opened_s: float, draw: float) -> float:
        """When a batch opened at opened_s must be written; draw is uniform in [0, 1) (the jitter's share)."""
        return opened_s + self.flush_interval_s + self.flush_jitter_s * draw

    def due(self, points: int, deadline_s: float | None, now_s: float) -> bool:
        """True when the batch is full or its deadline has passed."""
        return points >= self.batch_size or (points > 0 and deadline_s is not None and now_s >= deadline_s)


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter between attempts to reach a database that failed.

    A Retry-After the server sent wins over the backoff when it is longer, up to
    max_retry_after_s (a misconfigured proxy must not park ingest for a day).
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    max_retry_after_s: float = 300.0

    def delay(self, failures: int, retry_after_s: float | None, draw: float) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1-based); draw is uniform in [0, 1)."""
        backoff = min(self.max_s, self.initial_s * self.multiplier ** max(0, failures - 1))
        backoff *= 0.5 + 0.5 * draw
        if retry_after_s is not None:
            return max(backoff, min(retry_after_s, self.max_retry_after_s))
        return backoff


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now_s)


class Outcome(Enum):
    """What a write answer means for the batch."""

    WRITTEN = "written"
    RETRY = "retry"  # the database is down, slow or says later: keep the batch (disk buffer) and retry
    REJECTED_LINES = "rejected_lines"  # the database refused some lines: find them, dead-letter them, keep the rest
    TOO_LARGE = "too_large"  # split the batch and write the halves


def classify_status(status: int | None) -> Outcome:
    """Map an HTTP status (None: no answer at all) to what ingest does with the batch.

    400 and 422 name bad lines (InfluxDB 2.x refuses the whole batch with 400
    and names the first bad line; InfluxDB 3 writes the good lines and lists
    the bad ones; 422 is a partial write in InfluxDB 2.x); 413 means the body
    is too large. Everything else that is not 2xx is a problem of the database
    or of its configuration (401, 403, 404 included): the data is kept and
    retried, never dead-lettered.
    """
    if status is not None and 200 <= status < 300:
        return Outcome.WRITTEN
    if status in (400, 422):
        return Outcome.REJECTED_LINES
    if status == 413:
        return Outcome.TOO_LARGE
    return Outcome.RETRY


@dataclass(frozen=True)
class TimestampWindow:
    """Timestamps a point may carry, relative to ingest's wall clock.

    A device with a clock reset to 1970 or set years ahead would otherwise
    scatter points where no dashboard looks (and VictoriaMetrics drops samples
    outside its retention). Messages outside the window go to the dead-letter
    topic with the reason.
    """

    max_past_s: float = 366 * 86400.0
    max_future_s: float = 3600.0

    def bounds_ns(self, now_s: float) -> tuple[int, int]:
        return int((now_s - self.max_past_s) * 1e9), int((now_s + self.max_future_s) * 1e9)

    def reason(self, time_ns: int, now_s: float) -> str | None:
        """Why a timestamp is refused, or None when it is inside the window."""
        low, high = self.bounds_ns(now_s)
        if time_ns < low:
            return (f"timestamp {time_ns} ns is {(now_s - time_ns / 1e9) / 86400:.1f} days in the past "
                    f"(limit {self.max_past_s / 86400:g} days)")
        if time_ns > high:
            ahead_s = time_ns / 1e9 - now_s
            return f"timestamp {time_ns} ns is {ahead_s:.0f} s in the future (limit {self.max_future_s:g} s)"
        return None


@dataclass(frozen=True)
class BufferAlarm:
    """Raise the buffer alarm at raise_fraction of the limit, clear it below clear_fraction (hysteresis)."""

    raise_fraction: float = 0.8
    clear_fraction: float = 0.7

    def __post_init__(self) -> None:
        if not 0 < self.clear_fraction <= self.raise_fraction <= 1:
            raise ValueError(f"buffer alarm fractions must satisfy 0 < clear ({self.clear_fraction}) <= "
                             f"raise ({self.raise_fraction}) <= 1")

    def state(self, used_bytes: int, limit_bytes: int, raised: bool) -> bool:
        fill = used_bytes / limit_bytes if limit_bytes else math.inf
        return fill >= self.clear_fraction if raised else fill >= self.raise_fraction
