"""Lab desk core without a server: Code 128 labels, passwords and sign-in, receipt and result rules,
search and CSV export, and the calibration set export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from sampling_robot.labdesk import code128, desk
from sampling_robot.labdesk.calibration import export_calibration_set
from sampling_robot.labdesk.users import (FAILED_SIGN_IN_LIMIT, SignInError, UserStore, add_user, hash_password,
                                          verify_password)
from sampling_robot.registry import SampleRegistry, make_barcode
from tests.sampling_robot.labdesk_fixtures import (CUT_S, PASSWORD, UTC, desk_clock,  # noqa: F401 (fixtures)
                                                   desk_registry, desk_users, users_template, zxing)

WHEN = CUT_S + 86400


def decode_rows(zxingcpp, image: np.ndarray) -> list[str]:
    return [(r.text, r.format.name) for r in zxingcpp.read_barcodes(image)]


# ---------------------------------------------------------------- Code 128


def test_code128_table_has_107_distinct_symbols_of_11_modules_with_even_bars():
    assert len(code128.PATTERNS) == 107 and len(set(code128.PATTERNS)) == 107
    for value, pattern in enumerate(code128.PATTERNS[:-1]):
        widths = [int(c) for c in pattern]
        assert sum(widths) == 11, value
        assert sum(widths[0::2]) % 2 == 0, value  # Code 128's parity: bar modules are even
    assert sum(int(c) for c in code128.PATTERNS[code128.STOP]) == 13


def test_code128_checksum_matches_the_standard_worked_example():
    # ISO/IEC 15417's example string PJJ123C in code set A: check symbol 54.
    values = [code128.START_A] + [ord(c) - 32 for c in "PJJ123C"]
    assert code128.checksum(values) == 54


def test_code128_packs_digit_runs_in_code_set_c():
    values = code128.symbol_values("OL-L1-00000042-H")
    assert values[0] == code128.START_B and code128.CODE_C in values and code128.CODE_B in values
    assert values[values.index(code128.CODE_C) + 1:values.index(code128.CODE_B)] == [0, 0, 0, 42]
    assert code128.symbol_values("12345678")[:2] == [code128.START_C, 12]


@pytest.mark.parametrize("text", ["OL-L1-00000042-H", make_barcode("lane_b-2", 4294967295), "123456", "12345",
                                  "a1234b", "OL-X-00000001-*", "Hello World~"])
def test_code128_bars_decode_to_the_text_with_an_independent_reader(text):
    zx = zxing()
    found, total = code128.bars(text)
    row = np.full(total * 3, 255, np.uint8)
    for bar in found:
        row[bar.x_modules * 3:(bar.x_modules + bar.width_modules) * 3] = 0
    assert decode_rows(zx, np.tile(row, (30, 1))) == [(text, "Code128")]


def rasterise_svg(svg: str, px_per_mm: float = 12.0) -> np.ndarray:
    """Draw the SVG's rects (all a label has besides text) into a grey image."""
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    width = float(root.get("viewBox").split()[2])
    height = float(root.get("viewBox").split()[3])
    img = np.full((int(height * px_per_mm), int(width * px_per_mm)), 255, np.uint8)
    for group in root.iter(f"{ns}g"):
        for rect in group.iter(f"{ns}rect"):
            x, y, w, h = (float(rect.get(k)) for k in ("x", "y", "width", "height"))
            img[int(round(y * px_per_mm)):int(round((y + h) * px_per_mm)),
                int(round(x * px_per_mm)):int(round((x + w) * px_per_mm))] = 0
    return img


def test_label_svg_is_62_by_29_mm_and_its_bars_scan_as_the_barcode():
    zx = zxing()
    barcode = make_barcode("L1", 42)
    svg = code128.label_svg(barcode, ["Sample 42 · targeted", "LOT-7 · MV <Ore> & Star"])
    root = ET.fromstring(svg)  # well-formed: the caption's < and & are escaped
    assert (root.get("width"), root.get("height")) == ("62.000mm", "29.000mm")
    assert "MV &lt;Ore&gt; &amp; Star" in svg
    assert decode_rows(zx, rasterise_svg(svg)) == [(barcode, "Code128")]


def test_code128_refuses_text_a_scanner_could_not_return():
    with pytest.raises(ValueError, match="printable ASCII"):
        code128.symbol_values("OL-é")
    with pytest.raises(ValueError, match="empty"):
        code128.symbol_values("")


# ---------------------------------------------------------------- passwords and sign-in


def test_password_hash_is_salted_scrypt_and_verifies_only_the_password():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("scrypt$") and first != second and PASSWORD not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + "!", first)
    assert not verify_password(PASSWORD, "md5$abc") and not verify_password(PASSWORD, "garbage")


@pytest.mark.parametrize("username, role, password, message", [
    ("ana", "lab", "short", "at least 10"),
    ("anabelle12", "lab", "Anabelle12", "must not be the username"),
    ("Ana", "lab", PASSWORD, "username"),
    ("x y", "lab", PASSWORD, "username"),
    ("ana", "chemist", PASSWORD, "not one of lab, inspector, engineer, admin"),
])
def test_add_user_refuses_weak_passwords_bad_names_and_unknown_roles(tmp_path, username, role, password, message):
    with pytest.raises(ValueError, match=message):
        add_user(tmp_path / "labdesk.sqlite", username, role, password)


def test_sign_in_checks_password_and_active_flag_and_logs_every_attempt(desk_users):
    with pytest.raises(SignInError, match="wrong username or password"):
        desk_users.sign_in("ana", "wrong password!", "10.0.0.5")
    with pytest.raises(SignInError, match="wrong username or password"):
        desk_users.sign_in("nobody", PASSWORD, "10.0.0.5")
    token, session = desk_users.sign_in("ANA ", PASSWORD, "10.0.0.5")
    assert session.user.role == "lab" and desk_users.session(token).user.username == "ana"
    desk_users.set_active("ana", False, who="root")
    assert desk_users.session(token) is None  # deactivation ends the sessions at once
    with pytest.raises(SignInError, match="deactivated"):
        desk_users.sign_in("ana", PASSWORD)
    log = [(e.who, e.action, e.ok) for e in reversed(desk_users.access_log())]
    assert log[-5:] == [("ana", "sign_in", False), ("nobody", "sign_in", False), ("ana", "sign_in", True),
                        ("root", "deactivate", True), ("ana", "sign_in", False)]


def test_too_many_failed_sign_ins_lock_the_user_out_for_the_window(desk_users, desk_clock):
    for _ in range(FAILED_SIGN_IN_LIMIT):
        with pytest.raises(SignInError):
            desk_users.sign_in("bea", "not the password")
    with pytest.raises(SignInError, match="too many failed sign-ins"):
        desk_users.sign_in("bea", PASSWORD)
    desk_clock.advance(901)
    assert desk_users.sign_in("bea", PASSWORD)[1].user.username == "bea"


def test_sessions_expire_when_idle_or_too_old_and_store_only_token_hashes(desk_users, desk_clock):
    token, _ = desk_users.sign_in("ivo", PASSWORD)
    raw = desk_users.path.read_bytes() + desk_users.path.with_name(desk_users.path.name + "-wal").read_bytes()
    assert token.encode() not in raw
    desk_clock.advance(3 * 3600)
    assert desk_users.session(token) is not None  # active use keeps it alive ...
    desk_clock.advance(4 * 3600 + 1)
    assert desk_users.session(token) is None  # ... idle for longer than 4 h ends it
    token, _ = desk_users.sign_in("ivo", PASSWORD)
    for _ in range(4):
        desk_clock.advance(3.1 * 3600)
        desk_users.session(token)
    assert desk_users.session(token) is None  # 12 h at most, however busy


def test_access_log_and_users_are_append_only(desk_users):
    import sqlite3
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        desk_users._db.execute("DELETE FROM access_log")
    with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
        desk_users._db.execute("DELETE FROM users WHERE username = 'ana'")


# ---------------------------------------------------------------- receipt


def barcode(sample_id: int) -> str:
    return make_barcode("L1", sample_id)


def test_receiving_a_sealed_cup_records_collected_then_received_by_the_scanner(desk_registry):
    receipt = desk.receive(desk_registry, barcode(1), "ana", WHEN, mass_kg=2.4)
    assert receipt.collected_here and receipt.sample.status == "received" and receipt.sample.mass_kg == 2.4
    tail = [(h.status, h.who, h.at_s) for h in desk_registry.history(1)[-2:]]
    assert tail == [("collected", "ana", WHEN), ("received", "ana", WHEN)]
    receipt = desk.receive(desk_registry, barcode(2), "ana", WHEN)  # collected earlier by the runner
    assert not receipt.collected_here and [h.status for h in desk_registry.history(2)].count("collected") == 1


@pytest.mark.parametrize("scanned, error, message", [
    ("", desk.BadBarcode, "nothing was scanned"),
    ("hello", desk.BadBarcode, "not of the form OL-<lane>"),
    ("OL-L1-00000001-A", desk.BadBarcode, "check character is A, expected Z"),
    (make_barcode("L1", 999), desk.UnknownBarcode, "unknown barcode OL-L1-00000999-.: there is no sample 999"),
    (make_barcode("L2", 1), desk.UnknownBarcode, "that sample's label is OL-L1-00000001-Z"),
    (barcode(3), desk.WrongStatus, "is cut .by edge L1 at 2025-03-01 10:01:00.: the robot has not sealed it"),
    (barcode(4), desk.AlreadyReceived, "already received by lab-old at 2025-03-01 11:04:00; nothing recorded"),
    (barcode(5), desk.AlreadyReceived, "already received by lab-old .*; it is now analysed"),
    (barcode(6), desk.WrongStatus, "recorded missed .*no cup should carry this label"),
])
def test_receipt_refusals_say_what_is_wrong_and_record_nothing(desk_registry, scanned, error, message):
    before = {r.sample_id: len(desk_registry.history(r.sample_id)) for r in desk_registry.samples()}
    with pytest.raises(error, match=message):
        desk.receive(desk_registry, scanned, "ana", WHEN, tz=UTC)
    assert {r.sample_id: len(desk_registry.history(r.sample_id)) for r in desk_registry.samples()} == before


def test_a_scan_typed_with_caps_lock_on_still_finds_the_sample(desk_registry):
    assert desk.receive(desk_registry, barcode(1).swapcase(), "ana", WHEN).sample.sample_id == 1


def test_implausible_mass_is_refused_before_anything_is_recorded(desk_registry):
    with pytest.raises(desk.DeskError, match="not plausible"):
        desk.receive(desk_registry, barcode(1), "ana", WHEN, mass_kg=2400.0)
    assert desk_registry.current_status(1) == "sealed"


class RacingRegistry(SampleRegistry):
    """A registry on which another desk records a step just before this desk's own record() of it."""

    def __init__(self, path, competitor: SampleRegistry, status: str):
        super().__init__(path)
        self.competitor, self.race_status = competitor, status

    def record(self, sample_id, status, who, at_s, note="", **kw):
        if status == self.race_status and self.competitor is not None:
            competitor, self.competitor = self.competitor, None
            competitor.record(sample_id, status, "bea", at_s - 1, "other desk")
        return super().record(sample_id, status, who, at_s, note, **kw)


@pytest.mark.parametrize("race_at, first_collector", [("collected", "bea"), ("received", "ana")])
def test_losing_a_race_with_another_desk_tells_who_received_it(desk_registry, race_at, first_collector):
    if race_at == "received":  # the other desk receives between our 'collected' and our 'received'
        desk_registry.record(1, "collected", "ana", WHEN - 5)
    racing = RacingRegistry(desk_registry.path, desk_registry, race_at)
    try:
        if race_at == "collected":  # the other desk collects first; we go on to receive it
            receipt = desk.receive(racing, barcode(1), "ana", WHEN)
            assert receipt.received.who == "ana" and not receipt.collected_here
        else:
            with pytest.raises(desk.AlreadyReceived, match="already received by bea"):
                desk.receive(racing, barcode(1), "ana", WHEN)
    finally:
        racing.close()
    statuses = [(h.status, h.who) for h in desk_registry.history(1)]
    assert [s for s, _ in statuses].count("received") == 1 and [s for s, _ in statuses].count("collected") == 1
    assert ("collected", first_collector) in statuses


def test_two_threads_receiving_the_same_cup_record_one_receipt(desk_registry):
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def scan(who: str) -> None:
        barrier.wait()
        try:
            outcomes[who] = desk.receive(desk_registry, barcode(1), who, WHEN)
        except desk.DeskError as exc:
            outcomes[who] = exc

    threads = [threading.Thread(target=scan, args=(who,)) for who in ("ana", "bea")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [w for w, o in outcomes.items() if isinstance(o, desk.Receipt)]
    assert len(winners) == 1
    loser = ({"ana", "bea"} - set(winners)).pop()
    assert isinstance(outcomes[loser], desk.AlreadyReceived) and winners[0] in str(outcomes[loser])
    assert [h.status for h in desk_registry.history(1)][-2:] == ["collected", "received"]


# ---------------------------------------------------------------- results and statuses


def test_result_needs_a_received_sample(desk_registry):
    for sample_id, status in ((1, "sealed"), (2, "collected"), (3, "cut"), (6, "missed")):
        with pytest.raises(desk.NotReceived, match=f"is {status} .*a result needs a received sample"):
            desk.enter_result(desk_registry, sample_id, contaminant_found=False, who="ana", at_s=WHEN)
        assert desk_registry.results(sample_id) == []


def test_result_records_analysed_and_a_correction_needs_a_note(desk_registry):
    entry = desk.enter_result(desk_registry, 4, contaminant_found=True, contaminant_type="wood",
                              mass_fraction=0.004, note="chips", who="ana", at_s=WHEN, photo_sha256="ab" * 32)
    assert entry.sample.status == "analysed" and not entry.correction
    assert entry.result.note == "chips\nphoto sha256 " + "ab" * 32
    with pytest.raises(desk.BadResult, match="already has a result by ana .*needs a note"):
        desk.enter_result(desk_registry, 4, contaminant_found=True, contaminant_type="plastic", who="bea",
                          at_s=WHEN + 60)
    fixed = desk.enter_result(desk_registry, 4, contaminant_found=True, contaminant_type="plastic",
                              note="re-read under the microscope: plastic, not wood", who="bea", at_s=WHEN + 60)
    assert fixed.correction and [r.contaminant_type for r in desk_registry.results(4)] == ["wood", "plastic"]
    assert [h.status for h in desk_registry.history(4)].count("analysed") == 1


@pytest.mark.parametrize("found, kind, fraction, message", [
    (None, "", None, "say whether a contaminant was found"),
    (True, "", None, "name its type"),
    (True, "ore", None, "means clean ore"),
    (False, "wood", None, "given but 'found' is no"),
    (False, "", 0.01, "but no contaminant found"),
])
def test_inconsistent_results_are_refused(desk_registry, found, kind, fraction, message):
    with pytest.raises(desk.BadResult, match=message):
        desk.enter_result(desk_registry, 4, contaminant_found=found, contaminant_type=kind, mass_fraction=fraction,
                          who="ana", at_s=WHEN)
    assert desk_registry.current_status(4) == "received"


@pytest.mark.parametrize("text, fraction", [("0.4", 0.004), ("0,4 %", 0.004), (" 12 ", 0.12), ("", None),
                                            ("100", 1.0)])
def test_mass_fraction_is_typed_in_percent(text, fraction):
    assert desk.parse_percent(text) == pytest.approx(fraction) if fraction is not None else \
        desk.parse_percent(text) is None


@pytest.mark.parametrize("text", ["abc", "120", "-1", "nan", "inf"])
def test_mass_fraction_outside_0_to_100_percent_is_refused(text):
    with pytest.raises(desk.BadResult):
        desk.parse_percent(text)


def test_desk_statuses_never_go_backwards(desk_registry):
    with pytest.raises(desk.WrongStatus, match="cannot go from 'analysed' to 'received'"):
        desk.record_status(desk_registry, 5, "received", "ana", WHEN)
    with pytest.raises(desk.DeskError, match="set by the robot or the edge daemon"):
        desk.record_status(desk_registry, 5, "cut", "ana", WHEN)
    assert desk.record_status(desk_registry, 5, "archived", "ana", WHEN).status == "archived"
    with pytest.raises(desk.WrongStatus, match="results are closed"):
        desk.enter_result(desk_registry, 5, contaminant_found=False, note="late", who="ana", at_s=WHEN)


# ---------------------------------------------------------------- search and CSV


def test_search_by_lot_vessel_date_and_status(desk_registry):
    def ids(**kw):
        return sorted(r.sample_id for r in desk.search(desk_registry, desk.SearchQuery(**kw), UTC))
    assert ids(lot="lot-7") == [1, 2, 3, 4]
    assert ids(vessel="duke") == [5, 6, 7, 8]
    assert ids(date_from=dt.date(2025, 3, 2), date_to=dt.date(2025, 3, 2)) == [5, 6]
    assert ids(date_from=dt.date(2025, 3, 3)) == [7, 8, 9]
    assert ids(status="sealed", vessel="duke") == [7, 8]
    with pytest.raises(desk.DeskError, match="backwards"):
        ids(date_from=dt.date(2025, 3, 3), date_to=dt.date(2025, 3, 1))
    with pytest.raises(desk.DeskError, match="use YYYY-MM-DD"):
        desk.SearchQuery.from_form({"from": "03/01/2025"})


def test_csv_export_has_one_row_per_sample_and_defuses_spreadsheet_formulas(desk_registry):
    rows = list(csv.DictReader(io.StringIO(desk.to_csv(desk_registry, desk_registry.samples(), UTC))))
    assert [int(r["sample_id"]) for r in rows] == list(range(1, 10))
    five = rows[4]
    assert (five["status"], five["received_by"], five["contaminant_found"], five["result_note"]) == (
        "analysed", "lab-old", "no", "clean")
    assert five["cut_at"] == "2025-03-02T10:00:00+00:00"
    assert rows[8]["lot_id"] == "'=HYPERLINK(\"x\")" and rows[8]["vessel"] == "'-cmd"


# ---------------------------------------------------------------- calibration export


WAVELENGTHS = np.linspace(900.0, 1700.0, 32)
DARK = np.full(32, 1000.0)
WHITE = np.full(32, 41000.0)


def synthetic_source(calls: list):
    """Spectra whose reflectance encodes their seq, so the test can tell which ones were exported."""
    def source(first: int, last: int):
        calls.append((first, last))
        seqs = np.array([s for s in range(first, last + 1) if s % 7 != 0], dtype=np.uint64)  # a few dropped
        reflectance = 0.2 + 0.001 * seqs[:, None] + 0.0 * WAVELENGTHS[None, :]
        counts = (DARK + reflectance * (WHITE - DARK)).astype(np.float32)
        return WAVELENGTHS, counts, seqs
    return source


def test_calibration_set_labels_the_event_spectra_with_the_lab_result(desk_registry, tmp_path):
    from spectral.dataset import load_npz
    desk.enter_result(desk_registry, 4, contaminant_found=True, contaminant_type="wood", mass_fraction=0.004,
                      who="ana", at_s=WHEN)
    calls: list = []
    path = export_calibration_set(desk_registry, 4, synthetic_source(calls), event_seqs=(120, 160), dark=DARK,
                                  white=WHITE, out_dir=tmp_path / "cal", margin_seqs=5)
    assert calls == [(115, 165)] and path.name == "calibration-OL-L1-00000004-T-result2.npz"
    ds = load_npz(path)  # the spectral workbench reads it as is
    seqs = np.array([s for s in range(115, 166) if s % 7 != 0])
    assert len(ds) == seqs.size and set(ds.labels) == {"wood"} and set(ds.groups) == {"LOT-7"}
    np.testing.assert_allclose(ds.reflectance[:, 0], 0.2 + 0.001 * seqs, rtol=1e-5)
    np.testing.assert_array_equal(ds.wavelengths_nm, WAVELENGTHS)
    assert np.isnan(ds.area_fraction).all()
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["seqs"], seqs)
        assert z["mass_fraction"][0] == pytest.approx(0.004)
        assert '"event_id": "L1-ev-4"' in str(z["provenance_json"])


def test_a_clean_result_labels_the_spectra_ore(desk_registry, tmp_path):
    from spectral.dataset import load_npz
    path = export_calibration_set(desk_registry, 5, synthetic_source([]), event_seqs=(10, 20), dark=DARK,
                                  white=WHITE, out_dir=tmp_path)
    ds = load_npz(path)
    assert set(ds.labels) == {"ore"} and (ds.area_fraction == 0).all() and set(ds.groups) == {"LOT-8"}


@pytest.mark.parametrize("sample_id, source, seqs, message", [
    (7, None, (1, 2), "routine sample without an event"),
    (1, None, (1, 2), "has no lab result yet"),
    (5, lambda a, b: (WAVELENGTHS, np.zeros((0, 32)), np.zeros(0, np.uint64)), (1, 2), "no spectra for seq 1-2"),
    (5, lambda a, b: (WAVELENGTHS, np.zeros((2, 31)), np.array([1, 2])), (1, 2), "need .n, 32. numbers"),
    (5, lambda a, b: (WAVELENGTHS, np.zeros((2, 32)), np.array([1, 9])), (1, 2), "within the asked 1-2"),
    (5, lambda a, b: (WAVELENGTHS[::-1], np.zeros((2, 32)), np.array([1, 2])), (1, 2), "strictly increasing"),
    (5, None, (5, 2), "must be >= 0 and in order"),
])
def test_calibration_export_refusals(desk_registry, tmp_path, sample_id, source, seqs, message):
    with pytest.raises(ValueError, match=message):
        export_calibration_set(desk_registry, sample_id, source or synthetic_source([]), event_seqs=seqs,
                               dark=DARK, white=WHITE, out_dir=tmp_path / "cal")
    assert not (tmp_path / "cal").exists() or list((tmp_path / "cal").iterdir()) == []


def test_calibration_export_refuses_references_where_white_is_not_above_dark(desk_registry, tmp_path):
    with pytest.raises(ValueError, match="white reference is not above dark at band 0"):
        export_calibration_set(desk_registry, 5, synthetic_source([]), event_seqs=(1, 5), dark=WHITE, white=DARK,
                               out_dir=tmp_path)


def test_user_store_beside_a_registry(tmp_path):
    with UserStore.beside(tmp_path / "samples.sqlite") as users:
        assert users.path == tmp_path / "labdesk.sqlite"
