"""`orelane ingest replay FILE` (ingest.replay.main): a disk buffer or an embedded store into a real database."""

from __future__ import annotations

import numpy as np

from ingest import replay
from ingest.buffer import DiskBuffer
from ingest.lineprotocol import encode_spectrum_results
from ingest.store import EmbeddedStore
from orelane.contract import messages as m
from orelane.contract.measurements import points_for
from tests.ingest.conftest import SITE, influxdb2, lost_and_duplicated, results_batch, stored_seqs, unused_port

T0_NS = 1_700_000_000 * 10**9


def test_a_buffer_left_behind_is_replayed_in_full_and_consumed(victoria_metrics, tmp_path, capsys):
    rng = np.random.default_rng(1)
    with DiskBuffer(tmp_path / "buffer", limit_bytes=1 << 24) as buffer:
        for i in range(6):
            body = encode_spectrum_results(SITE, "lane-1", results_batch("lane-1", i * 300, 300, T0_NS, rng)).body
            buffer.append(body, 300, 1.0)
    assert replay.main([str(tmp_path / "buffer"), "--url", victoria_metrics.url]) == 0
    lost, duplicated = lost_and_duplicated(list(range(1800)), stored_seqs(victoria_metrics, expected=1800))
    assert (lost, duplicated) == (0, 0)
    err = capsys.readouterr().err
    assert "replay: 6 of 6 batches (100 %), 1800 points written" in err
    with DiskBuffer(tmp_path / "buffer", limit_bytes=1 << 24) as buffer:
        assert len(buffer) == 0


def test_an_embedded_store_is_replayed_with_every_measurement(victoria_metrics, tmp_path, capsys):
    store = EmbeddedStore(tmp_path / "orelane-points.sqlite")
    batch = results_batch("lane-1", 0, 500, T0_NS, np.random.default_rng(2))
    store.write(points_for(SITE, "lane-1", "results/spectra", batch.to_bytes()))
    belt = m.BeltState("lane-1", T0_NS / 1e9, 12.5, 3.0, 5000.0, 1234.5)
    store.write(points_for(SITE, "lane-1", "belt", belt.to_json()))
    store.close()
    assert replay.main([str(tmp_path / "orelane-points.sqlite"), "--url", victoria_metrics.url,
                        "--batch-size", "128"]) == 0
    assert lost_and_duplicated(list(range(500)), stored_seqs(victoria_metrics, expected=500)) == (0, 0)
    totalizer = victoria_metrics.export(f'{{__name__="belt_totalizer_t",site="{SITE}"}}')
    assert totalizer[0]["values"] == [1234.5]
    assert "501 of 501 points (100 %), 501 points written" in capsys.readouterr().err


def test_a_database_that_is_down_leaves_the_buffer_for_the_next_run(tmp_path, capsys):
    with DiskBuffer(tmp_path / "buffer", limit_bytes=1 << 20) as buffer:
        buffer.append(b"m x=1i 1", 1, 1.0)
    assert replay.main([str(tmp_path / "buffer"), "--url", f"http://127.0.0.1:{unused_port()}"]) == 1
    assert "1 batches stay in" in capsys.readouterr().err
    with DiskBuffer(tmp_path / "buffer", limit_bytes=1 << 20) as buffer:
        assert len(buffer) == 1


def test_refused_lines_go_to_the_dead_letter_file(fake_influx, tmp_path):
    server = fake_influx(influxdb2(b"x=BAD"))
    with DiskBuffer(tmp_path / "buffer", limit_bytes=1 << 20) as buffer:
        buffer.append(b"m x=1i 1\nm x=BAD 2\nm x=3i 3", 3, 1.0)
    assert replay.main([str(tmp_path / "buffer"), "--url", server.url]) == 0
    assert sorted(server.accepted) == [b"m x=1i 1", b"m x=3i 3"]
    assert "m x=BAD 2" in (tmp_path / "ingest-deadletter.jsonl").read_text()


def test_usage_errors_name_what_is_wrong(tmp_path, capsys):
    assert replay.main([str(tmp_path / "nothing-here"), "--url", "http://127.0.0.1:1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert replay.main([str(tmp_path)]) == 2
    assert "give --config site.toml or --url" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert replay.main([str(tmp_path / "empty"), "--url", "http://127.0.0.1:1"]) == 2
    assert "holds no buffer segments" in capsys.readouterr().err
