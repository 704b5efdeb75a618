"""How a lot report looks: a self-contained HTML page and a PDF, with the same two plots.

The HTML embeds its plots as PNG (base64), so the one file can be mailed or
archived. The PDF is written by matplotlib's PdfPages (text pages, then the
plots), so no PDF library beyond matplotlib is needed. Plots are drawn on
`matplotlib.figure.Figure` objects with the Agg canvas; pyplot's global state
is never touched, so rendering is safe in a server thread.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.util
import io
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from dashboards.lot_report import (LAB_NONE, OUTAGE_BELT_LINK, OUTAGE_EDGE_OFFLINE, OUTAGE_NO_STATUS,
                                   OUTAGE_RADIATION_FAULT, OUTAGE_RADIATION_LINK, OUTAGE_ROBOT_LINK,
                                   STATUS_SILENCE_S, EventEntry, LotReport, ReportError, SampleEntry)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

UTC = dt.timezone.utc
# Outage rows of the health plot, top to bottom.
OUTAGE_ROWS = (OUTAGE_BELT_LINK, OUTAGE_ROBOT_LINK, OUTAGE_RADIATION_LINK, OUTAGE_RADIATION_FAULT, OUTAGE_EDGE_OFFLINE,
               OUTAGE_NO_STATUS)
# Event classes in colours that are neither the lab's red (contaminant found) nor its green (clean).
_CLASS_PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_LAB_STYLE = {  # lab outcome -> (face colour, edge colour, label)
    "contaminated": ("#c0392b", "#7b241c", "lab: contaminant found"),
    "clean": ("#27ae60", "#196f3d", "lab: no contaminant"),
    "pending": ("#ffffff", "#34495e", "lab result pending"),
    "none": ("#95a5a6", "#95a5a6", "missed or failed: no sample"),
}
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 78em;
       color: #1b2631; line-height: 1.35; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #aab7b8; margin-top: 1.6em; }
p.summary { font-size: 1.25em; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #d5dbdb; padding: 0.25em 0.45em; text-align: left; vertical-align: top; }
th { background: #eef2f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1.2em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
ol.custody { margin: 0; padding-left: 1.2em; } .muted { color: #7f8c8d; }
.bad { color: #c0392b; font-weight: 600; } .good { color: #196f3d; }
img.plot { max-width: 100%; border: 1px solid #d5dbdb; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; } tr { break-inside: avoid; } }
"""


def _require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise ReportError("the lot report draws its plots with matplotlib, which is not installed: "
                          "pip install 'orelane[calibration]' (or pip install matplotlib)")


# ---------------------------------------------------------------------------------------------------- formatting


def fmt_time(seconds: float | None, tz: dt.tzinfo = UTC) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def fmt_tonnes(tonnes: float | None) -> str:
    return "-" if tonnes is None else f"{tonnes:,.1f} t"


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def fmt_period(start_s: float, end_s: float | None, tz: dt.tzinfo) -> str:
    return f"{fmt_time(start_s, tz)} to {fmt_time(end_s, tz) if end_s is not None else 'now (in progress)'}"


def evidence_text(event: EventEntry) -> str:
    ev = event.evidence
    if not ev.searched:
        return f"not searched ({event.end_m - event.start_m:,.0f} m of belt)"
    parts = []
    if ev.spectra:
        parts.append(f"spectra seq {ev.seq_first}-{ev.seq_last} ({ev.spectra} spectra, {ev.flagged_spectra} flagged)")
    else:
        parts.append("no spectra stored in its stretch")
    if ev.frame_seqs:
        shown = ", ".join(str(s) for s in ev.frame_seqs[:12])
        more = f" and {len(ev.frame_seqs) - 12} more" if len(ev.frame_seqs) > 12 else ""
        parts.append(f"frames {shown}{more}")
    else:
        parts.append("no camera frames with objects")
    return "; ".join(parts)


def lab_text(sample: SampleEntry) -> str:
    result = sample.result
    if result is None:
        return f"no sample ({sample.status})" if sample.lab_status == LAB_NONE else f"pending (sample {sample.status})"
    if not result.contaminant_found:
        text = "no contaminant found"
    else:
        text = "contaminant found: " + (result.contaminant_type or "unspecified")
        if result.mass_fraction is not None:
            text += f", {100 * result.mass_fraction:.3g} % by mass"
    if result.note:
        text += f" ({result.note})"
    superseded = len(sample.results) - 1
    if superseded:
        text += f"; replaces {superseded} earlier result{'s' if superseded > 1 else ''}"
    return text


def _declared_share(report: LotReport) -> str:
    declared = report.declared_tonnage_t
    return f" ({100 * report.tonnage_t / declared:.1f} % of the declared {declared:,.1f} t)" if declared else ""


def _lab_key(sample: SampleEntry) -> str:
    if sample.result is not None:
        return "contaminated" if sample.result.contaminant_found else "clean"
    return "none" if sample.lab_status == LAB_NONE else "pending"


# ---------------------------------------------------------------------------------------------------- plots


def _class_colours(report: LotReport) -> dict[str, str]:
    classes = sorted({e.likely_class for e in report.events})
    return {name: _CLASS_PALETTE[i % len(_CLASS_PALETTE)] for i, name in enumerate(classes)}


def plot_tonnage_axis(report: LotReport) -> "Figure":
    """Events (triangles, coloured by class) and samples (circles routine, diamonds targeted, coloured by lab
    outcome) along the tonnes of the lot that went over each lane."""
    _require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    lanes = report.lanes
    fig = Figure(figsize=(10, 1.2 + 1.9 * len(lanes)), layout="constrained")
    axes = fig.subplots(len(lanes), 1, squeeze=False)[:, 0]
    colours = _class_colours(report)
    for ax, lane in zip(axes, lanes):
        events = [e for e in report.events if e.lane == lane.lane and e.lot_tonnage_t is not None]
        samples = [s for s in report.samples if s.lane == lane.lane and s.lot_tonnage_t is not None]
        for e in events:
            ax.plot([e.lot_tonnage_t], [1], marker="v", markersize=11, linestyle="none",
                    color=colours[e.likely_class], markeredgecolor="#1b2631")
            ax.annotate(e.event_id, (e.lot_tonnage_t, 1), xytext=(0, 9), textcoords="offset points",
                        ha="center", fontsize=7)
        for s in samples:
            face, edge, _ = _LAB_STYLE[_lab_key(s)]
            marker = "X" if _lab_key(s) == "none" else ("D" if s.kind == "targeted" else "o")
            ax.plot([s.lot_tonnage_t], [0], marker=marker, markersize=8 if s.kind == "targeted" else 6,
                    linestyle="none", markerfacecolor=face, markeredgecolor=edge)
            if s.kind == "targeted":
                ax.annotate(str(s.sample_id), (s.lot_tonnage_t, 0), xytext=(0, -13), textcoords="offset points",
                            ha="center", fontsize=7)
        right = max([lane.tonnage_t] + [e.lot_tonnage_t for e in events] + [s.lot_tonnage_t for s in samples])
        ax.set_xlim(-0.02 * max(right, 1.0), max(right, 1.0) * 1.03)
        ax.set_ylim(-0.8, 1.8)
        ax.set_yticks([0, 1], ["samples", "events"])
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{lane.lane}: {lane.tonnage_t:,.1f} t of lot {report.lot_id}", fontsize=10, loc="left")
        ax.set_xlabel(f"tonnes of the lot over {lane.lane} (belt-scale totalizer), t")
    handles = [Line2D([], [], marker="v", linestyle="none", color=c, markeredgecolor="#1b2631", label=f"event: {n}")
               for n, c in colours.items()]
    handles += [Line2D([], [], marker="o", linestyle="none", markerfacecolor="white", markeredgecolor="#34495e",
                       label="routine sample"),
                Line2D([], [], marker="D", linestyle="none", markerfacecolor="white", markeredgecolor="#34495e",
                       label="targeted sample")]
    handles += [Line2D([], [], marker="s", linestyle="none", markerfacecolor=face, markeredgecolor=edge, label=label)
                for face, edge, label in _LAB_STYLE.values()]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    fig.suptitle(f"Lot {report.lot_id}: events and samples along the tonnage", fontsize=12)
    return fig


def plot_health(report: LotReport, tz: dt.tzinfo = UTC) -> "Figure":
    """Per lane: the spectrometer's reference age over the discharge, and the outages as bars."""
    _require_matplotlib()
    from matplotlib.dates import DateFormatter, date2num
    from matplotlib.figure import Figure

    def num(seconds: float) -> float:
        return date2num(dt.datetime.fromtimestamp(seconds, UTC))

    lanes = report.lanes
    fig = Figure(figsize=(10, 0.8 + 3.6 * len(lanes)), layout="constrained")
    grid = fig.add_gridspec(2 * len(lanes), 1, height_ratios=[2, 1.7] * len(lanes))
    tz_name = dt.datetime.fromtimestamp(report.as_of_s, tz).strftime("%Z")
    for i, lane in enumerate(lanes):
        age_ax = fig.add_subplot(grid[2 * i])
        bar_ax = fig.add_subplot(grid[2 * i + 1], sharex=age_ax)
        readings = [r for r in report.health_readings if r.lane == lane.lane]
        times, ages, previous = [], [], None
        for r in readings:
            if r.reference_age_s is None or r.reference_age_s < 0:
                continue
            if previous is not None and r.time_s - previous > STATUS_SILENCE_S:
                times.append(num(previous + STATUS_SILENCE_S / 2))
                ages.append(math.nan)  # no line across a silence: nothing is known there
            times.append(num(r.time_s))
            ages.append(r.reference_age_s / 60)
            previous = r.time_s
        if times:
            age_ax.plot(times, ages, color="#2874a6", linewidth=1.2, drawstyle="steps-post")
        missing = [num(r.time_s) for r in readings if r.reference_age_s is not None and r.reference_age_s < 0]
        if missing:
            age_ax.plot(missing, [0] * len(missing), linestyle="none", marker="|", color="#c0392b",
                        label="no reference")
            age_ax.legend(fontsize=7, loc="upper right")
        age_ax.set_ylabel("reference age, min", fontsize=8)
        age_ax.set_title(f"{lane.lane}: instrument health during the discharge", fontsize=10, loc="left")
        age_ax.grid(alpha=0.3)
        age_ax.tick_params(labelbottom=False)
        for period in lane.periods:
            end = period.end_s if period.end_s is not None else report.as_of_s
            for ax in (age_ax, bar_ax):
                ax.axvspan(num(period.start_s), num(end), color="#d4efdf", alpha=0.5, zorder=0)
        health = next(h for h in report.health if h.lane == lane.lane and h.site == lane.site)
        for row, kind in enumerate(OUTAGE_ROWS):
            spans = [(num(o.start_s), max(num(o.end_s) - num(o.start_s), 1e-5)) for o in health.outages
                     if o.kind == kind]
            if spans:
                bar_ax.broken_barh(spans, (row - 0.35, 0.7), color="#c0392b")
        bar_ax.set_yticks(range(len(OUTAGE_ROWS)), OUTAGE_ROWS, fontsize=8)
        bar_ax.set_ylim(len(OUTAGE_ROWS) - 0.5, -0.5)
        bar_ax.grid(axis="x", alpha=0.3)
        bar_ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=tz))
        bar_ax.set_xlabel(f"time ({tz_name}); green: discharging the lot, red: outage", fontsize=8)
    fig.suptitle(f"Lot {report.lot_id}: instrument health over time", fontsize=12)
    return fig


def figure_png(fig: "Figure", dpi: int = 110) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------- HTML


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (),
           empty: str = "none") -> str:
    """A table of already-escaped cells; `numeric` columns align right."""
    rows = list(rows)
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render_html(report: LotReport, tz: dt.tzinfo = UTC, plots: Sequence[bytes] | None = None) -> str:
    """The report as one self-contained HTML page (plots embedded as PNG)."""
    if plots is None:
        plots = (figure_png(plot_tonnage_axis(report)), figure_png(plot_health(report, tz)))
    t = lambda s: _e(fmt_time(s, tz))  # noqa: E731
    declared = report.declared_tonnage_t
    share = _declared_share(report)
    facts = [
        ("Lot", report.lot_id), ("Vessel", report.vessel), ("Voyage", report.voyage),
        ("Declared brand", report.declared_brand), ("Origin", report.origin),
        ("Declared tonnage", fmt_tonnes(declared)), ("Holds", ", ".join(report.holds) or "-"),
        ("Bills of lading", ", ".join(report.bills_of_lading) or "-"), ("Site", report.site),
        ("Lanes", ", ".join(lane.lane for lane in report.lanes)),
        ("Discharge start", fmt_time(report.discharge_start_s, tz)),
        ("Discharge end", fmt_time(report.discharge_end_s, tz) if report.discharge_end_s is not None
         else "in progress"),
        ("Tonnage (belt scales)", fmt_tonnes(report.tonnage_t) + share),
        ("Report as of", fmt_time(report.as_of_s, tz)),
    ]
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>Lot {_e(report.lot_id)}: inspection report</title><style>{_CSS}</style></head><body>",
             f"<h1>Lot {_e(report.lot_id)}</h1>",
             f'<p class="muted">{_e(report.vessel)}, voyage {_e(report.voyage)}: inspection report of the '
             f"discharge</p>",
             '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>",
             "<h2>Summary</h2>", f'<p class="summary">{_e(report.summary)}.</p>']
    if report.notes:
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")

    parts.append("<h2>Discharge by lane</h2>")
    parts.append(_table(
        ("lane", "discharging", "tonnage", "totalizer first / last", "totalizer resets", "belt readings"),
        ([_e(d.lane), "<br>".join(_e(fmt_period(p.start_s, p.end_s, tz) + (f" ({p.ended_by})" if p.ended_by else ""))
                                  for p in d.periods),
          _e(fmt_tonnes(d.tonnage_t)), _e(f"{fmt_tonnes(d.totalizer_first_t)} / {fmt_tonnes(d.totalizer_last_t)}"),
          _e(d.totalizer_resets), _e(d.belt_readings)] for d in report.lanes), numeric=(2, 4, 5)))

    parts.append("<h2>Contamination events along the tonnage</h2>")
    parts.append(_img(plots[0], "events and samples along the tonnage of each lane"))
    parts.append(_table(
        ("event", "lane", "class", "state", "lot tonnage", "belt stretch", "peak score", "opened", "closed",
         "evidence", "targeted samples"),
        ([_e(e.event_id) + ("" if e.lot_stamped else '<br><span class="muted">no lot id from the edge</span>'),
          _e(e.lane), _e(e.likely_class), _e(e.state), _e(fmt_tonnes(e.lot_tonnage_t)),
          _e(f"{e.start_m:,.1f}-{e.end_m:,.1f} m (peak {e.peak_position_m:,.1f} m; totalizer {e.totalizer_t:,.1f} t)"),
          _e(f"{e.peak_score:.2f}"), t(e.opened_s), t(e.closed_s), _e(evidence_text(e)),
          _e(", ".join(str(i) for i in e.sample_ids)) or '<span class="bad">none</span>'] for e in report.events),
        numeric=(4, 6), empty="No contamination events during the discharge."))

    parts.append("<h2>Samples and chain of custody</h2>")
    sample_rows = []
    for s in report.samples:
        custody = '<ol class="custody">' + "".join(
            f"<li>{t(c.at_s)}: <b>{_e(c.status)}</b> by {_e(c.who)}{(' - ' + _e(c.note)) if c.note else ''}</li>"
            for c in s.custody) + "</ol>"
        key = _lab_key(s)
        lab_class = {"contaminated": "bad", "clean": "good"}.get(key, "muted")
        physical = ", ".join(f"{k} {v}" for k, v in (("cup", s.cup), ("seal", s.seal),
                                                      ("mass", f"{s.mass_kg:g} kg" if s.mass_kg else None)) if v)
        sample_rows.append([
            _e(s.sample_id) + f"<br><code>{_e(s.barcode)}</code>", _e(s.kind), _e(s.lane), _e(s.event_id or "-"),
            _e(fmt_tonnes(s.lot_tonnage_t)), _e(s.status), f'<span class="{lab_class}">{_e(lab_text(s))}</span>',
            custody, _e(physical or "-")])
    parts.append(_table(("sample", "kind", "lane", "event", "lot tonnage", "status", "lab", "custody",
                         "cup, seal, mass"), sample_rows, numeric=(4,), empty="No samples registered for this lot."))
    if report.unregistered_sample_ids:
        parts.append(f'<p class="bad">Sample records on the lot\'s lanes that the registry does not list for this '
                     f'lot: {_e(", ".join(str(i) for i in report.unregistered_sample_ids))}</p>')

    parts.append("<h2>Models in use</h2>")
    parts.append(_table(("lane", "model version", "spectra judged", "model id", "sha256", "deployed"),
                        ([_e(m.lane), _e(m.model_version), _e(f"{m.spectra:,}"), _e(m.model_id or "-"),
                          f"<code>{_e(m.sha256[:16])}</code>" if m.sha256 else "-", t(m.deployed_s)]
                         for m in report.models), numeric=(2,), empty="No spectrum results stored for the discharge."))

    parts.append("<h2>Instrument health during the discharge</h2>")
    parts.append(_table(
        ("lane", "status reports", "max reference age", "reports without reference", "stale-reference reports",
         "sequence gaps", "spectra received", "outages"),
        ([_e(h.lane), _e(h.status_reports),
          _e(fmt_duration(h.max_reference_age_s) if h.max_reference_age_s is not None else "-"),
          _e(h.reports_without_reference), _e(h.reference_stale_reports), _e(h.seq_gaps),
          _e(f"{h.spectra_in:,}" if h.spectra_in is not None else "-"),
          _e(f"{len(h.outages)} ({fmt_duration(sum(o.duration_s for o in h.outages))})" if h.outages else "none")]
         for h in report.health), numeric=(1, 3, 4, 5, 6)))
    parts.append(_table(("lane", "outage", "from", "to", "duration"),
                        ([_e(o.lane), _e(o.kind), t(o.start_s), t(o.end_s) + (" (still down)" if o.ongoing else ""),
                          _e(fmt_duration(o.duration_s))] for o in report.outages),
                        numeric=(4,), empty="No link outages, offline edge or status silences."))
    parts.append(_img(plots[1], "reference age and outages over time for each lane"))
    parts.append(f'<p class="muted">Made by orelane report from {_e("; ".join(report.data_sources) or "-")}, '
                 f"as of {t(report.as_of_s)}.</p></body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------- PDF


def report_lines(report: LotReport, tz: dt.tzinfo = UTC) -> list[tuple[str, str]]:
    """The report as (style, text) lines for the PDF's text pages; style is title, heading or text."""
    out: list[tuple[str, str]] = [("title", f"Lot {report.lot_id}: inspection report"),
                                  ("text", f"{report.vessel}, voyage {report.voyage}; site {report.site}")]
    text = lambda s: out.append(("text", s))  # noqa: E731
    heading = lambda s: out.append(("heading", s))  # noqa: E731
    text(f"Declared: {report.declared_brand} from {report.origin}, {fmt_tonnes(report.declared_tonnage_t)}; "
         f"holds {', '.join(report.holds) or '-'}; bills of lading {', '.join(report.bills_of_lading) or '-'}")
    text(f"Discharge: {fmt_period(report.discharge_start_s, report.discharge_end_s, tz)} on "
         f"{', '.join(d.lane for d in report.lanes)}; belt scales {fmt_tonnes(report.tonnage_t)}"
         + _declared_share(report))
    text(f"Report as of {fmt_time(report.as_of_s, tz)}")
    heading("Summary")
    text(report.summary + ".")
    for note in report.notes:
        text("- " + note)
    heading("Discharge by lane")
    for d in report.lanes:
        text(f"{d.lane}: {fmt_tonnes(d.tonnage_t)} from {d.belt_readings} belt readings, totalizer "
             f"{fmt_tonnes(d.totalizer_first_t)} to {fmt_tonnes(d.totalizer_last_t)}, {d.totalizer_resets} resets")
        for p in d.periods:
            text(f"    {fmt_period(p.start_s, p.end_s, tz)}" + (f" ({p.ended_by})" if p.ended_by else ""))
    heading("Contamination events")
    if not report.events:
        text("none")
    for e in report.events:
        text(f"{e.event_id} on {e.lane}: {e.likely_class}, {e.state}, at {fmt_tonnes(e.lot_tonnage_t)} of the lot, "
             f"belt {e.start_m:,.1f}-{e.end_m:,.1f} m, peak score {e.peak_score:.2f}"
             + ("" if e.lot_stamped else " (no lot id from the edge)"))
        text(f"    opened {fmt_time(e.opened_s, tz)}, closed {fmt_time(e.closed_s, tz)}; evidence: {evidence_text(e)}; "
             f"targeted samples: {', '.join(str(i) for i in e.sample_ids) or 'none'}")
    heading("Samples and chain of custody")
    if not report.samples:
        text("none")
    for s in report.samples:
        text(f"Sample {s.sample_id} ({s.barcode}), {s.kind} on {s.lane}"
             + (f" for event {s.event_id}" if s.event_id else "")
             + f", at {fmt_tonnes(s.lot_tonnage_t)} of the lot: {s.status}; lab: {lab_text(s)}")
        for c in s.custody:
            text(f"    {fmt_time(c.at_s, tz)}  {c.status:<9} by {c.who}" + (f" - {c.note}" if c.note else ""))
    if report.unregistered_sample_ids:
        text("Sample records the registry does not list for this lot: "
             + ", ".join(str(i) for i in report.unregistered_sample_ids))
    heading("Models in use")
    for m in report.models:
        text(f"{m.lane}: {m.model_version} judged {m.spectra:,} spectra" + (f" (model {m.model_id}, sha256 "
                                                                             f"{m.sha256[:16]})" if m.model_id else ""))
    heading("Instrument health")
    for h in report.health:
        age = fmt_duration(h.max_reference_age_s) if h.max_reference_age_s is not None else "-"
        text(f"{h.lane}: {h.status_reports} status reports, max reference age {age}, "
             f"{h.reports_without_reference} without reference, {h.seq_gaps} sequence gaps, "
             f"{h.spectra_in if h.spectra_in is not None else '-'} spectra received")
        for o in h.outages:
            text(f"    {o.kind}: {fmt_time(o.start_s, tz)} to {fmt_time(o.end_s, tz)} ({fmt_duration(o.duration_s)})"
                 + (", still down" if o.ongoing else ""))
    text("")
    text("Sources: " + ("; ".join(report.data_sources) or "-"))
    return out


_PAGE_IN = (8.27, 11.69)  # A4 portrait
_STYLE = {"title": (15, "bold", "sans-serif", 0.34), "heading": (11, "bold", "sans-serif", 0.28),
          "text": (7.5, "normal", "monospace", 0.145)}  # size pt, weight, family, line height in
_WRAP = 108  # monospace characters across the text width at 7.5 pt


def _text_pages(lines: Sequence[tuple[str, str]], title: str) -> list["Figure"]:
    from matplotlib.figure import Figure
    top, bottom, left = _PAGE_IN[1] - 0.7, 0.75, 0.6
    pages: list[Figure] = []
    fig, y = None, 0.0
    for style, line in lines:
        size, weight, family, height = _STYLE[style]
        wrapped = textwrap.wrap(line, _WRAP, subsequent_indent="      ") if style == "text" and line else [line]
        for piece in wrapped:
            if style == "heading":
                y -= 0.12
            if fig is None or y - height < bottom:
                fig = Figure(figsize=_PAGE_IN)
                pages.append(fig)
                y = top
            y -= height
            fig.text(left / _PAGE_IN[0], y / _PAGE_IN[1], piece, fontsize=size, fontweight=weight, family=family,
                     va="baseline")
    for number, page in enumerate(pages, 1):
        page.text(0.5, 0.35 / _PAGE_IN[1], f"{title} - text page {number} of {len(pages)}", ha="center",
                  fontsize=7, color="#7f8c8d")
    return pages


def render_pdf(report: LotReport, path: str | Path, tz: dt.tzinfo = UTC,
               figures: Sequence["Figure"] | None = None) -> Path:
    """The report as a PDF: text pages (facts, summary, events, samples with custody, models, health), then
    the plots, one per page."""
    _require_matplotlib()
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages
    figures = list(figures) if figures is not None else [plot_tonnage_axis(report), plot_health(report, tz)]
    path = Path(path)
    title = f"Lot {report.lot_id}: inspection report"
    metadata = {"Title": title, "Subject": report.summary, "Creator": "orelane report",
                "CreationDate": dt.datetime.fromtimestamp(report.as_of_s, UTC)}
    # TrueType (42) rather than Type 3 fonts, so the archived document's text can be searched and copied
    with matplotlib.rc_context({"pdf.fonttype": 42}), PdfPages(path, metadata=metadata) as pdf:
        for page in _text_pages(report_lines(report, tz), title) + figures:
            pdf.savefig(page)
    return path


def write_report(report: LotReport, out_dir: str | Path, *, tz: dt.tzinfo = UTC, stem: str | None = None
                 ) -> list[Path]:
    """Write <stem>.html and <stem>.pdf under out_dir (created if needed); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"lot-{report.lot_id}"
    figures = [plot_tonnage_axis(report), plot_health(report, tz)]
    html_path = out / f"{stem}.html"
    html_path.write_text(render_html(report, tz, [figure_png(f) for f in figures]), encoding="utf-8")
    return [html_path, render_pdf(report, out / f"{stem}.pdf", tz, figures)]
