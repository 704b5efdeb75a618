"""The InfluxDB fields the dashboards read beyond orelane.contract.measurements.MEASUREMENTS.

`lane_status` carries the edge's health dict as numeric fields (points_for
keeps every numeric health value), so its field list lives with its producer,
edge.daemon.LaneDaemon.health(). The dashboards name here every health field
they read, split into what the edge publishes today and what issue 4 asks it
to publish (saturation, signal-to-noise, lamp drift, camera exposure, PLC
state). A panel over a field not yet published shows "No data", nothing worse.
"""

from __future__ import annotations

from orelane.contract.measurements import MEASUREMENTS, OPTIONAL_TAGS

# Published by edge.daemon.LaneDaemon.health() today.
HEALTH_FIELDS_PUBLISHED = ("reference_age_s", "belt_link_up", "robot_link_up", "spectra_in", "spectra_classified",
                           "spectra_rejected", "seq_gaps", "frames_in", "events", "cuts_targeted", "cuts_routine",
                           "cuts_missed", "dead_letters", "belt_position_m", "spectra_snr",
                           "spectra_saturated_fraction", "lamp_drift_fraction", "robot_state", "robot_fault_code",
                           "camera_fps", "camera_mean_brightness", "camera_saturated_fraction",
                           "radiation_dose_usv_h", "radiation_link_up")

HEALTH_FIELDS = HEALTH_FIELDS_PUBLISHED

# Ingest's own health, written by ingest as the `ingest_health` measurement (issue 6, item 5).
INGEST_HEALTH = "ingest_health"
INGEST_HEALTH_TAGS = ("site", "worker")
INGEST_HEALTH_FIELDS = ("messages_in", "points_written", "batches_buffered", "buffer_bytes", "replay_lag_s",
                        "write_errors")


def fields_of(measurement: str) -> tuple[str, ...]:
    """Every field a query may read from a measurement."""
    if measurement == "lane_status":
        return ("online",) + HEALTH_FIELDS
    if measurement == INGEST_HEALTH:
        return INGEST_HEALTH_FIELDS
    return MEASUREMENTS[measurement][1]


def tags_of(measurement: str) -> tuple[str, ...]:
    if measurement == INGEST_HEALTH:
        return INGEST_HEALTH_TAGS
    return MEASUREMENTS[measurement][0] + OPTIONAL_TAGS.get(measurement, ())
