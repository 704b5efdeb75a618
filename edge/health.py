"""Instrument health from the data itself: signal-to-noise, saturation, lamp drift, camera frame rate,
and the alarms a lane raises when one is out of range. Pure functions on arrays and numbers."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

SATURATION_COUNTS = 65000  # a 16-bit detector pixel at or above this is clipped


def spectra_snr(counts: np.ndarray, dark: np.ndarray) -> float:
    """Median over spectra of signal / noise, the noise estimated from the second difference across
    bands (which removes the smooth spectrum and leaves the pixel noise, scaled by sqrt(6))."""
    signal = np.asarray(counts, dtype=np.float64) - dark
    noise = np.diff(signal, n=2, axis=1).std(axis=1) / np.sqrt(6.0)
    level = signal.mean(axis=1)
    return float(np.median(level / np.maximum(noise, 1e-9)))


def saturated_fraction(counts: np.ndarray, saturation_counts: float = SATURATION_COUNTS) -> float:
    return float(np.mean((np.asarray(counts) >= saturation_counts).any(axis=1)))


def lamp_drift_fraction(first_white: np.ndarray, white: np.ndarray, dark: np.ndarray) -> float:
    """Relative change of the white reference's mean signal since the first one of the session (0.05 = 5 %)."""
    return float((white - dark).mean() / max((first_white - dark).mean(), 1e-9) - 1.0)


class RateMeter:
    """Frames per second over the last `window` frame timestamps; 0 once no frame has arrived for
    stale_after_s (by the receiver's clock), so a camera that stops sending shows as stopped rather than
    at its last rate."""

    def __init__(self, window: int = 20, stale_after_s: float = math.inf):
        self._times: deque[float] = deque(maxlen=window)
        self._last_arrival_s: float | None = None
        self.stale_after_s = stale_after_s

    def add(self, t_s: float, arrived_s: float | None = None) -> None:
        if (arrived_s is not None and self._last_arrival_s is not None
                and arrived_s - self._last_arrival_s > self.stale_after_s):
            self._times.clear()  # the camera was stopped: its rate starts again from the frames now coming
        self._times.append(t_s)
        self._last_arrival_s = arrived_s

    def rate(self, now_s: float | None = None) -> float:
        if (now_s is not None and self._last_arrival_s is not None
                and now_s - self._last_arrival_s > self.stale_after_s):
            return 0.0
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])


SPECTRA_SILENT_S = 10.0  # a running belt without a spectrum for this long: the lane is not judging its ore


def alarms(health: dict, lane) -> dict[str, int]:
    """alarm_<name>: 1 when out of range (0 otherwise); `lane` is the LaneConfig with the limits."""
    age = health.get("reference_age_s", -1.0)
    fps = health.get("camera_fps", 0.0)
    return {
        "alarm_spectra_silent": int(health.get("belt_speed_m_s", 0.0) > 0
                                    and health.get("spectra_age_s", 0.0) >= SPECTRA_SILENT_S),
        "alarm_reference_stale": int(age < 0 or age >= lane.reference_max_age_s),
        "alarm_saturation": int(health.get("spectra_saturated_fraction", 0.0) >= lane.saturation_max_fraction),
        "alarm_low_snr": int(0 < health.get("spectra_snr", 0.0) < lane.snr_min),
        "alarm_lamp_drift": int(abs(health.get("lamp_drift_fraction", 0.0)) >= lane.lamp_drift_max_fraction),
        "alarm_camera_fps": int(health.get("frames_in", 0) > 1 and fps < lane.camera_fps_min),
        "alarm_belt_link": int(not health.get("belt_link_up", 0)),
        "alarm_belt_scale_fault": int(bool(health.get("belt_scale_fault", 0))),
        "alarm_robot_link": int(not health.get("robot_link_up", 0)),
        "alarm_radiation_link": int(lane.radiation is not None and not health.get("radiation_link_up", 0)),
        "alarm_radiation_fault": int(lane.radiation is not None and bool(health.get("radiation_fault", 0))),
    }
