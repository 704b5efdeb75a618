"""Chain-of-custody registry of physical samples, on SQLite.

A sample's identity (lane, lot, vessel, belt position, the evidence that
asked for it) is written once; its life is an append-only history of status
changes, and lab results are append-only too. Triggers refuse UPDATE and
DELETE of history and results, so a correction is a new entry, never an edit.
Every state change is one transaction, committed with WAL and
synchronous=FULL, so a change the caller saw committed survives a kill -9 or
a power cut of the edge computer.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from orelane.contract.messages import SAMPLE_KINDS, SAMPLE_STATUSES
from sampling_robot.durable_sqlite import DurableSqlite

# Allowed status changes; anything else needs correct() with a reason.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "requested": ("cut", "missed", "failed"),
    "cut": ("sealed", "failed"),  # failed: the cycle was lost (power loss, jam) before the cup was sealed
    "sealed": ("collected",),
    "collected": ("received",),
    "received": ("analysed",),
    "analysed": ("archived",),
    "archived": (),
    "missed": (),
    "failed": (),
}
assert set(TRANSITIONS) == set(SAMPLE_STATUSES)

MAX_SAMPLE_ID = 2**32 - 1  # the PLC carries sample ids in a register pair
BARCODE_PREFIX = "OL"
_LANE_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
_BARCODE_RE = re.compile(r"OL-([A-Za-z0-9_-]{1,16})-(\d{8,10})-([0-9A-Z*])")
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CHECK_CHARS = _ALNUM + "*"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    sample_id INTEGER PRIMARY KEY CHECK (sample_id BETWEEN 1 AND {MAX_SAMPLE_ID}),
    barcode TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in SAMPLE_KINDS)})),
    lane TEXT NOT NULL,
    lot_id TEXT,
    vessel TEXT NOT NULL DEFAULT '',
    voyage TEXT NOT NULL DEFAULT '',
    hold TEXT NOT NULL DEFAULT '',
    bill_of_lading TEXT NOT NULL DEFAULT '',
    belt_position_m REAL,
    tonnage_t REAL,
    event_id TEXT,
    scores_json TEXT NOT NULL DEFAULT '{{}}',
    class_json TEXT NOT NULL DEFAULT 'null',
    model_version_json TEXT NOT NULL DEFAULT 'null',
    cup TEXT,
    seal TEXT,
    mass_kg REAL CHECK (mass_kg IS NULL OR mass_kg > 0),
    created_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id INTEGER NOT NULL REFERENCES samples(sample_id),
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in SAMPLE_STATUSES)})),
    who TEXT NOT NULL CHECK (who <> ''),
    at_s REAL NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_by_sample ON history (sample_id, id);
CREATE TABLE IF NOT EXISTS lab_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id INTEGER NOT NULL REFERENCES samples(sample_id),
    contaminant_found INTEGER NOT NULL CHECK (contaminant_found IN (0, 1)),
    contaminant_type TEXT NOT NULL DEFAULT '',
    mass_fraction REAL CHECK (mass_fraction IS NULL OR mass_fraction BETWEEN 0 AND 1),
    note TEXT NOT NULL DEFAULT '',
    who TEXT NOT NULL CHECK (who <> ''),
    at_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id INTEGER NOT NULL REFERENCES samples(sample_id),
    command_seq INTEGER NOT NULL CHECK (command_seq BETWEEN 1 AND 65535),
    who TEXT NOT NULL,
    at_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_by_sample ON commands (sample_id, id);
CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only: record a correction as a new entry'); END;
CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only: entries are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS lab_results_no_update BEFORE UPDATE ON lab_results
BEGIN SELECT RAISE(ABORT, 'lab_results is append-only: add a corrected result'); END;
CREATE TRIGGER IF NOT EXISTS lab_results_no_delete BEFORE DELETE ON lab_results
BEGIN SELECT RAISE(ABORT, 'lab_results is append-only: results are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS commands_no_update BEFORE UPDATE ON commands
BEGIN SELECT RAISE(ABORT, 'commands is append-only'); END;
CREATE TRIGGER IF NOT EXISTS commands_no_delete BEFORE DELETE ON commands
BEGIN SELECT RAISE(ABORT, 'commands is append-only'); END;
CREATE TRIGGER IF NOT EXISTS samples_no_delete BEFORE DELETE ON samples
BEGIN SELECT RAISE(ABORT, 'samples are never deleted: record them missed or failed'); END;
CREATE TRIGGER IF NOT EXISTS samples_write_once BEFORE UPDATE ON samples
WHEN NEW.sample_id IS NOT OLD.sample_id OR NEW.barcode IS NOT OLD.barcode OR NEW.kind IS NOT OLD.kind
  OR NEW.lane IS NOT OLD.lane OR NEW.lot_id IS NOT OLD.lot_id OR NEW.vessel IS NOT OLD.vessel
  OR NEW.voyage IS NOT OLD.voyage OR NEW.hold IS NOT OLD.hold OR NEW.bill_of_lading IS NOT OLD.bill_of_lading
  OR NEW.belt_position_m IS NOT OLD.belt_position_m OR NEW.tonnage_t IS NOT OLD.tonnage_t
  OR NEW.event_id IS NOT OLD.event_id OR NEW.scores_json IS NOT OLD.scores_json
  OR NEW.class_json IS NOT OLD.class_json OR NEW.model_version_json IS NOT OLD.model_version_json
  OR NEW.created_s IS NOT OLD.created_s
  OR (OLD.cup IS NOT NULL AND NEW.cup IS NOT OLD.cup)
  OR (OLD.seal IS NOT NULL AND NEW.seal IS NOT OLD.seal)
  OR (OLD.mass_kg IS NOT NULL AND NEW.mass_kg IS NOT OLD.mass_kg)
BEGIN SELECT RAISE(ABORT, 'sample identity and cup, seal, mass once set are write-once'); END;
"""


class UnknownSampleError(LookupError):
    """A sample id that is not in the registry."""


@dataclass(frozen=True)
class SampleRow:
    sample_id: int
    barcode: str
    kind: str
    lane: str
    lot_id: str | None
    vessel: str
    voyage: str
    hold: str
    bill_of_lading: str
    belt_position_m: float | None
    tonnage_t: float | None
    event_id: str | None
    scores: dict[str, float]
    likely_class: str | None
    model_version: str | None
    cup: str | None
    seal: str | None
    mass_kg: float | None
    created_s: float
    status: str  # current status: the last history entry
    command_seq: int | None  # last PLC command_seq noted for this sample


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    sample_id: int
    status: str
    who: str
    at_s: float
    note: str


@dataclass(frozen=True)
class LabResult:
    id: int
    sample_id: int
    contaminant_found: bool
    contaminant_type: str
    mass_fraction: float | None
    note: str
    who: str
    at_s: float


# ---------------------------------------------------------------- barcodes


def _check_character(payload: str) -> str:
    """ISO 7064 MOD 37-2 check character (as on ISBT 128 labels): catches every single substitution and every
    swap of neighbours. It is one of 0-9, A-Z or '*'."""
    p = 0
    for ch in payload:
        p = ((p + _ALNUM.index(ch)) * 2) % 37
    return _CHECK_CHARS[(38 - p) % 37]


def _check_payload(lane: str, sample_id: int) -> str:
    """The characters the check covers: the lane's letters and digits, and the id as printed (zero-padded)."""
    return lane.upper().replace("-", "").replace("_", "") + f"{sample_id:08d}"


def make_barcode(lane: str, sample_id: int) -> str:
    """'OL-<lane>-<id, 8+ digits>-<check>', e.g. OL-L1-00000042-H; lane is 1-16 of A-Z a-z 0-9 _ -."""
    if not isinstance(lane, str) or not _LANE_RE.fullmatch(lane):
        raise ValueError(f"lane {lane!r} cannot go on a barcode: use 1-16 letters, digits, '_' or '-'")
    _check_sample_id(sample_id)
    return f"{BARCODE_PREFIX}-{lane}-{sample_id:08d}-{_check_character(_check_payload(lane, sample_id))}"


def parse_barcode(text: str) -> tuple[str, int]:
    """(lane, sample_id) of a scanned barcode; ValueError says what is wrong with it."""
    if not isinstance(text, str):
        raise ValueError(f"barcode must be text, got {type(text).__name__}")
    m = _BARCODE_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"barcode {text!r} is not of the form OL-<lane>-<8-10 digit id>-<check character>")
    lane, digits, check = m.groups()
    sample_id = int(digits)
    if not 1 <= sample_id <= MAX_SAMPLE_ID or len(digits) > max(8, len(str(sample_id))):
        raise ValueError(f"barcode {text!r}: sample id {digits} is not a valid id (1..{MAX_SAMPLE_ID}, "
                         f"zero-padded to 8 digits)")
    expected = _check_character(_check_payload(lane, sample_id))
    if check != expected:
        raise ValueError(f"barcode {text!r}: check character is {check}, expected {expected} "
                         f"(misread or mistyped)")
    return lane, sample_id


def _check_sample_id(sample_id: Any) -> int:
    if isinstance(sample_id, bool) or not isinstance(sample_id, int) or not 1 <= sample_id <= MAX_SAMPLE_ID:
        raise ValueError(f"sample_id {sample_id!r} must be an integer 1..{MAX_SAMPLE_ID}")
    return sample_id


def _check_time(at_s: Any, what: str) -> float:
    if isinstance(at_s, bool) or not isinstance(at_s, (int, float)) or not math.isfinite(at_s):
        raise ValueError(f"{what}: at_s must be a finite number of seconds, got {at_s!r}")
    return float(at_s)


def _check_who(who: Any, what: str) -> str:
    if not isinstance(who, str) or not who.strip():
        raise ValueError(f"{what}: who must name the person or program, got {who!r}")
    return who


# ---------------------------------------------------------------- the registry


class SampleRegistry(DurableSqlite):
    """Samples, their custody history and lab results in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path):
        super().__init__(path, _SCHEMA + "\nINSERT OR IGNORE INTO counters (name, value) VALUES ('sample_id', 0);",
                         "sample registry")

    # ------------------------------------------------------------ ids and creation

    def next_sample_id(self) -> int:
        """A new sample id, never handed out before, also after a restart (ids may have gaps, never repeats)."""
        with self._tx() as db:
            counter = db.execute("SELECT value FROM counters WHERE name = 'sample_id'").fetchone()[0]
            highest = db.execute("SELECT COALESCE(MAX(sample_id), 0) FROM samples").fetchone()[0]
            sample_id = max(counter, highest) + 1
            if sample_id > MAX_SAMPLE_ID:
                raise RuntimeError(f"sample registry {self.path}: sample ids exhausted ({MAX_SAMPLE_ID})")
            db.execute("UPDATE counters SET value = ? WHERE name = 'sample_id'", (sample_id,))
        return sample_id

    def create(self, request: Any, who: str, *, vessel: str = "", voyage: str = "", hold: str = "",
               bill_of_lading: str = "", scores: Mapping[str, float] | None = None,
               likely_class: str | None = None, model_version: str | None = None) -> SampleRow:
        """Register a requested sample from a SampleRequest (or any object with its fields); status 'requested'.

        Lot and evidence details that a SampleRequest does not carry are keyword arguments.
        """
        sample_id = _check_sample_id(getattr(request, "sample_id", None))
        where = f"sample {sample_id}"
        _check_who(who, where)
        kind = request.sample_kind
        if kind not in SAMPLE_KINDS:
            raise ValueError(f"{where}: kind {kind!r} not in {SAMPLE_KINDS}")
        requested_s = _check_time(request.requested_s, where)
        barcode = make_barcode(request.lane, sample_id)
        scores_json = json.dumps(dict(scores or {}), sort_keys=True, allow_nan=False)
        with self._tx() as db:
            existing = db.execute("SELECT barcode FROM samples WHERE sample_id = ?", (sample_id,)).fetchone()
            if existing:
                raise ValueError(f"{where} already exists (barcode {existing[0]}); a sample is created once")
            db.execute(
                "INSERT INTO samples (sample_id, barcode, kind, lane, lot_id, vessel, voyage, hold, bill_of_lading,"
                " belt_position_m, tonnage_t, event_id, scores_json, class_json, model_version_json, created_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sample_id, barcode, kind, request.lane, request.lot_id, vessel, voyage, hold, bill_of_lading,
                 request.target_belt_position_m, request.tonnage_t, request.event_id, scores_json,
                 json.dumps(likely_class), json.dumps(model_version), requested_s))
            db.execute("INSERT INTO history (sample_id, status, who, at_s, note) VALUES (?, 'requested', ?, ?, '')",
                       (sample_id, who, requested_s))
            db.execute("UPDATE counters SET value = MAX(value, ?) WHERE name = 'sample_id'", (sample_id,))
        return self.sample(sample_id)

    # ------------------------------------------------------------ state changes

    def record(self, sample_id: int, status: str, who: str, at_s: float, note: str = "", *,
               cup: str | None = None, seal: str | None = None, mass_kg: float | None = None) -> HistoryEntry:
        """Append a status change allowed from the current status; cup, seal and mass are set once with it."""
        where = f"sample {sample_id}"
        _check_who(who, where)
        at_s = _check_time(at_s, where)
        if status not in SAMPLE_STATUSES:
            raise ValueError(f"{where}: status {status!r} not in {SAMPLE_STATUSES}")
        with self._tx() as db:
            current = self._current(db, sample_id)
            if status not in TRANSITIONS[current]:
                raise ValueError(f"{where}: cannot go from {current!r} to {status!r}; from {current!r} the next "
                                 f"status is one of {TRANSITIONS[current] or '(none: final)'}")
            self._set_physical(db, sample_id, cup, seal, mass_kg)
            return self._append(db, sample_id, status, who, at_s, note)

    def correct(self, sample_id: int, status: str, who: str, at_s: float, note: str) -> HistoryEntry:
        """Append a correction to any status (a wrong entry stays visible); the note must say why."""
        where = f"sample {sample_id}"
        _check_who(who, where)
        at_s = _check_time(at_s, where)
        if status not in SAMPLE_STATUSES:
            raise ValueError(f"{where}: status {status!r} not in {SAMPLE_STATUSES}")
        if not note.strip():
            raise ValueError(f"{where}: a correction needs a note saying why")
        with self._tx() as db:
            current = self._current(db, sample_id)
            return self._append(db, sample_id, status, who, at_s, f"correction from {current}: {note}")

    def note_command(self, sample_id: int, command_seq: int, who: str, at_s: float) -> None:
        """Remember the PLC command_seq that carried this sample's cut, for reconciliation after a restart."""
        where = f"sample {sample_id}"
        if not 1 <= command_seq <= 65535:
            raise ValueError(f"{where}: command_seq {command_seq} outside 1..65535")
        with self._tx() as db:
            self._current(db, sample_id)
            db.execute("INSERT INTO commands (sample_id, command_seq, who, at_s) VALUES (?, ?, ?, ?)",
                       (sample_id, command_seq, _check_who(who, where), _check_time(at_s, where)))

    def add_result(self, sample_id: int, contaminant_found: bool, *, who: str, at_s: float,
                   contaminant_type: str = "", mass_fraction: float | None = None, note: str = "") -> LabResult:
        """Append a lab result of a received sample; a corrected result is another entry with a note."""
        where = f"sample {sample_id}"
        _check_who(who, where)
        at_s = _check_time(at_s, where)
        if not isinstance(contaminant_found, bool):
            raise ValueError(f"{where}: contaminant_found must be true or false, got {contaminant_found!r}")
        if contaminant_type and not contaminant_found:
            raise ValueError(f"{where}: contaminant_type {contaminant_type!r} given but contaminant_found is false")
        if mass_fraction is not None and not (math.isfinite(mass_fraction) and 0 <= mass_fraction <= 1):
            raise ValueError(f"{where}: mass_fraction {mass_fraction} must be 0..1 (a fraction, not percent)")
        with self._tx() as db:
            current = self._current(db, sample_id)
            if current not in ("received", "analysed"):
                raise ValueError(f"{where}: lab results need a received sample; it is {current!r}")
            cur = db.execute(
                "INSERT INTO lab_results (sample_id, contaminant_found, contaminant_type, mass_fraction, note, who,"
                " at_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sample_id, int(contaminant_found), contaminant_type, mass_fraction, note, who, at_s))
            row = db.execute("SELECT * FROM lab_results WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _lab_result(row)

    def _current(self, db: sqlite3.Connection, sample_id: int) -> str:
        row = db.execute("SELECT status FROM history WHERE sample_id = ? ORDER BY id DESC LIMIT 1",
                         (sample_id,)).fetchone()
        if row is None:
            raise UnknownSampleError(f"sample {sample_id} is not in the registry {self.path}")
        return row[0]

    def _set_physical(self, db: sqlite3.Connection, sample_id: int, cup: str | None, seal: str | None,
                      mass_kg: float | None) -> None:
        if mass_kg is not None and not (math.isfinite(mass_kg) and mass_kg > 0):
            raise ValueError(f"sample {sample_id}: mass_kg must be > 0 kg, got {mass_kg}")
        for column, value in (("cup", cup), ("seal", seal), ("mass_kg", mass_kg)):
            if value is None:
                continue
            old = db.execute(f"SELECT {column} FROM samples WHERE sample_id = ?", (sample_id,)).fetchone()[0]
            if old is not None and old != value:
                raise ValueError(f"sample {sample_id}: {column} is already {old!r}; it cannot become {value!r}")
            db.execute(f"UPDATE samples SET {column} = ? WHERE sample_id = ?", (value, sample_id))

    @staticmethod
    def _append(db: sqlite3.Connection, sample_id: int, status: str, who: str, at_s: float,
                note: str) -> HistoryEntry:
        cur = db.execute("INSERT INTO history (sample_id, status, who, at_s, note) VALUES (?, ?, ?, ?, ?)",
                         (sample_id, status, who, at_s, note))
        return HistoryEntry(cur.lastrowid, sample_id, status, who, at_s, note)

    # ------------------------------------------------------------ queries

    def current_status(self, sample_id: int) -> str:
        with self._lock:
            return self._current(self._db, sample_id)

    def history(self, sample_id: int) -> list[HistoryEntry]:
        with self._lock:
            self._current(self._db, sample_id)
            rows = self._db.execute("SELECT * FROM history WHERE sample_id = ? ORDER BY id", (sample_id,)).fetchall()
        return [_history_entry(r) for r in rows]

    def results(self, sample_id: int) -> list[LabResult]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM lab_results WHERE sample_id = ? ORDER BY id",
                                    (sample_id,)).fetchall()
        return [_lab_result(r) for r in rows]

    def history_after(self, after_id: int, statuses: tuple[str, ...], limit: int = 500) -> list[HistoryEntry]:
        """History entries with id > after_id and one of `statuses`, oldest first (a feed's next page)."""
        marks = ", ".join("?" for _ in statuses)
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM history WHERE id > ? AND status IN ({marks}) ORDER BY id "
                                    f"LIMIT ?", (after_id, *statuses, limit)).fetchall()
        return [_history_entry(r) for r in rows]

    def counter(self, name: str) -> int:
        """A named counter (0 when never set), e.g. how far a feed has published the history."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_counter(self, name: str, value: int) -> None:
        if name == "sample_id":
            raise ValueError("the sample_id counter is the registry's own: it only moves through next_sample_id")
        with self._tx() as db:
            db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    def sample(self, sample_id: int) -> SampleRow:
        rows = self._select("s.sample_id = ?", (sample_id,))
        if not rows:
            raise UnknownSampleError(f"sample {sample_id} is not in the registry {self.path}")
        return rows[0]

    def samples(self, lane: str | None = None, lot_id: str | None = None, status: str | None = None) -> list[SampleRow]:
        """Samples in id order, filtered by lane, lot and current status."""
        if status is not None and status not in SAMPLE_STATUSES:
            raise ValueError(f"status {status!r} not in {SAMPLE_STATUSES}")
        clauses, params = [], []
        for clause, value in (("s.lane = ?", lane), ("s.lot_id = ?", lot_id), ("status = ?", status)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return self._select(" AND ".join(clauses) or "1", tuple(params))

    def open_requests(self) -> list[SampleRow]:
        """Samples requested but not cut: what reconciliation checks against the PLC after a restart."""
        return self.samples(status="requested")

    def _select(self, where: str, params: tuple) -> list[SampleRow]:
        sql = f"""
            SELECT s.*,
                   (SELECT h.status FROM history h WHERE h.sample_id = s.sample_id ORDER BY h.id DESC LIMIT 1)
                       AS status,
                   (SELECT c.command_seq FROM commands c WHERE c.sample_id = s.sample_id ORDER BY c.id DESC LIMIT 1)
                       AS command_seq
            FROM samples s WHERE {where} ORDER BY s.sample_id"""
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_sample_row(r) for r in rows]


def _sample_row(r: sqlite3.Row) -> SampleRow:
    return SampleRow(
        sample_id=r["sample_id"], barcode=r["barcode"], kind=r["kind"], lane=r["lane"], lot_id=r["lot_id"],
        vessel=r["vessel"], voyage=r["voyage"], hold=r["hold"], bill_of_lading=r["bill_of_lading"],
        belt_position_m=r["belt_position_m"], tonnage_t=r["tonnage_t"], event_id=r["event_id"],
        scores=json.loads(r["scores_json"]), likely_class=json.loads(r["class_json"]),
        model_version=json.loads(r["model_version_json"]), cup=r["cup"], seal=r["seal"], mass_kg=r["mass_kg"],
        created_s=r["created_s"], status=r["status"], command_seq=r["command_seq"])


def _history_entry(r: sqlite3.Row) -> HistoryEntry:
    return HistoryEntry(r["id"], r["sample_id"], r["status"], r["who"], r["at_s"], r["note"])


def _lab_result(r: sqlite3.Row) -> LabResult:
    return LabResult(r["id"], r["sample_id"], bool(r["contaminant_found"]), r["contaminant_type"],
                     r["mass_fraction"], r["note"], r["who"], r["at_s"])
