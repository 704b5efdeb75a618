"""Pure tests of belt tracking, segment fusion, event hysteresis and cut timing (no servers)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge.belt import BeltTracker
from edge.decisions import EventDetector, Segment, SegmentFuser
from edge.trigger import CutScheduler, PendingCut, RoutineSchedule


def drive(tracker: BeltTracker, speeds: list[tuple[float, float]], dt: float = 0.1, t0: float = 0.0) -> float:
    """Feed (duration_s, speed) legs at dt; returns the end time."""
    t = t0
    tracker.update(t, speeds[0][1], 0.0)
    for duration, speed in speeds:
        for _ in range(int(round(duration / dt))):
            t += dt
            tracker.update(t, speed, 0.0)
    return t


def test_position_integrates_speed_through_a_stop():
    tracker = BeltTracker()
    drive(tracker, [(10, 3.0), (5, 0.0), (10, 2.0)])
    assert tracker.position_at(10) == pytest.approx(30.0, abs=0.2)
    assert tracker.position_at(15) == pytest.approx(30.0, abs=0.2)  # stopped: no travel
    assert tracker.position_at(25) == pytest.approx(50.0, abs=0.3)


def test_position_between_readings_is_interpolated_and_extrapolated_past_the_last():
    tracker = BeltTracker()
    tracker.update(0.0, 2.0, 0.0)
    tracker.update(1.0, 2.0, 1.0)
    assert tracker.position_at(0.5) == pytest.approx(1.0)
    assert tracker.tonnage_at(0.5) == pytest.approx(0.5)
    assert tracker.position_at(1.5) == pytest.approx(3.0)


def test_out_of_order_reading_does_not_move_the_belt_back():
    tracker = BeltTracker()
    tracker.update(0.0, 1.0, 0.0)
    tracker.update(1.0, 1.0, 0.0)
    tracker.update(0.5, 9.0, 0.0)
    assert tracker.latest.position_m == pytest.approx(1.0)


def segment(index: int, n: int, flagged: int, length: float = 0.5, cls: str = "plastic") -> Segment:
    s = Segment(index, index * length, (index + 1) * length, n_spectra=n, n_flagged=flagged)
    if flagged:
        s.class_votes[cls] = flagged
    s.seq_first, s.seq_last = index * 10, index * 10 + n - 1
    return s


def detector(close_after_m: float = 1.0, min_length_m: float = 0.5) -> EventDetector:
    ids = itertools.count(1)
    return EventDetector(0.5, 0.2, close_after_m, min_length_m, lambda: f"e{next(ids)}")


def test_one_contaminated_stretch_is_one_event_not_one_per_segment():
    det = detector()
    updates = []
    pattern = [0] * 5 + [15, 12, 9, 15, 14] + [0] * 6  # flagged spectra out of 17 per segment
    for i, flagged in enumerate(pattern):
        updates += det.feed(segment(i, 17, flagged))
    assert [u.state for u in updates] == ["open", "closed"]
    ev = updates[-1].event
    assert (ev.start_m, ev.end_m) == (2.5, 5.0)
    assert ev.likely_class == "plastic"
    assert ev.seq_first == 50 and ev.seq_last == 106


def test_a_short_clean_gap_does_not_split_an_event():
    det = detector(close_after_m=1.0)
    updates = []
    for i, flagged in enumerate([15, 0, 15, 0, 0, 0]):  # one clean segment (0.5 m) inside
        updates += det.feed(segment(i, 17, flagged))
    assert [u.state for u in updates] == ["open", "closed"]


def test_stray_flags_below_the_floor_open_no_event():
    det = detector()
    rng = np.random.default_rng(0)
    updates = []
    for i in range(2000):
        updates += det.feed(segment(i, 17, int(rng.binomial(17, 0.01))))
    assert updates == []


def test_events_shorter_than_the_minimum_are_not_announced():
    det = detector(min_length_m=1.0)
    updates = []
    for i, flagged in enumerate([0, 15, 0, 0, 0, 0]):
        updates += det.feed(segment(i, 17, flagged))
    assert updates == []


def test_radiation_alarm_opens_an_event_of_class_radiation():
    det = detector()
    s = segment(0, 17, 0)
    s.radiation_alarm = True
    updates = det.feed(s)
    for i in range(1, 4):
        updates += det.feed(segment(i, 17, 0))
    assert [u.state for u in updates] == ["open", "closed"]
    assert updates[-1].event.likely_class == "radiation"


def test_fuser_hands_over_empty_segments_and_refuses_late_evidence():
    fuser = SegmentFuser(0.5, settle_m=1.0)
    fuser.add_spectra(np.array([0.1, 0.2, 1.3]), np.array([True, False, True]), np.array([0, 255, 1]),
                      np.array([1, 2, 3]), ("plastic", "wood"), 0.0)
    settled = fuser.settled(3.1)  # segments wholly behind 3.1 - 1.0 m
    assert [s.index for s in settled] == [0, 1, 2, 3]
    assert settled[0].n_spectra == 2 and settled[0].n_flagged == 1
    assert settled[1].n_spectra == 0
    assert settled[2].class_votes["wood"] == 1
    late = fuser.add_spectra(np.array([0.2]), np.array([True]), np.array([0]), np.array([9]), ("plastic",), 0.0)
    assert late == 1


def spectra_on_segments(fuser, counts, flagged_counts, segment_m=0.5):
    """Add counts[i] spectra spread over segment i, the first flagged_counts[i] of them flagged as plastic."""
    seq = 0
    for i, (n, n_flagged) in enumerate(zip(counts, flagged_counts)):
        positions = i * segment_m + (np.arange(n) + 0.5) * segment_m / max(n, 1)
        flagged = np.arange(n) < n_flagged
        fuser.add_spectra(positions, flagged, np.zeros(n, dtype=int), np.arange(seq, seq + n), ("plastic",), 0.0)
        seq += n


def test_a_segment_whose_spectra_mostly_came_late_is_scored_against_the_usual_count():
    fuser = SegmentFuser(0.5, settle_m=1.0)
    # 30 clean segments of 30 spectra, then one of 2 (the rest too late) with a stray flag, then plastic
    # flagged in 12 of 30, then the belt at twice the speed (15 a segment) with 5 of 15 flagged.
    counts = [30] * 30 + [2, 30] + [15] * 3
    flagged = [0] * 30 + [1, 12] + [0, 5, 0]
    spectra_on_segments(fuser, counts, flagged)
    segments = fuser.settled(len(counts) * 0.5 + 1.0)
    assert [s.n_spectra for s in segments] == counts
    partial, plastic = segments[30], segments[31]
    assert partial.usual_spectra == 30
    assert partial.nir_score == 0.0  # 1 of 2 alone would be a certain 50 %
    assert plastic.nir_score == pytest.approx((12 / 30 - 0.10) / 0.30)
    assert segments[33].nir_score == pytest.approx((5 / 15 - 0.10) / 0.30)  # twice the speed costs nothing
    assert segments[0].usual_spectra == 0.0 and segments[0].nir_score == 0.0


def test_the_usual_count_follows_the_time_each_segment_took_to_pass_so_speed_changes_and_stops_cost_nothing():
    fuser = SegmentFuser(0.5, settle_m=1.0)
    # 30 clean segments at 1 m/s (0.5 s each, 30 spectra: 60 spectra/s), then 5 at 3 m/s (10 spectra) with
    # plastic in 4 of them (40 %, certain), then one the belt stopped on for 10 s (600 spectra, 240 flagged)
    counts, flagged = [30] * 30 + [10] * 5 + [600], [0] * 30 + [4] * 5 + [240]
    spectra_on_segments(fuser, counts, flagged)
    seconds = [0.5] * 30 + [0.5 / 3] * 5 + [10.0]
    segments = fuser.settled(len(counts) * 0.5 + 1.0, passage_s=lambda start_m, end_m: seconds[round(start_m / 0.5)])
    assert [s.usual_spectra for s in segments[30:]] == pytest.approx([10.0] * 5 + [600.0])
    assert [s.nir_score for s in segments[30:]] == pytest.approx([1.0] * 6)  # against half of 30 the first 0.67


def test_the_time_a_stretch_took_to_pass_counts_a_stop_within_it():
    tracker = BeltTracker()
    for t_s, speed in ((0.0, 2.0), (1.0, 2.0), (1.1, 0.0), (5.0, 0.0), (5.1, 2.0), (7.0, 2.0)):
        tracker.update(t_s, speed, 0.0)
    assert tracker.time_spent_over(0.0, 1.0) == pytest.approx(0.5)
    assert tracker.time_spent_over(1.5, 2.5) > 4.0  # the belt stopped at about 2.1 m for 3.9 s
    assert tracker.time_spent_over(7.9, 8.9) == pytest.approx(0.5)  # ahead of the last reading, at its speed
    assert tracker.time_spent_over(-1.0, 0.0) == 0.0  # before the first reading: not known


def test_a_stop_on_a_segment_edge_counts_in_the_segment_that_starts_there():
    tracker = BeltTracker()
    for t_s, speed in ((0.0, 0.0), (60.0, 0.0), (60.1, 1.0), (61.0, 1.0)):  # at rest at 0 m for a minute
        tracker.update(t_s, speed, 0.0)
    assert tracker.time_spent_over(0.0, 0.5) == pytest.approx(60.1 + 0.45)  # 0.05 m in the ramp, 0.45 at 1 m/s


def test_camera_evidence_seen_in_two_frames_counts_fully_one_frame_half():
    fuser = SegmentFuser(0.5)
    fuser.add_camera_object(0.7, 0.95, frame_seq=4, tonnage_t=1.0)
    fuser.add_camera_object(0.8, 0.92, frame_seq=5, tonnage_t=1.0)
    fuser.add_camera_object(1.6, 0.98, frame_seq=6, tonnage_t=1.2)
    fuser.add_camera_object(2.1, 0.77, frame_seq=7, tonnage_t=1.3)  # a lone plain-ore false detection
    s1, s2, s3, s4 = fuser.settled(3.6)
    assert s1.score == pytest.approx(1.0) and s1.frame_seqs == [4, 5] and s1.tonnage_t == 1.0
    assert s2.score == 0.0
    assert s3.score == pytest.approx(0.5)  # one sure frame still reaches the open score
    assert s4.score < 0.5


@pytest.mark.parametrize("speed_profile", [
    [(60, 3.0)],
    [(5, 3.0), (4, 0.0), (60, 3.0)],  # stop after the event was seen
    [(5, 3.0), (60, 1.5)],  # belt slows
])
def test_cut_lands_on_suspect_ore_when_belt_speed_changes(speed_profile):
    cutter_m, reaction_s = 30.0, 1.0
    sched = CutScheduler(cutter_m, reaction_s, robot_cycle_s=20.0)
    tracker = BeltTracker()
    target = 12.0  # belt coordinate of the suspect ore as it passed the sensors
    sched.add(PendingCut(1, "targeted", target, 0.0))
    t, dt = 0.0, 0.01
    tracker.update(t, speed_profile[0][1], 0.0)
    fired_at = None
    for duration, speed in speed_profile:
        for _ in range(int(duration / dt)):
            t += dt
            tracker.update(t, speed, 0.0)
            if fired_at is None and sched.due(tracker.latest.position_m, speed):
                fired_at = t
                sched.done(sched.due(tracker.latest.position_m, speed)[0])
    assert fired_at is not None
    # the cutter crosses the stream reaction_s after the command: where is the target then?
    landed = tracker.position_at(fired_at + reaction_s) - cutter_m
    assert landed == pytest.approx(target, abs=0.1)


def test_cut_never_due_is_expired_as_missed():
    sched = CutScheduler(30.0, 1.0, robot_cycle_s=20.0)
    sched.add(PendingCut(1, "targeted", 10.0, 0.0))
    assert sched.expired(50.0, 3.0)[0].sample_id == 1
    assert sched.pending == []


def test_routine_cut_waits_for_an_imminent_targeted_cut():
    sched = CutScheduler(30.0, 0.0, robot_cycle_s=10.0)
    sched.add(PendingCut(1, "routine", 0.0, 0.0))  # fires at 30 m
    sched.add(PendingCut(2, "targeted", 5.0, 0.0))  # fires at 35 m, inside the 30 m busy horizon
    due = sched.due(30.0, 3.0)
    assert [c.sample_id for c in due] == []
    due = sched.due(35.0, 3.0)
    assert due[0].sample_id == 2
    sched.done(due[0])
    assert [c.sample_id for c in sched.due(36.0, 3.0)] == [1]


def test_routine_cut_waits_for_the_cut_of_an_event_still_open():
    sched = CutScheduler(30.0, 0.0, robot_cycle_s=10.0)
    sched.add(PendingCut(1, "routine", 0.0, 0.0))  # fires at 30 m
    assert sched.due(30.0, 3.0, coming_targets_m=(5.0,)) == []  # the open event's cut would fire at 35 m
    assert [c.sample_id for c in sched.due(30.0, 3.0, coming_targets_m=(40.0,))] == [1]  # at 70 m: time enough


def test_routine_schedule_counts_every_crossed_increment():
    routine = RoutineSchedule(50.0)
    assert routine.due(10.0) == 0  # first reading sets the start
    assert routine.due(59.9) == 0
    assert routine.due(60.0) == 1
    assert routine.due(175.0) == 2


def test_routine_schedule_carries_on_when_the_totalizer_is_reset():
    routine = RoutineSchedule(50.0)
    routine.due(1000.0)  # next increment at 1050 t
    assert routine.due(1030.0) == 0
    assert routine.due(2.0) == 0  # reset at the integrator: 20 t still to go
    assert routine.due(21.9) == 0
    assert routine.due(22.0) == 1
    assert routine.due(72.0) == 1


def test_belt_coordinate_does_not_jump_when_readings_return_after_an_outage():
    tracker = BeltTracker()
    tracker.update(0.0, 3.0, 0.0)
    tracker.update(0.1, 3.0, 0.0)
    placed = tracker.position_at(3.0)  # during the outage: extrapolated at the last speed
    assert placed == pytest.approx(9.0)
    tracker.update(5.0, 1.0, 0.0)  # the link is back and the belt has slowed
    assert tracker.position_at(3.0) == pytest.approx(placed)
    assert tracker.latest.position_m == pytest.approx(15.0)
    tracker.update(5.1, 1.0, 0.0)  # regular polls again: the trapezoid
    assert tracker.latest.position_m == pytest.approx(15.1)


def test_a_tracker_polled_every_2_s_integrates_speed_changes_between_its_readings():
    tracker = BeltTracker(max_trapezoid_s=6.0)  # three polls of 2 s
    tracker.update(0.0, 3.0, 0.0)
    tracker.update(2.0, 1.0, 0.0)  # slowing down: the trapezoid, not the last speed
    assert tracker.latest.position_m == pytest.approx(4.0)


def test_named_class_beats_unknown_votes():
    det = detector()
    s = segment(0, 17, 15, cls="unknown")
    s.class_votes["rubber"] = 6
    updates = det.feed(s)
    for i in range(1, 4):
        updates += det.feed(segment(i, 17, 0))
    assert updates[-1].event.likely_class == "rubber"
