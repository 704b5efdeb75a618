"""The embedded store: points in one SQLite file, for sites (and the demo) without InfluxDB.

Same series and timestamp replace the earlier point, as in InfluxDB, so a
redelivered message does no harm. `orelane ingest replay` can later copy the
file into InfluxDB.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Iterator

from orelane.contract.measurements import Point

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    series TEXT NOT NULL,      -- tags as canonical JSON
    time_ns INTEGER NOT NULL,
    fields TEXT NOT NULL,      -- fields as JSON
    PRIMARY KEY (measurement, series, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS points_by_time ON points (time_ns, measurement, series);
"""


_PAGE_ROWS = 50_000  # rows decoded per read of `points`


class EmbeddedStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def write(self, points: Iterable[Point]) -> int:
        rows = [(p.measurement, json.dumps(p.tags, sort_keys=True, separators=(",", ":")), p.time_ns,
                 json.dumps(p.fields, separators=(",", ":"), allow_nan=False)) for p in points]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def points(self, measurement: str | None = None, start_ns: int | None = None,
               end_ns: int | None = None) -> Iterator[Point]:
        """Points in time order, of one measurement or all, within [start_ns, end_ns] when given.

        Rows are read a page at a time, so a report over one lot of a long-running
        store neither decodes nor holds the rest of the file.
        """
        where, args = [], []
        if measurement is not None:
            where.append("measurement = ?")
            args.append(measurement)
        if start_ns is not None:
            where.append("time_ns >= ?")
            args.append(int(start_ns))
        if end_ns is not None:
            where.append("time_ns <= ?")
            args.append(int(end_ns))
        after: tuple = ()  # the last row's (time_ns, measurement, series): pages continue after it
        while True:
            conditions = where + (["(time_ns, measurement, series) > (?, ?, ?)"] if after else [])
            sql = ("SELECT measurement, series, time_ns, fields FROM points"
                   + (" WHERE " + " AND ".join(conditions) if conditions else "")
                   + " ORDER BY time_ns, measurement, series LIMIT ?")
            with self._lock:
                rows = self._db.execute(sql, (*args, *after, _PAGE_ROWS)).fetchall()
            for m, series, t, fields in rows:
                yield Point(m, json.loads(series), json.loads(fields), t)
            if len(rows) < _PAGE_ROWS:
                return
            m, series, t, _ = rows[-1]
            after = (t, m, series)

    def count(self, measurement: str) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM points WHERE measurement = ?", (measurement,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
