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
"""


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

    def points(self, measurement: str | None = None) -> Iterator[Point]:
        sql = "SELECT measurement, series, time_ns, fields FROM points"
        args: tuple = ()
        if measurement is not None:
            sql += " WHERE measurement = ?"
            args = (measurement,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY time_ns", args).fetchall()
        for m, series, t, fields in rows:
            yield Point(m, json.loads(series), json.loads(fields), t)

    def count(self, measurement: str) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM points WHERE measurement = ?", (measurement,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
