"""The lab desk's feed of sample records over a real Mosquitto: what the desk records reaches MQTT once the
broker acknowledges it, with the lab's result class on 'analysed', and nothing is lost while the broker is
down or the desk restarts."""

from __future__ import annotations

import queue
import time

import pytest

from orelane.config import MqttConfig
from orelane.contract import messages as m
from orelane.contract.measurements import points_for
from orelane.mqtt import MqttLink
from sampling_robot.labdesk import desk
from sampling_robot.labdesk.feed import CURSOR, RecordFeed, result_class
from sampling_robot.registry import LabResult, SampleRegistry, make_barcode
from tests.sampling_robot.labdesk_fixtures import CUT_S, add_sample

SITE = "port-t"
RECORDS = f"orelane/v1/{SITE}/+/samples/record"


def records(link: MqttLink, n: int, timeout_s: float = 10.0) -> list[m.SampleRecord]:
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        try:
            got.append(m.SampleRecord.from_json(link.inbox.get(timeout=0.2).payload))
        except queue.Empty:
            pass
    return got


def desk_steps(registry: SampleRegistry, sample_id: int, found: str | None, at_s: float) -> None:
    """Receive a sealed cup at the desk and enter its result (found: a contaminant type, or None for clean)."""
    desk.receive(registry, make_barcode("L1", sample_id), "ana", at_s)
    desk.enter_result(registry, sample_id, contaminant_found=found is not None, contaminant_type=found or "",
                      who="ana", at_s=at_s + 600)


@pytest.fixture
def registry(tmp_path):
    with SampleRegistry(tmp_path / "samples.sqlite") as reg:
        for sample_id in (1, 2, 3):
            add_sample(reg, sample_id, "sealed", at_s=CUT_S + 3600 * sample_id)
        yield reg


@pytest.mark.parametrize("found, klass", [(False, "clean"), (True, "plastic pe")])
def test_result_class_is_clean_or_the_folded_contaminant_type(found, klass):
    result = LabResult(1, 1, found, "  Plastic (PE) " if found else "", None, "", "ana", 0.0)
    assert result_class(result) == klass


def test_desk_steps_go_out_with_the_result_class_and_the_cursor_moves_once_acknowledged(mosquitto, registry):
    cfg = MqttConfig(host="127.0.0.1", port=mosquitto.port, keepalive_s=5)
    watcher = MqttLink(cfg, "t-watch", subscriptions=[(RECORDS, 1)]).start(wait_s=10)
    link = MqttLink(cfg, "t-desk").start(wait_s=10)
    desk_steps(registry, 1, "Plastic (PE)", CUT_S + 86400)
    desk_steps(registry, 2, None, CUT_S + 86500)
    feed = RecordFeed(registry, link, SITE)

    sent = feed.publish_pending()
    got = records(watcher, sent)
    assert feed.publish_pending() == 0, "nothing new: nothing sent again"
    link.stop()
    watcher.stop()

    # each sample: collected and received at the desk, then analysed; the edge's steps are not the desk's
    assert sent == 6 and len(got) == 6
    assert {(r.sample_id, r.status) for r in got} == {(s, st) for s in (1, 2)
                                                      for st in ("collected", "received", "analysed")}
    analysed = {r.sample_id: r for r in got if r.status == "analysed"}
    assert (analysed[1].result_class, analysed[2].result_class) == ("plastic pe", "clean")
    assert all(r.result_class is None for r in got if r.status != "analysed")
    assert analysed[1].lane == "L1" and analysed[1].sample_kind == "targeted"
    assert registry.counter(CURSOR) == max(e.id for e in registry.history(2))
    point, = points_for(SITE, "L1", "samples/record", analysed[1].to_json())
    assert point.tags["result_class"] == "plastic pe" and point.tags["status"] == "analysed"


def test_records_made_while_the_broker_is_down_reach_it_after_a_desk_restart(mosquitto, registry):
    cfg = MqttConfig(host="127.0.0.1", port=mosquitto.port, keepalive_s=5)
    link = MqttLink(cfg, "t-desk").start(wait_s=10)
    mosquitto.stop()
    desk_steps(registry, 3, "wood", CUT_S + 90000)
    feed = RecordFeed(registry, link, SITE, ack_wait_s=0.5)
    assert feed.publish_pending() == 0
    assert registry.counter(CURSOR) == 0, "nothing acknowledged: the cursor stays"
    link.stop(drain_s=0.5)  # the desk stops while the broker is still down

    mosquitto.start()
    watcher = MqttLink(cfg, "t-watch", subscriptions=[(RECORDS, 1)]).start(wait_s=10)
    restarted = MqttLink(cfg, "t-desk").start(wait_s=10)
    feed = RecordFeed(registry, restarted, SITE)
    assert feed.publish_pending() == 3
    got = records(watcher, 3)
    restarted.stop()
    watcher.stop()
    assert [(r.sample_id, r.status) for r in got] == [(3, "collected"), (3, "received"), (3, "analysed")]
    assert got[-1].result_class == "wood"


def test_result_class_only_on_analysed_records():
    with pytest.raises(m.ContractError, match="only an 'analysed' record"):
        m.SampleRecord(1, "L1", "targeted", "received", 0.0, result_class="wood").validate()
    with pytest.raises(m.ContractError, match="result_class"):
        m.SampleRecord(1, "L1", "targeted", "analysed", 0.0, result_class="Wood!").validate()
