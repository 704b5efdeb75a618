"""Belt tracking: belt position (m) and tonnage integrated from the belt scale's speed and totalizer.

Belt position is a coordinate fixed to the belt surface: the ore under the
sensors at time t has coordinate position_at(t), and it reaches the cutter when
the belt has moved on by cutter_distance_m, however the speed changes meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


MAX_TRAPEZOID_S = 1.0  # ten polls at the default 0.1 s: a longer gap between readings is an outage


@dataclass(frozen=True)
class BeltSample:
    t_s: float
    position_m: float
    speed_m_s: float
    totalizer_t: float


class BeltTracker:
    """Readings kept in growing numpy columns, so a batch of spectra is placed with one np.interp."""

    def __init__(self, history_s: float = 900.0, max_trapezoid_s: float = MAX_TRAPEZOID_S):
        self.history_s = history_s
        self.max_trapezoid_s = max_trapezoid_s  # a longer gap between readings is an outage, not a speed ramp
        self._cols = np.empty((4, 1024))  # t_s, position_m, speed_m_s, totalizer_t
        self._start = self._end = 0

    @property
    def latest(self) -> BeltSample | None:
        if self._end == self._start:
            return None
        return BeltSample(*map(float, self._cols[:, self._end - 1]))

    def update(self, t_s: float, speed_m_s: float, totalizer_t: float) -> BeltSample:
        """Add a belt-scale reading; position advances by the trapezoid of the last two speeds.

        After a gap longer than max_trapezoid_s (the link was down) it advances at the last speed instead:
        that is where position_at put everything measured meanwhile, so the coordinate does not jump under
        evidence already placed and cuts already aimed."""
        last = self.latest
        if last is None:
            position = 0.0
        elif t_s <= last.t_s:
            return last  # a reading out of order adds nothing
        else:
            gap_s = t_s - last.t_s
            mean_speed = last.speed_m_s if gap_s > self.max_trapezoid_s else 0.5 * (last.speed_m_s + speed_m_s)
            position = last.position_m + mean_speed * gap_s
        if self._end == self._cols.shape[1]:
            self._make_room(t_s)
        self._cols[:, self._end] = (t_s, position, speed_m_s, totalizer_t)
        self._end += 1
        return BeltSample(t_s, position, speed_m_s, totalizer_t)

    def _make_room(self, now_s: float) -> None:
        """Drop readings older than history_s (keeping at least 64), or grow the columns."""
        times = self._cols[0, self._start:self._end]
        keep_from = self._start + min(int(np.searchsorted(times, now_s - self.history_s)), len(times) - 64)
        live = self._cols[:, max(keep_from, self._start):self._end]
        width = self._cols.shape[1] if live.shape[1] < self._cols.shape[1] // 2 else 2 * self._cols.shape[1]
        cols = np.empty((4, width))
        cols[:, :live.shape[1]] = live
        self._cols, self._start, self._end = cols, 0, live.shape[1]

    def position_at(self, t_s: float) -> float:
        """Belt coordinate under the sensors at time t_s (interpolated; extrapolated past the ends)."""
        return float(self.positions_at(np.array([t_s]))[0])

    def tonnage_at(self, t_s: float) -> float:
        t, ton = self._cols[0, self._start:self._end], self._cols[3, self._start:self._end]
        if t.size == 0:
            raise LookupError("no belt-scale reading yet")
        return float(np.interp(t_s, t, ton))

    def time_spent_over(self, start_m: float, end_m: float) -> float:
        """Seconds the belt took to carry [start_m, end_m) past the sensors, stops included; 0 when that is not
        known (the stretch starts before the readings kept, or lies ahead of a stopped belt)."""
        enter, leave = self._first_time_at(start_m), self._first_time_at(end_m)
        return 0.0 if enter is None or leave is None else max(leave - enter, 0.0)

    def _first_time_at(self, position_m: float) -> float | None:
        """When the belt first reached a coordinate: a stop there belongs to the stretch that starts there,
        where the spectra taken meanwhile go. Past the last reading, at the last speed."""
        t, pos, speed = (self._cols[i, self._start:self._end] for i in range(3))
        if t.size == 0 or position_m < pos[0]:
            return None
        if position_m > pos[-1]:
            return float(t[-1] + (position_m - pos[-1]) / speed[-1]) if speed[-1] > 0 else None
        i = int(np.searchsorted(pos, position_m, side="left"))  # first reading at or past it
        if i == 0:
            return float(t[0])
        return float(t[i - 1] + (position_m - pos[i - 1]) / (pos[i] - pos[i - 1]) * (t[i] - t[i - 1]))

    def positions_at(self, times_s: np.ndarray) -> np.ndarray:
        """Belt coordinates at many times at once; beyond the readings, the nearest reading's speed carries on."""
        t, pos, speed = (self._cols[i, self._start:self._end] for i in range(3))
        if t.size == 0:
            raise LookupError("no belt-scale reading yet")
        times_s = np.asarray(times_s, dtype=np.float64)
        out = np.interp(times_s, t, pos)
        before, after = times_s < t[0], times_s > t[-1]
        if before.any():
            out[before] = pos[0] - speed[0] * (t[0] - times_s[before])
        if after.any():
            out[after] = pos[-1] + speed[-1] * (times_s[after] - t[-1])
        return out
