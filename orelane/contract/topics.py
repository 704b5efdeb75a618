"""The MQTT topic tree, scoped by site and lane, with the QoS and retain flag of each topic."""

from __future__ import annotations

from dataclasses import dataclass

from orelane.contract import CONTRACT_VERSION, ContractError

ROOT = f"orelane/v{CONTRACT_VERSION}"


@dataclass(frozen=True)
class TopicSpec:
    """One leaf of the tree under orelane/v1/<site>/<lane>/."""

    leaf: str
    qos: int
    retained: bool
    payload: str  # the codec name in orelane.contract.messages
    producer: str


# The whole tree. Retained topics carry state a late subscriber needs at once.
TOPICS: dict[str, TopicSpec] = {
    spec.leaf: spec
    for spec in (
        TopicSpec("spectra/batch", 1, False, "spectrum_batch (binary)", "spectrometer"),
        TopicSpec("spectra/json", 1, False, "spectrum (JSON)", "spectrometer, people debugging"),
        # one retained topic per reference, so the broker keeps both the dark and the white frame
        TopicSpec("spectra/reference/dark", 1, True, "reference (JSON), reference = dark", "spectrometer"),
        TopicSpec("spectra/reference/white", 1, True, "reference (JSON), reference = white", "spectrometer"),
        TopicSpec("camera/frame", 1, False, "camera_frame (binary)", "camera"),
        TopicSpec("results/spectra", 1, False, "spectrum_results (binary)", "edge"),
        TopicSpec("results/frames", 1, False, "frame_result (JSON)", "edge"),
        TopicSpec("results/segments", 1, False, "segment_result (JSON), lanes set to results = \"segments\"",
                  "edge"),
        TopicSpec("belt", 0, False, "belt_state (JSON)", "edge"),
        TopicSpec("events", 1, False, "contamination_event (JSON)", "edge"),
        TopicSpec("samples/request", 1, False, "sample_request (JSON)", "edge"),
        TopicSpec("samples/record", 1, False, "sample_record (JSON)", "edge, lab desk"),
        TopicSpec("lot", 1, True, "lot (JSON)", "operator, customs system"),
        TopicSpec("model/deploy", 1, True, "model_deployment (JSON)", "engineer"),
        TopicSpec("status", 1, True, "lane_status (JSON), birth and last will", "edge"),
        TopicSpec("deadletter", 1, False, "dead_letter (JSON)", "any consumer"),
    )
}


def topic(site: str, lane: str, leaf: str) -> str:
    """The full topic name for one lane's leaf, e.g. orelane/v1/port-a/lane-1/spectra/batch."""
    if leaf not in TOPICS:
        raise ContractError(f"unknown topic leaf {leaf!r}; known: {', '.join(sorted(TOPICS))}")
    _check_ids(site, lane)
    return f"{ROOT}/{site}/{lane}/{leaf}"


def _check_ids(site: str, lane: str) -> None:
    for name, value in (("site", site), ("lane", lane)):
        if not value or any(c in value for c in "/+#") or value.startswith("$"):
            raise ContractError(f"{name} id {value!r} must be non-empty and contain no '/', '+', '#' or leading '$'")


def subscription(leaf: str, site: str = "+", lane: str = "+") -> str:
    """A filter for one leaf across sites and lanes (wildcards by default)."""
    return f"{ROOT}/{site}/{lane}/{leaf}"


def parse(topic_name: str) -> tuple[str, str, str]:
    """Split a contract topic into (site, lane, leaf); raise ContractError for anything else."""
    prefix = ROOT + "/"
    if not topic_name.startswith(prefix):
        raise ContractError(f"topic {topic_name!r} is not under {ROOT}/")
    parts = topic_name[len(prefix):].split("/", 2)
    if len(parts) != 3 or parts[2] not in TOPICS:
        raise ContractError(f"topic {topic_name!r} is not <site>/<lane>/<leaf> with a known leaf")
    _check_ids(parts[0], parts[1])
    return parts[0], parts[1], parts[2]


def reference_leaf(reference: str) -> str:
    """The retained leaf of a dark or white reference frame."""
    return f"spectra/reference/{reference}"


def qos(leaf: str) -> int:
    return TOPICS[leaf].qos


def retained(leaf: str) -> bool:
    return TOPICS[leaf].retained
