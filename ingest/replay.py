"""`orelane ingest replay FILE`: load a disk buffer or an embedded store into InfluxDB.

For a site that ran on the embedded store first, or a buffer left behind by a
worker that will not come back. FILE is a buffer directory (segment files)
or an embedded store (SQLite). The database comes from --config (its
[influx] table) or --url/--org/--bucket, the token from ORELANE_INFLUX_TOKEN.
Progress goes to stderr.

A buffer is consumed as it is replayed, so an interrupted replay continues
where it stopped; the store is read, never changed, and replaying it again
writes the same points again, which the database's same-series-same-time
rule makes harmless. Lines the database refuses go to the dead-letter file.

Exit status: 0 everything written (or dead-lettered), 1 the database failed
(what is left stays for the next run), 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from ingest import lineprotocol
from ingest.buffer import SEGMENT_SUFFIX, BufferLocked, DiskBuffer
from ingest.deadletter import DeadLetterFile
from ingest.influx import Delivery, InfluxWriter, write_batch
from orelane.config import ConfigError, InfluxConfig, load
from orelane.contract.measurements import Point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orelane ingest replay",
                                description="Load a disk buffer or an embedded store (SQLite) into InfluxDB.")
    p.add_argument("file", type=Path, help="buffer directory or embedded store (.sqlite)")
    p.add_argument("--config", type=Path, help="site TOML; its [influx] table names the database")
    p.add_argument("--url", help="InfluxDB URL (instead of --config), e.g. http://127.0.0.1:8086")
    p.add_argument("--org", default="orelane")
    p.add_argument("--bucket", default="orelane")
    p.add_argument("--timeout-s", type=float, default=30.0)
    p.add_argument("--batch-size", type=int, default=5000, help="points per write from a store (default 5000)")
    p.add_argument("--deadletter-file", type=Path, default=None,
                   help="where refused lines go (default: ingest-deadletter.jsonl next to FILE)")
    return p


class _Progress:
    def __init__(self, total: int, unit: str):
        self.total, self.unit = total, unit
        self.started = self.last = time.monotonic()

    def show(self, done: int, points: int, refused: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 1.0:
            return
        self.last = now
        share = f" ({100 * done / self.total:.0f} %)" if self.total else ""
        rate = points / max(now - self.started, 1e-9)
        print(f"replay: {done} of {self.total} {self.unit}{share}, {points} points written "
              f"({rate:,.0f}/s), {refused} refused", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        influx = _influx_config(args)
    except ConfigError as exc:
        print(f"orelane ingest replay: configuration error: {exc}", file=sys.stderr)
        return 2
    source: Path = args.file
    if not source.exists():
        print(f"orelane ingest replay: {source} does not exist", file=sys.stderr)
        return 2
    deadletters = DeadLetterFile(args.deadletter_file or source.parent / "ingest-deadletter.jsonl")
    writer = InfluxWriter(influx)
    try:
        if source.is_dir():
            return _replay_buffer(source, writer, deadletters)
        return _replay_store(source, writer, deadletters, args.batch_size)
    finally:
        writer.close()


def _influx_config(args) -> InfluxConfig:
    if args.config is not None:
        site = load(args.config)
        if site.influx is None:
            raise ConfigError(f"{args.config}: no [influx] table; replay needs a database to write to")
        return site.influx
    if not args.url:
        raise ConfigError("give --config site.toml or --url (with --org and --bucket)")
    if not args.url.startswith(("http://", "https://")):
        raise ConfigError(f"--url {args.url!r} must start with http:// or https://")
    return InfluxConfig(url=args.url, org=args.org, bucket=args.bucket,
                        token=os.environ.get("ORELANE_INFLUX_TOKEN", ""), timeout_s=args.timeout_s)


def _dead_letter(deadletters: DeadLetterFile, delivery: Delivery) -> None:
    deadletters.write([{"received_s": time.time(), "status": status, "reason": reason,
                        "line": line.decode("utf-8", errors="replace")} for line, status, reason in delivery.rejected])


def _replay_buffer(directory: Path, writer: InfluxWriter, deadletters: DeadLetterFile) -> int:
    if not any(directory.glob(f"*{SEGMENT_SUFFIX}")):
        print(f"orelane ingest replay: {directory} holds no buffer segments (*{SEGMENT_SUFFIX})", file=sys.stderr)
        return 2
    try:
        buffer = DiskBuffer(directory, limit_bytes=1 << 62)
    except BufferLocked as exc:
        print(f"orelane ingest replay: {exc}", file=sys.stderr)
        return 2
    with buffer:
        progress = _Progress(len(buffer), "batches")
        done = points = refused = 0
        while (record := buffer.peek()) is not None:
            delivery = write_batch(writer.post, record.body, record.points)
            points += delivery.written_lines
            refused += len(delivery.rejected)
            _dead_letter(deadletters, delivery)
            if delivery.failure is not None:
                progress.show(done, points, refused, final=True)
                print(f"orelane ingest replay: the database failed ({delivery.failure.status_label} "
                      f"{delivery.failure.reason}); {len(buffer)} batches stay in {directory}", file=sys.stderr)
                return 1
            buffer.consume(record)
            done += 1
            progress.show(done, points, refused)
        progress.show(done, points, refused, final=True)
        if buffer.corrupt_records_skipped:
            print(f"replay: {buffer.corrupt_records_skipped} damaged records were skipped (see the warnings)",
                  file=sys.stderr)
    return 0


def _replay_store(path: Path, writer: InfluxWriter, deadletters: DeadLetterFile, batch_size: int) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        total = db.execute("SELECT count(*) FROM points").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        print(f"orelane ingest replay: {path} is not an embedded store: {exc}", file=sys.stderr)
        return 2
    progress = _Progress(total, "points")
    done = points = refused = 0
    try:
        rows = db.execute("SELECT measurement, series, time_ns, fields FROM points")
        while chunk := rows.fetchmany(batch_size):
            batch = [Point(measurement, json.loads(series), json.loads(fields), time_ns)
                     for measurement, series, time_ns, fields in chunk]
            encoded = lineprotocol.encode_lenient(batch)
            if encoded.refused:
                refused += len(encoded.refused)
                deadletters.write([{"received_s": time.time(), "status": None, "reason": reason,
                                    "point": repr(batch[index])} for index, reason in encoded.refused.items()])
            if encoded.points:
                delivery = write_batch(writer.post, encoded.body, encoded.points)
                points += delivery.written_lines
                refused += len(delivery.rejected)
                _dead_letter(deadletters, delivery)
                if delivery.failure is not None:
                    progress.show(done, points, refused, final=True)
                    print(f"orelane ingest replay: the database failed ({delivery.failure.status_label} "
                          f"{delivery.failure.reason}) after {done} of {total} points; run again to finish "
                          f"(points written twice are harmless)", file=sys.stderr)
                    return 1
            done += len(chunk)
            progress.show(done, points, refused)
    finally:
        db.close()
    progress.show(done, points, refused, final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
