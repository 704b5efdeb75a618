"""The lab desk over real HTTP on a free port: sign-in, sessions and CSRF, roles, scan-to-receive, results
with photos, labels, search, lot view, CSV export, the access log, and two desks racing for one cup."""

from __future__ import annotations

import csv
import io
import sys
import threading

import pytest

from sampling_robot.labdesk import server as desk_server_module
from sampling_robot.labdesk.server import make_app, serve
from sampling_robot.labdesk.users import UserStore
from sampling_robot.registry import SampleRegistry, make_barcode
from tests.sampling_robot.labdesk_fixtures import (PASSWORD, UTC, DeskClient, desk_clock,  # noqa: F401
                                                   desk_registry, desk_server, desk_users, fill_registry, png_bytes,
                                                   signed_in, users_template)


def barcode(sample_id: int) -> str:
    return make_barcode("L1", sample_id)


def statuses(registry: SampleRegistry, sample_id: int) -> list[tuple[str, str]]:
    return [(h.status, h.who) for h in registry.history(sample_id)]


# ---------------------------------------------------------------- sign-in, sessions, CSRF


def test_pages_redirect_to_sign_in_and_back_after_it(desk_server):
    client = DeskClient(desk_server.url)
    reply = client.get("/lot?id=LOT-7", follow=False)
    assert reply.status == 303 and reply.headers["Location"] == "/login?next=%2Flot%3Fid%3DLOT-7"
    page = client.get(reply.headers["Location"])
    reply = client.post("/login", {"username": "ivo", "password": PASSWORD, "next": "/lot?id=LOT-7"}, follow=False)
    assert page.status == 200 and reply.status == 303 and reply.headers["Location"] == "/lot?id=LOT-7"


def test_session_cookie_is_httponly_samesite_strict_and_random(desk_server):
    cookies = [signed_in(desk_server, "ana"), signed_in(desk_server, "ana")]
    values = []
    for client in cookies:
        (cookie,) = [c for c in client.jar if c.name == "labdesk_session"]
        assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Strict"
        assert len(cookie.value) >= 43  # 32 random bytes
        values.append(cookie.value)
    assert values[0] != values[1]


def test_open_redirects_after_sign_in_are_not_followed(desk_server):
    client = DeskClient(desk_server.url)
    client.get("/login")
    reply = client.post("/login", {"username": "ivo", "password": PASSWORD, "next": "//evil.example/x"},
                        follow=False)
    assert reply.headers["Location"] == "/"


def test_wrong_password_is_refused_and_the_attempt_logged(desk_server, desk_users):
    client = DeskClient(desk_server.url)
    client.get("/login")
    reply = client.post("/login", {"username": "ana", "password": "guess guess guess"}, follow=False)
    assert reply.status == 401 and reply.alert() == "wrong username or password"
    assert not [c for c in client.jar if c.name == "labdesk_session"]
    entry = desk_users.access_log(1)[0]
    assert (entry.who, entry.action, entry.ok, entry.detail, entry.remote) == (
        "ana", "sign_in", False, "refused: wrong password", "127.0.0.1")


def test_sign_in_form_needs_its_double_submit_token(desk_server):
    client = DeskClient(desk_server.url)
    client.get("/login")
    reply = client.post("/login", {"username": "ana", "password": PASSWORD, "csrf": "forged"}, follow=False)
    assert reply.status == 403 and "form has expired" in reply.alert()


@pytest.mark.parametrize("fields, headers", [
    ({"barcode": make_barcode("L1", 1), "csrf": ""}, {}),
    ({"barcode": make_barcode("L1", 1), "csrf": "not-the-token"}, {}),
    ({"barcode": make_barcode("L1", 1)}, {"Origin": "http://evil.example"}),
])
def test_posts_without_the_sessions_csrf_token_or_from_another_site_are_refused(desk_server, desk_registry,
                                                                                desk_users, fields, headers):
    client = signed_in(desk_server, "ana")
    reply = client.post("/receive", fields, headers=headers)
    assert reply.status == 403
    assert "refused: the form was posted from http://evil.example" in reply.alert() if headers else \
        "the form has expired or did not come from this desk" in reply.alert()
    assert desk_registry.current_status(1) == "sealed"
    assert desk_users.access_log(1)[0].action == "csrf"


def test_sign_out_ends_the_session_on_the_server(desk_server, desk_users):
    client = signed_in(desk_server, "ana")
    (cookie,) = [c.value for c in client.jar if c.name == "labdesk_session"]
    assert client.post("/logout", {}, follow=False).status == 303
    stolen = DeskClient(desk_server.url)
    reply = stolen.request("GET", "/", headers={"Cookie": f"labdesk_session={cookie}"}, follow=False)
    assert reply.status == 303 and reply.headers["Location"].startswith("/login")
    assert [e.action for e in desk_users.access_log(2)] == ["sign_out", "sign_in"]


def test_idle_sessions_expire(desk_server, desk_clock):
    client = signed_in(desk_server, "ana")
    desk_clock.advance(4 * 3600 + 61)
    assert client.get("/", follow=False).status == 303
    reply = client.post("/receive", {"barcode": barcode(1)})
    assert reply.status == 401 and "not signed in" in reply.alert()


def test_every_page_carries_security_headers(desk_server):
    client = signed_in(desk_server, "ana")
    for path in ("/", "/login", "/sample/1", "/export.csv?lot_id=LOT-7"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"


# ---------------------------------------------------------------- roles


@pytest.mark.parametrize("user, path, fields, status", [
    ("ivo", "/receive", {"barcode": make_barcode("L1", 1)}, 403),
    ("eng", "/receive", {"barcode": make_barcode("L1", 1)}, 403),
    ("ivo", "/sample/4/result", {"contaminant_found": "no"}, 403),
    ("eng", "/sample/5/status", {"status": "archived"}, 403),
    ("ana", "/receive", {"barcode": make_barcode("L1", 1)}, 303),
    ("root", "/receive", {"barcode": make_barcode("L1", 1)}, 303),
])
def test_only_lab_staff_and_admins_record_custody_and_results(desk_server, desk_users, user, path, fields, status):
    client = signed_in(desk_server, user)
    reply = client.post(path, fields, follow=False)
    assert reply.status == status
    if status == 403:
        assert "needs the role lab or admin" in reply.alert()
        assert (desk_users.access_log(1)[0].action, desk_users.access_log(1)[0].who) == ("forbidden", user)


def test_the_access_log_page_is_for_inspectors_and_admins(desk_server):
    assert signed_in(desk_server, "ana").get("/audit").status == 403
    page = signed_in(desk_server, "ivo").get("/audit")
    assert page.status == 200 and "sign_in" in page.text and "forbidden" in page.text


def test_read_only_roles_see_no_scan_field(desk_server):
    assert 'id="barcode"' not in signed_in(desk_server, "ivo").get("/").text
    assert 'id="barcode" name="barcode" autofocus' in signed_in(desk_server, "ana").get("/").text


# ---------------------------------------------------------------- scan to receive


def test_scan_receives_a_sealed_cup_and_moves_it_off_the_queue(desk_server, desk_registry):
    client = signed_in(desk_server, "ana")
    queue = client.get("/")
    assert [f'data-sample="{i}"' in queue.text.split('id="awaiting-result"')[0] for i in (1, 2, 7, 8, 9)] == [True] * 5
    reply = client.post("/receive", {"barcode": barcode(1) + "\r\n", "mass_kg": "2,35"}, follow=False)
    assert reply.status == 303 and reply.headers["Location"] == "/"
    page = client.get("/")
    assert page.flash() == "Received OL-L1-00000001-Z: sample 1, lot LOT-7 (MV Ore Star) (collected and received)"
    waiting, received = page.text.split('id="awaiting-result"')
    assert 'data-sample="1"' not in waiting and 'data-sample="1"' in received
    assert statuses(desk_registry, 1)[-2:] == [("collected", "ana"), ("received", "ana")]
    assert desk_registry.sample(1).mass_kg == 2.35
    assert client.get("/").flash() == ""  # a message is shown once


@pytest.mark.parametrize("scanned, status, message", [
    ("   ", 400, "nothing was scanned"),
    ("OL-L1-00000001-A", 400, "check character is A, expected Z (misread or mistyped)"),
    ("4006381333931", 400, "is not of the form OL-<lane>-<8-10 digit id>-<check character>"),
    (make_barcode("L1", 4242), 404, "unknown barcode OL-L1-00004242-"),
    (make_barcode("L1", 3), 409, "is cut (by edge L1 at 2025-03-01 10:01:00): the robot has not sealed it yet"),
    (make_barcode("L1", 4), 409, "was already received by lab-old at 2025-03-01 11:04:00; nothing recorded"),
    (make_barcode("L1", 6), 409, "is recorded missed"),
])
def test_bad_scans_get_a_clear_message_and_change_nothing(desk_server, desk_registry, desk_users, scanned, status,
                                                          message):
    before = {r.sample_id: statuses(desk_registry, r.sample_id) for r in desk_registry.samples()}
    client = signed_in(desk_server, "ana")
    reply = client.post("/receive", {"barcode": scanned})
    assert reply.status == status and message in reply.alert()
    assert 'id="barcode" name="barcode" autofocus' in reply.text  # ready for the next scan at once
    assert {r.sample_id: statuses(desk_registry, r.sample_id) for r in desk_registry.samples()} == before
    entry = desk_users.access_log(1)[0]
    assert (entry.action, entry.ok) == ("receive", False) and message in entry.detail


def test_two_staff_scanning_the_same_cup_at_once_record_one_receipt(desk_server, desk_registry):
    clients = {who: signed_in(desk_server, who) for who in ("ana", "bea")}
    for sample_id in (1, 7, 8):  # sealed cups: each receipt is two steps, collected and received
        barrier = threading.Barrier(2)
        replies = {}

        def scan(who: str) -> None:
            barrier.wait()
            replies[who] = clients[who].post("/receive", {"barcode": barcode(sample_id)}, follow=False)

        threads = [threading.Thread(target=scan, args=(who,)) for who in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        codes = sorted(r.status for r in replies.values())
        assert codes == [303, 409], replies
        (winner,) = [w for w, r in replies.items() if r.status == 303]
        (loser,) = [w for w, r in replies.items() if r.status == 409]
        assert f"already received by {winner} at" in replies[loser].alert()
        history = [s for s, _ in statuses(desk_registry, sample_id)]
        assert history == ["requested", "cut", "sealed", "collected", "received"]
        assert statuses(desk_registry, sample_id)[-1] == ("received", winner)


def test_two_desk_processes_on_one_registry_file_record_one_receipt(tmp_path, users_template):
    """Two desks (two servers, two registry connections) on one SQLite file: SQLite's write lock decides."""
    import shutil
    with SampleRegistry(tmp_path / "samples.sqlite") as registry:
        fill_registry(registry)
    shutil.copyfile(users_template, tmp_path / "labdesk.sqlite")
    registries = [SampleRegistry(tmp_path / "samples.sqlite") for _ in range(2)]
    users = [UserStore(tmp_path / "labdesk.sqlite") for _ in range(2)]
    servers = [serve(make_app(r, u, photo_dir=tmp_path / "photos", tz=UTC)).start() for r, u in zip(registries, users)]
    try:
        clients = [signed_in(servers[0], "ana"), signed_in(servers[1], "bea")]
        barrier = threading.Barrier(2)
        replies = [None, None]

        def scan(i: int) -> None:
            barrier.wait()
            replies[i] = clients[i].post("/receive", {"barcode": barcode(8)}, follow=False)

        threads = [threading.Thread(target=scan, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(r.status for r in replies) == [303, 409]
        loser = [r for r in replies if r.status == 409][0]
        assert "already received by" in loser.alert()
        assert [s for s, _ in statuses(registries[0], 8)].count("received") == 1
    finally:
        for s in servers:
            s.stop()
        for r in registries + users:
            r.close()


# ---------------------------------------------------------------- results, statuses, photos


def test_a_result_for_a_sample_not_yet_received_is_refused(desk_server, desk_registry):
    client = signed_in(desk_server, "ana")
    reply = client.post("/sample/1/result", {"contaminant_found": "yes", "contaminant_type": "wood"},
                        files={"photo": ("tray.png", "image/png", png_bytes())})
    assert reply.status == 409
    assert "OL-L1-00000001-Z is sealed (by edge L1 at 2025-03-01 08:02:00): a result needs a received sample" \
        in reply.alert()
    assert desk_registry.results(1) == [] and desk_registry.current_status(1) == "sealed"
    assert not list((desk_server.app.photos.directory / "sample-1").glob("*"))  # the staged photo is gone


def test_result_entry_saves_the_result_with_its_photo_and_records_analysed(desk_server, desk_registry):
    client = signed_in(desk_server, "ana")
    photo = png_bytes(8, 6)
    import hashlib
    sha = hashlib.sha256(photo).hexdigest()
    reply = client.post("/sample/4/result", {"contaminant_found": "yes", "contaminant_type": "wood",
                                             "mass_fraction_pct": "0,4", "note": "splinters, 3 pieces"},
                        files={"photo": ("tray.png", "image/png", photo)}, follow=False)
    assert reply.status == 303 and reply.headers["Location"] == "/sample/4"
    page = client.get("/sample/4")
    assert page.flash() == "Result saved for OL-L1-00000004-T: wood; status analysed"
    (result,) = desk_registry.results(4)
    assert (result.contaminant_found, result.contaminant_type, result.mass_fraction, result.who) == (
        True, "wood", pytest.approx(0.004), "ana")
    assert result.note == f"splinters, 3 pieces\nphoto sha256 {sha}"
    assert statuses(desk_registry, 4)[-1] == ("analysed", "ana")
    served = client.get(f"/sample/4/photo/{result.id}")
    assert served.body == photo and served.headers["Content-Type"] == "image/png"
    assert served.headers["X-Photo-SHA256"] == sha
    stored = desk_server.app.photos.photos(4)[result.id].path
    stored.write_bytes(png_bytes(9, 9))  # tampering shows
    assert client.get(f"/sample/4/photo/{result.id}").status == 409


@pytest.mark.parametrize("fields, upload, status, message", [
    ({"contaminant_type": "wood"}, None, 422, "say whether a contaminant was found"),
    ({"contaminant_found": "yes"}, None, 422, "name its type"),
    ({"contaminant_found": "no", "mass_fraction_pct": "0.5"}, None, 422, "but no contaminant found"),
    ({"contaminant_found": "yes", "contaminant_type": "wood", "mass_fraction_pct": "4 ppm"}, None, 422,
     "is not a number"),
    ({"contaminant_found": "no"}, ("x.png", "image/png", b"GIF89a not a png"), 422, "not a JPEG, PNG or WebP"),
])
def test_bad_results_are_refused_and_the_form_keeps_what_was_typed(desk_server, desk_registry, fields, upload,
                                                                   status, message):
    client = signed_in(desk_server, "ana")
    reply = client.post("/sample/4/result", {"note": "typed <note>", **fields},
                        files={"photo": upload} if upload else None)
    assert reply.status == status and message in reply.alert()
    assert "typed &lt;note&gt;</textarea>" in reply.text
    assert desk_registry.results(4) == [] and desk_registry.current_status(4) == "received"


def test_an_oversized_photo_is_refused_before_it_is_read(desk_server, desk_registry):
    client = signed_in(desk_server, "ana")
    desk_server.app.photos.max_bytes = 1000
    reply = client.post("/sample/4/result", {"contaminant_found": "no"},
                        files={"photo": ("big.png", "image/png", png_bytes() + b"\0" * 200_000)})
    assert reply.status == 413 and desk_registry.results(4) == []


def test_a_corrected_result_needs_a_note_and_keeps_the_first(desk_server, desk_registry):
    client = signed_in(desk_server, "bea")
    reply = client.post("/sample/5/result", {"contaminant_found": "yes", "contaminant_type": "plastic"})
    assert reply.status == 422 and "already has a result by lab-old" in reply.alert()
    reply = client.post("/sample/5/result", {"contaminant_found": "yes", "contaminant_type": "plastic",
                                             "note": "second look: a plastic chip"}, follow=False)
    assert reply.status == 303
    assert [r.contaminant_type for r in desk_registry.results(5)] == ["", "plastic"]
    assert client.get("/sample/5").flash().startswith("Corrected result saved for OL-L1-00000005-")


def test_a_status_going_backwards_is_refused(desk_server, desk_registry):
    client = signed_in(desk_server, "ana")
    reply = client.post("/sample/5/status", {"status": "received"})
    assert reply.status == 409 and "cannot go from 'analysed' to 'received'" in reply.alert()
    reply = client.post("/sample/5/status", {"status": "sealed"})
    assert reply.status == 400 and "set by the robot or the edge daemon" in reply.alert()
    assert client.post("/sample/5/status", {"status": "archived"}, follow=False).status == 303
    reply = client.post("/receive", {"barcode": desk_registry.sample(5).barcode})
    assert reply.status == 409 and "it is now archived; nothing recorded" in reply.alert()
    assert [s for s, _ in statuses(desk_registry, 5)] == ["requested", "cut", "sealed", "collected", "received",
                                                          "analysed", "archived"]


def test_unknown_sample_pages_are_404(desk_server):
    client = signed_in(desk_server, "ana")
    assert client.get("/sample/4242").status == 404
    assert client.post("/sample/4242/result", {"contaminant_found": "no"}).status == 404
    assert client.get("/nope").status == 404
    assert client.get("/lot?id=LOT-404").status == 404


# ---------------------------------------------------------------- labels, search, lot, export


def test_label_page_and_svg(desk_server, desk_users):
    client = signed_in(desk_server, "ivo")
    page = client.get("/sample/1/label")
    assert page.status == 200 and 'src="/sample/1/label.svg"' in page.text
    svg = client.get("/sample/1/label.svg")
    assert svg.headers["Content-Type"].startswith("image/svg+xml")
    assert "OL-L1-00000001-Z" in svg.text and "LOT-7 · MV Ore Star · hold 3" in svg.text
    assert (desk_users.access_log(1)[0].action, desk_users.access_log(1)[0].detail) == ("print_label",
                                                                                        "OL-L1-00000001-Z")


def test_search_by_lot_vessel_and_date(desk_server):
    client = signed_in(desk_server, "ivo")
    assert client.get("/search").text.count("data-sample=") == 0  # the empty form lists nothing
    assert client.get("/search?lot=lot-8").text.count("data-sample=") == 4
    page = client.get("/search?vessel=Ore+Star&from=2025-03-01&to=2025-03-01&status=sealed")
    assert page.text.count("data-sample=") == 1 and 'data-sample="1"' in page.text
    assert 'href="/export.csv?vessel=Ore+Star&amp;from=2025-03-01&amp;to=2025-03-01&amp;status=sealed"' in page.text
    bad = client.get("/search?from=yesterday")
    assert bad.status == 400 and "use YYYY-MM-DD" in bad.alert()


def test_lot_view_lists_every_sample_of_the_lot_with_status_and_result(desk_server):
    page = signed_in(desk_server, "ivo").get("/lot?id=LOT-8")
    assert page.status == 200
    for sample_id, status in ((5, "analysed"), (6, "missed"), (7, "sealed"), (8, "sealed")):
        row = page.text.split(f'data-sample="{sample_id}"')[1].split("</tr>")[0]
        assert f"status-{status}" in row
    assert "4 samples (sealed 2 · analysed 1 · missed 1)" in page.text and "clean" in page.text


def test_csv_export_of_a_lot_is_logged(desk_server, desk_users):
    client = signed_in(desk_server, "eng")
    reply = client.get("/export.csv?lot_id=LOT-7")
    assert reply.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert reply.headers["Content-Disposition"].startswith('attachment; filename="orelane-samples-LOT-7-2025')
    rows = list(csv.DictReader(io.StringIO(reply.body.decode("utf-8-sig"))))
    assert [(r["sample_id"], r["status"]) for r in rows] == [("1", "sealed"), ("2", "collected"), ("3", "cut"),
                                                             ("4", "received")]
    entry = desk_users.access_log(1)[0]
    assert (entry.who, entry.action, entry.detail) == ("eng", "export_csv", "lot_id=LOT-7: 4 samples")
    search_export = client.get("/export.csv?vessel=duke")
    assert search_export.body.decode("utf-8-sig").count("\r\n") == 5
    assert desk_users.access_log(1)[0].detail == "vessel=duke: 4 samples"


# ---------------------------------------------------------------- command line


def test_main_adds_a_user_and_serves_the_desk(tmp_path, monkeypatch, capsys):
    with SampleRegistry(tmp_path / "samples.sqlite") as registry:
        fill_registry(registry)
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert desk_server_module.main(["add-user", "--registry", str(tmp_path / "samples.sqlite"), "zoe", "--role",
                                    "lab", "--password-stdin"]) == 0
    assert "added zoe (lab)" in capsys.readouterr().out
    from tests.servers import free_port
    port = free_port()
    stop = threading.Event()
    result = []
    thread = threading.Thread(target=lambda: result.append(desk_server_module.main(
        ["serve", "--registry", str(tmp_path / "samples.sqlite"), "--port", str(port), "--timezone", "UTC"],
        stop=stop)))
    thread.start()
    try:
        import time
        deadline = time.monotonic() + 10
        client = DeskClient(f"http://127.0.0.1:{port}")
        while True:
            try:
                client.get("/login")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert client.sign_in("zoe").status == 303 and 'data-sample="1"' in client.get("/").text
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]


def test_main_manages_users(tmp_path, monkeypatch, capsys, desk_server):
    registry = ["--registry", str(tmp_path / "samples.sqlite")]  # the fixture's registry; users beside it
    monkeypatch.setattr(sys, "stdin", io.StringIO("a new long password\n"))
    assert desk_server_module.main(["passwd", *registry, "ana", "--password-stdin"]) == 0
    assert desk_server_module.main(["deactivate", *registry, "bea"]) == 0
    capsys.readouterr()
    assert desk_server_module.main(["users", *registry]) == 0
    listing = capsys.readouterr().out
    assert "ana\tlab\tactive" in listing and "bea\tlab\tdeactivated" in listing
    assert DeskClient(desk_server.url).sign_in("ana").status == 401
    assert DeskClient(desk_server.url).sign_in("ana", "a new long password").status == 303
    assert DeskClient(desk_server.url).sign_in("bea").status == 401
    assert desk_server_module.main(["deactivate", *registry, "nobody"]) == 2
    assert "no lab desk user 'nobody'" in capsys.readouterr().err


def test_main_refuses_a_missing_registry_and_an_unknown_time_zone(tmp_path, capsys):
    assert desk_server_module.main(["serve", "--registry", str(tmp_path / "none.sqlite")]) == 2
    assert "no sample registry" in capsys.readouterr().err
    assert desk_server_module.main(["serve", "--registry", str(tmp_path / "none.sqlite"), "--timezone",
                                    "Mars/Olympus"]) == 2
    assert "unknown time zone" in capsys.readouterr().err
