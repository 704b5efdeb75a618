"""The embedded store: replace on same series and time, and reads by measurement and time range."""

from __future__ import annotations

import pytest

from ingest import store as store_module
from ingest.store import EmbeddedStore
from orelane.contract.measurements import Point


def belt(lane: str, t_ns: int, speed: float) -> Point:
    return Point("belt", {"site": "s", "lane": lane}, {"speed_m_s": speed}, t_ns)


def test_same_series_and_time_replaces_the_point(tmp_path):
    store = EmbeddedStore(tmp_path / "p.sqlite")
    store.write([belt("lane-1", 5, 1.0), belt("lane-1", 5, 2.0), belt("lane-2", 5, 3.0)])
    assert sorted(p.fields["speed_m_s"] for p in store.points("belt")) == [2.0, 3.0]
    store.close()


@pytest.mark.parametrize("page_rows", [1, 7, 50_000])
def test_a_time_range_reads_exactly_its_points_in_time_order_across_pages(tmp_path, monkeypatch, page_rows):
    monkeypatch.setattr(store_module, "_PAGE_ROWS", page_rows)
    store = EmbeddedStore(tmp_path / "p.sqlite")
    # two lanes at the same instants (ties on time), and another measurement in between
    store.write([belt(lane, t, float(t)) for t in range(0, 100, 3) for lane in ("lane-1", "lane-2")])
    store.write([Point("lot", {"site": "s", "lane": "lane-1"}, {"tonnes": 1.0}, t) for t in range(0, 100, 10)])
    got = [(p.time_ns, p.tags["lane"]) for p in store.points("belt", start_ns=30, end_ns=60)]
    assert got == [(t, lane) for t in range(30, 61, 3) for lane in ("lane-1", "lane-2")]
    every = list(store.points())
    assert len(every) == 34 * 2 + 10
    assert [p.time_ns for p in every] == sorted(p.time_ns for p in every)
    assert [p.time_ns for p in store.points("lot", start_ns=95)] == []
    assert [p.time_ns for p in store.points("lot", end_ns=20)] == [0, 10, 20]
    store.close()


def test_a_store_written_before_the_time_index_reads_the_same(tmp_path):
    import sqlite3
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE points (measurement TEXT NOT NULL, series TEXT NOT NULL,
        time_ns INTEGER NOT NULL, fields TEXT NOT NULL, PRIMARY KEY (measurement, series, time_ns)) WITHOUT ROWID;
        INSERT INTO points VALUES ('belt', '{"lane":"lane-1","site":"s"}', 7, '{"speed_m_s":1.5}');""")
    db.commit()
    db.close()
    store = EmbeddedStore(path)
    assert list(store.points("belt", start_ns=7, end_ns=7)) == [belt("lane-1", 7, 1.5)]
    store.close()
