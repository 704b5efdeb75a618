"""What the lab desk does to the registry: receive by barcode, enter results, search, export.

Plain functions over a SampleRegistry, a user name and a time; the web layer
only parses forms and renders. Each refusal is a DeskError whose message tells
the person at the desk what is wrong and what to do, and whose http_status the
web layer answers with. The registry's own transactions decide races: when two
people scan the same cup at once, one receipt is recorded and the other person
is told who received it and when.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import math
from dataclasses import dataclass
from typing import Iterable

from orelane.contract.messages import SAMPLE_STATUSES
from sampling_robot.registry import (HistoryEntry, LabResult, SampleRegistry, SampleRow, UnknownSampleError,
                                     parse_barcode)

log = logging.getLogger(__name__)

AWAITING_RECEIPT = ("sealed", "collected")
NOT_YET_SEALED = ("requested", "cut")
RECEIVED_OR_LATER = ("received", "analysed", "archived")
NEVER_MADE = ("missed", "failed")
# Statuses a person may record at the desk; the others come from the robot and the edge daemon.
DESK_STATUSES = ("collected", "received", "analysed", "archived")
MAX_SAMPLE_MASS_KG = 100.0  # a robot cup holds a few kg; more is a typo (grams for kilograms)
CLEAN_LABEL = "ore"  # the spectral workbench's label for clean ore
PHOTO_NOTE_PREFIX = "photo sha256 "


class DeskError(Exception):
    """A refused desk action; the message is for the person at the desk."""

    http_status = 400


class BadBarcode(DeskError):
    """The scanned text is not an orelane barcode (misread, wrong label, scanner keyboard layout)."""


class UnknownBarcode(DeskError):
    http_status = 404


class WrongStatus(DeskError):
    """The sample is not in a status that allows the action (too early, already done, or final)."""

    http_status = 409


class AlreadyReceived(WrongStatus):
    pass


class NotReceived(WrongStatus):
    pass


class BadResult(DeskError):
    http_status = 422


@dataclass(frozen=True)
class Receipt:
    sample: SampleRow
    received: HistoryEntry
    collected_here: bool  # 'collected' was recorded at the desk, because the cup came straight from the robot


@dataclass(frozen=True)
class ResultEntry:
    sample: SampleRow
    result: LabResult
    correction: bool  # the sample already had a result; this one supersedes it


def format_time(at_s: float | None, tz: dt.tzinfo | None = None) -> str:
    """'2025-03-01 14:03:22' in the desk's time zone (the machine's local zone when tz is None)."""
    if at_s is None:
        return ""
    return dt.datetime.fromtimestamp(at_s, tz or dt.datetime.now().astimezone().tzinfo).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(at_s: float | None, tz: dt.tzinfo | None = None) -> str:
    """ISO 8601 with the UTC offset, for exports that other programs read."""
    if at_s is None:
        return ""
    return dt.datetime.fromtimestamp(at_s, tz or dt.datetime.now().astimezone().tzinfo).isoformat(timespec="seconds")


# ---------------------------------------------------------------- barcodes


def sample_for_barcode(registry: SampleRegistry, scanned: str) -> SampleRow:
    """The sample a scanned barcode names; BadBarcode or UnknownBarcode with the reason.

    Scanners act as keyboards: with Caps Lock on they type the code in the wrong case, so the case of
    the letters is not trusted (the check character covers the lane case-insensitively).
    """
    text = (scanned or "").strip()
    if not text:
        raise BadBarcode("nothing was scanned: put the cursor in the barcode field and scan the cup's label")
    if len(text) > 64:
        raise BadBarcode(f"scanned text is {len(text)} characters long; a sample barcode has at most 30 "
                         f"(did the scanner read two labels?)")
    candidates = dict.fromkeys([text, text.swapcase(), text.upper()])
    errors = []
    for candidate in candidates:
        try:
            _, sample_id = parse_barcode(candidate)
            break
        except ValueError as exc:
            errors.append(str(exc))
    else:
        raise BadBarcode(f"{errors[0]}. Scan again; if it keeps failing, type the code printed under the bars")
    try:
        row = registry.sample(sample_id)
    except UnknownSampleError:
        raise UnknownBarcode(f"unknown barcode {text}: there is no sample {sample_id} in the registry. Is the "
                             f"label from another site or a test print? Set the cup aside and tell the "
                             f"engineer") from None
    if row.barcode.upper() != text.upper():
        raise UnknownBarcode(f"barcode {text} names sample {sample_id}, but that sample's label is {row.barcode} "
                             f"(another lane): set the cup aside and tell the engineer")
    return row


def _received_entry(registry: SampleRegistry, sample_id: int) -> HistoryEntry | None:
    received = [h for h in registry.history(sample_id) if h.status == "received"]
    return received[-1] if received else None


def _explain_status(registry: SampleRegistry, row: SampleRow, tz: dt.tzinfo | None) -> str:
    last = registry.history(row.sample_id)[-1]
    return f"{row.status} (by {last.who} at {format_time(last.at_s, tz)})"


# ---------------------------------------------------------------- receipt


def receive(registry: SampleRegistry, scanned: str, who: str, at_s: float, *, mass_kg: float | None = None,
            tz: dt.tzinfo | None = None) -> Receipt:
    """Record a scanned cup as received (and collected first, if it came straight from the robot).

    Safe against a second desk receiving the same cup at the same moment: every step is one registry
    transaction that checks the current status, and a step that loses the race re-reads the status.
    """
    if mass_kg is not None and not (math.isfinite(mass_kg) and 0 < mass_kg <= MAX_SAMPLE_MASS_KG):
        raise DeskError(f"mass {mass_kg} kg is not plausible for a sample cup: enter kilograms, "
                        f"more than 0 and at most {MAX_SAMPLE_MASS_KG:g}")
    row = sample_for_barcode(registry, scanned)
    sample_id = row.sample_id
    collected_here = False
    for _ in range(4):  # each pass either records a step or sees another desk's step; two steps at most
        status = registry.current_status(sample_id)
        if status == "sealed":
            try:
                registry.record(sample_id, "collected", who, at_s, "collected at the lab desk (scanned on receipt)")
                collected_here = True
            except ValueError:
                log.info("sample %d: 'collected' raced with another desk; re-reading its status", sample_id)
            continue
        if status == "collected":
            try:
                entry = registry.record(sample_id, "received", who, at_s, "scanned at the lab desk",
                                        mass_kg=mass_kg)
            except ValueError as exc:
                if registry.current_status(sample_id) == "collected":
                    raise DeskError(f"{row.barcode}: {exc}") from None  # not a race: the mass was refused
                log.info("sample %d: 'received' raced with another desk; re-reading its status", sample_id)
                continue
            log.info("sample %d (%s) received by %s", sample_id, row.barcode, who)
            return Receipt(registry.sample(sample_id), entry, collected_here)
        break
    row = registry.sample(sample_id)
    if row.status in RECEIVED_OR_LATER:
        got = _received_entry(registry, sample_id)
        by = f" by {got.who} at {format_time(got.at_s, tz)}" if got else ""
        now = f"; it is now {row.status}" if row.status != "received" else ""
        raise AlreadyReceived(f"{row.barcode} was already received{by}{now}; nothing recorded")
    if row.status in NOT_YET_SEALED:
        raise WrongStatus(f"{row.barcode} is {_explain_status(registry, row, tz)}: the robot has not sealed it yet, "
                          f"so it cannot be received. Check the cup's seal and tell the engineer")
    if row.status in NEVER_MADE:
        raise WrongStatus(f"{row.barcode} is recorded {_explain_status(registry, row, tz)}: no cup should carry "
                          f"this label. Set it aside and tell the engineer")
    raise WrongStatus(f"{row.barcode} is {row.status}; it could not be received")  # pragma: no cover


def record_status(registry: SampleRegistry, sample_id: int, status: str, who: str, at_s: float,
                  note: str = "", tz: dt.tzinfo | None = None) -> HistoryEntry:
    """Record one of the desk's statuses by hand (e.g. archived); the registry refuses any step backwards."""
    if status not in DESK_STATUSES:
        raise DeskError(f"status {status!r} is set by the robot or the edge daemon, not at the lab desk; the desk "
                        f"records {', '.join(DESK_STATUSES)}")
    row = _sample(registry, sample_id)
    try:
        return registry.record(sample_id, status, who, at_s, note)
    except ValueError as exc:
        raise WrongStatus(f"{row.barcode} is {_explain_status(registry, registry.sample(sample_id), tz)}: {exc}. "
                          f"Nothing recorded") from None


def _sample(registry: SampleRegistry, sample_id: int) -> SampleRow:
    try:
        return registry.sample(sample_id)
    except UnknownSampleError:
        raise UnknownBarcode(f"there is no sample {sample_id} in the registry") from None


# ---------------------------------------------------------------- results


def parse_percent(text: str | None, what: str = "mass fraction") -> float | None:
    """A percentage typed at the desk ('0.4', '0,4', '0.4 %') as a fraction 0..1; None when blank."""
    text = (text or "").strip().rstrip("%").strip().replace(",", ".")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadResult(f"{what} {text!r} is not a number: type the percentage, e.g. 0.4 for 0.4 %") from None
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise BadResult(f"{what} {text} % is outside 0-100 %")
    return value / 100.0


def enter_result(registry: SampleRegistry, sample_id: int, *, contaminant_found: bool | None,
                 contaminant_type: str = "", mass_fraction: float | None = None, note: str = "", who: str,
                 at_s: float, photo_sha256: str | None = None, tz: dt.tzinfo | None = None) -> ResultEntry:
    """Add a lab result and record 'analysed'; a second result for an analysed sample is a correction
    and needs a note saying what changed. A photo's SHA-256 goes into the result's note in the registry,
    so the custody record pins the exact image."""
    row = _sample(registry, sample_id)
    contaminant_type = (contaminant_type or "").strip()
    note = (note or "").strip()
    if contaminant_found is None:
        raise BadResult(f"{row.barcode}: say whether a contaminant was found (yes or no)")
    if contaminant_found and not contaminant_type:
        raise BadResult(f"{row.barcode}: a contaminant was found: name its type (e.g. wood, plastic, rubber, "
                        f"steel)")
    if contaminant_found and contaminant_type.lower() == CLEAN_LABEL:
        raise BadResult(f"{row.barcode}: {CLEAN_LABEL!r} means clean ore; name the contaminant that was found")
    if not contaminant_found and contaminant_type:
        raise BadResult(f"{row.barcode}: contaminant type {contaminant_type!r} given but 'found' is no: "
                        f"choose yes, or clear the type")
    if not contaminant_found and mass_fraction:
        raise BadResult(f"{row.barcode}: a mass fraction of {mass_fraction * 100:g} % but no contaminant found: "
                        f"choose yes, or clear the mass fraction")
    if row.status in NOT_YET_SEALED + AWAITING_RECEIPT + NEVER_MADE:
        raise NotReceived(f"{row.barcode} is {_explain_status(registry, row, tz)}: a result needs a received "
                          f"sample. Scan the cup in at the desk first. Nothing recorded")
    if row.status == "archived":
        raise WrongStatus(f"{row.barcode} is {_explain_status(registry, row, tz)}: its results are closed. "
                          f"Nothing recorded")
    previous = registry.results(sample_id)
    correction = bool(previous) or row.status == "analysed"
    if correction and not note:
        last = previous[-1] if previous else None
        by = f" by {last.who} at {format_time(last.at_s, tz)}" if last else ""
        raise BadResult(f"{row.barcode} already has a result{by}: a corrected result needs a note saying what "
                        f"changed and why. Nothing recorded")
    if photo_sha256:
        note = f"{note}\n{PHOTO_NOTE_PREFIX}{photo_sha256}" if note else f"{PHOTO_NOTE_PREFIX}{photo_sha256}"
    try:
        result = registry.add_result(sample_id, bool(contaminant_found), who=who, at_s=at_s,
                                     contaminant_type=contaminant_type, mass_fraction=mass_fraction, note=note)
    except ValueError as exc:
        raise BadResult(str(exc)) from None
    if registry.current_status(sample_id) == "received":
        try:
            registry.record(sample_id, "analysed", who, at_s, f"lab result {result.id}")
        except ValueError:
            log.warning("sample %d: result %d added but 'analysed' was recorded by another desk meanwhile",
                        sample_id, result.id)
    log.info("sample %d (%s): result %d by %s%s", sample_id, row.barcode, result.id, who,
             " (correction)" if correction else "")
    return ResultEntry(registry.sample(sample_id), result, correction)


def latest_result(registry: SampleRegistry, sample_id: int) -> LabResult | None:
    results = registry.results(sample_id)
    return results[-1] if results else None


# ---------------------------------------------------------------- lists and search


def queue(registry: SampleRegistry) -> list[SampleRow]:
    """Cups waiting to be received: sealed by the robot or collected, oldest cut first."""
    rows = [r for status in AWAITING_RECEIPT for r in registry.samples(status=status)]
    return sorted(rows, key=lambda r: (r.created_s, r.sample_id))


def awaiting_result(registry: SampleRegistry) -> list[SampleRow]:
    return sorted(registry.samples(status="received"), key=lambda r: (r.created_s, r.sample_id))


@dataclass(frozen=True)
class SearchQuery:
    """Filters of the search page; text filters match case-insensitively anywhere in the field."""

    lot: str = ""
    vessel: str = ""
    date_from: dt.date | None = None  # cut on or after this day (desk time zone)
    date_to: dt.date | None = None  # cut on or before this day
    status: str = ""

    @classmethod
    def from_form(cls, form: dict[str, str]) -> "SearchQuery":
        return cls(lot=form.get("lot", "").strip(), vessel=form.get("vessel", "").strip(),
                   date_from=_parse_date(form.get("from", ""), "from"), date_to=_parse_date(form.get("to", ""), "to"),
                   status=form.get("status", "").strip())

    def as_params(self) -> dict[str, str]:
        return {k: v for k, v in (("lot", self.lot), ("vessel", self.vessel),
                                  ("from", self.date_from.isoformat() if self.date_from else ""),
                                  ("to", self.date_to.isoformat() if self.date_to else ""),
                                  ("status", self.status)) if v}

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.as_params().items()) or "all samples"


def _parse_date(text: str, what: str) -> dt.date | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise DeskError(f"date {what} {text!r} is not a date: use YYYY-MM-DD") from None


def search(registry: SampleRegistry, query: SearchQuery, tz: dt.tzinfo | None = None) -> list[SampleRow]:
    """Samples matching the query, newest cut first."""
    if query.status and query.status not in SAMPLE_STATUSES:
        raise DeskError(f"status {query.status!r} is not one of {', '.join(SAMPLE_STATUSES)}")
    if query.date_from and query.date_to and query.date_to < query.date_from:
        raise DeskError(f"date range {query.date_from} to {query.date_to} is backwards")
    tz = tz or dt.datetime.now().astimezone().tzinfo
    lot, vessel = query.lot.lower(), query.vessel.lower()
    out = []
    for row in registry.samples(status=query.status or None):
        if lot and lot not in (row.lot_id or "").lower():
            continue
        if vessel and vessel not in f"{row.vessel} {row.voyage}".lower():
            continue
        day = dt.datetime.fromtimestamp(row.created_s, tz).date()
        if (query.date_from and day < query.date_from) or (query.date_to and day > query.date_to):
            continue
        out.append(row)
    return sorted(out, key=lambda r: (-r.created_s, -r.sample_id))


@dataclass(frozen=True)
class LotSummary:
    lot_id: str
    samples: list[SampleRow]
    results: dict[int, LabResult]  # latest result per sample id
    per_status: dict[str, int]

    @property
    def vessel(self) -> str:
        return next((s.vessel for s in self.samples if s.vessel), "")

    @property
    def contaminated(self) -> int:
        return sum(1 for r in self.results.values() if r.contaminant_found)


def lot_summary(registry: SampleRegistry, lot_id: str) -> LotSummary:
    rows = registry.samples(lot_id=lot_id)
    if not rows:
        raise UnknownBarcode(f"no samples of lot {lot_id!r} in the registry (lot ids are matched exactly; use the "
                             f"search for part of a lot id)")
    results = {r.sample_id: res for r in rows if (res := latest_result(registry, r.sample_id)) is not None}
    per_status: dict[str, int] = {}
    for r in rows:
        per_status[r.status] = per_status.get(r.status, 0) + 1
    return LotSummary(lot_id, rows, results, per_status)


# ---------------------------------------------------------------- CSV export

CSV_COLUMNS = (
    "sample_id", "barcode", "kind", "status", "status_at", "status_by", "lane", "lot_id", "vessel", "voyage", "hold",
    "bill_of_lading", "cut_at", "belt_position_m", "tonnage_t", "event_id", "likely_class", "model_version", "cup",
    "seal", "mass_kg", "received_at", "received_by", "results", "contaminant_found", "contaminant_type",
    "mass_fraction", "result_note", "result_by", "result_at",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    """Text as a spreadsheet shows it: a leading = + - @ would run as a formula, so it gets a quote mark."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_rows(registry: SampleRegistry, rows: Iterable[SampleRow], tz: dt.tzinfo | None = None) -> Iterable[list[str]]:
    yield list(CSV_COLUMNS)
    for r in rows:
        history = registry.history(r.sample_id)
        received = [h for h in history if h.status == "received"]
        results = registry.results(r.sample_id)
        res = results[-1] if results else None
        yield [_cell(v) for v in (
            r.sample_id, r.barcode, r.kind, r.status, iso_time(history[-1].at_s, tz), history[-1].who, r.lane,
            r.lot_id, r.vessel, r.voyage, r.hold, r.bill_of_lading, iso_time(r.created_s, tz), r.belt_position_m,
            r.tonnage_t, r.event_id, r.likely_class, r.model_version, r.cup, r.seal, r.mass_kg,
            iso_time(received[-1].at_s, tz) if received else "", received[-1].who if received else "",
            len(results), res.contaminant_found if res else None, res.contaminant_type if res else "",
            res.mass_fraction if res else None, res.note if res else "", res.who if res else "",
            iso_time(res.at_s, tz) if res else "")]


def to_csv(registry: SampleRegistry, rows: Iterable[SampleRow], tz: dt.tzinfo | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for line in csv_rows(registry, rows, tz):
        writer.writerow(line)
    return out.getvalue()
