"""Alarm limits: one place, read by the panels' thresholds and by the alert rules.

A panel turns red at exactly the value where the matching alert fires, so an
inspector never sees a green panel next to a firing alert. Change a limit
here, run `orelane dashboards build`, and both follow.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from orelane.config import LaneConfig

# The edge raises its health alarms at the lane's configured limits; panels and alert rules use the same
# defaults, so a site that changes a limit in its TOML should rebuild with the same numbers.
_LANE_DEFAULTS = {f.name: f.default for f in fields(LaneConfig)}


@dataclass(frozen=True)
class Limit:
    """An alarm level on one quantity: `above` alarms at value >= level, `below` at value < level.

    These are Grafana's threshold semantics (a colour step applies from its
    value upwards), so the panel's red starts exactly where the rule fires.
    """

    name: str
    level: float
    unit: str  # Grafana unit id of the quantity (s, percentunit, t/h, ...)
    direction: Literal["above", "below"]
    warning: float | None = None  # panels turn amber here; no alert
    why: str = ""

    def breached(self, value: float) -> bool:
        return value >= self.level if self.direction == "above" else value < self.level


@dataclass(frozen=True)
class Range:
    """A quantity that should stay within [low, high]; outside either end is an alarm."""

    name: str
    low: float
    high: float
    unit: str
    why: str = ""

    def breached(self, value: float) -> bool:
        return not self.low <= value <= self.high


# --- contamination (spectrum_result.anomaly_score > 1 is outside the clean-ore limits, per the contract)
EVENTS = Limit("contamination events", 1.0, "short", "above", why="every event is for the inspector to see")
ANOMALY_SCORE = Limit("anomaly score", 1.0, "none", "above", warning=0.8,
                      why="the model's clean-ore T2/Q limits are scaled to 1 (docs/interfaces.md)")

# --- instruments (lane_status health fields)
REFERENCE_AGE_S = Limit("white/dark reference age", _LANE_DEFAULTS["reference_max_age_s"], "s", "above",
                        warning=_LANE_DEFAULTS["reference_max_age_s"] / 2,
                        why="lamp and detector drift make reflectance wrong after ~30 min without a reference")
SATURATED_FRACTION = Limit("saturated spectra", _LANE_DEFAULTS["saturation_max_fraction"], "percentunit", "above",
                           warning=_LANE_DEFAULTS["saturation_max_fraction"] / 5,
                           why="more than 1 % saturated spectra: integration time too long or lamp too bright")
SNR = Limit("spectrometer signal-to-noise", _LANE_DEFAULTS["snr_min"], "none", "below",
            warning=1.5 * _LANE_DEFAULTS["snr_min"],
            why="dark ore gives about 75 on the reference InGaAs instrument; below 50 the Q residual is mostly noise")
LAMP_DRIFT = Limit("lamp drift since the white reference", _LANE_DEFAULTS["lamp_drift_max_fraction"], "percentunit",
                   "above", warning=0.6 * _LANE_DEFAULTS["lamp_drift_max_fraction"],
                   why="5 % intensity change since the white reference biases reflectance")
CAMERA_FPS = Limit("camera frame rate", _LANE_DEFAULTS["camera_fps_min"], "hertz", "below",
                   warning=1.5 * _LANE_DEFAULTS["camera_fps_min"],
                   why="the simulated and reference cameras run at 4 fps; below 2 fps objects pass unseen")
CAMERA_SATURATED_FRACTION = Limit("camera saturated pixels", 0.05, "percentunit", "above", warning=0.02,
                                  why="over-exposed frames hide bright objects (plastic, wood)")
LINK_UP = Limit("Modbus link", 0.5, "bool_on_off", "below", why="1 = link up, 0 = down")

# --- sampling robot
ROBOT_FAULTED_STATE = 9  # sampler PLC status register `state`: 9 = faulted (docs/interfaces.md)
ROBOT_FAULT_CODE = Limit("sampler PLC fault code", 1.0, "none", "above", why="0 = none; 1 jam, 2 door, 3 carousel full")

# --- lane liveness: status is published every 5 s; silence for this long means the lane is down
LANE_SILENT_S = Limit("time since the lane's last status", 120.0, "s", "above",
                      why="24 missed 5 s status messages: the edge daemon, its network or ingest is down")

# --- model health
ANOMALY_RATE = Range("fraction of spectra outside the clean-ore limits", 0.00001, 0.02, "percentunit",
                     why="limits fitted at alpha 1e-4 give ~0.02 % on clean ore; above 2 % the model has drifted "
                         "or the ore is not what it was calibrated on; below 0.001 % over an hour of spectra the "
                         "limits are looser than calibrated")
ANOMALY_RATE_WINDOW_S = 3600

# --- ingest (ingest_health measurement)
INGEST_BUFFER_GROWTH_BYTES = Limit("ingest disk buffer growth over 10 min", 1.0, "bytes", "above",
                                   why="a growing buffer means the database refuses or is unreachable")
INGEST_BUFFER_BYTES = Limit("ingest disk buffer", 256 * 2**20, "bytes", "above", warning=64 * 2**20,
                            why="alarm well before the buffer limit, when ingest stops acknowledging")
INGEST_REPLAY_LAG_S = Limit("ingest replay lag", 300.0, "s", "above", warning=60.0)
INGEST_WRITE_ERRORS = Limit("ingest write errors per minute", 1.0, "short", "above",
                            why="single errors are retried; the buffer alert catches a database that stays down")

ALL = (EVENTS, ANOMALY_SCORE, REFERENCE_AGE_S, SATURATED_FRACTION, SNR, LAMP_DRIFT, CAMERA_FPS,
       CAMERA_SATURATED_FRACTION, LINK_UP, ROBOT_FAULT_CODE, LANE_SILENT_S, ANOMALY_RATE,
       INGEST_BUFFER_GROWTH_BYTES, INGEST_BUFFER_BYTES, INGEST_REPLAY_LAG_S, INGEST_WRITE_ERRORS)
