"""The InfluxDB fields the dashboards read beyond orelane.contract.measurements.MEASUREMENTS.

`lane_status` carries the edge's health dict as numeric fields (points_for
keeps every numeric health value), so its field list follows its producer,
edge.lane.LaneCore.health(); a test holds the two equal.
"""

from __future__ import annotations

from orelane.contract.measurements import MEASUREMENTS, OPTIONAL_TAGS

# The numeric values of edge.lane.LaneCore.health(): readings and counters, then the alarms (1 raised, 0 not).
HEALTH_FIELDS = ("reference_age_s", "belt_link_up", "belt_scale_fault", "robot_link_up", "spectra_in",
                 "spectra_classified", "spectra_rejected", "spectra_flagged", "late_spectra", "seq_gaps", "frames_in",
                 "frames_rejected", "objects_detected", "late_objects", "events_opened", "belt_readings_refused",
                 "events", "cuts_targeted", "cuts_routine", "cuts_missed", "dead_letters", "belt_position_m",
                 "belt_speed_m_s", "spectra_age_s", "spectra_snr",
                 "spectra_saturated_fraction", "lamp_drift_fraction", "robot_state", "robot_fault_code",
                 "camera_fps", "camera_mean_brightness", "camera_saturated_fraction", "radiation_dose_usv_h",
                 "radiation_link_up", "radiation_fault")
HEALTH_ALARMS = ("alarm_spectra_silent", "alarm_reference_stale", "alarm_saturation", "alarm_low_snr",
                 "alarm_lamp_drift", "alarm_camera_fps", "alarm_belt_link", "alarm_belt_scale_fault",
                 "alarm_robot_link", "alarm_radiation_link", "alarm_radiation_fault")

# Ingest's own health, written by ingest as the `ingest_health` measurement (issue 6, item 5).
INGEST_HEALTH = "ingest_health"
INGEST_HEALTH_TAGS = ("site", "worker")
INGEST_HEALTH_FIELDS = ("messages_in", "points_written", "batches_buffered", "buffer_bytes", "replay_lag_s",
                        "write_errors")


def fields_of(measurement: str) -> tuple[str, ...]:
    """Every field a query may read from a measurement."""
    if measurement == "lane_status":
        return ("online",) + HEALTH_FIELDS + HEALTH_ALARMS
    if measurement == INGEST_HEALTH:
        return INGEST_HEALTH_FIELDS
    return MEASUREMENTS[measurement][1]


def tags_of(measurement: str) -> tuple[str, ...]:
    if measurement == INGEST_HEALTH:
        return INGEST_HEALTH_TAGS
    return MEASUREMENTS[measurement][0] + OPTIONAL_TAGS.get(measurement, ())
