"""Payload codecs for every message in the topic tree.

JSON messages are frozen dataclasses; `to_json` and `from_json` are the only
way they cross the wire. Batches of spectra, spectrum results and camera
frames use the binary columnar envelope (orelane.contract.columnar).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orelane.contract import CONTRACT_VERSION, ContractError, columnar

# Wavelength bounds any NIR/SWIR instrument orelane reads can report, in nm.
WAVELENGTH_MIN_NM = 300.0
WAVELENGTH_MAX_NM = 3000.0
MIN_BANDS = 8
MAX_BANDS = 4096

DECISIONS = ("clean", "contaminant", "unknown_anomaly")
# Latest time InfluxDB stores (it reserves 2^63-1): times in points stay within 0..MAX_TIMESTAMP_NS.
MAX_TIMESTAMP_NS = 2**63 - 2
NO_CLASS = 255


# ---------------------------------------------------------------- JSON messages


def _check_value(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ContractError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            raise ContractError(f"{where} is too large for a float") from None
        if not math.isfinite(number):
            raise ContractError(f"{where} must be finite, got {value!r}")
        return number
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ContractError(f"{where} must be an integer, got {value!r}")
        if not -(2**63) <= value < 2**63:
            raise ContractError(f"{where} = {value} does not fit a signed 64-bit integer")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ContractError(f"{where} must be a string, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ContractError(f"{where} must be true or false, got {value!r}")
        return value
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            raise ContractError(f"{where} must be a list, got {type(value).__name__}")
        (item_hint,) = typing.get_args(hint)[:1]
        return tuple(_check_value(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ContractError(f"{where} must be an object, got {type(value).__name__}")
        return value
    raise TypeError(f"unsupported field type {hint!r} at {where}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a message class (resolving them is most of a decode's cost, so once per class)."""
    return typing.get_type_hints(cls)


class JsonMessage:
    """Base of the JSON messages: a 'v' version and a 'kind' travel with every payload."""

    KIND: typing.ClassVar[str] = ""

    def to_json(self) -> bytes:
        body = {"v": CONTRACT_VERSION, "kind": self.KIND}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            body[f.name] = list(value) if isinstance(value, tuple) else value
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False, default=_json_default).encode()
        except ValueError as exc:
            raise ContractError(f"{self.KIND}: cannot encode: {exc}") from None

    @classmethod
    def from_json(cls, payload: bytes | str):
        try:
            body = json.loads(payload, parse_constant=columnar._refuse_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
            raise ContractError(f"{cls.KIND}: payload is not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(body, dict):
            raise ContractError(f"{cls.KIND}: payload must be a JSON object")
        if type(body.get("v")) is not int or body.get("v") != CONTRACT_VERSION:
            raise ContractError(f"{cls.KIND}: contract version {body.get('v')!r}; this build reads {CONTRACT_VERSION}")
        if body.get("kind") != cls.KIND:
            raise ContractError(f"{cls.KIND}: payload kind is {body.get('kind')!r}")
        hints = _hints(cls)
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in body:
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                    continue
                raise ContractError(f"{cls.KIND}: missing field {f.name!r}")
            values[f.name] = _check_value(body[f.name], hints[f.name], f"{cls.KIND}.{f.name}")
        msg = cls(**values)
        msg.validate()
        return msg

    def validate(self) -> None:
        """Domain checks beyond types; subclasses raise ContractError."""


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _check_grid(wavelengths_nm: np.ndarray, where: str) -> None:
    w = np.asarray(wavelengths_nm, dtype=np.float64)
    if w.ndim != 1 or not (MIN_BANDS <= w.size <= MAX_BANDS):
        raise ContractError(f"{where}: wavelength grid must have {MIN_BANDS}-{MAX_BANDS} bands, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ContractError(f"{where}: wavelengths must be finite")
    if w[0] < WAVELENGTH_MIN_NM or w[-1] > WAVELENGTH_MAX_NM:
        raise ContractError(f"{where}: wavelengths {w[0]:.1f}-{w[-1]:.1f} nm are outside "
                            f"{WAVELENGTH_MIN_NM:.0f}-{WAVELENGTH_MAX_NM:.0f} nm (wrong unit? nm expected)")
    if np.any(np.diff(w) <= 0):
        raise ContractError(f"{where}: wavelengths must increase strictly")


@dataclass(frozen=True)
class Spectrum(JsonMessage):
    """One spectrum in JSON, for people and debugging; raw detector counts."""

    KIND: typing.ClassVar[str] = "spectrum"
    lane: str
    seq: int
    timestamp_s: float
    integration_time_ms: float
    wavelengths_nm: tuple[float, ...]
    counts: tuple[float, ...]

    def validate(self) -> None:
        _check_grid(np.asarray(self.wavelengths_nm), f"spectrum seq {self.seq}")
        if len(self.counts) != len(self.wavelengths_nm):
            raise ContractError(f"spectrum seq {self.seq}: {len(self.counts)} counts for "
                                f"{len(self.wavelengths_nm)} wavelengths")
        if self.integration_time_ms <= 0:
            raise ContractError(f"spectrum seq {self.seq}: integration_time_ms must be > 0")
        if self.seq < 0:
            raise ContractError(f"spectrum seq {self.seq}: seq must be >= 0")


@dataclass(frozen=True)
class Reference(JsonMessage):
    """A dark or white reference frame (mean counts), retained so a restarted edge has it at once."""

    KIND: typing.ClassVar[str] = "reference"
    lane: str
    reference: str  # "dark" or "white"
    timestamp_s: float
    integration_time_ms: float
    wavelengths_nm: tuple[float, ...]
    counts: tuple[float, ...]

    def validate(self) -> None:
        if self.reference not in ("dark", "white"):
            raise ContractError(f"reference must be 'dark' or 'white', got {self.reference!r}")
        _check_grid(np.asarray(self.wavelengths_nm), f"{self.reference} reference")
        if len(self.counts) != len(self.wavelengths_nm):
            raise ContractError(f"{self.reference} reference: {len(self.counts)} counts for "
                                f"{len(self.wavelengths_nm)} wavelengths")


@dataclass(frozen=True)
class DetectedObject(JsonMessage):
    KIND: typing.ClassVar[str] = "object"
    area_cm2: float
    bbox_px: tuple[int, ...]  # x, y, width, height
    across_m: float  # from the belt's left edge
    along_m: float  # belt position of the object's centre
    score: float


@dataclass(frozen=True)
class FrameResult(JsonMessage):
    KIND: typing.ClassVar[str] = "frame_result"
    lane: str
    seq: int
    timestamp_s: float
    belt_position_m: float  # belt coordinate of the ore at the frame's centre row (camera_offset_m allowed for)
    max_score: float
    objects: tuple[dict, ...] = ()


@dataclass(frozen=True)
class SegmentResult(JsonMessage):
    """One settled belt segment's fused evidence: what a lane set to `results = "segments"` publishes
    instead of a result per spectrum (one message per segment of segment_length_m)."""

    KIND: typing.ClassVar[str] = "segment_result"
    lane: str
    model_version: str
    timestamp_s: float  # when the segment settled (passed the sensors and the settle distance)
    start_m: float
    end_m: float
    n_spectra: int
    n_flagged: int  # spectra the model judged contaminant or unknown
    nir_score: float  # 0-1, from the share of flagged spectra
    camera_score: float  # 0-1, from the camera objects on the segment
    score: float  # 0-1, the fused contamination score events open and close on
    likely_class: str  # most voted named class among the flagged spectra, "" when none
    seq_first: int = -1  # spectra sequence range on the segment (-1: none)
    seq_last: int = -1
    frames: int = 0  # camera frames with an object on the segment
    tonnage_t: float = 0.0  # belt totalizer when the segment passed

    def validate(self) -> None:
        if not self.end_m > self.start_m:
            raise ContractError(f"segment [{self.start_m}, {self.end_m}): end_m must be above start_m")
        if not 0 <= self.n_flagged <= self.n_spectra:
            raise ContractError(f"segment at {self.start_m} m: n_flagged {self.n_flagged} must be 0..n_spectra "
                                f"({self.n_spectra})")
        for name in ("nir_score", "camera_score", "score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ContractError(f"segment at {self.start_m} m: {name} {getattr(self, name)} outside 0..1")


@dataclass(frozen=True)
class BeltState(JsonMessage):
    KIND: typing.ClassVar[str] = "belt_state"
    lane: str
    timestamp_s: float
    belt_position_m: float
    speed_m_s: float
    flow_t_h: float
    totalizer_t: float


@dataclass(frozen=True)
class ContaminationEvent(JsonMessage):
    """A stretch of belt whose fused evidence says contaminated; published on open and on close."""

    KIND: typing.ClassVar[str] = "contamination_event"
    event_id: str
    lane: str
    state: str  # "open" or "closed"
    start_m: float
    end_m: float
    peak_position_m: float
    tonnage_t: float
    peak_score: float
    likely_class: str
    spectra_seq_first: int
    spectra_seq_last: int
    frame_seqs: tuple[int, ...]
    opened_s: float
    closed_s: float | None = None
    lot_id: str | None = None

    def validate(self) -> None:
        if self.state not in ("open", "closed"):
            raise ContractError(f"event {self.event_id}: state must be 'open' or 'closed'")
        if self.end_m < self.start_m:
            raise ContractError(f"event {self.event_id}: end_m {self.end_m} < start_m {self.start_m}")


SAMPLE_KINDS = ("targeted", "routine")
RESULT_CLASS_RE = re.compile(r"[a-z0-9][a-z0-9 _-]{0,39}")
SAMPLE_STATUSES = ("requested", "cut", "sealed", "collected", "received", "analysed", "archived",
                   "missed", "failed")


@dataclass(frozen=True)
class SampleRequest(JsonMessage):
    KIND: typing.ClassVar[str] = "sample_request"
    sample_id: int
    lane: str
    sample_kind: str  # "targeted" or "routine"
    target_belt_position_m: float
    tonnage_t: float
    requested_s: float
    event_id: str | None = None
    lot_id: str | None = None

    def validate(self) -> None:
        if self.sample_kind not in SAMPLE_KINDS:
            raise ContractError(f"sample {self.sample_id}: sample_kind {self.sample_kind!r} not in {SAMPLE_KINDS}")
        if not 0 < self.sample_id < 2**32:
            raise ContractError(f"sample_id {self.sample_id} must fit 1..2^32-1 (PLC register pair)")


@dataclass(frozen=True)
class SampleRecord(JsonMessage):
    """A state change of one sample (chain of custody), or a missed sampling opportunity."""

    KIND: typing.ClassVar[str] = "sample_record"
    sample_id: int
    lane: str
    sample_kind: str
    status: str
    timestamp_s: float
    reason: str = ""
    belt_position_m: float | None = None  # on 'cut' where the cutter took the ore; otherwise the ore aimed at
    tonnage_t: float | None = None
    event_id: str | None = None
    result_class: str | None = None  # on 'analysed': "clean" or the contaminant the lab found (lower case)

    def validate(self) -> None:
        if self.status not in SAMPLE_STATUSES:
            raise ContractError(f"sample {self.sample_id}: status {self.status!r} not in {SAMPLE_STATUSES}")
        if self.sample_kind not in SAMPLE_KINDS:
            raise ContractError(f"sample {self.sample_id}: sample_kind {self.sample_kind!r} not in {SAMPLE_KINDS}")
        if self.result_class is not None:
            if self.status != "analysed":
                raise ContractError(f"sample {self.sample_id}: result_class {self.result_class!r} on status "
                                    f"{self.status!r}; only an 'analysed' record carries a lab result")
            if not RESULT_CLASS_RE.fullmatch(self.result_class):
                raise ContractError(f"sample {self.sample_id}: result_class {self.result_class!r} must be 1-40 "
                                    f"lower-case letters, digits, spaces, '_' or '-'")


@dataclass(frozen=True)
class Lot(JsonMessage):
    """Customs declaration of a lot; state 'open' starts it on a lane, 'closed' ends it."""

    KIND: typing.ClassVar[str] = "lot"
    lane: str
    lot_id: str
    vessel: str
    voyage: str
    declared_brand: str
    declared_tonnage_t: float
    origin: str
    state: str
    timestamp_s: float
    hold: str = ""
    bill_of_lading: str = ""

    def validate(self) -> None:
        if self.state not in ("open", "closed"):
            raise ContractError(f"lot {self.lot_id}: state must be 'open' or 'closed', got {self.state!r}")
        if self.declared_tonnage_t < 0:
            raise ContractError(f"lot {self.lot_id}: declared_tonnage_t must be >= 0")


@dataclass(frozen=True)
class ModelDeployment(JsonMessage):
    KIND: typing.ClassVar[str] = "model_deployment"
    lane: str
    model_id: str
    version: str
    sha256: str
    uri: str
    deployed_s: float


@dataclass(frozen=True)
class LaneStatus(JsonMessage):
    """Birth ('online'), last will ('offline') and periodic health of a lane daemon."""

    KIND: typing.ClassVar[str] = "lane_status"
    lane: str
    state: str
    timestamp_s: float
    health: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.state not in ("online", "offline"):
            raise ContractError(f"lane status must be 'online' or 'offline', got {self.state!r}")


@dataclass(frozen=True)
class DeadLetter(JsonMessage):
    """A message a consumer refused, with the reason; the payload prefix helps find the sender's bug."""

    KIND: typing.ClassVar[str] = "dead_letter"
    lane: str
    topic: str
    reason: str
    received_s: float
    seq: int | None = None
    message_timestamp_ns: int | None = None  # when the refused message was taken (ns, exact), if readable
    payload_prefix_b64: str = ""

    @staticmethod
    def prefix_of(payload: bytes, limit: int = 256) -> str:
        return base64.b64encode(bytes(payload[:limit])).decode()


# ---------------------------------------------------------------- binary batches


@dataclass(frozen=True)
class SpectrumBatch:
    """Many spectra of one lane on one wavelength grid; counts is (n, bands) without per-value copies."""

    lane: str
    wavelengths_nm: np.ndarray  # (bands,) float
    seq: np.ndarray  # (n,) uint64
    timestamp_ns: np.ndarray  # (n,) int64
    integration_time_us: np.ndarray  # (n,) uint32
    counts: np.ndarray  # (n, bands) uint16 or float32

    KIND: typing.ClassVar[str] = "spectrum_batch"

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    def to_bytes(self) -> bytes:
        return columnar.encode(self.KIND, {"lane": self.lane}, {
            "wavelengths_nm": np.asarray(self.wavelengths_nm, dtype="<f4"),
            "seq": np.asarray(self.seq, dtype="<u8"),
            "timestamp_ns": np.asarray(self.timestamp_ns, dtype="<i8"),
            "integration_time_us": np.asarray(self.integration_time_us, dtype="<u4"),
            "counts": self.counts if self.counts.dtype in (np.uint16, np.float32)
            else np.asarray(self.counts, dtype="<f4"),
        })

    @classmethod
    def from_bytes(cls, payload: bytes) -> "SpectrumBatch":
        c = columnar.decode(payload, cls.KIND)
        lane = c.meta.get("lane")
        if not isinstance(lane, str):
            raise ContractError("spectrum_batch: meta.lane must be a string")
        cols = _require_columns(c, {"wavelengths_nm": ("<f4",), "seq": ("<u8",), "timestamp_ns": ("<i8",),
                                    "integration_time_us": ("<u4",), "counts": ("<u2", "<f4")})
        w = cols["wavelengths_nm"]
        _check_grid(w, "spectrum_batch")
        n = cols["seq"].shape
        if len(n) != 1 or n[0] == 0:
            raise ContractError(f"spectrum_batch: seq must be a non-empty vector, got shape {n}")
        for name in ("timestamp_ns", "integration_time_us"):
            if cols[name].shape != n:
                raise ContractError(f"spectrum_batch: {name} has shape {cols[name].shape}, expected {n}")
        if cols["counts"].shape != (n[0], w.shape[0]):
            raise ContractError(f"spectrum_batch: counts has shape {cols['counts'].shape}, "
                                f"expected ({n[0]}, {w.shape[0]}) for {n[0]} spectra on {w.shape[0]} bands")
        return cls(lane, w, cols["seq"], cols["timestamp_ns"], cols["integration_time_us"], cols["counts"])

    @classmethod
    def from_spectrum(cls, s: Spectrum) -> "SpectrumBatch":
        return cls(s.lane, np.asarray(s.wavelengths_nm, dtype=np.float32), np.array([s.seq], dtype=np.uint64),
                   np.array([round(s.timestamp_s * 1e9)], dtype=np.int64),
                   np.array([round(s.integration_time_ms * 1000)], dtype=np.uint32),
                   np.asarray([s.counts], dtype=np.float32))

    def row_problems(self) -> dict[int, str]:
        """Rows whose values break the contract (non-finite or negative counts, zero integration time)."""
        problems: dict[int, str] = {}
        counts = self.counts
        if counts.dtype.kind == "f":
            bad = ~np.isfinite(counts).all(axis=1)
            for row in np.flatnonzero(bad):
                problems[int(row)] = "counts contain NaN or infinity"
            neg = (counts < 0).any(axis=1) & ~bad
            for row in np.flatnonzero(neg):
                problems[int(row)] = "counts are negative"
        for row in np.flatnonzero(self.integration_time_us == 0):
            problems.setdefault(int(row), "integration time is 0")
        return problems


@dataclass(frozen=True)
class SpectrumResults:
    """The edge's verdict on a batch of spectra; one row per spectrum, columnar for fast ingest."""

    lane: str
    model_version: str
    class_names: tuple[str, ...]
    seq: np.ndarray  # (n,) uint64
    timestamp_ns: np.ndarray  # (n,) int64
    belt_position_m: np.ndarray  # (n,) float64
    anomaly_score: np.ndarray  # (n,) float32; > 1 means outside the clean-ore limits
    t2: np.ndarray  # (n,) float32
    q: np.ndarray  # (n,) float32
    class_index: np.ndarray  # (n,) uint8; NO_CLASS where none
    decision: np.ndarray  # (n,) uint8 index into DECISIONS
    class_scores: np.ndarray  # (n, classes) float32

    KIND: typing.ClassVar[str] = "spectrum_results"
    _SCHEMA: typing.ClassVar[dict] = {
        "seq": "<u8", "timestamp_ns": "<i8", "belt_position_m": "<f8", "anomaly_score": "<f4",
        "t2": "<f4", "q": "<f4", "class_index": "|u1", "decision": "|u1", "class_scores": "<f4"}

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    def to_bytes(self) -> bytes:
        meta = {"lane": self.lane, "model_version": self.model_version, "class_names": list(self.class_names),
                "decisions": list(DECISIONS)}
        return columnar.encode(self.KIND, meta, {
            name: np.asarray(getattr(self, name), dtype=dtype) for name, dtype in self._SCHEMA.items()})

    @classmethod
    def from_bytes(cls, payload: bytes) -> "SpectrumResults":
        c = columnar.decode(payload, cls.KIND)
        meta = c.meta
        if not isinstance(meta.get("lane"), str) or not isinstance(meta.get("model_version"), str):
            raise ContractError("spectrum_results: meta.lane and meta.model_version must be strings")
        names = meta.get("class_names")
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names) or len(names) >= NO_CLASS:
            raise ContractError("spectrum_results: meta.class_names must be a list of < 255 strings")
        cols = _require_columns(c, {k: (v,) for k, v in cls._SCHEMA.items()})
        n = cols["seq"].shape
        if len(n) != 1:
            raise ContractError(f"spectrum_results: seq must be a vector, got shape {n}")
        for name in cls._SCHEMA:
            expected = (n[0], len(names)) if name == "class_scores" else n
            if cols[name].shape != expected:
                raise ContractError(f"spectrum_results: {name} has shape {cols[name].shape}, expected {expected}")
        if np.any(cols["decision"] >= len(DECISIONS)):
            raise ContractError(f"spectrum_results: decision codes must be < {len(DECISIONS)}")
        ci = cols["class_index"]
        if np.any((ci >= len(names)) & (ci != NO_CLASS)):
            raise ContractError("spectrum_results: class_index out of range of class_names")
        for name in ("belt_position_m", "anomaly_score", "t2", "q", "class_scores"):
            if not np.isfinite(cols[name]).all():
                raise ContractError(f"spectrum_results: {name} contains NaN or infinity; refuse such spectra "
                                    f"with a dead letter instead")
        if np.any(cols["seq"] >= 2**63):
            raise ContractError("spectrum_results: seq must be below 2^63")
        ts = cols["timestamp_ns"]
        if np.any((ts < 0) | (ts > MAX_TIMESTAMP_NS)):
            raise ContractError(f"spectrum_results: timestamp_ns outside 1970-2262 (0..{MAX_TIMESTAMP_NS})")
        return cls(meta["lane"], meta["model_version"], tuple(names), **cols)


@dataclass(frozen=True)
class CameraFrame:
    """One JPEG frame with where and when it was taken."""

    lane: str
    seq: int
    timestamp_ns: int
    pixel_size_mm: float
    jpeg: bytes
    belt_position_m: float | None = None

    KIND: typing.ClassVar[str] = "camera_frame"

    def to_bytes(self) -> bytes:
        meta = {"lane": self.lane, "seq": self.seq, "timestamp_ns": self.timestamp_ns,
                "pixel_size_mm": self.pixel_size_mm, "belt_position_m": self.belt_position_m}
        return columnar.encode(self.KIND, meta, {"jpeg": np.frombuffer(self.jpeg, dtype=np.uint8)})

    @classmethod
    def from_bytes(cls, payload: bytes) -> "CameraFrame":
        c = columnar.decode(payload, cls.KIND)
        m = c.meta
        try:
            lane = _check_value(m.get("lane"), str, "camera_frame.lane")
            seq = _check_value(m.get("seq"), int, "camera_frame.seq")
            ts = _check_value(m.get("timestamp_ns"), int, "camera_frame.timestamp_ns")
            px = _check_value(m.get("pixel_size_mm"), float, "camera_frame.pixel_size_mm")
            pos = _check_value(m.get("belt_position_m"), float | None, "camera_frame.belt_position_m")
        except ContractError:
            raise
        if not 0.01 <= px <= 100:
            raise ContractError(f"camera_frame seq {seq}: pixel_size_mm {px} outside 0.01-100 mm")
        cols = _require_columns(c, {"jpeg": ("|u1", "<u1")})
        jpeg = cols["jpeg"]
        if jpeg.ndim != 1 or jpeg.size < 4 or bytes(jpeg[:2]) != b"\xff\xd8":
            raise ContractError(f"camera_frame seq {seq}: image is not JPEG (no SOI marker)")
        return cls(lane, seq, ts, px, jpeg.tobytes(), pos)


def _require_columns(c: columnar.Columnar, schema: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    missing = set(schema) - set(c.columns)
    if missing:
        raise ContractError(f"{c.kind}: missing columns {sorted(missing)}")
    extra = set(c.columns) - set(schema)
    if extra:
        raise ContractError(f"{c.kind}: unknown columns {sorted(extra)}")
    for name, dtypes in schema.items():
        if c.columns[name].dtype.str not in dtypes:
            raise ContractError(f"{c.kind}: column {name} has dtype {c.columns[name].dtype.str}, expected {dtypes}")
    return c.columns


JSON_MESSAGES: dict[str, type[JsonMessage]] = {
    cls.KIND: cls for cls in (Spectrum, Reference, FrameResult, SegmentResult, BeltState, ContaminationEvent,
                              SampleRequest, SampleRecord, Lot, ModelDeployment, LaneStatus, DeadLetter)}
