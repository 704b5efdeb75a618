"""When to cut: targeted cuts timed to land on suspect ore, and routine mass-based increments.

The cut fires when the belt has carried the target ore to the cutter minus the
distance it travels during the robot's reaction time; position comes from the
belt tracker, so speed changes and stops shift the cut rather than break it.
"""

from __future__ import annotations

from dataclasses import dataclass


# Slack on the robot's cycle time: PLC scan, status polling and the command round trip.
CYCLE_MARGIN_S = 2.0


@dataclass
class PendingCut:
    sample_id: int
    kind: str  # "targeted" or "routine"
    target_m: float  # belt coordinate of the ore to sample (as it was under the sensors)
    tonnage_t: float
    event_id: str | None = None
    requested_s: float = 0.0
    attempts: int = 0
    last_refusal: str = ""


class CutScheduler:
    """Holds pending cuts; says which are due now and which have passed the cutter unsampled."""

    def __init__(self, cutter_distance_m: float, reaction_s: float, robot_cycle_s: float,
                 window_m: float = 0.5, routine_window_m: float = 20.0):
        self.cutter_distance_m = cutter_distance_m
        self.reaction_s = reaction_s
        self.robot_cycle_s = robot_cycle_s  # a commanded cut keeps the robot busy this long
        self.window_m = window_m  # how far past the ideal point a targeted cut still lands on the target ore
        self.routine_window_m = routine_window_m  # a routine increment may be taken this much later
        self.pending: list[PendingCut] = []

    def add(self, cut: PendingCut) -> None:
        self.pending.append(cut)
        self.pending.sort(key=lambda c: c.target_m)

    def fire_at(self, target_m: float, speed_m_s: float) -> float:
        """Belt coordinate under the sensors at which the cut of the ore at target_m must be commanded."""
        return target_m + self.cutter_distance_m - speed_m_s * self.reaction_s

    def fire_position_m(self, cut: PendingCut, speed_m_s: float) -> float:
        return self.fire_at(cut.target_m, speed_m_s)

    def _window_m(self, cut: PendingCut, speed_m_s: float) -> float:
        if cut.kind == "targeted":
            return self.window_m
        # long enough to wait out one targeted cycle that pre-empted it, and its own busy robot
        return max(self.routine_window_m, 2 * speed_m_s * (self.robot_cycle_s + CYCLE_MARGIN_S))

    def next_fire_in_s(self, position_m: float, speed_m_s: float) -> float | None:
        """Seconds until the next cut's fire position at the current speed (None when stopped or none pending);
        the daemon wakes then instead of at its next poll, so the cut is not late by up to one poll."""
        if speed_m_s <= 0 or not self.pending:
            return None
        ahead = [self.fire_position_m(c, speed_m_s) - position_m for c in self.pending]
        ahead = [a for a in ahead if a > 0]
        return min(ahead) / speed_m_s if ahead else None

    def due(self, position_m: float, speed_m_s: float, coming_targets_m: tuple[float, ...] = ()) -> list[PendingCut]:
        """Cuts to command now, targeted first. A routine cut waits while a targeted cut would fire
        before the robot finished the routine cycle, so routine sampling does not cost a targeted sample the
        lane knows of. `coming_targets_m` are targets of targeted cuts not requested yet (an event still
        open), which hold routine cuts back in the same way."""
        busy_m = speed_m_s * (self.robot_cycle_s + CYCLE_MARGIN_S)
        fire_m = [self.fire_position_m(c, speed_m_s) for c in self.pending if c.kind == "targeted"]
        fire_m += [self.fire_at(t, speed_m_s) for t in coming_targets_m]
        targeted_soon = any(position_m <= f <= position_m + busy_m for f in fire_m)
        due = [c for c in self.pending
               if self.fire_position_m(c, speed_m_s) <= position_m <= self.fire_position_m(c, speed_m_s)
               + self._window_m(c, speed_m_s) and not (c.kind == "routine" and targeted_soon)]
        return sorted(due, key=lambda c: (c.kind != "targeted", c.target_m))

    def expired(self, position_m: float, speed_m_s: float) -> list[PendingCut]:
        """Cuts whose ore has gone past the cutter (or the routine window); removed from pending."""
        gone = [c for c in self.pending
                if position_m > self.fire_position_m(c, speed_m_s) + self._window_m(c, speed_m_s)]
        self.pending = [c for c in self.pending if c not in gone]
        return gone

    def done(self, cut: PendingCut) -> None:
        self.pending = [c for c in self.pending if c is not cut]


class RoutineSchedule:
    """A routine increment every `increment_t` tonnes of discharge, as mass-based sampling prescribes."""

    def __init__(self, increment_t: float, start_t: float | None = None):
        self.increment_t = increment_t
        self.next_t = None if start_t is None else start_t + increment_t
        self._last_t = start_t

    def due(self, totalizer_t: float) -> int:
        """How many increments the totalizer has crossed since the last call (0 or more).

        A totalizer that goes back (reset at the integrator, at a shift change or a new lot) keeps the
        tonnes still to go to the next increment instead of waiting until it climbs past the old count."""
        if self.next_t is None:
            self.next_t = totalizer_t + self.increment_t
            self._last_t = totalizer_t
            return 0
        if totalizer_t < self._last_t:
            self.carry_on_from(totalizer_t)
        self._last_t = totalizer_t
        count = 0
        while totalizer_t >= self.next_t:
            count += 1
            self.next_t += self.increment_t
        return count

    def carry_on_from(self, totalizer_t: float) -> None:
        """Take totalizer_t as the count to go on from, the tonnes still to go to the next increment kept:
        after a reset, or a jump the belt could not have carried (no increments for it)."""
        if self.next_t is not None:
            self.next_t = totalizer_t + (self.next_t - self._last_t)
        self._last_t = totalizer_t
