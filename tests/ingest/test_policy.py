"""The pure decisions of ingest: when to flush, how long to back off, what an answer means, which times pass."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given, strategies as st

from ingest.policy import BatchPolicy, BufferAlarm, Outcome, RetryPolicy, TimestampWindow, classify_status, \
    parse_retry_after


def test_a_batch_is_due_when_full_or_when_its_oldest_point_has_waited_the_interval():
    policy = BatchPolicy(batch_size=100, flush_interval_s=1.0, flush_jitter_s=0.5)
    deadline = policy.deadline(opened_s=10.0, draw=0.0)
    assert deadline == 11.0
    assert not policy.due(99, deadline, 10.99)
    assert policy.due(100, deadline, 10.0)
    assert policy.due(1, deadline, 11.0)
    assert not policy.due(0, deadline, 99.0)  # nothing to write


@given(st.floats(0, 1, exclude_max=True))
def test_jitter_spreads_deadlines_within_the_named_limit(draw):
    policy = BatchPolicy(batch_size=10, flush_interval_s=2.0, flush_jitter_s=0.3)
    assert 2.0 <= policy.deadline(0.0, draw) <= 2.3


@pytest.mark.parametrize("kwargs, message", [({"batch_size": 0}, "batch_size"),
                                             ({"flush_interval_s": 0}, "flush_interval_s"),
                                             ({"flush_jitter_s": -1}, "flush_jitter_s")])
def test_batch_limits_are_validated_with_their_names(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchPolicy(**kwargs)


def test_backoff_doubles_to_its_cap_and_jitter_only_shortens_it():
    policy = RetryPolicy(initial_s=0.5, max_s=8.0)
    assert [policy.delay(n, None, 0.9999999) for n in range(1, 7)] == pytest.approx([0.5, 1, 2, 4, 8, 8], rel=1e-6)
    assert policy.delay(3, None, 0.0) == 1.0


def test_retry_after_wins_when_longer_and_is_capped():
    policy = RetryPolicy(initial_s=0.5, max_s=30.0, max_retry_after_s=300.0)
    assert policy.delay(1, 7.0, 0.5) == 7.0
    assert policy.delay(6, 1.0, 0.99) > 1.0  # the backoff is longer than the server asked
    assert policy.delay(1, 86400.0, 0.5) == 300.0


def test_retry_after_in_seconds_or_as_an_http_date():
    assert parse_retry_after("120", now_s=0.0) == 120.0
    date = email.utils.formatdate(1_700_000_060, usegmt=True)
    assert parse_retry_after(date, now_s=1_700_000_000) == pytest.approx(60.0)
    assert parse_retry_after(email.utils.formatdate(1_000, usegmt=True), now_s=2_000) == 0.0
    assert parse_retry_after("soon", now_s=0.0) is None
    assert parse_retry_after(None, now_s=0.0) is None


@pytest.mark.parametrize("status, outcome", [
    (204, Outcome.WRITTEN), (200, Outcome.WRITTEN), (400, Outcome.REJECTED_LINES), (422, Outcome.REJECTED_LINES),
    (413, Outcome.TOO_LARGE), (429, Outcome.RETRY), (503, Outcome.RETRY), (500, Outcome.RETRY),
    (502, Outcome.RETRY), (401, Outcome.RETRY), (404, Outcome.RETRY), (None, Outcome.RETRY)])
def test_only_a_refusal_of_lines_dead_letters_data_everything_else_keeps_it(status, outcome):
    assert classify_status(status) is outcome


def test_timestamps_far_from_now_are_refused_with_how_far():
    window = TimestampWindow(max_past_s=86400.0, max_future_s=3600.0)
    now = 1_700_000_000.0
    assert window.reason(int(now * 1e9), now) is None
    assert window.reason(int((now - 86000) * 1e9), now) is None
    assert "in the future (limit 3600 s)" in window.reason(int((now + 7200) * 1e9), now)
    assert "days in the past" in window.reason(0, now)


def test_buffer_alarm_rises_at_80_percent_and_clears_below_70():
    alarm = BufferAlarm(0.8, 0.7)
    assert not alarm.state(79, 100, raised=False)
    assert alarm.state(80, 100, raised=False)
    assert alarm.state(75, 100, raised=True)  # hysteresis: stays up
    assert not alarm.state(69, 100, raised=True)
    with pytest.raises(ValueError, match="fractions"):
        BufferAlarm(0.5, 0.9)
