"""The disk buffer: batches the database could not take, kept in order until it can.

Append-only segment files in one directory. Each record is

    offset  size  content
    0       4     magic b"OLB1"
    4       4     payload length P (u32, little-endian)
    8       4     CRC-32 of the payload (u32)
    12      8     enqueued at, ns since the epoch (i64)
    20      4     points in the batch (u32)
    24      P-12  the batch as line protocol

`append` returns once the record is on disk (fsync), so a message can be
acknowledged to the broker right after. Records are replayed oldest first;
a cursor file remembers how far replay got (without fsync: after a crash a
few records are replayed twice, which the database's same-series-same-time
rule makes harmless). A segment is deleted once replayed. Writing never
continues an existing segment: after a restart a new one is started, so a
torn tail from a crash stays behind its last complete record.

A record whose checksum does not match, or a tail cut short by a crash, is
skipped with a warning naming the file and offset; reading resumes at the
next intact record.

The buffer holds at most `limit_bytes` on disk; `append` raises BufferFull
beyond that, and `alarm` turns on at 80 % (see policy.BufferAlarm).
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from ingest.policy import BufferAlarm

log = logging.getLogger(__name__)

MAGIC = b"OLB1"
_HEADER = struct.Struct("<4sII")  # magic, payload length, crc32
_META = struct.Struct("<qI")  # enqueued ns, points
_CURSOR = struct.Struct("<QQI")  # segment number, offset, crc32 of the first 16 bytes
SEGMENT_SUFFIX = ".seg"
MAX_RECORD_BYTES = 1 << 30


class BufferFull(Exception):
    """The buffer is at its limit; the caller keeps the batch (and does not acknowledge its messages)."""


class BufferLocked(RuntimeError):
    """Another process (an ingest worker or a replay) holds the buffer directory."""


@dataclass(frozen=True)
class Record:
    segment: int
    offset: int
    size: int  # header and payload, bytes on disk
    enqueued_ns: int
    points: int
    body: bytes


@dataclass(frozen=True)
class _Entry:
    segment: int
    offset: int
    size: int
    enqueued_ns: int
    points: int


def encode_record(body: bytes, points: int, enqueued_ns: int) -> bytes:
    payload = _META.pack(enqueued_ns, points) + body
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def scan_segment(data: bytes, where: str) -> tuple[list[tuple[int, int, int, int]], int]:
    """(offset, size, enqueued_ns, points) of every intact record in a segment's bytes, and how many were skipped.

    A bad record is logged with `where` and its offset, and reading resumes at
    the next position where an intact record starts.
    """
    records, skipped, offset = [], 0, 0
    while offset < len(data):
        problem = _check_at(data, offset)
        if problem is None:
            size = _HEADER.size + _HEADER.unpack_from(data, offset)[1]
            enqueued_ns, points = _META.unpack_from(data, offset + _HEADER.size)
            records.append((offset, size, enqueued_ns, points))
            offset += size
            continue
        skipped += 1
        resume = _next_intact(data, offset + 1)
        if resume is None:
            log.warning("buffer: %s: %s at offset %d; skipping the %d bytes to the end of the file", where,
                        problem, offset, len(data) - offset)
            break
        log.warning("buffer: %s: %s at offset %d; skipping %d bytes to the next intact record at offset %d",
                    where, problem, offset, resume - offset, resume)
        offset = resume
    return records, skipped


def _check_at(data: bytes, offset: int) -> str | None:
    if len(data) - offset < _HEADER.size:
        return f"torn record header ({len(data) - offset} bytes)"
    magic, length, crc = _HEADER.unpack_from(data, offset)
    if magic != MAGIC:
        return f"no record marker (found {bytes(magic)!r})"
    if length < _META.size or length > MAX_RECORD_BYTES:
        return f"impossible record length {length}"
    start = offset + _HEADER.size
    if start + length > len(data):
        return f"torn record ({len(data) - start} of {length} bytes)"
    if zlib.crc32(data[start:start + length]) != crc:
        return "checksum mismatch"
    return None


def _next_intact(data: bytes, start: int) -> int | None:
    position = data.find(MAGIC, start)
    while position != -1:
        if _check_at(data, position) is None:
            return position
        position = data.find(MAGIC, position + 1)
    return None


class DiskBuffer:
    """Append-only, checksummed, size-bounded FIFO of line-protocol batches in one directory."""

    def __init__(self, directory: str | Path, limit_bytes: int, segment_bytes: int | None = None,
                 alarm: BufferAlarm = BufferAlarm()):
        if limit_bytes < 4096:
            raise ValueError(f"buffer limit_bytes {limit_bytes} is below 4096 bytes")
        self.directory = Path(directory)
        self.limit_bytes = limit_bytes
        self.segment_bytes = segment_bytes or min(64 << 20, max(1 << 20, limit_bytes // 16))
        self.alarm_policy = alarm
        self.alarm = False
        self.corrupt_records_skipped = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise BufferLocked(f"buffer {self.directory} is in use by another process (an ingest worker or a "
                               f"replay); stop it or give each worker its own buffer_dir") from None
        self._entries: collections.deque[_Entry] = collections.deque()
        self._sizes: dict[int, int] = {}  # segment number -> bytes on disk
        self._writer_fd: int | None = None
        self._writer_segment: int | None = None
        self._cursor_fd = os.open(self.directory / "cursor", os.O_RDWR | os.O_CREAT, 0o644)
        self._open_existing()
        self._update_alarm()

    # ------------------------------------------------------------------ state

    @property
    def used_bytes(self) -> int:
        """Bytes the buffer takes on disk (whole segment files)."""
        return sum(self._sizes.values())

    @property
    def records(self) -> int:
        """Batches waiting for replay."""
        return len(self._entries)

    @property
    def points(self) -> int:
        return sum(e.points for e in self._entries)

    def oldest_enqueued_s(self) -> float | None:
        return self._entries[0].enqueued_ns / 1e9 if self._entries else None

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ writing

    def append(self, body: bytes, points: int, enqueued_s: float) -> None:
        """Add a batch; on return it is on disk (fsync). Raise BufferFull when it does not fit the limit."""
        record = encode_record(body, points, int(enqueued_s * 1e9))
        if self.used_bytes + len(record) > self.limit_bytes:
            raise BufferFull(f"buffer {self.directory} holds {self.used_bytes} of {self.limit_bytes} bytes; "
                             f"a {len(record)}-byte batch does not fit")
        if self._writer_fd is None or self._sizes.get(self._writer_segment, 0) >= self.segment_bytes:
            self._start_segment()
        offset = self._sizes[self._writer_segment]
        view = memoryview(record)
        while view:
            written = os.write(self._writer_fd, view)
            view = view[written:]
        os.fsync(self._writer_fd)
        self._sizes[self._writer_segment] += len(record)
        self._entries.append(_Entry(self._writer_segment, offset, len(record), int(enqueued_s * 1e9), points))
        self._update_alarm()

    def _start_segment(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)
        number = max(self._sizes, default=self._cursor_segment) + 1
        path = self._path(number)
        self._writer_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._writer_segment = number
        self._sizes[number] = 0
        dir_fd = os.open(self.directory, os.O_RDONLY)  # make the new file's name durable too
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # ------------------------------------------------------------------ reading

    def peek(self) -> Record | None:
        """The oldest batch not yet replayed, or None. Records found damaged since opening are skipped."""
        while self._entries:
            entry = self._entries[0]
            with open(self._path(entry.segment), "rb") as f:
                f.seek(entry.offset)
                data = f.read(entry.size)
            problem = _check_at(data, 0)
            if problem is None:
                return Record(entry.segment, entry.offset, entry.size, entry.enqueued_ns, entry.points,
                              data[_HEADER.size + _META.size:])
            log.warning("buffer: %s: %s at offset %d; skipping the record", self._path(entry.segment), problem,
                        entry.offset)
            self.corrupt_records_skipped += 1
            self._entries.popleft()
            self._after_consume(entry)
        return None

    def consume(self, record: Record) -> None:
        """Mark the record returned by peek() as replayed; delete segments that are done."""
        if not self._entries or (self._entries[0].segment, self._entries[0].offset) != (record.segment,
                                                                                          record.offset):
            raise ValueError(f"consume() of segment {record.segment} offset {record.offset}, which is not the "
                             f"oldest record")
        entry = self._entries.popleft()
        self._after_consume(entry)
        self._update_alarm()

    def _after_consume(self, entry: _Entry) -> None:
        self._write_cursor(entry.segment, entry.offset + entry.size)
        next_segment = self._entries[0].segment if self._entries else None
        if next_segment != entry.segment:
            if entry.segment == self._writer_segment:
                os.close(self._writer_fd)
                self._writer_fd = self._writer_segment = None
            self._delete_segment(entry.segment)

    # ------------------------------------------------------------------ opening

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{SEGMENT_SUFFIX}"

    def _read_cursor(self) -> tuple[int, int]:
        raw = os.pread(self._cursor_fd, _CURSOR.size, 0)
        if len(raw) == _CURSOR.size:
            segment, offset, crc = _CURSOR.unpack(raw)
            if zlib.crc32(raw[:16]) == crc:
                return segment, offset
            log.warning("buffer: %s: cursor file is damaged; replaying from the oldest segment",
                        self.directory / "cursor")
        return 0, 0

    def _write_cursor(self, segment: int, offset: int) -> None:
        raw = struct.pack("<QQ", segment, offset)
        os.pwrite(self._cursor_fd, raw + struct.pack("<I", zlib.crc32(raw)), 0)
        self._cursor_segment = segment

    def _open_existing(self) -> None:
        cursor_segment, cursor_offset = self._read_cursor()
        self._cursor_segment = cursor_segment
        numbers = sorted(int(p.name[:-len(SEGMENT_SUFFIX)]) for p in self.directory.glob(f"*{SEGMENT_SUFFIX}")
                         if p.name[:-len(SEGMENT_SUFFIX)].isdigit())
        for number in numbers:
            path = self._path(number)
            if number < cursor_segment:
                path.unlink()  # replayed before the last stop
                continue
            data = path.read_bytes()
            self._sizes[number] = len(data)
            records, skipped = scan_segment(data, str(path))
            self.corrupt_records_skipped += skipped
            start = cursor_offset if number == cursor_segment else 0
            kept = 0
            for offset, size, enqueued_ns, points in records:
                if offset >= start:
                    self._entries.append(_Entry(number, offset, size, enqueued_ns, points))
                    kept += 1
            if kept == 0:
                self._delete_segment(number)
        if self._entries:
            log.info("buffer: %s holds %d batches (%d points, %d bytes) to replay", self.directory,
                     len(self._entries), self.points, self.used_bytes)

    def _delete_segment(self, number: int) -> None:
        self._sizes.pop(number, None)
        try:
            self._path(number).unlink()
        except FileNotFoundError:
            pass

    def _update_alarm(self) -> None:
        raised = self.alarm_policy.state(self.used_bytes, self.limit_bytes, self.alarm)
        if raised and not self.alarm:
            log.warning("buffer: %s is %.0f %% full (%d of %d bytes): the database has not taken data for a while; "
                        "at the limit ingest stops acknowledging and the broker holds the messages",
                        self.directory, 100 * self.used_bytes / self.limit_bytes, self.used_bytes, self.limit_bytes)
        elif self.alarm and not raised:
            log.warning("buffer: %s is down to %.0f %% full; alarm cleared", self.directory,
                        100 * self.used_bytes / self.limit_bytes)
        self.alarm = raised

    def close(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)
            self._writer_fd = None
        os.close(self._cursor_fd)
        os.close(self._lock_fd)

    def __enter__(self) -> "DiskBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
