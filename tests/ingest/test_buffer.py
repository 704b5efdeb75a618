"""The disk buffer: durable FIFO across restarts, bounded with an alarm, and robust to damaged records."""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ingest.buffer import BufferFull, BufferLocked, DiskBuffer, encode_record, scan_segment


def batch(i: int, size: int = 100) -> bytes:
    return (f"m,k=v x={i}i {i}".encode() + b" " * size)[:max(size, 16)]


def drain(buffer: DiskBuffer) -> list[bytes]:
    out = []
    while (record := buffer.peek()) is not None:
        out.append(record.body)
        buffer.consume(record)
    return out


def test_batches_come_back_in_order_across_segments_and_restarts(tmp_path):
    with DiskBuffer(tmp_path, limit_bytes=1 << 20, segment_bytes=1000) as buffer:
        for i in range(30):
            buffer.append(batch(i), points=1, enqueued_s=100.0 + i)
        assert len(buffer) == 30 and len(list(tmp_path.glob("*.seg"))) > 3
        first = buffer.peek()
        assert first.body == batch(0) and first.points == 1 and first.enqueued_ns == 100_000_000_000
        for _ in range(10):
            buffer.consume(buffer.peek())
    with DiskBuffer(tmp_path, limit_bytes=1 << 20, segment_bytes=1000) as buffer:  # after a restart
        assert len(buffer) == 20
        buffer.append(batch(30), 1, 200.0)
        assert drain(buffer) == [batch(i) for i in range(10, 31)]
        assert buffer.used_bytes == 0 and not list(tmp_path.glob("*.seg"))  # replayed segments are deleted
    with DiskBuffer(tmp_path, limit_bytes=1 << 20) as buffer:
        assert len(buffer) == 0


def test_the_limit_refuses_a_batch_that_does_not_fit_and_the_alarm_comes_first(tmp_path, caplog):
    limit = 10_000
    with DiskBuffer(tmp_path, limit_bytes=limit, segment_bytes=2000) as buffer:
        alarm_at = None
        with caplog.at_level(logging.WARNING, logger="ingest.buffer"):
            for i in range(1000):
                try:
                    buffer.append(batch(i, 500), 1, float(i))
                except BufferFull as exc:
                    assert "does not fit" in str(exc)
                    break
                if buffer.alarm and alarm_at is None:
                    alarm_at = buffer.used_bytes
        assert alarm_at is not None and 0.8 * limit <= alarm_at < limit
        assert buffer.used_bytes <= limit
        assert "80 % full" in caplog.text or "% full" in caplog.text
        while buffer.used_bytes > 0.6 * limit:  # replay frees space and clears the alarm
            buffer.consume(buffer.peek())
        assert not buffer.alarm


def test_a_damaged_record_is_skipped_with_file_and_offset_and_the_next_one_is_read(tmp_path, caplog):
    with DiskBuffer(tmp_path, limit_bytes=1 << 20) as buffer:
        for i in range(3):
            buffer.append(batch(i), 1, float(i))
    segment = next(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    record_size = len(encode_record(batch(0), 1, 0))
    data[record_size + 30] ^= 0xFF  # a flipped bit in the second record's body
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="ingest.buffer"), DiskBuffer(tmp_path, limit_bytes=1 << 20) as buf:
        assert drain(buf) == [batch(0), batch(2)]
        assert buf.corrupt_records_skipped == 1
    assert f"{segment}: checksum mismatch at offset {record_size}" in caplog.text


def test_a_torn_tail_after_a_crash_is_skipped_and_writing_goes_on_in_a_new_segment(tmp_path, caplog):
    with DiskBuffer(tmp_path, limit_bytes=1 << 20) as buffer:
        for i in range(3):
            buffer.append(batch(i), 1, float(i))
    segment = next(tmp_path.glob("*.seg"))
    size = segment.stat().st_size
    os.truncate(segment, size - 7)  # the crash hit the middle of the last write
    with caplog.at_level(logging.WARNING, logger="ingest.buffer"), DiskBuffer(tmp_path, limit_bytes=1 << 20) as buf:
        buf.append(batch(3), 1, 3.0)
        assert drain(buf) == [batch(0), batch(1), batch(3)]
    assert f"{segment}: torn record" in caplog.text and "offset" in caplog.text


def test_a_damaged_cursor_replays_from_the_oldest_record(tmp_path):
    with DiskBuffer(tmp_path, limit_bytes=1 << 20) as buffer:
        for i in range(3):
            buffer.append(batch(i), 1, float(i))
        buffer.consume(buffer.peek())
    (tmp_path / "cursor").write_bytes(b"garbage garbage garbage!")
    with DiskBuffer(tmp_path, limit_bytes=1 << 20) as buffer:
        assert drain(buffer) == [batch(0), batch(1), batch(2)]  # twice is harmless; lost would not be


def test_one_process_at_a_time(tmp_path):
    with DiskBuffer(tmp_path, limit_bytes=1 << 20):
        with pytest.raises(BufferLocked, match="in use by another process"):
            DiskBuffer(tmp_path, limit_bytes=1 << 20)


@given(st.lists(st.binary(min_size=0, max_size=200), max_size=6), st.binary(max_size=300), st.integers(0, 2000))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_random_damage_never_crashes_the_reader_and_intact_records_survive(bodies, garbage, where):
    data = b"".join(encode_record(b, 1, 0) for b in bodies)
    where = min(where, len(data))
    damaged = data[:where] + garbage + data[where:]
    records, _ = scan_segment(damaged, "test")
    for offset, size, _, _ in records:
        assert damaged[offset:offset + 4] == b"OLB1" and offset + size <= len(damaged)
    if not garbage:
        assert len(records) == len(bodies)
