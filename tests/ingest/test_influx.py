"""Writing to the InfluxDB v2 API over real HTTP: exactly the refused lines are found whatever the database says,
and failures of the database are told apart from bad data."""

from __future__ import annotations

import math

import pytest

from ingest.influx import InfluxWriter, rejected_lines, write_batch
from ingest.policy import Outcome
from orelane.config import InfluxConfig
from tests.ingest.conftest import Answer, influxdb2, influxdb3, unhelpful, unused_port


def lines(n: int, bad: set[int]) -> list[bytes]:
    return [(f"m,k=v x={i}i {i}" if i not in bad else f"m,k=v x=BAD{i} {i}").encode() for i in range(n)]


def writer_for(url: str) -> InfluxWriter:
    return InfluxWriter(InfluxConfig(url=url, org="orelane", bucket="orelane", timeout_s=2.0))


@pytest.mark.parametrize("behaviour", [influxdb2, influxdb3, unhelpful], ids=["influxdb2", "influxdb3", "no-hint"])
def test_exactly_the_refused_lines_are_set_aside_with_the_reason_and_the_rest_is_written(fake_influx, behaviour):
    bad = {3, 17, 18, 40}
    batch = lines(64, bad)
    server = fake_influx(behaviour(b"BAD"))
    delivery = write_batch(writer_for(server.url).post, b"\n".join(batch), len(batch))
    assert delivery.failure is None and not delivery.unsent
    assert sorted(line for line, _, _ in delivery.rejected) == sorted(batch[i] for i in bad)
    assert all(status == 400 and reason for _, status, reason in delivery.rejected)
    assert delivery.written_lines == 60
    assert set(server.accepted) == {batch[i] for i in range(64) if i not in bad}  # resends are harmless repeats
    if behaviour is not unhelpful:
        assert delivery.requests <= 1 + len(bad) + 1  # the line numbers spare the bisection
    else:
        assert delivery.requests <= 1 + 2 * len(bad) * math.ceil(math.log2(64))


def test_the_influxdb2_reason_names_the_line(fake_influx):
    server = fake_influx(influxdb2(b"BAD"))
    delivery = write_batch(writer_for(server.url).post, b"\n".join(lines(5, {2})), 5)
    (line, status, reason), = delivery.rejected
    assert "unable to parse 'm,k=v x=BAD2 2'" in reason


def test_a_body_too_large_is_halved_until_it_fits(fake_influx):
    server = fake_influx(lambda _, body: Answer(413) if len(body) > 10 else Answer(204))
    batch = lines(100, set())
    delivery = write_batch(writer_for(server.url).post, b"\n".join(batch), 100)
    assert delivery.written_lines == 100 and not delivery.rejected and sorted(server.accepted) == sorted(batch)


def test_a_failure_during_the_search_returns_what_is_left_for_the_buffer(fake_influx):
    def answer(i, body):
        if i == 0:
            return Answer(400, b'{"message":"bad"}')
        if i == 1:
            return Answer(204)  # the first half
        return Answer(503, b"overloaded")
    server = fake_influx(answer)
    batch = lines(16, {12})
    delivery = write_batch(writer_for(server.url).post, b"\n".join(batch), 16)
    assert delivery.written_lines == 8 and delivery.failure.status == 503
    assert b"\n".join(delivery.unsent).split(b"\n") == batch[8:]


@pytest.mark.parametrize("answer, status_label, retry_after", [
    (Answer(429, b'{"message":"too many requests"}', {"Retry-After": "3"}), "429", 3.0),
    (Answer(503, b"unavailable", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}), "503", None),
    (Answer(500, b"boom"), "500", None),
    (Answer(401, b'{"message":"unauthorized"}'), "401", None),
])
def test_answers_that_mean_later_keep_the_data(fake_influx, answer, status_label, retry_after):
    server = fake_influx(lambda *_: answer)
    result = writer_for(server.url).post(b"m x=1i 1")
    assert result.outcome is Outcome.RETRY and result.status_label == status_label
    if retry_after is not None:
        assert result.retry_after_s == retry_after
    elif "Retry-After" in answer.headers:
        assert result.retry_after_s > 1e6  # a date far ahead (the policy caps it)


def test_no_database_at_all_is_a_connection_failure():
    result = writer_for(f"http://127.0.0.1:{unused_port()}").post(b"m x=1i 1")
    assert result.outcome is Outcome.RETRY and result.status is None and result.status_label == "connection"


def test_line_numbers_outside_the_batch_are_ignored():
    assert rejected_lines(b'{"line": 99}', 5) == {}
    assert rejected_lines(b'{"data": [{"line_number": 2, "error_message": "x"}]}', 5) == {1: "x"}
    assert rejected_lines(b"not json", 5) == {}
