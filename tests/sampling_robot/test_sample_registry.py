"""The SQLite sample registry: custody transitions, append-only history, barcodes, durability under kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orelane.contract.messages import SampleRequest
from sampling_robot.registry import (TRANSITIONS, SampleRegistry, UnknownSampleError, make_barcode,
                                     parse_barcode)

WORKTREE = Path(__file__).resolve().parents[2]
LIFE = ("requested", "cut", "sealed", "collected", "received", "analysed", "archived")


def request(sample_id: int, lane: str = "L1", kind: str = "targeted", lot_id: str | None = "LOT-7",
            at_s: float = 100.0) -> SampleRequest:
    return SampleRequest(sample_id=sample_id, lane=lane, sample_kind=kind, target_belt_position_m=1234.5,
                         tonnage_t=880.0, requested_s=at_s, event_id="ev-1" if kind == "targeted" else None,
                         lot_id=lot_id)


@pytest.fixture
def registry(tmp_path):
    with SampleRegistry(tmp_path / "samples.sqlite") as reg:
        yield reg


def walk(registry: SampleRegistry, sample_id: int, until: str) -> None:
    """Record the normal life of a sample up to `until` (or to failed/missed from requested)."""
    if until in ("missed", "failed"):
        registry.record(sample_id, until, "edge", 101.0)
        return
    for i, status in enumerate(LIFE[1:LIFE.index(until) + 1], start=1):
        registry.record(sample_id, status, "edge", 100.0 + i)


def test_sample_lives_from_requested_to_archived_with_its_details(registry):
    row = registry.create(request(42), "edge L1", vessel="MV Ore Star", voyage="0425", hold="3",
                          bill_of_lading="BL-9", scores={"clean": 0.1, "wood": 0.8}, likely_class="wood",
                          model_version="nir-2.3")
    assert row.barcode == make_barcode("L1", 42) and row.status == "requested"
    assert (row.vessel, row.hold, row.scores, row.likely_class, row.model_version) == (
        "MV Ore Star", "3", {"clean": 0.1, "wood": 0.8}, "wood", "nir-2.3")
    registry.record(42, "cut", "edge L1", 110.0)
    registry.record(42, "sealed", "edge L1", 140.0, cup="C-07", seal="S-1234")
    registry.record(42, "collected", "J. Silva", 3600.0)
    registry.record(42, "received", "lab", 7200.0, mass_kg=2.35)
    registry.add_result(42, True, who="lab", at_s=9000.0, contaminant_type="wood", mass_fraction=0.004)
    registry.record(42, "analysed", "lab", 9001.0)
    registry.record(42, "archived", "lab", 99999.0)
    assert registry.current_status(42) == "archived"
    assert [h.status for h in registry.history(42)] == list(LIFE)
    assert [h.who for h in registry.history(42)][:2] == ["edge L1", "edge L1"]
    row = registry.sample(42)
    assert (row.cup, row.seal, row.mass_kg) == ("C-07", "S-1234", 2.35)
    (result,) = registry.results(42)
    assert (result.contaminant_found, result.contaminant_type, result.mass_fraction) == (True, "wood", 0.004)


@pytest.mark.parametrize("current, target", [
    ("requested", "sealed"), ("requested", "archived"), ("cut", "collected"), ("cut", "missed"),
    ("sealed", "cut"), ("sealed", "failed"), ("analysed", "received"), ("archived", "requested"),
    ("missed", "cut"), ("failed", "cut"), ("requested", "requested")])
def test_disallowed_transition_is_refused_naming_sample_from_and_to(registry, current, target):
    registry.create(request(5), "edge")
    walk(registry, 5, current)
    with pytest.raises(ValueError, match=f"sample 5: cannot go from '{current}' to '{target}'"):
        registry.record(5, target, "edge", 500.0)
    assert registry.current_status(5) == current


@pytest.mark.parametrize("current, target", [(c, t) for c, nexts in TRANSITIONS.items() for t in nexts])
def test_every_allowed_transition_is_recorded(registry, current, target):
    registry.create(request(5), "edge")
    walk(registry, 5, current)
    registry.record(5, target, "edge", 500.0)
    assert registry.current_status(5) == target


@pytest.mark.parametrize("status, who, at_s, match", [
    ("eaten", "edge", 1.0, "status 'eaten' not in"), ("cut", "", 1.0, "who must name"),
    ("cut", "edge", float("nan"), "at_s must be a finite"), ("cut", "edge", "now", "at_s must be a finite")])
def test_record_refuses_bad_arguments(registry, status, who, at_s, match):
    registry.create(request(5), "edge")
    with pytest.raises(ValueError, match=match):
        registry.record(5, status, who, at_s)


def test_unknown_sample_is_a_lookup_error_naming_it(registry):
    with pytest.raises(UnknownSampleError, match="sample 99 is not in the registry"):
        registry.record(99, "cut", "edge", 1.0)
    with pytest.raises(UnknownSampleError):
        registry.current_status(99)


def test_create_refuses_a_duplicate_request(registry):
    registry.create(request(5), "edge")
    with pytest.raises(ValueError, match="sample 5 already exists"):
        registry.create(request(5), "edge")
    assert len(registry.history(5)) == 1


@pytest.mark.parametrize("statement", [
    "UPDATE history SET status = 'sealed'", "DELETE FROM history",
    "UPDATE lab_results SET contaminant_found = 0", "DELETE FROM lab_results",
    "UPDATE commands SET command_seq = 9", "DELETE FROM commands",
    "DELETE FROM samples", "UPDATE samples SET lane = 'L2'", "UPDATE samples SET created_s = 0",
    "UPDATE samples SET cup = 'C-99'"])
def test_history_results_and_identity_cannot_be_edited_even_by_raw_sql(registry, statement):
    registry.create(request(5), "edge")
    walk(registry, 5, "received")
    registry.record(5, "analysed", "lab", 300.0)
    registry.add_result(5, False, who="lab", at_s=200.0)
    registry.note_command(5, 17, "edge", 100.5)
    with sqlite3.connect(registry.path) as rogue:
        rogue.execute("UPDATE samples SET cup = 'C-01' WHERE sample_id = 5")  # first set: allowed
        with pytest.raises(sqlite3.DatabaseError, match="append-only|never deleted|write-once"):
            rogue.execute(statement)
    assert [h.status for h in registry.history(5)][-1] == "analysed"


def test_correction_is_a_new_entry_and_the_wrong_one_stays(registry):
    registry.create(request(5), "edge")
    walk(registry, 5, "collected")
    entry = registry.correct(5, "sealed", "supervisor", 400.0, "cup still in the carousel, scan was wrong")
    assert entry.note == "correction from collected: cup still in the carousel, scan was wrong"
    assert [h.status for h in registry.history(5)] == ["requested", "cut", "sealed", "collected", "sealed"]
    registry.record(5, "collected", "J. Silva", 500.0)
    with pytest.raises(ValueError, match="needs a note"):
        registry.correct(5, "sealed", "supervisor", 600.0, " ")


def test_cup_seal_and_mass_are_set_once(registry):
    registry.create(request(5), "edge")
    registry.record(5, "cut", "edge", 101.0)
    registry.record(5, "sealed", "edge", 102.0, cup="C-1", seal="S-1")
    registry.record(5, "collected", "op", 103.0, cup="C-1")  # repeating the same value is fine
    with pytest.raises(ValueError, match="cup is already 'C-1'; it cannot become 'C-2'"):
        registry.record(5, "received", "lab", 104.0, cup="C-2")
    assert registry.current_status(5) == "collected"  # the refused change left nothing behind


def test_next_sample_id_is_monotonic_across_restart(tmp_path):
    path = tmp_path / "samples.sqlite"
    with SampleRegistry(path) as reg:
        ids = [reg.next_sample_id() for _ in range(3)]
        reg.create(request(ids[0]), "edge")
        reg.create(request(500), "edge")  # an id from elsewhere moves the counter past it
    with SampleRegistry(path) as reg:
        later = reg.next_sample_id()
    assert ids == [1, 2, 3] and later == 501


def test_samples_filter_by_lane_lot_and_current_status(registry):
    for sample_id, lane, lot in ((1, "L1", "A"), (2, "L1", "B"), (3, "L2", "A"), (4, "L2", None)):
        registry.create(request(sample_id, lane=lane, lot_id=lot), "edge")
    walk(registry, 2, "sealed")
    walk(registry, 3, "missed")
    assert [s.sample_id for s in registry.samples(lane="L1")] == [1, 2]
    assert [s.sample_id for s in registry.samples(lot_id="A")] == [1, 3]
    assert [s.sample_id for s in registry.samples(status="sealed")] == [2]
    assert [s.sample_id for s in registry.samples(lane="L2", status="requested")] == [4]
    assert [s.sample_id for s in registry.open_requests()] == [1, 4]
    with pytest.raises(ValueError, match="status 'lost' not in"):
        registry.samples(status="lost")


def test_open_requests_carry_the_last_command_seq(registry):
    registry.create(request(1), "edge")
    registry.note_command(1, 11, "edge", 100.1)
    registry.note_command(1, 12, "edge", 100.2)
    assert [(s.sample_id, s.command_seq) for s in registry.open_requests()] == [(1, 12)]


@pytest.mark.parametrize("status, found, kind, fraction, match", [
    ("sealed", True, "wood", 0.1, "need a received sample"),
    ("received", True, "wood", 1.5, "mass_fraction 1.5 must be 0..1"),
    ("received", False, "wood", None, "contaminant_found is false"),
    ("received", 1, "", None, "must be true or false")])
def test_lab_result_is_refused_when_it_cannot_be_true(registry, status, found, kind, fraction, match):
    registry.create(request(5), "edge")
    walk(registry, 5, status)
    with pytest.raises(ValueError, match=match):
        registry.add_result(5, found, who="lab", at_s=1.0, contaminant_type=kind, mass_fraction=fraction)
    assert registry.results(5) == []


def test_registry_runs_wal_with_full_sync(registry):
    assert registry._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert registry._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# ---------------------------------------------------------------- barcodes

lanes = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=16)
ids = st.integers(1, 2**32 - 1)


def test_barcode_looks_like_the_label_format():
    assert make_barcode("L1", 42).startswith("OL-L1-00000042-")
    assert parse_barcode(make_barcode("berth-2", 4294967295)) == ("berth-2", 4294967295)


@settings(max_examples=300, deadline=None)
@given(lanes, ids)
def test_every_barcode_parses_back(lane, sample_id):
    assert parse_barcode(make_barcode(lane, sample_id)) == (lane, sample_id)


@settings(max_examples=300, deadline=None)
@given(lanes, ids, st.data())
def test_a_single_misread_digit_or_letter_is_refused(lane, sample_id, data):
    code = make_barcode(lane, sample_id)
    body_end = code.rindex("-")
    positions = [i for i in range(3, body_end) if code[i].isalnum()]
    i = data.draw(st.sampled_from(positions))
    alphabet = "0123456789" if code[i].isdigit() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    wrong = data.draw(st.sampled_from([c for c in alphabet if c != code[i].upper()]))
    misread = code[:i] + wrong + code[i + 1:]
    with pytest.raises(ValueError):
        if parse_barcode(misread) != (lane, sample_id):
            raise ValueError("parsed to another sample")  # a lowercase->uppercase change names another lane


@settings(max_examples=200, deadline=None)
@given(ids)
def test_swapped_adjacent_id_digits_are_refused(sample_id):
    code = make_barcode("L1", sample_id)
    digits_at = code.index("-", 3) + 1
    for i in range(digits_at, code.rindex("-") - 1):
        if code[i] != code[i + 1]:
            swapped = code[:i] + code[i + 1] + code[i] + code[i + 2:]
            with pytest.raises(ValueError, match="check character|not a valid id"):
                parse_barcode(swapped)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_random_text_never_crashes_the_barcode_parser(text):
    try:
        parse_barcode(text)
    except ValueError:
        pass


@pytest.mark.parametrize("text, match", [
    ("", "not of the form"), ("OL-L1-42-7", "not of the form"), ("XX-L1-00000042-7", "not of the form"),
    ("OL-L1-00000000-0", "not a valid id"), ("OL-L1-0000000042-Q", "not a valid id"),
    ("OL-L1-99999999999-0", "not of the form"), (None, "must be text")])
def test_malformed_barcode_is_refused_saying_why(text, match):
    with pytest.raises(ValueError, match=match):
        parse_barcode(text)


@pytest.mark.parametrize("lane", ["", "lane 1", "L/1", "L+1", "a" * 17])
def test_lane_that_cannot_go_on_a_label_is_refused(lane):
    with pytest.raises(ValueError, match="cannot go on a barcode"):
        make_barcode(lane, 1)


# ---------------------------------------------------------------- durability

WRITER = textwrap.dedent("""
    import sys
    from orelane.contract.messages import SampleRequest
    from sampling_robot.registry import SampleRegistry
    reg = SampleRegistry(sys.argv[1])
    while True:
        sid = reg.next_sample_id()
        reg.create(SampleRequest(sample_id=sid, lane="L1", sample_kind="routine", target_belt_position_m=1.0,
                                 tonnage_t=1.0, requested_s=float(sid)), "writer")
        print(sid, "requested", flush=True)
        for status in ("cut", "sealed", "collected"):
            reg.record(sid, status, "writer", float(sid))
            print(sid, status, flush=True)
""")


def test_every_change_reported_committed_survives_kill_9(tmp_path):
    path = tmp_path / "samples.sqlite"
    env = dict(os.environ, PYTHONPATH=str(WORKTREE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=WORKTREE, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported: list[tuple[int, str]] = []
    deadline = time.monotonic() + 20
    try:
        while len(reported) < 400 and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            sid, status = line.split()
            reported.append((int(sid), status))
    finally:
        writer.send_signal(signal.SIGKILL)
        rest, err = writer.communicate(timeout=10)
    assert writer.returncode == -signal.SIGKILL, err
    reported += [(int(s), status) for s, status in (line.split() for line in rest.splitlines())]
    assert len(reported) >= 400, err
    with SampleRegistry(path) as reg:
        assert reg._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for sid, status in reported:
            assert status in [h.status for h in reg.history(sid)], f"sample {sid} lost {status!r}"
        highest = max(sid for sid, _ in reported)
        assert reg.next_sample_id() > highest
