"""The lane's work without sockets or threads: contract messages, belt readings and time in;
verdicts, events, sample records and robot commands out.

`LaneCore` is driven by edge.daemon over MQTT and Modbus, and by tests and the
compressed-time simulation directly, with a simulated clock. The decisions
themselves live in edge.belt, edge.decisions and edge.trigger; this module
applies them to the wire contract, the robot and the sample registry.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edge import camera, health as instrument_health
from edge.belt import MAX_TRAPEZOID_S, BeltTracker
from edge.decisions import EventDetector, EventUpdate, SegmentFuser
from edge.trigger import CutScheduler, PendingCut, RoutineSchedule
from orelane.config import LaneConfig
from orelane.contract import ContractError, messages as msg, topics
from orelane.contract.registers import FAULT_NAMES, SCALE_LOADCELL_FAULT, SCALE_RUNNING, SCALE_SPEED_FAULT, STATE_NAMES
from sampling_robot.driver import RobotError, SamplerDriver
from sampling_robot.reconcile import LOST_FAULT, LOST_POWER_LOSS, PENDING, UNRESOLVED, reconcile
from sampling_robot.registry import SampleRegistry, UnknownSampleError
from sampling_robot.status import PlcStatus
from spectral.model import FLAG_DEGENERATE, FLAG_NONFINITE, FLAG_SATURATED, LaneModel, Scores

log = logging.getLogger(__name__)

ROBOT_POLL_S = 0.5
ROBOT_MAX_BACKOFF_S = 5.0  # while the PLC cannot be reached, polls back off to this (each may block ~1 s)
MAX_HELD_SPECTRA = 5000  # spectra held while waiting for the dark and white references
# Segments wait for spectra the daemon has yet to handle (queued in the broker or in the daemon's inbox) for up
# to this long; past it they settle anyway, so a silent spectrometer cannot hold up camera and radiation evidence.
SPECTRA_WAIT_S = 5.0
OPEN_EVENT_CUT_LEAD_M = 2.0  # see LaneCore._cut_open_event_before_its_peak_passes
CLOSED_EVENTS_KEPT = 1000
SNR_ROWS = 64  # signal-to-noise is a health figure: a sample of each batch is enough
# Evidence is placed on the belt by its timestamp; one stamped far from the edge's clock (an instrument clock
# gone wrong) would land kilometres away, and settling up to it would take forever. Refused beyond these.
MAX_EVIDENCE_AGE_S = 600.0  # older than this, its belt position is extrapolated past any use
MAX_EVIDENCE_AHEAD_S = 60.0
STATE_CODES = {name: code for code, name in STATE_NAMES.items()}
FAULT_CODES = {name: code for code, name in FAULT_NAMES.items()}


@dataclass
class LaneCounters:
    """What the daemon has seen and done; published as health and printed by the demo."""

    spectra_in: int = 0
    spectra_classified: int = 0
    spectra_rejected: int = 0
    spectra_flagged: int = 0
    frames_in: int = 0
    frames_rejected: int = 0
    objects_detected: int = 0
    seq_gaps: int = 0
    late_spectra: int = 0  # came after their segment had settled: counted, not fused
    late_objects: int = 0  # camera objects likewise
    belt_readings_refused: int = 0  # belt-scale readings out of range (the contract's, or the belt's rating)
    events_opened: int = 0
    events_closed: int = 0
    cuts_targeted: int = 0
    cuts_routine: int = 0
    cuts_missed: int = 0
    dead_letters: int = 0
    rejects_by_reason: dict = field(default_factory=dict)


class LaneCore:
    """One lane's state and decisions. `publish(leaf, payload)` sends a contract message; `robot` is a
    SamplerDriver (or anything with its request_cut/status/heartbeat); `clock` gives Unix seconds."""

    def __init__(self, site_id: str, lane: LaneConfig, model: LaneModel, registry: SampleRegistry,
                 robot: SamplerDriver, publish: Callable[[str, bytes], None], clock: Callable[[], float] = time.time):
        self.site_id, self.lane, self.model, self.registry, self.clock = site_id, lane, model, registry, clock
        self.robot, self._publish = robot, publish
        self.counters = LaneCounters()
        # a gap of three polls between readings is an outage (the trapezoid would smear a stop over it)
        self.tracker = BeltTracker(max_trapezoid_s=max(MAX_TRAPEZOID_S, 3 * lane.belt_poll_interval_s))
        self.fuser = SegmentFuser(lane.segment_length_m)
        self._event_ids = itertools.count(1)
        self.events = EventDetector(lane.event_open_score, lane.event_close_score, lane.event_close_after_m,
                                    lane.event_min_length_m, self._new_event_id)
        self.scheduler = CutScheduler(lane.cutter_distance_m, lane.robot_reaction_s, lane.robot_cycle_s)
        self.routine = RoutineSchedule(lane.routine_increment_t)
        self._detectors: dict[float, camera.ObjectDetector] = {}
        self.dark: np.ndarray | None = None
        self.white: np.ndarray | None = None
        self.reference_grid: np.ndarray | None = None
        self._reference_times_s: dict[str, float] = {}  # "dark", "white": timestamp of the one in use
        self.lot: msg.Lot | None = None
        # where on the belt each lot began (None: no lot from there), so ore is labelled with its own lot even
        # when the next lot opens before its cut or event is recorded
        self._lot_starts: list[tuple[float, msg.Lot | None]] = []
        self._last_seq: int | None = None
        self._spectra_until_s: float | None = None  # the latest spectrum timestamp handled
        self._spectra_heard_s = clock()  # when the last spectra arrived (the daemon's start until the first)
        self.radiation_alarm = False
        self.belt_link_up = False
        self.belt_scale_status = SCALE_RUNNING  # the integrator's status bits (BELT_SCALE "status")
        self._belt_refusal = ""  # the last reason a belt-scale reading was refused, logged once per reason
        self._last_totalizer: tuple[float, float] | None = None  # (reading time s, totalizer t) of the last step
        self.plc: PlcStatus | None = None
        self.robot_error = ""
        self._last_sealed_id = 0
        self._reconciled = False
        self._awaiting_references: list[tuple[str, msg.SpectrumBatch]] = []
        self._held_spectra = 0
        self._fault_seen = "none"
        self._next_robot_poll_s = 0.0
        self._robot_failures = 0
        self._last_belt_pub_s = 0.0
        # the latest closed events, for the demo's summary and tests (the record is the events topic)
        self.closed_events: deque[msg.ContaminationEvent] = deque(maxlen=CLOSED_EVENTS_KEPT)
        self.first_white: np.ndarray | None = None
        self.snr = 0.0
        self.saturated_fraction = 0.0
        self.camera_rate = instrument_health.RateMeter(
            stale_after_s=max(5.0, 3.0 / lane.camera_fps_min) if lane.camera_fps_min > 0 else math.inf)
        self.camera_exposure: dict[str, float] = {}
        self.radiation_dose_usv_h = 0.0
        self.radiation_link_up = False
        self.radiation_fault = False
        self._alarms_on: set[str] = set()
        self._brand_votes = np.zeros(len(getattr(model, "brand_names", ()) or ()), dtype=np.int64)
        self._brand_judged = False

    def topic(self, leaf: str) -> str:
        return topics.topic(self.site_id, self.lane.id, leaf)

    def _new_event_id(self) -> str:
        return f"{self.lane.id}-{int(self.clock())}-{next(self._event_ids)}"

    # ------------------------------------------------------------------ messages
    def handle_message(self, topic_name: str, payload: bytes) -> None:
        try:
            site, lane, leaf = topics.parse(topic_name)
        except ContractError as exc:
            return self.dead_letter(topic_name, str(exc), payload)
        if lane != self.lane.id or site != self.site_id:
            return self.dead_letter(topic_name, f"message for {site}/{lane} reached lane {self.lane.id}", payload)
        try:
            if leaf == "spectra/batch":
                self.handle_spectra(topic_name, msg.SpectrumBatch.from_bytes(payload))
            elif leaf == "spectra/json":
                self.handle_spectra(topic_name, msg.SpectrumBatch.from_spectrum(msg.Spectrum.from_json(payload)))
            elif leaf.startswith("spectra/reference/"):
                ref = msg.Reference.from_json(payload)
                if leaf != topics.reference_leaf(ref.reference):
                    raise ContractError(f"a {ref.reference} reference on {leaf}")
                self.handle_reference(ref)
            elif leaf == "camera/frame":
                self.handle_frame(msg.CameraFrame.from_bytes(payload))
            elif leaf == "lot":
                self.handle_lot(msg.Lot.from_json(payload))
            elif leaf == "model/deploy":
                self.handle_deployment(msg.ModelDeployment.from_json(payload))
        except ContractError as exc:
            if leaf in ("spectra/batch", "spectra/json"):
                self.counters.spectra_rejected += 1  # unreadable: at least one spectrum lost its verdict
            elif leaf == "camera/frame":
                self.counters.frames_rejected += 1
            self.dead_letter(topic_name, str(exc), payload)

    def dead_letter(self, topic_name: str, reason: str, payload: bytes = b"", seq: int | None = None,
                    message_time_ns: int | None = None) -> None:
        self.counters.dead_letters += 1
        key = reason.split(":")[0][:60]
        self.counters.rejects_by_reason[key] = self.counters.rejects_by_reason.get(key, 0) + 1
        log.warning("lane %s: refused message on %s seq %s: %s", self.lane.id, topic_name, seq, reason)
        self._publish("deadletter", msg.DeadLetter(self.lane.id, topic_name, reason, self.clock(), seq,
                                                   message_time_ns, msg.DeadLetter.prefix_of(payload)).to_json())

    def handle_reference(self, ref: msg.Reference) -> None:
        counts = np.asarray(ref.counts, dtype=np.float64)
        grid = np.asarray(ref.wavelengths_nm, dtype=np.float64)
        if self.reference_grid is not None and grid.shape != self.reference_grid.shape:
            self.dark = self.white = None  # a new instrument grid: both references must be retaken
            self._reference_times_s.clear()
        self.reference_grid = grid
        if ref.reference == "dark":
            self.dark = counts
        else:
            self.white = counts
            if self.first_white is None or self.first_white.shape != counts.shape:
                self.first_white = counts
        self._reference_times_s[ref.reference] = ref.timestamp_s
        if self.dark is not None and self.white is not None and self._awaiting_references:
            held, self._awaiting_references, self._held_spectra = self._awaiting_references, [], 0
            for topic_name, batch in held:
                self._judge_spectra(topic_name, batch)

    def handle_spectra(self, topic_name: str, batch: msg.SpectrumBatch) -> None:
        if (self.dark is None or self.white is None) and batch.lane == self.lane.id:
            # After a restart the broker delivers queued spectra before the retained references: hold a few
            # seconds' worth until both references are in, rather than refuse them.
            self._awaiting_references.append((topic_name, batch))
            self._held_spectra += len(batch)
            if self._held_spectra <= MAX_HELD_SPECTRA:
                return
            held, self._awaiting_references, self._held_spectra = self._awaiting_references, [], 0
            for held_topic, held_batch in held:  # still no references: refused with the reason
                self._judge_spectra(held_topic, held_batch)
            return
        self._judge_spectra(topic_name, batch)

    def _judge_spectra(self, topic_name: str, batch: msg.SpectrumBatch) -> None:
        n = len(batch)
        self.counters.spectra_in += n
        seqs = batch.seq.astype(np.int64)
        times_s = batch.timestamp_ns.astype(np.float64) / 1e9
        now_s = self._spectra_heard_s = self.clock()
        mistimed = (times_s < now_s - MAX_EVIDENCE_AGE_S) | (times_s > now_s + MAX_EVIDENCE_AHEAD_S)
        if n and batch.lane == self.lane.id and not mistimed.all():
            newest = float(times_s[~mistimed].max())
            self._spectra_until_s = newest if self._spectra_until_s is None else max(self._spectra_until_s, newest)
        self._count_gaps(seqs)
        self.saturated_fraction = instrument_health.saturated_fraction(np.asarray(batch.counts))
        reasons = batch.row_problems()
        for row in np.flatnonzero(mistimed):
            reasons.setdefault(int(row), self._time_problem(float(times_s[row]), now_s))
        whole_batch_reason = self._batch_problem(batch)
        if whole_batch_reason:
            reasons = {i: whole_batch_reason for i in range(n)}
        for row, reason in reasons.items():
            self.dead_letter(topic_name, reason, b"", int(seqs[row]), int(batch.timestamp_ns[row]))
        self.counters.spectra_rejected += len(reasons)
        keep = np.array([i not in reasons for i in range(n)], dtype=bool)
        if not keep.any():
            return
        scores = self.model.score(np.asarray(batch.counts[keep]), self.dark, self.white)
        if scores.flags is not None and scores.flags.any():
            keep, scores = self._refuse_unscorable(topic_name, keep, scores, seqs, batch.timestamp_ns)
            if not keep.any():
                return
        positions = self.tracker.positions_at(times_s[keep])
        tonnage = self.tracker.tonnage_at(float(times_s[-1]))
        flagged = scores.decision > 0
        self.counters.late_spectra += self.fuser.add_spectra(positions, flagged, scores.class_index, seqs[keep],
                                                             self.model.class_names, tonnage)
        self.counters.spectra_classified += int(keep.sum())
        self.counters.spectra_flagged += int(flagged.sum())
        kept_counts = np.asarray(batch.counts[keep])
        self.snr = instrument_health.spectra_snr(kept_counts[:SNR_ROWS], self.dark)
        if self.lot is not None and scores.brand_scores is not None and self._brand_votes.size:
            clean = scores.decision == 0
            self._brand_votes += np.bincount(scores.brand_scores[clean].argmax(axis=1),
                                             minlength=self._brand_votes.size)
            self._check_brand(float(positions[-1]))
        if self.lane.results == "spectra":  # else the settled segments carry the results (step)
            results = msg.SpectrumResults(self.lane.id, self.model.version, self.model.class_names,
                                          batch.seq[keep], batch.timestamp_ns[keep], positions, scores.anomaly_score,
                                          scores.t2, scores.q, scores.class_index, scores.decision,
                                          scores.class_scores)
            self._publish("results/spectra", results.to_bytes())

    def _refuse_unscorable(self, topic_name: str, keep: np.ndarray, scores, seqs: np.ndarray,
                           times_ns: np.ndarray):
        """Spectra the model could not score (saturated, non-finite, degenerate) are refused with the reason."""
        kept_rows = np.flatnonzero(keep)
        bad = scores.flags != 0
        for row, flag in zip(kept_rows[bad], scores.flags[bad]):
            reason = ", ".join(name for bit, name in ((FLAG_SATURATED, "detector saturated"),
                                                      (FLAG_NONFINITE, "counts not finite"),
                                                      (FLAG_DEGENERATE, "spectrum degenerate (flat or dark)"))
                               if flag & bit)
            self.dead_letter(topic_name, f"spectrum not scored: {reason}", b"", int(seqs[row]), int(times_ns[row]))
        self.counters.spectra_rejected += int(bad.sum())
        new_keep = keep.copy()
        new_keep[kept_rows[bad]] = False
        good = ~bad
        return new_keep, Scores(**{name: (None if value is None else value[good])
                                   for name, value in vars(scores).items()})

    @staticmethod
    def _time_problem(t_s: float, now_s: float) -> str:
        """Why evidence stamped t_s cannot be placed on the belt, or ''."""
        if t_s < now_s - MAX_EVIDENCE_AGE_S:
            return (f"timestamp {t_s:.3f} s is {now_s - t_s:.0f} s behind the edge's clock (more than "
                    f"{MAX_EVIDENCE_AGE_S:g} s: its belt position is not known); check the instrument's clock")
        if t_s > now_s + MAX_EVIDENCE_AHEAD_S:
            return (f"timestamp {t_s:.3f} s is {t_s - now_s:.0f} s ahead of the edge's clock (more than "
                    f"{MAX_EVIDENCE_AHEAD_S:g} s); check the instrument's clock")
        return ""

    def _batch_problem(self, batch: msg.SpectrumBatch) -> str:
        """A reason that refuses every spectrum of the batch, or ''."""
        if batch.lane != self.lane.id:
            return f"batch says lane {batch.lane!r}, topic says {self.lane.id!r}"
        if self.dark is None or self.white is None:
            return "no dark and white reference received yet for this lane"
        if self.reference_grid is None or batch.wavelengths_nm.shape != self.reference_grid.shape or \
                not np.allclose(batch.wavelengths_nm, self.reference_grid, atol=0.05):
            return (f"wavelength grid ({batch.wavelengths_nm.size} bands) differs from the references' "
                    f"({0 if self.reference_grid is None else self.reference_grid.size} bands)")
        try:
            self.model.check_grid(batch.wavelengths_nm)
        except ValueError as exc:
            return str(exc)
        if self.tracker.latest is None:
            return "belt position unknown: no belt-scale reading yet"
        return ""

    def _count_gaps(self, seqs: np.ndarray) -> None:
        if self._last_seq is not None and seqs[0] > self._last_seq + 1:
            self.counters.seq_gaps += int(seqs[0] - self._last_seq - 1)
        inner = np.diff(seqs)
        self.counters.seq_gaps += int(np.sum(np.where(inner > 1, inner - 1, 0)))
        self._last_seq = int(max(seqs.max(), self._last_seq or 0))

    def handle_frame(self, frame: msg.CameraFrame) -> None:
        self.counters.frames_in += 1
        t_s = frame.timestamp_ns / 1e9
        problem = ("belt position unknown: no belt-scale reading yet" if self.tracker.latest is None
                   else self._time_problem(t_s, self.clock()))
        if problem:
            self.counters.frames_rejected += 1
            return self.dead_letter(self.topic("camera/frame"), problem, seq=frame.seq,
                                    message_time_ns=frame.timestamp_ns)
        try:
            image = camera.decode_jpeg(frame.jpeg)
        except ValueError as exc:
            self.counters.frames_rejected += 1
            return self.dead_letter(self.topic("camera/frame"), str(exc), seq=frame.seq,
                                    message_time_ns=frame.timestamp_ns)
        self.camera_rate.add(t_s, self.clock())
        self.camera_exposure = camera.frame_exposure(image)
        detector = self._detectors.get(frame.pixel_size_mm)
        if detector is None:
            detector = self._detectors[frame.pixel_size_mm] = camera.ObjectDetector(frame.pixel_size_mm)
        position = self.tracker.position_at(t_s)
        objects = []
        for det in detector.detect(image):
            # ore further along the direction of travel passed the sensors earlier: smaller belt coordinate;
            # a camera downstream of the spectrometer's spot sees ore that passed that spot earlier too
            along = position - self.lane.camera_offset_m - det.along_m_offset
            if not self.fuser.add_camera_object(along, det.score, frame.seq, self.tracker.tonnage_at(t_s)):
                self.counters.late_objects += 1
            objects.append({"area_cm2": round(det.area_cm2, 2), "bbox_px": list(map(int, det.bbox_px)),
                            "across_m": round(det.across_m, 3), "along_m": round(along, 3),
                            "score": round(det.score, 3)})
        self.counters.objects_detected += len(objects)
        max_score = max((o["score"] for o in objects), default=0.0)
        # the frame is placed as its objects are: on the belt coordinate of the ore it shows
        self._publish("results/frames", msg.FrameResult(self.lane.id, frame.seq, t_s,
                                                         position - self.lane.camera_offset_m, max_score,
                                                         tuple(objects)).to_json())

    def handle_lot(self, lot: msg.Lot) -> None:
        """A lot opens or closes here on the belt; the close of another lot than the open one changes nothing."""
        current = self.lot is not None and self.lot.lot_id == lot.lot_id
        if lot.state == "open" and current:
            self.lot = lot  # the same lot again (the broker resends the retained message on reconnection)
            return
        latest = self.tracker.latest
        here_m = latest.position_m if latest else 0.0
        if lot.state == "closed" and current:
            self._check_brand(here_m, final=True)
        if lot.state == "open":
            self._brand_votes[:] = 0
            self._brand_judged = False
        if lot.state == "open" or current:
            self._lot_starts = self._lot_starts[-19:] + [(here_m, lot if lot.state == "open" else None)]
            self.lot = lot if lot.state == "open" else None
        log.info("lane %s: lot %s %s (%s, declared %s)", self.lane.id, lot.lot_id, lot.state, lot.vessel,
                 lot.declared_brand)

    def _lot_at(self, position_m: float) -> msg.Lot | None:
        """The lot the ore at a belt coordinate belongs to."""
        found = None
        for start_m, lot in self._lot_starts:
            if start_m > position_m:
                break
            found = lot
        return found

    def _lot_id_at(self, position_m: float) -> str | None:
        lot = self._lot_at(position_m)
        return lot.lot_id if lot else None

    def handle_deployment(self, dep: msg.ModelDeployment) -> None:
        """Swap to the deployed model between two batches (no spectrum waits or is dropped), or keep the
        current one and say why in a dead letter: unreadable, altered or unsigned file, a hash other than
        the deployment's, or a wavelength range this lane's spectrometer does not cover."""
        topic = self.topic("model/deploy")
        try:
            model = LaneModel.load(dep.uri)
        except ValueError as exc:
            return self.dead_letter(topic, f"model {dep.model_id} not deployed: {exc}; "
                                           f"still scoring with {self.model.version}")
        if model.sha256() != dep.sha256:
            return self.dead_letter(topic, f"model {dep.model_id} not deployed: sha256 {model.sha256()[:12]} of "
                                           f"{dep.uri} differs from the deployment's {dep.sha256[:12]}; still "
                                           f"scoring with {self.model.version}")
        if self.reference_grid is not None:
            try:
                model.check_grid(self.reference_grid)
            except ValueError as exc:
                return self.dead_letter(topic, f"model {dep.model_id} not deployed: this lane's spectrometer "
                                               f"does not fit it ({exc}); still scoring with {self.model.version}")
        previous, self.model = self.model, model
        self._brand_votes = self._votes_for(model, previous)
        log.info("lane %s: model %s deployed (was %s)", self.lane.id, model.version, previous.version)

    def _votes_for(self, model: LaneModel, previous: LaneModel) -> np.ndarray:
        """The lot's brand votes so far under the new model's brands, by name (a brand it lacks loses its votes)."""
        so_far = dict(zip(getattr(previous, "brand_names", ()) or (), self._brand_votes))
        return np.array([so_far.get(name, 0) for name in getattr(model, "brand_names", ()) or ()], dtype=np.int64)

    # ------------------------------------------------------------------ instruments and robot
    def on_belt_reading(self, now_s: float, reading: dict[str, float]) -> None:
        """A belt-scale reading (BELT_SCALE register values) taken at now_s.

        While the integrator reports its speed sensor faulted, its speed is not used: belt tracking carries
        on at the last good speed, as with the link down, the totalizer still counts for routine increments,
        and alarm_belt_scale_fault says so."""
        if reading["flow_t_h"] > self.lane.belt_rated_flow_t_h:
            return self.on_belt_refused(f"belt scale flow_t_h {reading['flow_t_h']:.0f} t/h is above the belt's "
                                        f"rating of {self.lane.belt_rated_flow_t_h:g} t/h "
                                        f"(lane {self.lane.id} belt_rated_flow_t_h)")
        self.belt_scale_status = int(reading.get("status", SCALE_RUNNING))
        speed_m_s = reading["speed_m_s"]
        if self.belt_scale_status & SCALE_SPEED_FAULT:
            latest = self.tracker.latest
            if latest is None:
                return  # no good speed yet: the belt position stays unknown
            speed_m_s = latest.speed_m_s
        sample = self.tracker.update(now_s, speed_m_s, reading["totalizer_t"])
        if now_s - self._last_belt_pub_s >= 0.5:
            self._last_belt_pub_s = now_s
            self._publish("belt", msg.BeltState(self.lane.id, now_s, sample.position_m, sample.speed_m_s,
                                                reading["flow_t_h"], sample.totalizer_t).to_json())

    def on_belt_refused(self, reason: str) -> None:
        """A belt-scale reading refused as out of range: counted, its reason logged when it changes; tracking
        carries on at the last good speed."""
        self.counters.belt_readings_refused += 1
        if reason != self._belt_refusal:
            log.warning("lane %s: belt-scale reading refused: %s", self.lane.id, reason)
        self._belt_refusal = reason

    def on_radiation_reading(self, reading: dict[str, float] | None, link_up: bool | None = None,
                             values_in_range: dict[str, float] | None = None) -> None:
        """A gamma portal reading; an alarm (the portal's own, or the dose over the lane's threshold) is placed
        on the belt under the sensors like any other evidence.

        A reading the lane cannot trust places nothing, as the lane cannot say the ore is hot, and raises an
        alarm that says it cannot say it is not: alarm_radiation_link when the read failed (None, link down),
        alarm_radiation_fault when the portal answered values out of range (None, link up) or reports its own
        fault (alarm register 2). One exception: a refused reading whose alarm register itself says high
        (`values_in_range`, the values that were in range) is acted on, since a dose beyond the portal's range
        is what a very hot load would show."""
        self.radiation_link_up = reading is not None if link_up is None else link_up
        self.radiation_fault = (reading is None and self.radiation_link_up) or (reading is not None
                                                                               and reading["alarm"] == 2)
        if reading is None:
            self.radiation_alarm = self.radiation_link_up and (values_in_range or {}).get("alarm") == 1
            return
        if self.radiation_fault:
            self.radiation_alarm = False
            return
        self.radiation_dose_usv_h = reading["dose_rate_usv_h"]
        self.radiation_alarm = reading["alarm"] == 1 or reading["dose_rate_usv_h"] > self.lane.radiation_threshold_usv_h

    def _check_brand(self, position_m: float, final: bool = False) -> None:
        """Once a lot has enough clean spectra (or when it closes), compare the brand they match with the
        declared one; a mismatch over the lane's share raises a declaration-mismatch event (no cut)."""
        lot = self.lot
        n = int(self._brand_votes.sum())
        if lot is None or self._brand_judged or n == 0 or (n < self.lane.brand_min_spectra and not final):
            return
        names = list(self.model.brand_names)
        if lot.declared_brand not in names:
            self._brand_judged = True
            log.warning("lane %s: lot %s declares brand %r, which model %s does not know (%s); brand not checked",
                        self.lane.id, lot.lot_id, lot.declared_brand, self.model.version, ", ".join(names))
            return
        self._brand_judged = True
        match = self._brand_votes[names.index(lot.declared_brand)] / n
        best = names[int(self._brand_votes.argmax())]
        if 1.0 - match <= self.lane.brand_mismatch_share:
            return
        now_s = self.clock()
        event = msg.ContaminationEvent(
            f"{self.lane.id}-{lot.lot_id}-brand", self.lane.id, "closed", self._lot_starts[-1][0], position_m,
            position_m, self.tracker.latest.totalizer_t if self.tracker.latest else 0.0, float(1.0 - match),
            "declaration_mismatch", -1, -1, (), now_s, now_s, lot.lot_id)
        log.warning("lane %s: lot %s declared %s but %.0f%% of %d clean spectra match it (most like %s)",
                    self.lane.id, lot.lot_id, lot.declared_brand, 100 * match, n, best)
        self.closed_events.append(event)
        self.counters.events_opened += 1
        self.counters.events_closed += 1
        self._publish("events", event.to_json())

    def step(self, now_s: float) -> None:
        """Settle belt segments into events, start routine increments and drive the robot, as of now_s."""
        if now_s >= self._next_robot_poll_s:
            self._next_robot_poll_s = now_s + ROBOT_POLL_S
            self.poll_robot()
        latest = self.tracker.latest
        if latest is None:
            return
        position = self.tracker.position_at(now_s)
        if self.radiation_alarm:
            self.fuser.add_radiation_alarm(position)
        for segment in self.fuser.settled(self._settle_position(now_s, position), self.tracker.time_spent_over):
            if self.lane.results == "segments":
                self._publish("results/segments", msg.SegmentResult(
                    self.lane.id, self.model.version, now_s, segment.start_m, segment.end_m, segment.n_spectra,
                    segment.n_flagged, segment.nir_score, segment.camera_evidence, segment.score,
                    segment.likely_class, segment.seq_first, segment.seq_last, len(segment.camera_scores),
                    segment.tonnage_t).to_json())
            for update in self.events.feed(segment):
                self._on_event(update, position, latest.speed_m_s)
        self._cut_open_event_before_its_peak_passes(position, latest.speed_m_s)
        crossed = self._routine_increments_due(latest.t_s, latest.totalizer_t)
        if crossed:
            target = position - self.lane.cutter_distance_m + latest.speed_m_s * self.lane.robot_reaction_s
            self._request_cut("routine", target, latest.totalizer_t, None)
        if len(crossed) > 1:  # more cuts aimed at the same ore would only queue behind the first and expire
            log.warning("lane %s: the belt scale's totalizer passed %d routine increments at once (%.1f t); "
                        "one cut for them, the others recorded missed", self.lane.id, len(crossed),
                        latest.totalizer_t)
            for increment_t in crossed[:-1]:
                self._request_cut("routine", target, increment_t, None, schedule=False)
                self.counters.cuts_missed += 1
        self._drive_robot(position, latest.speed_m_s)

    def _routine_increments_due(self, t_s: float, totalizer_t: float) -> list[float]:
        """The tonnage of each routine increment the totalizer has passed since the last reading seen.

        A rise more than the belt's rating could carry meanwhile (1.5 times, plus 1 t) is a glitch or a preset
        of the integrator, not ore: the count carries on from the new value without increments for it."""
        last, self._last_totalizer = self._last_totalizer, (t_s, totalizer_t)
        if last is not None and t_s > last[0]:
            most_t = 1.5 * self.lane.belt_rated_flow_t_h / 3600.0 * (t_s - last[0]) + 1.0
            if totalizer_t - last[1] > most_t:
                log.warning("lane %s: the belt scale's totalizer rose %.1f t in %.1f s, more than the belt can "
                            "carry (%.1f t): taken as a new count, no routine increments for it", self.lane.id,
                            totalizer_t - last[1], t_s - last[0], most_t)
                self.routine.carry_on_from(totalizer_t)
                return []
        crossed = self.routine.due(totalizer_t)
        step_t = self.routine.increment_t
        return [self.routine.next_t - step_t * (crossed - k) for k in range(crossed)]

    def _settle_position(self, now_s: float, position_m: float) -> float:
        """How far along the belt the evidence has come: the newest spectrum handled, not the belt under the
        sensors now. Spectra are handled some tenths of a second after they are taken (more while the daemon
        searches a camera frame or catches up after a restart); a segment settled on the clock alone is handed
        over with only its first few spectra, the rest refused as late, and one stray flag among so few opens
        an event. Waits at most SPECTRA_WAIT_S for spectra that do not come. A camera downstream of the
        spectrometer's spot (camera_offset_m > 0) sees a stretch of belt that much later, so that much less."""
        floor_m = self.tracker.position_at(now_s - SPECTRA_WAIT_S)
        if self._spectra_until_s is not None:
            floor_m = max(floor_m, min(position_m, self.tracker.position_at(self._spectra_until_s)))
        return floor_m - max(0.0, self.lane.camera_offset_m)

    def next_cut_due_s(self, now_s: float) -> float | None:
        """When the next pending cut falls due (clock seconds), extrapolated at the current belt speed."""
        latest = self.tracker.latest
        if latest is None:
            return None
        position_m = self.tracker.position_at(now_s)
        waits = [self.scheduler.next_fire_in_s(position_m, latest.speed_m_s)]
        for target_m in self._open_event_targets_m():  # wake also where an open event's cut must be requested
            lead_m = self.scheduler.fire_at(target_m, latest.speed_m_s) - OPEN_EVENT_CUT_LEAD_M - position_m
            if latest.speed_m_s > 0 and lead_m > 0:
                waits.append(lead_m / latest.speed_m_s)
        waits = [w for w in waits if w is not None]
        return now_s + min(waits) if waits else None

    def _on_event(self, update: EventUpdate, position_m: float, speed_m_s: float) -> None:
        ev = update.event
        closed = update.state == "closed"
        message = msg.ContaminationEvent(
            ev.event_id, self.lane.id, update.state, ev.start_m, ev.end_m, ev.peak_position_m, ev.tonnage_t,
            ev.peak_score, ev.likely_class, ev.seq_first, ev.seq_last, tuple(ev.frame_seqs),
            opened_s=ev.opened_s if closed else self.clock(),
            closed_s=self.clock() if closed else None, lot_id=self._lot_id_at(ev.peak_position_m))
        if not closed:
            ev.opened_s = message.opened_s
            self.counters.events_opened += 1
        self._publish("events", message.to_json())
        if closed:
            self.counters.events_closed += 1
            self.closed_events.append(message)
            log.info("lane %s: event %s %.1f-%.1f m, %s, peak %.2f", self.lane.id, ev.event_id, ev.start_m,
                     ev.end_m, ev.likely_class, ev.peak_score)
            if ev.likely_class == "radiation" and not self.lane.radiation_cut:
                return  # radiation alarms are placed on the belt; cutting them is a site's choice
            if not ev.cut_requested:
                self._request_cut("targeted", ev.peak_position_m, ev.tonnage_t, ev.event_id,
                                  scores={"peak_score": ev.peak_score}, likely_class=ev.likely_class)

    def _open_event_targets_m(self) -> tuple[float, ...]:
        """The peak of an announced event not yet cut: a targeted cut is coming there, so routine cuts wait."""
        ev = self.events.current
        if ev is None or not ev.announced or ev.cut_requested:
            return ()
        if ev.likely_class == "radiation" and not self.lane.radiation_cut:
            return ()
        return (ev.peak_position_m,)

    def _cut_open_event_before_its_peak_passes(self, position_m: float, speed_m_s: float) -> None:
        """An event is cut on its peak when it closes; one still open when that peak comes within
        OPEN_EVENT_CUT_LEAD_M of the point where its cut must be commanded is cut on its peak so far instead,
        or the ore would pass the cutter first (an event longer than about the cutter distance)."""
        if not self._open_event_targets_m():
            return
        ev = self.events.current
        if position_m < self.scheduler.fire_at(ev.peak_position_m, speed_m_s) - OPEN_EVENT_CUT_LEAD_M:
            return
        ev.cut_requested = True
        log.info("lane %s: event %s still open %.1f m after its peak: cutting its peak so far", self.lane.id,
                 ev.event_id, position_m - ev.peak_position_m)
        self._request_cut("targeted", ev.peak_position_m, ev.tonnage_t, ev.event_id,
                          scores={"peak_score": ev.peak_score}, likely_class=ev.likely_class)

    def _request_cut(self, kind: str, target_m: float, tonnage_t: float, event_id: str | None,
                     scores: dict | None = None, likely_class: str | None = None, schedule: bool = True) -> None:
        """Register and announce a sample request and schedule its cut; schedule=False records it missed at once
        (an increment the totalizer jumped over)."""
        now_s = self.clock()
        lot = self._lot_at(target_m)
        request = msg.SampleRequest(self.registry.next_sample_id(), self.lane.id, kind, target_m, tonnage_t, now_s,
                                    event_id, lot.lot_id if lot else None)
        self.registry.create(request, who="edge", vessel=lot.vessel if lot else "", voyage=lot.voyage if lot else "",
                             hold=lot.hold if lot else "", bill_of_lading=lot.bill_of_lading if lot else "",
                             scores=scores, likely_class=likely_class, model_version=self.model.version)
        self._publish("samples/request", request.to_json())
        cut = PendingCut(request.sample_id, kind, target_m, tonnage_t, event_id, now_s)
        if schedule:
            self.scheduler.add(cut)
        else:
            self._record_cut(cut, "missed", "missed sampling opportunity: the belt scale's totalizer passed "
                                            "several increments at once; one cut was taken for them")

    def poll_robot(self) -> None:
        """Heartbeat to the PLC, read its state, record sealed samples; reconcile once after (re)start."""
        try:
            self.robot.heartbeat()
            plc = self.robot.status()
        except RobotError as exc:
            if not self.robot_error:
                log.warning("lane %s: robot: %s", self.lane.id, exc)
            self.robot_error = str(exc)
            # back off, or every step would block on the PLC's connect timeout and the lane fall behind
            self._robot_failures += 1
            self._next_robot_poll_s = self.clock() + min(ROBOT_MAX_BACKOFF_S, ROBOT_POLL_S * 2 ** self._robot_failures)
            return
        self.plc, self.robot_error, self._robot_failures = plc, "", 0
        if not self._reconciled:
            self._reconcile(plc, after_restart=True)
        elif plc.faulted and plc.fault != self._fault_seen:
            self._reconcile(plc, after_restart=False)  # a jam or power loss may have cost a cut sample
        self._fault_seen = plc.fault
        sealed = plc.last_sealed_sample_id
        if sealed and sealed != self._last_sealed_id:
            self._last_sealed_id = sealed
            try:
                row = self.registry.sample(sealed)
            except UnknownSampleError:
                log.warning("lane %s: PLC sealed sample %s that the registry does not know", self.lane.id, sealed)
                return
            if row.status == "cut":
                self._record(row.sample_id, row.kind, "sealed", "PLC reports the cup sealed", row.belt_position_m,
                             row.tonnage_t, row.event_id)

    def _reconcile(self, plc: PlcStatus, after_restart: bool) -> None:
        """Settle samples the registry holds open against what the PLC reports: after a restart all of them;
        on a new PLC fault only those the fault cost (requested ones are still in the cut schedule)."""
        if after_restart:
            self._reconciled = True
            self._last_sealed_id = plc.last_sealed_sample_id
        scheduled = {c.sample_id for c in self.scheduler.pending}  # this run's own, still to be cut
        open_samples = [r for r in self.registry.open_requests() + self.registry.samples(status="cut")
                        if r.lane == self.lane.id and r.sample_id not in scheduled]
        for decision in reconcile(open_samples, plc):
            if not after_restart and decision.outcome not in (LOST_FAULT, LOST_POWER_LOSS):
                continue
            row = self.registry.sample(decision.sample_id)
            if decision.outcome == UNRESOLVED:
                log.error("lane %s: sample %s unresolved after restart: %s", self.lane.id, row.sample_id,
                          decision.reason)
                continue
            statuses = decision.record
            if decision.outcome == PENDING:  # never commanded; its belt position died with the old process
                statuses = ("missed",)
                self.counters.cuts_missed += 1
            for status in statuses:
                why = "reconciled after restart" if after_restart else f"PLC fault {plc.fault}"
                self._record(row.sample_id, row.kind, status, f"{why}: {decision.reason}",
                             row.belt_position_m, row.tonnage_t, row.event_id)

    def _drive_robot(self, position_m: float, speed_m_s: float) -> None:
        for cut in self.scheduler.expired(position_m, speed_m_s):
            reason = cut.last_refusal or "ore passed the cutter before the cut could be commanded"
            self._record_cut(cut, "missed", f"missed sampling opportunity: {reason}")
            self.counters.cuts_missed += 1
        due = self.scheduler.due(position_m, speed_m_s, self._open_event_targets_m())
        if not due:
            return
        cut = due[0]
        if self.robot_error:  # polls are backing off; step polls again when they are due
            cut.last_refusal = f"robot unreachable: {self.robot_error}"
            return
        if self.plc is None or not self.plc.ready:
            self.poll_robot()  # the last status may be half a second old; the cut window is shorter
        if self.plc is not None and not self.plc.ready:
            cut.last_refusal = f"robot {self.plc.state} (fault {self.plc.fault})"
            return
        cut.attempts += 1
        try:
            # a retried command may go out only while the ore is still at the cutter
            outcome = self.robot.request_cut(cut.sample_id, cut.kind,
                                             retry_for_s=min(1.0, self.scheduler.window_m / max(speed_m_s, 0.1)))
        except RobotError as exc:
            cut.last_refusal = f"robot unreachable: {exc}"
            return
        self.registry.note_command(cut.sample_id, outcome.command_seq, who="edge", at_s=self.clock())
        if not outcome.accepted:
            cut.last_refusal = f"robot {outcome.reason}"
            self.plc = None  # read the PLC again before the next attempt
            return
        self.scheduler.done(cut)
        self.plc = None
        # The cutter crosses the stream robot_reaction_s after the command: the ore it takes is that far on.
        landing_m = position_m + speed_m_s * self.lane.robot_reaction_s - self.lane.cutter_distance_m
        self._record_cut(cut, "cut", f"command seq {outcome.command_seq}", landing_m)
        if cut.kind == "targeted":
            self.counters.cuts_targeted += 1
        else:
            self.counters.cuts_routine += 1

    def _record_cut(self, cut: PendingCut, status: str, note: str, position_m: float | None = None) -> None:
        self._record(cut.sample_id, cut.kind, status, note, cut.target_m if position_m is None else position_m,
                     cut.tonnage_t, cut.event_id)

    def _record(self, sample_id: int, kind: str, status: str, note: str, position_m: float | None,
                tonnage_t: float | None, event_id: str | None) -> None:
        now_s = self.clock()
        self.registry.record(sample_id, status, who="edge", at_s=now_s, note=note)
        self._publish("samples/record", msg.SampleRecord(sample_id, self.lane.id, kind, status, now_s, note,
                                                         position_m, tonnage_t, event_id).to_json())

    # ------------------------------------------------------------------ health
    def _reference_age_s(self, now_s: float) -> float:
        """Age of the older of the dark and white references in use (a fresh dark must not hide a stale white);
        -1 while either is missing, when no spectrum can be judged."""
        if len(self._reference_times_s) < 2:
            return -1.0
        return round(now_s - min(self._reference_times_s.values()), 1)

    def health(self) -> dict:
        c = self.counters
        now_s = self.clock()
        health = {
            "reference_age_s": self._reference_age_s(now_s),
            "belt_link_up": int(self.belt_link_up),
            "belt_scale_fault": int(bool(self.belt_scale_status & (SCALE_SPEED_FAULT | SCALE_LOADCELL_FAULT))),
            "robot_link_up": int(not self.robot_error and self.robot.connected),
            "spectra_in": c.spectra_in, "spectra_classified": c.spectra_classified,
            "spectra_rejected": c.spectra_rejected, "seq_gaps": c.seq_gaps, "frames_in": c.frames_in,
            "events": c.events_closed, "cuts_targeted": c.cuts_targeted, "cuts_routine": c.cuts_routine,
            "cuts_missed": c.cuts_missed, "dead_letters": c.dead_letters, "spectra_flagged": c.spectra_flagged,
            "late_spectra": c.late_spectra, "frames_rejected": c.frames_rejected,
            "objects_detected": c.objects_detected, "late_objects": c.late_objects, "events_opened": c.events_opened,
            "belt_readings_refused": c.belt_readings_refused,
            "belt_position_m": round(self.tracker.latest.position_m, 2) if self.tracker.latest else 0.0,
            "belt_speed_m_s": round(self.tracker.latest.speed_m_s, 3) if self.tracker.latest else 0.0,
            "spectra_age_s": round(now_s - self._spectra_heard_s, 1),
            "model_version": self.model.version,
            "spectra_snr": round(self.snr, 1), "spectra_saturated_fraction": round(self.saturated_fraction, 4),
            "lamp_drift_fraction": round(instrument_health.lamp_drift_fraction(self.first_white, self.white,
                                                                               self.dark), 4)
            if self.first_white is not None and self.white is not None and self.dark is not None else 0.0,
            "robot_state": STATE_CODES.get(self.plc.state, -1) if self.plc else -1,
            "robot_fault_code": FAULT_CODES.get(self.plc.fault, -1) if self.plc else -1,
            "camera_fps": round(self.camera_rate.rate(now_s), 2),
            "camera_mean_brightness": round(self.camera_exposure.get("mean_brightness", 0.0), 1),
            "camera_saturated_fraction": round(self.camera_exposure.get("saturated_fraction", 0.0), 4),
            "radiation_dose_usv_h": round(self.radiation_dose_usv_h, 3),
            "radiation_link_up": int(self.radiation_link_up),
            "radiation_fault": int(self.radiation_fault),
        }
        found = instrument_health.alarms(health, self.lane)
        raised = {name for name, on in found.items() if on}
        for name in sorted(raised - self._alarms_on):
            log.warning("lane %s: %s raised (%s)", self.lane.id, name, {k: v for k, v in health.items()
                                                                         if not k.startswith("cuts")})
        for name in sorted(self._alarms_on - raised):
            log.info("lane %s: %s cleared", self.lane.id, name)
        self._alarms_on = raised
        health.update(found)
        return health

    def status_message(self, state: str = "online") -> bytes:
        return msg.LaneStatus(self.lane.id, state, self.clock(), self.health()).to_json()
