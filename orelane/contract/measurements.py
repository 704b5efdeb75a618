"""InfluxDB measurements, their tags and fields, and how each MQTT message becomes points.

Tags stay bounded (site, lane, model version, decision, class, kind, status);
anything that grows without bound (sequence numbers, sample and event ids) is
a field. Writing the same point twice (same series, same timestamp) is harmless.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import numpy as np

from orelane.contract import ContractError, messages as m


class Point(NamedTuple):
    measurement: str
    tags: dict[str, str]
    fields: dict[str, Any]
    time_ns: int


# measurement -> (tags, fields); docs/interfaces.md renders this table.
MEASUREMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "spectrum_result": (("site", "lane", "model_version", "decision", "class"),
                        ("seq", "belt_position_m", "anomaly_score", "t2", "q", "class_score")),
    "spectrum_rejected": (("site", "lane", "topic_leaf"), ("seq", "reason")),
    "frame_result": (("site", "lane"), ("seq", "belt_position_m", "objects", "max_score")),
    "segment_result": (("site", "lane", "model_version", "class"),
                       ("start_m", "end_m", "n_spectra", "n_flagged", "nir_score", "camera_score", "score",
                        "seq_first", "seq_last", "frames", "tonnage_t")),
    "belt": (("site", "lane"), ("belt_position_m", "speed_m_s", "flow_t_h", "totalizer_t")),
    "contamination_event": (("site", "lane", "class", "state"),
                            ("event_id", "start_m", "end_m", "peak_position_m", "tonnage_t", "peak_score",
                             "lot_id")),
    "sample": (("site", "lane", "kind", "status"),
               ("sample_id", "belt_position_m", "tonnage_t", "event_id", "reason")),
    "lane_status": (("site", "lane"), ("online", "<health fields>")),
    "lot": (("site", "lane", "state"), ("lot_id", "vessel", "voyage", "declared_brand", "declared_tonnage_t",
                                         "origin")),
    "model_deployment": (("site", "lane", "model_version"), ("model_id", "sha256")),
    "dead_letter": (("site", "lane", "topic_leaf"), ("seq", "reason")),
    # written by ingest itself, not mapped from a message
    "ingest_health": (("site", "worker"), ("messages_in", "messages_refused", "points_written", "points_replayed",
                                           "batches_buffered", "buffer_bytes", "buffer_limit_bytes", "buffer_alarm",
                                           "buffer_full", "replay_lag_s", "unacked_messages", "dead_lettered_lines",
                                           "write_errors")),
}

# Topics ingest subscribes to; raw spectra and frames stay on the broker.
# Tags only some points of a measurement carry: a sample point has result_class once the lab analysed it.
OPTIONAL_TAGS: dict[str, tuple[str, ...]] = {"sample": ("result_class",)}

INGESTED_LEAVES = ("results/spectra", "results/frames", "results/segments", "belt", "events", "samples/record",
                   "status", "lot", "model/deploy", "deadletter")


# Timestamps a point may carry: 1970 to 2262 (the int64 nanosecond range InfluxDB stores).
MAX_TIMESTAMP_S = 9.2e9


def _s_to_ns(seconds: float) -> int:
    if not 0.0 <= seconds < MAX_TIMESTAMP_S:
        raise ContractError(f"timestamp {seconds!r} s is outside 1970-2262")
    return int(round(seconds * 1e9))


# Health keys that become fields: plain identifiers ("time" is reserved by InfluxQL; "online" is derived).
_HEALTH_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) and -2**63 <= value < 2**63 or isinstance(value, float) and math.isfinite(value)


def spectrum_result_columns(res: m.SpectrumResults) -> dict[str, np.ndarray]:
    """Per-row values of a results batch, vectorised; ingest encodes them without a Python object per value."""
    names = np.array(list(res.class_names) + ["none"], dtype=object)
    ci = res.class_index.astype(np.int64)
    ci = np.where(ci == m.NO_CLASS, len(res.class_names), ci)
    scores = res.class_scores
    if scores.shape[1]:
        best = scores[np.arange(len(res)), np.minimum(ci, scores.shape[1] - 1)]
        best = np.where(ci < scores.shape[1], best, 0.0)
    else:
        best = np.zeros(len(res), dtype=np.float32)
    return {"class": names[ci], "decision": np.array(m.DECISIONS, dtype=object)[res.decision],
            "class_score": best}


def points_for(site: str, lane: str, leaf: str, payload: bytes) -> list[Point]:
    """Decode one ingested message into points; raise ContractError for a malformed payload."""
    base = {"site": site, "lane": lane}
    if leaf == "results/spectra":
        res = m.SpectrumResults.from_bytes(payload)
        derived = spectrum_result_columns(res)
        return [Point("spectrum_result",
                      {**base, "model_version": res.model_version, "decision": str(derived["decision"][i]),
                       "class": str(derived["class"][i])},
                      {"seq": int(res.seq[i]), "belt_position_m": float(res.belt_position_m[i]),
                       "anomaly_score": float(res.anomaly_score[i]), "t2": float(res.t2[i]), "q": float(res.q[i]),
                       "class_score": float(derived["class_score"][i])},
                      int(res.timestamp_ns[i])) for i in range(len(res))]
    if leaf == "results/frames":
        fr = m.FrameResult.from_json(payload)
        return [Point("frame_result", base, {"seq": fr.seq, "belt_position_m": fr.belt_position_m,
                                              "objects": len(fr.objects), "max_score": fr.max_score},
                      _s_to_ns(fr.timestamp_s))]
    if leaf == "results/segments":
        sr = m.SegmentResult.from_json(payload)
        fields = {name: getattr(sr, name) for name in MEASUREMENTS["segment_result"][1]}
        tags = {**base, "model_version": sr.model_version, "class": sr.likely_class or "none"}
        return [Point("segment_result", tags, fields, _s_to_ns(sr.timestamp_s))]
    if leaf == "belt":
        b = m.BeltState.from_json(payload)
        return [Point("belt", base, {"belt_position_m": b.belt_position_m, "speed_m_s": b.speed_m_s,
                                     "flow_t_h": b.flow_t_h, "totalizer_t": b.totalizer_t},
                      _s_to_ns(b.timestamp_s))]
    if leaf == "events":
        e = m.ContaminationEvent.from_json(payload)
        t = e.closed_s if e.state == "closed" and e.closed_s is not None else e.opened_s
        return [Point("contamination_event", {**base, "class": e.likely_class, "state": e.state},
                      {"event_id": e.event_id, "start_m": e.start_m, "end_m": e.end_m,
                       "peak_position_m": e.peak_position_m, "tonnage_t": e.tonnage_t, "peak_score": e.peak_score,
                       "lot_id": e.lot_id or ""}, _s_to_ns(t))]
    if leaf == "samples/record":
        r = m.SampleRecord.from_json(payload)
        fields: dict[str, Any] = {"sample_id": r.sample_id, "event_id": r.event_id or "", "reason": r.reason}
        if r.belt_position_m is not None:
            fields["belt_position_m"] = r.belt_position_m
        if r.tonnage_t is not None:
            fields["tonnage_t"] = r.tonnage_t
        # sample_id is a field, so two samples reaching one status in the same microsecond would share a
        # series and a time: the sub-microsecond digits carry sample_id % 1000 to keep them apart (idempotent).
        when_ns = _s_to_ns(r.timestamp_s) // 1000 * 1000 + r.sample_id % 1000
        tags = {**base, "kind": r.sample_kind, "status": r.status}
        if r.result_class is not None:  # only on 'analysed' records (the lab's result)
            tags["result_class"] = r.result_class
        return [Point("sample", tags, fields, when_ns)]
    if leaf == "status":
        st = m.LaneStatus.from_json(payload)
        fields = {"online": 1 if st.state == "online" else 0}
        fields.update({k: v for k, v in st.health.items() if _HEALTH_KEY.fullmatch(k) and k not in fields
                       and k != "time" and _is_number(v)})
        return [Point("lane_status", base, fields, _s_to_ns(st.timestamp_s))]
    if leaf == "lot":
        lot = m.Lot.from_json(payload)
        return [Point("lot", {**base, "state": lot.state},
                      {"lot_id": lot.lot_id, "vessel": lot.vessel, "voyage": lot.voyage,
                       "declared_brand": lot.declared_brand, "declared_tonnage_t": lot.declared_tonnage_t,
                       "origin": lot.origin}, _s_to_ns(lot.timestamp_s))]
    if leaf == "model/deploy":
        d = m.ModelDeployment.from_json(payload)
        return [Point("model_deployment", {**base, "model_version": d.version},
                      {"model_id": d.model_id, "sha256": d.sha256}, _s_to_ns(d.deployed_s))]
    if leaf == "deadletter":
        dl = m.DeadLetter.from_json(payload)
        leaf_of = dl.topic.split("/", 4)[-1] if dl.topic.count("/") >= 4 else dl.topic
        fields = {"reason": dl.reason, "seq": -1 if dl.seq is None else dl.seq}
        measurement = "spectrum_rejected" if leaf_of.startswith("spectra/") else "dead_letter"
        if dl.message_timestamp_ns is None:
            when_ns = _s_to_ns(dl.received_s)
        elif 0 <= dl.message_timestamp_ns <= m.MAX_TIMESTAMP_NS:
            when_ns = dl.message_timestamp_ns
        else:
            raise ContractError(f"dead_letter: message_timestamp_ns {dl.message_timestamp_ns} is outside 1970-2262 "
                                f"(0..{m.MAX_TIMESTAMP_NS} ns)")
        return [Point(measurement, {**base, "topic_leaf": leaf_of}, fields, when_ns)]
    raise ContractError(f"leaf {leaf!r} is not ingested; ingested leaves: {INGESTED_LEAVES}")
