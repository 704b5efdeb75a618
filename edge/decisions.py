"""From per-spectrum and per-frame evidence to belt segments, and from segments to contamination events.

Pure: positions, scores and sequence numbers in, segments and event updates out.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


def _most_voted_named(votes: Counter) -> str | None:
    """The class with the most votes, leaving out 'unknown' (spectra no class explains); None when none."""
    named = [(n, c) for c, n in votes.items() if c != "unknown"]
    return max(named)[1] if named else None


# Settled segments with spectra over which the lane's usual count is a median (see Segment.nir_score): 25 of
# 0.5 m are 12.5 m of belt, a few seconds. Counts are kept per second the segment took to pass the sensors (the
# spectrometer's rate, which it holds steady) and multiplied by each segment's own time, so the usual count
# follows the belt's speed changes and stops.
_USUAL_OVER_SEGMENTS = 25


def _camera_map(score: float) -> float:
    return float(np.clip((score - 0.5) / 0.4, 0.0, 1.0))


@dataclass
class Segment:
    """Evidence gathered on one stretch of belt [start_m, end_m)."""

    index: int
    start_m: float
    end_m: float
    n_spectra: int = 0
    n_flagged: int = 0
    camera_scores: dict[int, float] = field(default_factory=dict)  # best object score per frame seq
    class_votes: Counter = field(default_factory=Counter)
    seq_first: int = -1
    seq_last: int = -1
    frame_seqs: list[int] = field(default_factory=list)
    radiation_alarm: bool = False
    tonnage_t: float = 0.0
    usual_spectra: float = 0.0  # the lane's usual count per segment when this one was settled (0: not known yet)

    @property
    def nir_score(self) -> float:
        """Share of flagged spectra, mapped so stray flags (below a 10% floor) do not count and 40% is certain.

        The share is taken of at least half the lane's usual count: a segment whose spectra mostly came too
        late (a broker restart) would otherwise turn one stray flag among two spectra into a certain 50 %.
        The usual count follows the belt's speed; half of it leaves room for a spectrometer that slows down."""
        if self.n_spectra == 0:
            return 0.0
        share = self.n_flagged / max(self.n_spectra, 0.5 * self.usual_spectra)
        return float(np.clip((share - 0.10) / 0.30, 0.0, 1.0))

    @property
    def camera_score(self) -> float:
        return max(self.camera_scores.values(), default=0.0)

    @property
    def camera_evidence(self) -> float:
        """Object scores mapped so the detector's alarm level (0.5) counts for nothing and 0.9 is certain.
        An object seen in two frames counts fully; one frame alone counts half, because plain ore
        occasionally gives a single detection near 0.8 while real objects are seen in every frame they cross."""
        scores = sorted(self.camera_scores.values(), reverse=True)
        if not scores:
            return 0.0
        single = 0.5 * _camera_map(scores[0])
        return max(single, _camera_map(scores[1])) if len(scores) > 1 else single

    @property
    def score(self) -> float:
        """Fused contamination score: evidence from either sensor raises it (noisy-OR)."""
        return 1.0 - (1.0 - self.nir_score) * (1.0 - self.camera_evidence)

    @property
    def likely_class(self) -> str:
        """The most voted named class on the segment ("" when none)."""
        return _most_voted_named(self.class_votes) or ""


class SegmentFuser:
    """Collects evidence by segment index and hands over segments the sensors have left behind."""

    def __init__(self, segment_length_m: float, settle_m: float = 1.0):
        self.segment_length_m = segment_length_m
        self.settle_m = settle_m  # late messages may still land this far behind the sensors
        self._open: dict[int, Segment] = {}
        self._next_index: int | None = None
        self._recent_rates: deque[float] = deque(maxlen=_USUAL_OVER_SEGMENTS)  # spectra per second of passage

    def _segment(self, position_m: float) -> Segment | None:
        index = math.floor(position_m / self.segment_length_m)
        if self._next_index is not None and index < self._next_index:
            return None  # already handed over; too late to change
        seg = self._open.get(index)
        if seg is None:
            seg = Segment(index, index * self.segment_length_m, (index + 1) * self.segment_length_m)
            self._open[index] = seg
        return seg

    def add_spectra(self, positions_m: np.ndarray, flagged: np.ndarray, class_index: np.ndarray,
                    seqs: np.ndarray, class_names: tuple[str, ...], tonnage_t: float) -> int:
        """Add judged spectra; returns how many arrived too late for their segment.
        Grouped by segment, so the Python loop runs per segment and per flagged spectrum, not per spectrum."""
        indexes = np.floor(np.asarray(positions_m) / self.segment_length_m).astype(np.int64)
        flagged = np.asarray(flagged, dtype=bool)
        seqs = np.asarray(seqs, dtype=np.int64)
        late = 0
        for index in np.unique(indexes):
            rows = indexes == index
            seg = self._segment((index + 0.5) * self.segment_length_m)
            if seg is None:
                late += int(rows.sum())
                continue
            seg.n_spectra += int(rows.sum())
            seg.tonnage_t = max(seg.tonnage_t, tonnage_t)
            for ci in np.asarray(class_index)[rows & flagged]:
                seg.n_flagged += 1
                seg.class_votes[class_names[ci] if ci < len(class_names) else "unknown"] += 1
            seg_seqs = seqs[rows]
            first, last = int(seg_seqs.min()), int(seg_seqs.max())
            seg.seq_first = first if seg.seq_first < 0 else min(seg.seq_first, first)
            seg.seq_last = max(seg.seq_last, last)
        return late

    def add_camera_object(self, position_m: float, score: float, frame_seq: int, tonnage_t: float,
                          material: str = "") -> bool:
        seg = self._segment(position_m)
        if seg is None:
            return False
        seg.tonnage_t = max(seg.tonnage_t, tonnage_t)
        seg.camera_scores[frame_seq] = max(seg.camera_scores.get(frame_seq, 0.0), score)
        if frame_seq not in seg.frame_seqs:
            seg.frame_seqs.append(frame_seq)
        if material:
            seg.class_votes[material] += 1
        return True

    def add_radiation_alarm(self, position_m: float) -> None:
        seg = self._segment(position_m)
        if seg is not None:
            seg.radiation_alarm = True

    def settled(self, sensor_position_m: float,
                passage_s: Callable[[float, float], float] = lambda start_m, end_m: 1.0) -> list[Segment]:
        """Segments wholly behind the sensors by settle_m, in belt order, including empty ones.
        `passage_s(start_m, end_m)` is how long a stretch took to pass the sensors (0: not known); the
        default counts every segment as one second, so the usual count is a plain median of counts."""
        limit = math.floor((sensor_position_m - self.settle_m) / self.segment_length_m)
        if self._next_index is None:
            if not self._open:
                return []
            self._next_index = min(self._open)
        out = []
        while self._next_index < limit:
            i = self._next_index
            seg = self._open.pop(i, None) or Segment(i, i * self.segment_length_m, (i + 1) * self.segment_length_m)
            seconds = passage_s(seg.start_m, seg.end_m)
            if seconds > 0:
                if self._recent_rates:
                    seg.usual_spectra = float(np.median(self._recent_rates)) * seconds
                if seg.n_spectra:
                    self._recent_rates.append(seg.n_spectra / seconds)
            out.append(seg)
            self._next_index += 1
        return out


@dataclass
class Event:
    event_id: str
    start_m: float
    end_m: float
    peak_score: float
    peak_position_m: float
    tonnage_t: float
    class_votes: Counter
    seq_first: int
    seq_last: int
    frame_seqs: list[int]
    radiation: bool = False
    announced: bool = False  # published as open once it reached the minimum length
    opened_s: float = 0.0
    cut_requested: bool = False  # its targeted cut was asked for while it was still open (a long event)

    @property
    def likely_class(self) -> str:
        if self.radiation:
            return "radiation"
        return _most_voted_named(self.class_votes) or "unknown"  # a named class beats spectra no class explains


@dataclass(frozen=True)
class EventUpdate:
    state: str  # "open" or "closed", as in ContaminationEvent
    event: Event


class EventDetector:
    """Opens an event when the fused score reaches open_score, and closes it after close_after_m
    of belt below close_score, so one plastic sheet is one event, not one per segment."""

    def __init__(self, open_score: float, close_score: float, close_after_m: float, min_length_m: float,
                 new_event_id):
        self.open_score, self.close_score = open_score, close_score
        self.close_after_m, self.min_length_m = close_after_m, min_length_m
        self._new_event_id = new_event_id
        self.current: Event | None = None
        self._quiet_m = 0.0

    def feed(self, seg: Segment) -> list[EventUpdate]:
        score = 1.0 if seg.radiation_alarm else seg.score
        ev = self.current
        if ev is None:
            if score < self.open_score:
                return []
            self.current = Event(self._new_event_id(), seg.start_m, seg.end_m, score, 0.5 * (seg.start_m + seg.end_m),
                                 seg.tonnage_t, Counter(seg.class_votes), seg.seq_first, seg.seq_last,
                                 list(seg.frame_seqs), seg.radiation_alarm)
            self._quiet_m = 0.0
            return self._announce_if_long_enough()
        if score >= self.close_score:
            ev.end_m = seg.end_m
            self._quiet_m = 0.0
            ev.class_votes.update(seg.class_votes)
            ev.frame_seqs.extend(f for f in seg.frame_seqs if f not in ev.frame_seqs)
            ev.radiation = ev.radiation or seg.radiation_alarm
            if seg.seq_first >= 0:
                ev.seq_first = seg.seq_first if ev.seq_first < 0 else min(ev.seq_first, seg.seq_first)
                ev.seq_last = max(ev.seq_last, seg.seq_last)
            if score > ev.peak_score:
                ev.peak_score, ev.peak_position_m = score, 0.5 * (seg.start_m + seg.end_m)
            return self._announce_if_long_enough()
        self._quiet_m += seg.end_m - seg.start_m
        if self._quiet_m + 1e-9 < self.close_after_m:
            return []
        self.current = None
        return [EventUpdate("closed", ev)] if ev.announced else []

    def _announce_if_long_enough(self) -> list[EventUpdate]:
        ev = self.current
        if ev is None or ev.announced or ev.end_m - ev.start_m + 1e-9 < self.min_length_m:
            return []
        ev.announced = True
        return [EventUpdate("open", ev)]
