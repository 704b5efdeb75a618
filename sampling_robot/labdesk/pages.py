"""HTML of the lab desk: plain server-rendered pages, every value escaped, no inline script or style.

The pages work without JavaScript; desk.js only wires the print button and
keeps the scan field focused. CSS and JS are strings here (not files) so an
installed wheel carries them without package data.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Iterable, Sequence
from urllib.parse import urlencode

from orelane.contract.messages import SAMPLE_STATUSES
from sampling_robot.labdesk.desk import LotSummary, SearchQuery, format_time
from sampling_robot.labdesk.photos import StoredPhoto
from sampling_robot.labdesk.users import AccessEntry, User
from sampling_robot.registry import HistoryEntry, LabResult, SampleRow

CSS = """
:root { font-family: system-ui, sans-serif; color: #111; background: #fafafa; }
body { margin: 0; }
header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1rem; background: #243447; color: #fff; }
header a { color: #fff; }
header .who { margin-left: auto; }
header form { margin: 0; }
main { padding: 1rem; max-width: 80rem; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef; }
.flash { padding: .6rem 1rem; border-radius: .3rem; font-weight: 600; }
.flash.ok { background: #d8f5d8; border: 1px solid #3a3; }
.flash.error { background: #fdd; border: 1px solid #c33; }
#barcode { font-size: 1.6rem; width: 22rem; font-family: monospace; }
.status { font-weight: 600; }
.status-received, .status-analysed { color: #060; }
.status-missed, .status-failed { color: #a00; }
form.inline { display: inline; }
fieldset { margin: 0 0 1rem; max-width: 40rem; }
label { display: block; margin: .3rem 0; }
.label-sheet img { width: 62mm; height: 29mm; border: 1px dashed #999; }
@media print {
  header, nav, .no-print { display: none !important; }
  main { padding: 0; }
  .label-sheet img { border: none; }
  @page { size: 62mm 29mm; margin: 0; }
}
"""

JS = """
document.addEventListener("DOMContentLoaded", function () {
  var print = document.getElementById("print-label");
  if (print) { print.addEventListener("click", function () { window.print(); }); }
  var scan = document.getElementById("barcode");
  if (scan) { scan.focus(); scan.select(); }
});
"""

FAVICON_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" fill="#243447"/>'
               '<path d="M3 3h1v10H3zM5 3h2v10H5zM8 3h1v10H8zM11 3h2v10h-2z" fill="#fff"/></svg>')

h = escape


def csrf_field(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{h(csrf)}">'


def flash_html(flashes: Iterable[tuple[str, str]]) -> str:
    out = []
    for kind, message in flashes:
        role, ident = ("alert", "error") if kind == "error" else ("status", "flash")
        out.append(f'<p class="flash {h(kind)}" role="{role}" id="{ident}">{h(message)}</p>')
    return "".join(out)


def layout(title: str, body: str, *, user: User | None = None, csrf: str = "",
           flashes: Iterable[tuple[str, str]] = ()) -> str:
    nav = ""
    if user is not None:
        links = ['<a href="/">Queue</a>', '<a href="/search">Search</a>']
        if user.role in ("inspector", "admin"):
            links.append('<a href="/audit">Access log</a>')
        nav = (f'<nav>{" · ".join(links)}</nav><span class="who" id="who">{h(user.username)} ({h(user.role)})</span>'
               f'<form method="post" action="/logout">{csrf_field(csrf)}<button type="submit">Sign out</button></form>')
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{h(title)} · orelane lab desk</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
            '<link rel="stylesheet" href="/static/desk.css"><script src="/static/desk.js" defer></script>'
            f'</head><body><header><strong>orelane lab desk</strong>{nav}</header>'
            f'<main><h1>{h(title)}</h1>{flash_html(flashes)}{body}</main></body></html>')


def login_page(*, csrf: str, next_path: str, username: str = "", flashes: Iterable[tuple[str, str]] = ()) -> str:
    body = (f'<form method="post" action="/login" id="login-form">{csrf_field(csrf)}'
            f'<input type="hidden" name="next" value="{h(next_path)}">'
            f'<label>User <input name="username" id="username" autocomplete="username" required autofocus'
            f' value="{h(username)}"></label>'
            '<label>Password <input name="password" id="password" type="password" autocomplete="current-password"'
            ' required></label><button type="submit" id="sign-in">Sign in</button></form>')
    return layout("Sign in", body, flashes=flashes)


def error_page(status: int, message: str, user: User | None = None, csrf: str = "") -> str:
    return layout(f"{status}", f'<p class="flash error" role="alert" id="error">{h(message)}</p>'
                  '<p><a href="/">Back to the queue</a></p>', user=user, csrf=csrf)


def status_cell(status: str) -> str:
    return f'<span class="status status-{h(status)}">{h(status)}</span>'


def sample_table(rows: Sequence[SampleRow], tz: dt.tzinfo | None, *, table_id: str,
                 results: dict[int, LabResult] | None = None) -> str:
    if not rows:
        return f'<p id="{h(table_id)}-empty">None.</p>'
    head = ("<tr><th>Barcode</th><th>Sample</th><th>Kind</th><th>Status</th><th>Lot</th><th>Vessel</th>"
            "<th>Hold</th><th>Cut at</th><th>Belt m</th><th>Cup</th><th>Seal</th>"
            + ("<th>Result</th>" if results is not None else "") + "<th></th></tr>")
    body = []
    for r in rows:
        result_cell = ""
        if results is not None:
            res = results.get(r.sample_id)
            result_cell = f"<td>{h(_result_text(res)) if res else ''}</td>"
        lot = f'<a href="{h(lot_url(r.lot_id))}">{h(r.lot_id)}</a>' if r.lot_id else ""
        body.append(
            f'<tr data-sample="{r.sample_id}" data-barcode="{h(r.barcode)}"><td><code>{h(r.barcode)}</code></td>'
            f'<td><a href="/sample/{r.sample_id}">{r.sample_id}</a></td><td>{h(r.kind)}</td>'
            f"<td>{status_cell(r.status)}</td><td>{lot}</td><td>{h(r.vessel)}</td><td>{h(r.hold)}</td>"
            f"<td>{h(format_time(r.created_s, tz))}</td>"
            f"<td>{'' if r.belt_position_m is None else f'{r.belt_position_m:.1f}'}</td>"
            f"<td>{h(r.cup or '')}</td><td>{h(r.seal or '')}</td>{result_cell}"
            f'<td><a href="/sample/{r.sample_id}/label">label</a></td></tr>')
    return f'<table id="{h(table_id)}">{head}{"".join(body)}</table>'


def _result_text(res: LabResult) -> str:
    if not res.contaminant_found:
        return "clean"
    fraction = "" if res.mass_fraction is None else f" {res.mass_fraction * 100:g} %"
    return f"{res.contaminant_type}{fraction}"


def queue_page(queue: Sequence[SampleRow], awaiting_result: Sequence[SampleRow], *, user: User, csrf: str,
               can_receive: bool, tz: dt.tzinfo | None, flashes: Iterable[tuple[str, str]] = (),
               mass_kg: str = "") -> str:
    scan = ""
    if can_receive:
        scan = (f'<form method="post" action="/receive" id="scan-form" class="no-print">{csrf_field(csrf)}'
                '<label for="barcode">Scan the cup\'s barcode (or type it and press Enter)</label>'
                '<input id="barcode" name="barcode" autofocus autocomplete="off" spellcheck="false"'
                ' autocapitalize="off" required maxlength="64">'
                f'<label>Mass, kg (optional) <input id="mass_kg" name="mass_kg" inputmode="decimal" size="6"'
                f' value="{h(mass_kg)}"></label>'
                '<button type="submit" id="receive">Receive</button></form>')
    body = (f"{scan}<h2>Awaiting receipt ({len(queue)})</h2>{sample_table(queue, tz, table_id='queue')}"
            f"<h2>Received, awaiting a result ({len(awaiting_result)})</h2>"
            f"{sample_table(awaiting_result, tz, table_id='awaiting-result')}")
    return layout("Samples awaiting receipt", body, user=user, csrf=csrf, flashes=flashes)


def sample_page(row: SampleRow, history: Sequence[HistoryEntry], results: Sequence[LabResult],
                photos: dict[int, StoredPhoto], *, user: User, csrf: str, can_edit: bool, tz: dt.tzinfo | None,
                flashes: Iterable[tuple[str, str]] = (), form: dict[str, str] | None = None) -> str:
    form = form or {}
    lot = f'<a href="{h(lot_url(row.lot_id))}">{h(row.lot_id)}</a>' if row.lot_id else "—"
    details = [
        ("Barcode", f"<code>{h(row.barcode)}</code>"), ("Status", status_cell(row.status)),
        ("Kind", h(row.kind)), ("Lane", h(row.lane)), ("Lot", lot),
        ("Vessel / voyage / hold", h(" / ".join(v for v in (row.vessel, row.voyage, row.hold) if v) or "—")),
        ("Bill of lading", h(row.bill_of_lading or "—")), ("Cut at", h(format_time(row.created_s, tz))),
        ("Belt position", "—" if row.belt_position_m is None else f"{row.belt_position_m:.1f} m"),
        ("Tonnage at cut", "—" if row.tonnage_t is None else f"{row.tonnage_t:.1f} t"),
        ("Event", h(row.event_id or "—")), ("Likely class", h(row.likely_class or "—")),
        ("Scores", h(", ".join(f"{k} {v:.3g}" for k, v in row.scores.items()) or "—")),
        ("Model", h(row.model_version or "—")), ("Cup / seal", h(f"{row.cup or '—'} / {row.seal or '—'}")),
        ("Mass", "—" if row.mass_kg is None else f"{row.mass_kg:g} kg"),
    ]
    parts = ['<table id="details">' + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in details) + "</table>",
             f'<p class="no-print"><a href="/sample/{row.sample_id}/label" id="label-link">Print label</a></p>',
             "<h2>Custody history</h2><table id=\"history\"><tr><th>Status</th><th>Who</th><th>When</th>"
             "<th>Note</th></tr>"
             + "".join(f"<tr><td>{status_cell(e.status)}</td><td>{h(e.who)}</td><td>{h(format_time(e.at_s, tz))}</td>"
                       f"<td>{h(e.note)}</td></tr>" for e in history) + "</table>"]
    parts.append("<h2>Lab results</h2>")
    if results:
        rows = []
        for r in results:
            photo = photos.get(r.id)
            photo_cell = (f'<a href="/sample/{row.sample_id}/photo/{r.id}">photo</a> '
                          f'<small>sha256 {h(photo.sha256[:16])}…</small>' if photo else "")
            rows.append(f'<tr data-result="{r.id}"><td>{"yes" if r.contaminant_found else "no"}</td>'
                        f"<td>{h(r.contaminant_type)}</td>"
                        f"<td>{'' if r.mass_fraction is None else f'{r.mass_fraction * 100:g} %'}</td>"
                        f"<td>{h(r.note)}</td><td>{h(r.who)}</td><td>{h(format_time(r.at_s, tz))}</td>"
                        f"<td>{photo_cell}</td></tr>")
        parts.append('<table id="results"><tr><th>Contaminant</th><th>Type</th><th>Mass fraction</th><th>Note</th>'
                     "<th>Who</th><th>When</th><th>Photo</th></tr>" + "".join(rows) + "</table>")
        if len(results) > 1:
            parts.append("<p>The last result counts; earlier ones stay on record.</p>")
    else:
        parts.append('<p id="no-results">No result yet.</p>')
    if can_edit and row.status in ("sealed", "collected"):
        parts.append(f'<form method="post" action="/receive" class="no-print">{csrf_field(csrf)}'
                     f'<input type="hidden" name="barcode" value="{h(row.barcode)}">'
                     '<button type="submit" id="receive-here">Receive this sample</button></form>')
    if can_edit and row.status in ("received", "analysed"):
        found = form.get("contaminant_found", "")
        title = "Enter the result" if row.status == "received" else "Enter a corrected result"
        parts.append(
            f'<form method="post" action="/sample/{row.sample_id}/result" enctype="multipart/form-data"'
            f' id="result-form" class="no-print">{csrf_field(csrf)}<fieldset><legend>{title}</legend>'
            "<p>Contaminant found?"
            f'<label><input type="radio" name="contaminant_found" value="yes" id="found-yes"'
            f'{" checked" if found == "yes" else ""} required> yes</label>'
            f'<label><input type="radio" name="contaminant_found" value="no" id="found-no"'
            f'{" checked" if found == "no" else ""}> no</label></p>'
            f'<label>Type <input name="contaminant_type" id="contaminant_type" list="contaminant-types"'
            f' value="{h(form.get("contaminant_type", ""))}"></label>'
            '<datalist id="contaminant-types"><option value="wood"><option value="plastic"><option value="rubber">'
            '<option value="steel"><option value="clay"><option value="coal"></datalist>'
            f'<label>Mass fraction, % w/w <input name="mass_fraction_pct" id="mass_fraction_pct" inputmode="decimal"'
            f' size="8" value="{h(form.get("mass_fraction_pct", ""))}"></label>'
            f'<label>Note{" (required for a correction: what changed and why)" if row.status == "analysed" else ""}'
            f'<br><textarea name="note" id="note" rows="3" cols="60">{h(form.get("note", ""))}</textarea></label>'
            '<label>Photo (JPEG, PNG or WebP, optional) <input type="file" name="photo" id="photo"'
            ' accept="image/jpeg,image/png,image/webp"></label>'
            '<button type="submit" id="save-result">Save result</button></fieldset></form>')
    if can_edit and row.status == "analysed":
        parts.append(f'<form method="post" action="/sample/{row.sample_id}/status" class="no-print">'
                     f'{csrf_field(csrf)}<input type="hidden" name="status" value="archived">'
                     '<button type="submit" id="archive">Archive (retained sample stored)</button></form>')
    return layout(f"Sample {row.sample_id}", "".join(parts), user=user, csrf=csrf, flashes=flashes)


def search_page(query: SearchQuery, rows: Sequence[SampleRow] | None, *, user: User, csrf: str,
                tz: dt.tzinfo | None, flashes: Iterable[tuple[str, str]] = ()) -> str:
    options = "".join(f'<option value="{s}"{" selected" if s == query.status else ""}>{s}</option>'
                      for s in ("",) + SAMPLE_STATUSES)
    p = query.as_params()
    body = ('<form method="get" action="/search" id="search-form">'
            f'<label>Lot <input name="lot" id="lot" value="{h(query.lot)}"></label>'
            f'<label>Vessel or voyage <input name="vessel" id="vessel" value="{h(query.vessel)}"></label>'
            f'<label>Cut from <input type="date" name="from" id="from" value="{h(p.get("from", ""))}"></label>'
            f'<label>to <input type="date" name="to" id="to" value="{h(p.get("to", ""))}"></label>'
            f'<label>Status <select name="status" id="status">{options}</select></label>'
            '<button type="submit" id="search">Search</button></form>')
    if rows is not None:
        body += (f'<p><span id="count">{len(rows)}</span> samples · '
                 f'<a href="{h("/export.csv?" + urlencode(p))}" id="export">Export CSV</a></p>'
                 + sample_table(rows, tz, table_id="search-results"))
    return layout("Search samples", body, user=user, csrf=csrf, flashes=flashes)


def lot_page(lot: LotSummary, *, user: User, csrf: str, tz: dt.tzinfo | None) -> str:
    counts = " · ".join(f"{status} {lot.per_status[status]}" for status in SAMPLE_STATUSES if status in lot.per_status)
    first = lot.samples[0]
    body = (f'<p id="lot-summary">{len(lot.samples)} samples ({h(counts)}); '
            f'{lot.contaminated} with a contaminant found. Vessel {h(lot.vessel or "—")}, voyage '
            f'{h(first.voyage or "—")}, bill of lading {h(first.bill_of_lading or "—")}.</p>'
            f'<p><a href="{h("/export.csv?" + urlencode({"lot_id": lot.lot_id}))}" id="export">Export CSV</a></p>'
            + sample_table(lot.samples, tz, table_id="lot-samples", results=lot.results))
    return layout(f"Lot {lot.lot_id}", body, user=user, csrf=csrf)


def label_page(row: SampleRow, *, user: User, csrf: str) -> str:
    body = (f'<div class="label-sheet"><img src="/sample/{row.sample_id}/label.svg" id="label"'
            f' alt="label {h(row.barcode)}"></div>'
            '<p class="no-print"><button type="button" id="print-label">Print</button> '
            f'(62 × 29 mm label; set the printer to 100 % scale) · <a href="/sample/{row.sample_id}">back</a></p>')
    return layout(f"Label {row.barcode}", body, user=user, csrf=csrf)


def label_lines(row: SampleRow, tz: dt.tzinfo | None) -> list[str]:
    lot = " · ".join(v for v in (row.lot_id or "", row.vessel, f"hold {row.hold}" if row.hold else "") if v)
    return [f"Sample {row.sample_id} · {row.kind} · lane {row.lane}", lot or "no lot",
            f"cut {format_time(row.created_s, tz)[:16]}"]


def audit_page(entries: Sequence[AccessEntry], *, user: User, csrf: str, tz: dt.tzinfo | None) -> str:
    rows = "".join(f"<tr><td>{h(format_time(e.at_s, tz))}</td><td>{h(e.who)}</td><td>{h(e.action)}</td>"
                   f"<td>{'ok' if e.ok else 'refused'}</td><td>{h(e.detail)}</td><td>{h(e.remote)}</td></tr>"
                   for e in entries)
    body = ("<p>Sign-ins, refusals, exports and label prints, newest first. Custody changes are in each sample's "
            'history.</p><table id="access-log"><tr><th>When</th><th>Who</th><th>Action</th><th></th><th>Detail</th>'
            f"<th>From</th></tr>{rows}</table>")
    return layout("Access log", body, user=user, csrf=csrf)


def lot_url(lot_id: str) -> str:
    return "/lot?" + urlencode({"id": lot_id})
