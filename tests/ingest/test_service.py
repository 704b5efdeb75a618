"""The ingest worker against a real Mosquitto and a real VictoriaMetrics (or an HTTP peer answering like InfluxDB):
points arrive exactly, bad input goes to the dead-letter topic, the database's refusals to the dead-letter file,
and the worker reports on itself."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from ingest.deadletter import DeadLetterFile
from ingest.influx import InfluxSink
from ingest.lineprotocol import encode_spectrum_results
from ingest.service import IngestOptions, IngestService, sink_for
from orelane import config as config_mod
from orelane.contract import measurements, messages as m, topics
from orelane.contract.measurements import points_for
from tests.ingest.conftest import SITE, Answer, Publisher, influxdb2, lost_and_duplicated, results_batch, \
    site_config, stored_seqs, wait_for
from tests.servers import HOST


class Running:
    """An IngestService on its own thread, stopped at the end of the test."""

    def __init__(self, site, options: IngestOptions, client_id: str = "ingest-test", share_group: str | None = None):
        self.service = IngestService(site, InfluxSink(site.influx), client_id=client_id, share_group=share_group,
                                     options=options)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop_event,), daemon=True)
        self.thread.start()
        assert self.service.mqtt.connected.wait(10), "ingest did not connect to the broker"
        time.sleep(0.2)  # subscriptions on their way

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(20)
        assert not self.thread.is_alive()
        self.service.sink.close()


@pytest.fixture
def running():
    started: list[Running] = []

    def start(*args, **kwargs) -> Running:
        r = Running(*args, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.stop()


def options(tmp_path, **kwargs) -> IngestOptions:
    return IngestOptions(buffer_dir=tmp_path / "buffer", deadletter_file=tmp_path / "deadletter.jsonl",
                         retry_initial_s=0.2, retry_max_s=1.0, **kwargs)


def test_results_reach_the_database_exactly_and_ingest_reports_on_itself(mosquitto, victoria_metrics, tmp_path,
                                                                        running):
    site = site_config(mosquitto.port, tmp_path, victoria_metrics.url)
    worker = running(site, options(tmp_path, metrics_port=0, health_interval_s=0.5))
    publisher = Publisher(mosquitto.port, rows=300)
    publisher.publish(20)
    per_series = stored_seqs(victoria_metrics, expected=6000)
    assert lost_and_duplicated(publisher.published, per_series) == (0, 0)
    # the values are the contract's values: compare one message's points with what VictoriaMetrics holds
    batch = results_batch("lane-1", 0, 300, publisher.t0_ns, np.random.default_rng(7))
    expected = {p.fields["seq"]: p.fields["anomaly_score"] for p in points_for(SITE, "lane-1", "results/spectra",
                                                                                 batch.to_bytes())}
    series = victoria_metrics.export(f'{{__name__="spectrum_result_anomaly_score",site="{SITE}"}}')
    seq_series = victoria_metrics.export(f'{{__name__="spectrum_result_seq",site="{SITE}"}}')
    by_time = {t: v for s in series for t, v in zip(s["timestamps"], s["values"])}
    seq_at = {t: int(v) for s in seq_series for t, v in zip(s["timestamps"], s["values"])}
    checked = [(seq_at[t], value) for t, value in by_time.items() if seq_at[t] in expected]
    assert len(checked) == 300 and all(abs(v - expected[s]) <= 1e-6 * abs(expected[s]) for s, v in checked)
    # own health: Prometheus text and the ingest_health measurement
    service = worker.service
    wait_for(lambda: service.snapshot().points_written >= 6000, 10, "points_written")
    text = urllib.request.urlopen(f"http://{HOST}:{service.metrics.port}/metrics", timeout=5).read().decode()
    assert "orelane_ingest_messages_in_total 20" in text
    assert "orelane_ingest_buffer_bytes 0" in text and "# TYPE orelane_ingest_replay_lag_seconds gauge" in text
    health = victoria_metrics.export('{__name__="ingest_health_messages_in"}', until=lambda s: bool(s))
    assert health and health[0]["metric"]["worker"] == "ingest-test" and max(health[0]["values"]) >= 1
    worker.stop()
    assert service.counters.messages_in == 20 and service.counters.messages_refused == 0
    publisher.close()


def _listen(port: int, topic_filter: str) -> tuple[mqtt.Client, list]:
    got: list = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dl-listener")
    client.on_message = lambda c, u, msg: got.append(msg)
    client.connect(HOST, port)
    client.subscribe(topic_filter, 1)
    client.loop_start()
    time.sleep(0.2)
    return client, got


def test_bad_input_goes_to_the_dead_letter_topic_with_the_reason_and_ingest_keeps_running(mosquitto, victoria_metrics,
                                                                                        tmp_path, running):
    site = site_config(mosquitto.port, tmp_path, victoria_metrics.url)
    worker = running(site, options(tmp_path))
    listener, letters = _listen(mosquitto.port, topics.topic(SITE, "lane-1", "deadletter"))
    publisher = Publisher(mosquitto.port, rows=50)
    now = time.time()
    belt = topics.topic(SITE, "lane-1", "belt")
    bad = {
        "garbage": (topics.topic(SITE, "lane-1", "results/spectra"), b"\x00 not a batch"),
        "wrong type": (belt, json.dumps({"v": 1, "kind": "belt_state", "lane": "lane-1", "timestamp_s": now,
                                         "belt_position_m": "far", "speed_m_s": 3.0, "flow_t_h": 1.0,
                                         "totalizer_t": 1.0}).encode()),
        "future": (belt, m.BeltState("lane-1", now + 10 * 365 * 86400, 1.0, 3.0, 1.0, 1.0).to_json()),
        "1970": (topics.topic(SITE, "lane-1", "events"),
                 m.ContaminationEvent("e1", "lane-1", "open", 1.0, 2.0, 1.5, 1.0, 0.9, "wood", 1, 2, (), 5.0)
                 .to_json()),
    }
    for topic_name, payload in bad.values():
        publisher.client.publish(topic_name, payload, qos=1)
    # a results batch where 3 rows have timestamps a year ahead: only those rows are refused
    batch = results_batch("lane-1", 0, 50, publisher.t0_ns, np.random.default_rng(1))
    stamps = batch.timestamp_ns.copy()
    stamps[[5, 6, 7]] = int((now + 365 * 86400) * 1e9)
    skewed = m.SpectrumResults(batch.lane, batch.model_version, batch.class_names, batch.seq, stamps,
                               batch.belt_position_m, batch.anomaly_score, batch.t2, batch.q, batch.class_index,
                               batch.decision, batch.class_scores)
    publisher.client.publish(publisher.topic, skewed.to_bytes(), qos=1)
    publisher.next_seq = 1000
    publisher.publish(4)  # good data after the bad
    wait_for(lambda: len(letters) >= 5, 10, "five dead letters")
    reasons = [m.DeadLetter.from_json(msg.payload) for msg in letters]
    by_topic = {}
    for letter in reasons:
        by_topic.setdefault(letter.topic, []).append(letter.reason)
    assert any("shorter than the 16-byte prefix" in r for r in by_topic[bad["garbage"][0]])
    assert any("belt_state.belt_position_m must be a number" in r for r in by_topic[belt])
    assert any("in the future" in r for r in by_topic[belt])
    assert any("days in the past" in r for r in by_topic[bad["1970"][0]])
    rows_letter, = [l for l in reasons if "rows refused" in l.reason]
    assert "3 of 50 rows refused" in rows_letter.reason and rows_letter.seq == 5
    per_series = stored_seqs(victoria_metrics, expected=47 + 200)
    seen = {v for values in per_series.values() for v in values}
    assert seen == (set(range(50)) - {5, 6, 7}) | set(range(1000, 1200))
    # ingest writes the dead letters as points too (they arrive on the topic it subscribes to)
    dead = victoria_metrics.export(f'{{__name__="dead_letter_seq",site="{SITE}"}}', until=lambda s: len(s) >= 1)
    assert dead
    worker.stop()
    assert worker.service.counters.messages_refused == 4
    listener.loop_stop()
    publisher.close()


def test_random_bytes_on_every_ingested_topic_cost_one_dead_letter_each_and_nothing_else(mosquitto,
                                                                                        victoria_metrics, tmp_path,
                                                                                        running):
    site = site_config(mosquitto.port, tmp_path, victoria_metrics.url)
    worker = running(site, options(tmp_path))
    publisher = Publisher(mosquitto.port, rows=20)
    rng = np.random.default_rng(99)
    sent = 0
    for leaf in measurements.INGESTED_LEAVES:
        for size in (0, 1, 17, 300):
            payload = rng.bytes(size)
            publisher.client.publish(topics.topic(SITE, "lane-1", leaf), payload, qos=1)
            sent += 1
    publisher.publish(3)
    stored_seqs(victoria_metrics, expected=60)
    wait_for(lambda: worker.service.counters.messages_in >= sent + 3, 10, "every message")
    assert worker.thread.is_alive() and worker.service.counters.messages_refused == sent
    worker.stop()
    publisher.close()


def test_lines_the_database_refuses_go_to_the_dead_letter_file_and_the_rest_is_written(mosquitto, fake_influx,
                                                                                     tmp_path, running):
    """InfluxDB 2.x refuses a whole batch for one bad line; ingest finds the line and writes the others."""
    server = fake_influx(influxdb2(b"lot_id="))  # pretend the lot measurement has a schema conflict
    site = site_config(mosquitto.port, tmp_path, server.url, flush_interval_s=0.5)
    worker = running(site, options(tmp_path))
    publisher = Publisher(mosquitto.port, rows=100)
    publisher.publish(3)
    lot = m.Lot("lane-1", "LOT 7", "MV Ore", "V1", "PB Fines", 1000.0, "AU", "open", time.time())
    publisher.client.publish(topics.topic(SITE, "lane-1", "lot"), lot.to_json(), qos=1)
    publisher.publish(2)
    wait_for(lambda: len({l for l in server.accepted if l.startswith(b"spectrum_result")}) >= 500, 10,
             "500 result lines")
    wait_for(lambda: DeadLetterFile(tmp_path / "deadletter.jsonl").read(), 10, "the dead-letter file")
    entry, = DeadLetterFile(tmp_path / "deadletter.jsonl").read()
    assert entry["status"] == 400 and entry["line"].startswith("lot,lane=lane-1,site=port-t,state=open ")
    assert "unable to parse" in entry["reason"]
    worker.stop()
    assert worker.service.counters.dead_lettered_lines == 1 and worker.service.counters.write_errors_by_status == \
        {"400": 1}


def test_a_database_that_says_429_is_left_alone_for_its_retry_after_and_nothing_is_lost(mosquitto, fake_influx,
                                                                                      tmp_path, running):
    def answer(i, lines):
        return Answer(429, b'{"message":"slow down"}', {"Retry-After": "2"}) if i == 0 else Answer(204)
    server = fake_influx(answer)
    site = site_config(mosquitto.port, tmp_path, server.url, flush_interval_s=0.1)
    worker = running(site, options(tmp_path, metrics_port=0))
    publisher = Publisher(mosquitto.port, rows=100)
    publisher.start_steady(10.0)
    wait_for(lambda: len(server.requests) >= 1, 10, "a first write")
    time.sleep(1.0)
    snap = worker.service.snapshot()
    assert snap.batches_buffered >= 1 and snap.write_errors == {"429": 1}  # buffered, not lost, while waiting
    wait_for(lambda: len(server.requests) >= 3, 10, "writes after the wait")
    publisher.stop_steady()
    publisher.wait_published()
    wait_for(lambda: len({l for l in server.accepted if l.startswith(b"spectrum_result")})
             >= len(publisher.published), 15, "every point")
    first, second = server.requests[0][0], server.requests[1][0]
    assert second - first >= 2.0  # Retry-After honoured
    worker.stop()
    assert worker.service.counters.points_replayed > 0


def test_two_workers_share_the_load_through_a_shared_subscription(mosquitto, victoria_metrics, tmp_path, running):
    workers = [running(site_config(mosquitto.port, tmp_path / f"w{i}", victoria_metrics.url),
                       options(tmp_path / f"w{i}"), client_id=f"ingest-w{i}", share_group="ingest")
               for i in range(2)]
    publisher = Publisher(mosquitto.port, rows=50)
    publisher.publish(200)
    per_series = stored_seqs(victoria_metrics, expected=len(publisher.published))
    assert lost_and_duplicated(publisher.published, per_series) == (0, 0)
    taken = [w.service.counters.messages_in for w in workers]
    assert sum(taken) == 200 and min(taken) >= 40, taken  # each message to exactly one worker, both busy
    for w in workers:
        w.stop()
    publisher.close()


def test_vectorised_and_scalar_paths_agree_on_what_the_worker_writes():
    batch = results_batch("lane-1", 0, 100, 1_700_000_000 * 10**9, np.random.default_rng(3))
    from ingest.lineprotocol import encode
    assert encode_spectrum_results(SITE, "lane-1", batch).body == encode(points_for(SITE, "lane-1",
                                                                                   "results/spectra",
                                                                                   batch.to_bytes()))


def test_two_workers_of_one_site_file_each_buffer_in_their_own_directory_with_the_site_s_ingest_keys(tmp_path,
                                                                                                   caplog):
    doc = {"site": {"id": SITE, "data_dir": str(tmp_path)}, "mqtt": {"host": HOST, "port": 1},
           "influx": {"url": "http://127.0.0.1:1", "org": "orelane", "bucket": "orelane"},
           "ingest": {"buffer_dir": "spool", "buffer_limit_bytes": 1 << 24, "health_interval_s": 2.5},
           "lane": [{"id": "lane-1", "belt_scale": {"host": HOST, "port": 1}, "robot": {"host": HOST, "port": 2}}]}
    site = config_mod.parse(doc, "<test>", environ={}, base_dir=tmp_path)
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "00000001.seg").write_bytes(b"")  # left by a release that buffered every worker here
    opts = IngestOptions.from_site(site, health_interval_s=1.0)
    assert (opts.buffer_limit_bytes, opts.health_interval_s) == (1 << 24, 1.0)  # the site's key, then the override
    workers = [IngestService(site, sink_for(site), client_id=f"worker-{i}", options=opts) for i in (1, 2)]
    try:  # the second would fail to lock a directory the first holds
        assert [w.buffer.directory for w in workers] == [tmp_path / "spool" / f"worker-{i}" for i in (1, 2)]
        assert any("orelane ingest replay" in r.getMessage() for r in caplog.records)  # the old segments
    finally:
        for w in workers:
            w.buffer.close()
