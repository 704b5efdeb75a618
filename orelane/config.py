"""Site configuration: one TOML file per site, validated on load, secrets from the environment or files.

Every error names the file, the key, the value and what is allowed, so a
broken config is fixed in one go rather than by reading a traceback.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = field(default="", repr=False)
    keepalive_s: int = 30
    protocol: int = 5  # 5 (MQTT 5, needed for shared subscriptions) or 4 (MQTT 3.1.1)
    # TLS is on when tls_ca_file is set: the broker's certificate must chain to this CA and name the host.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None  # client certificate (PEM), for brokers with require_certificate
    tls_key_file: Path | None = None  # its private key (PEM), readable only by its owner

    @property
    def tls(self) -> bool:
        return self.tls_ca_file is not None


@dataclass(frozen=True)
class InfluxConfig:
    url: str
    org: str
    bucket: str
    token: str = field(default="", repr=False)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class IngestConfig:
    batch_size: int = 5000  # points per write
    flush_interval_s: float = 1.0  # longest a point waits before it is written
    flush_jitter_s: float = 0.1  # spread flushes of many workers
    buffer_dir: str = "ingest-buffer"  # under data_dir; each worker uses <buffer_dir>/<client id>
    buffer_limit_bytes: int = 1 << 30  # on disk; at the limit messages are no longer acknowledged
    buffer_alarm_fraction: float = 0.8  # alarm when the buffer is this full
    deadletter_file: str = "ingest-deadletter.jsonl"  # under data_dir: lines the database refused, with reasons
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # Prometheus /metrics; absent: off
    health_interval_s: float = 10.0  # ingest_health point every this often
    max_timestamp_past_s: float = 366 * 86400.0  # older points go to the dead-letter topic
    max_timestamp_future_s: float = 3600.0  # points further in the future too
    receive_maximum: int = 1000  # MQTT 5: unacknowledged messages the broker may send one worker


@dataclass(frozen=True)
class ModbusEndpoint:
    host: str
    port: int
    unit_id: int = 1
    timeout_s: float = 1.0


@dataclass(frozen=True)
class LaneConfig:
    id: str
    belt_scale: ModbusEndpoint
    robot: ModbusEndpoint
    radiation: ModbusEndpoint | None = None
    segment_length_m: float = 0.5  # belt stretch that carries fused evidence
    cutter_distance_m: float = 40.0  # along the belt from the sensors to the cutter
    robot_reaction_s: float = 1.0  # from command to the cutter crossing the stream
    robot_cycle_s: float = 40.0  # expected PLC cycle (cut, divide, seal, place); routine cuts yield to targeted
    belt_poll_interval_s: float = 0.1
    event_open_score: float = 0.5  # fused score that opens an event
    event_close_score: float = 0.2  # score below which an event may close
    event_close_after_m: float = 1.0  # clean belt needed to close an event
    event_min_length_m: float = 0.5  # shorter events are dropped as noise
    routine_increment_t: float = 50.0  # routine (ISO 3082-style) increment every this many tonnes
    belt_width_m: float = 1.6
    belt_rated_flow_t_h: float = 10000.0  # the belt's rating: a belt-scale reading above it is refused
    radiation_threshold_usv_h: float = 1.0  # dose rate that opens a radiation alarm on the belt
    radiation_cut: bool = False  # also cut a sample of ore under a radiation alarm
    brand_mismatch_share: float = 0.5  # share of a lot's clean ore unlike its declared brand that raises an event
    brand_min_spectra: int = 2000  # clean spectra a lot needs before its brand is judged
    reference_max_age_s: float = 1800.0  # health alarm: white/dark reference older than this
    saturation_max_fraction: float = 0.01  # health alarm: share of spectra with a saturated pixel
    snr_min: float = 50.0  # health alarm: median signal-to-noise of the spectra
    lamp_drift_max_fraction: float = 0.05  # health alarm: white reference changed this much since the first one
    camera_fps_min: float = 2.0  # health alarm: camera frame rate below this (when frames have been seen)
    camera_offset_m: float = 0.0  # from the spectrometer's spot to the camera's centre row, + in the travel direction
    results: str = "spectra"  # "spectra": a result per spectrum; "segments": one aggregate per belt segment


RESULT_MODES = ("spectra", "segments")


@dataclass(frozen=True)
class SiteConfig:
    site_id: str
    data_dir: Path
    mqtt: MqttConfig
    influx: InfluxConfig | None
    ingest: IngestConfig
    model_path: Path | None
    lanes: tuple[LaneConfig, ...]
    source: str = "<memory>"

    def lane(self, lane_id: str) -> LaneConfig:
        for lane in self.lanes:
            if lane.id == lane_id:
                return lane
        raise ConfigError(f"{self.source}: no lane {lane_id!r}; lanes are {[x.id for x in self.lanes]}")


class _Table:
    """Reads one TOML table, checking types and ranges and refusing unknown keys."""

    def __init__(self, data: Any, where: str, source: str):
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{where}] must be a table, got {type(data).__name__}")
        self.data, self.where, self.source, self.used = data, where, source, set()

    def _fail(self, key: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.where}.{key} = {value!r}: {allowed}")

    def get(self, key: str, kind: type, default: Any = ..., low: float | None = None, high: float | None = None,
            low_open: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.source}: {self.where}.{key} is missing (a {kind.__name__} is required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self._fail(key, value, f"must be a {kind.__name__}")
        if low is not None and (value <= low if low_open else value < low):
            raise self._fail(key, value, f"must be {'>' if low_open else '>='} {low}" +
                             (f" and <= {high}" if high is not None else ""))
        if high is not None and value > high:
            raise self._fail(key, value, f"must be <= {high}" + (f" and >= {low}" if low is not None else ""))
        return value

    def table(self, key: str, required: bool = True) -> "_Table | None":
        self.used.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.source}: [{self.where}.{key}] is missing")
            return None
        return _Table(self.data[key], f"{self.where}.{key}", self.source)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.source}: unknown key(s) {unknown} in [{self.where}]; "
                              f"allowed: {sorted(self.used)}")


def _secret(t: _Table, key: str, env_var: str, environ: dict[str, str], base_dir: Path) -> str:
    """A secret from the environment, else from a file that only its owner can read."""
    if key in t.data:
        raise ConfigError(f"{t.source}: {t.where}.{key} must not be written in the config; set {env_var} "
                          f"or {key}_file (a file readable only by its owner)")
    if environ.get(env_var):
        t.used.add(f"{key}_file")
        return environ[env_var]
    path = t.get(f"{key}_file", str, "")
    if not path:
        return ""
    return read_secret_file(base_dir / path, f"{t.source}: {t.where}.{key}_file")


def read_secret_file(path: Path, where: str) -> str:
    """The file's text, checked on the open file (no race between the check and the read)."""
    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"{where} = {str(path)!r}: mode {stat.filemode(mode)} lets others read it; "
                                  f"run chmod 600 {path}")
            return f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} = {str(path)!r}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _endpoint(t: _Table) -> ModbusEndpoint:
    ep = ModbusEndpoint(host=t.get("host", str), port=t.get("port", int, low=1, high=65535),
                        unit_id=t.get("unit_id", int, 1, low=0, high=247),
                        timeout_s=t.get("timeout_s", float, 1.0, low=0, low_open=True))
    t.done()
    return ep


def _lane(t: _Table) -> LaneConfig:
    lane_id = t.get("id", str)
    if not lane_id or any(c in lane_id for c in "/+# ") or lane_id.startswith("$"):
        raise ConfigError(f"{t.source}: {t.where}.id = {lane_id!r}: must be non-empty, without '/', '+', '#', "
                          f"space or a leading '$'")
    radiation = t.table("radiation", required=False)
    lane = LaneConfig(
        id=lane_id,
        belt_scale=_endpoint(t.table("belt_scale")),
        robot=_endpoint(t.table("robot")),
        radiation=_endpoint(radiation) if radiation else None,
        segment_length_m=t.get("segment_length_m", float, 0.5, low=0.05, high=10.0),
        cutter_distance_m=t.get("cutter_distance_m", float, 40.0, low=0, low_open=True, high=2000.0),
        robot_reaction_s=t.get("robot_reaction_s", float, 1.0, low=0, high=60.0),
        robot_cycle_s=t.get("robot_cycle_s", float, 40.0, low=0, high=600.0),
        belt_poll_interval_s=t.get("belt_poll_interval_s", float, 0.1, low=0.01, high=5.0),
        event_open_score=t.get("event_open_score", float, 0.5, low=0, low_open=True, high=1.0),
        event_close_score=t.get("event_close_score", float, 0.2, low=0, high=1.0),
        event_close_after_m=t.get("event_close_after_m", float, 1.0, low=0, high=100.0),
        event_min_length_m=t.get("event_min_length_m", float, 0.5, low=0, high=100.0),
        routine_increment_t=t.get("routine_increment_t", float, 50.0, low=0, low_open=True),
        belt_width_m=t.get("belt_width_m", float, 1.6, low=0.3, high=4.0),
        belt_rated_flow_t_h=t.get("belt_rated_flow_t_h", float, 10000.0, low=0, low_open=True, high=20000.0),
        radiation_threshold_usv_h=t.get("radiation_threshold_usv_h", float, 1.0, low=0, low_open=True),
        radiation_cut=t.get("radiation_cut", bool, False),
        brand_mismatch_share=t.get("brand_mismatch_share", float, 0.5, low=0, low_open=True, high=1.0),
        brand_min_spectra=t.get("brand_min_spectra", int, 2000, low=1),
        reference_max_age_s=t.get("reference_max_age_s", float, 1800.0, low=0, low_open=True),
        saturation_max_fraction=t.get("saturation_max_fraction", float, 0.01, low=0, high=1.0),
        snr_min=t.get("snr_min", float, 50.0, low=0),
        lamp_drift_max_fraction=t.get("lamp_drift_max_fraction", float, 0.05, low=0, low_open=True, high=1.0),
        camera_fps_min=t.get("camera_fps_min", float, 2.0, low=0),
        camera_offset_m=t.get("camera_offset_m", float, 0.0, low=-20.0, high=20.0),
        results=t.get("results", str, "spectra"),
    )
    if lane.results not in RESULT_MODES:
        raise ConfigError(f"{t.source}: {t.where}.results = {lane.results!r}: must be one of {', '.join(RESULT_MODES)} "
                          f"(a result per spectrum, or one aggregate per belt segment)")
    if lane.event_close_score >= lane.event_open_score:
        raise ConfigError(f"{t.source}: {t.where}.event_close_score = {lane.event_close_score}: must be below "
                          f"event_open_score ({lane.event_open_score}) for hysteresis")
    # A segment's evidence settles 1 m behind the sensors (the camera's offset more when it looks downstream) and
    # an event closes after event_close_after_m of clean belt: all of that must pass before its ore reaches the
    # cutter. The robot's reaction needs its travel on top (speed x robot_reaction_s), which depends on the belt.
    lag_m = lane.segment_length_m + max(0.0, lane.camera_offset_m) + 1.0 + lane.event_close_after_m
    if lane.cutter_distance_m <= lag_m:
        raise ConfigError(f"{t.source}: {t.where}.cutter_distance_m = {lane.cutter_distance_m}: must be more than "
                          f"{lag_m:g} m (segment_length_m {lane.segment_length_m:g} + camera_offset_m "
                          f"{lane.camera_offset_m:g} + 1 m for evidence to settle + event_close_after_m "
                          f"{lane.event_close_after_m:g}), or events close after their ore has passed the cutter")
    t.done()
    return lane


def parse(data: dict[str, Any], source: str = "<memory>", environ: dict[str, str] | None = None,
          base_dir: Path | None = None) -> SiteConfig:
    """Validate a parsed TOML document into a SiteConfig."""
    environ = dict(os.environ) if environ is None else environ
    base_dir = base_dir or Path.cwd()
    root = _Table(data, "root", source)
    site = root.table("site")
    site_id = site.get("id", str)
    if not site_id or any(c in site_id for c in "/+# ") or site_id.startswith("$"):
        raise ConfigError(f"{source}: site.id = {site_id!r}: must be non-empty, without '/', '+', '#', space "
                          f"or a leading '$'")
    data_dir = base_dir / site.get("data_dir", str, "var")
    model = site.get("model_path", str, "")
    site.done()

    mq = root.table("mqtt", required=False) or _Table({}, "mqtt", source)

    def tls_file(key: str, pem_marker: str) -> Path | None:
        """A PEM file named relative to the config file, checked now rather than at the first connect."""
        value = mq.get(key, str, "")
        if not value:
            return None
        path = base_dir / value
        try:
            # A private key must be owner-only, like a password file; certificates are public.
            pem = (read_secret_file(path, f"{source}: {mq.where}.{key}") if key == "tls_key_file"
                   else path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise mq._fail(key, value, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if pem_marker not in pem:
            raise mq._fail(key, value, f"{path} is not PEM (no '{pem_marker}' line)")
        if key == "tls_key_file" and "ENCRYPTED" in pem:
            # OpenSSL would stop the daemon at a terminal prompt for the passphrase.
            raise mq._fail(key, value, f"{path} is passphrase-protected; the daemons cannot prompt for it: "
                                       f"store the key unencrypted with mode 600 instead")
        return path

    tls_ca = tls_file("tls_ca_file", "-----BEGIN CERTIFICATE-----")
    tls_cert = tls_file("tls_cert_file", "-----BEGIN CERTIFICATE-----")
    tls_key = tls_file("tls_key_file", "PRIVATE KEY-----")
    if (tls_cert is None) != (tls_key is None):
        given, missing = ("tls_cert_file", "tls_key_file") if tls_key is None else ("tls_key_file", "tls_cert_file")
        raise ConfigError(f"{source}: {mq.where}.{given} is set but {missing} is not; a client certificate "
                          f"needs both (PEM certificate and its private key)")
    if tls_cert is not None and tls_ca is None:
        raise ConfigError(f"{source}: {mq.where}.tls_cert_file is set but tls_ca_file is not; TLS is on only with "
                          f"tls_ca_file (the CA that signed the broker's certificate)")
    mqtt = MqttConfig(host=mq.get("host", str, "127.0.0.1"), port=mq.get("port", int, 1883, low=1, high=65535),
                      username=mq.get("username", str, ""),
                      password=_secret(mq, "password", "ORELANE_MQTT_PASSWORD", environ, base_dir),
                      keepalive_s=mq.get("keepalive_s", int, 30, low=5, high=3600),
                      protocol=mq.get("protocol", int, 5, low=4, high=5),
                      tls_ca_file=tls_ca, tls_cert_file=tls_cert, tls_key_file=tls_key)
    mq.done()

    influx = None
    it = root.table("influx", required=False)
    if it is not None:
        url = it.get("url", str)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{source}: influx.url = {url!r}: must start with http:// or https://")
        influx = InfluxConfig(url=url, org=it.get("org", str, "orelane"), bucket=it.get("bucket", str, "orelane"),
                              token=_secret(it, "token", "ORELANE_INFLUX_TOKEN", environ, base_dir),
                              timeout_s=it.get("timeout_s", float, 10.0, low=0, low_open=True))
        it.done()

    ig = root.table("ingest", required=False) or _Table({}, "ingest", source)
    ingest = IngestConfig(
        batch_size=ig.get("batch_size", int, 5000, low=1, high=1_000_000),
        flush_interval_s=ig.get("flush_interval_s", float, 1.0, low=0, low_open=True, high=60.0),
        flush_jitter_s=ig.get("flush_jitter_s", float, 0.1, low=0, high=60.0),
        buffer_dir=ig.get("buffer_dir", str, "ingest-buffer"),
        buffer_limit_bytes=ig.get("buffer_limit_bytes", int, 1 << 30, low=4096),
        buffer_alarm_fraction=ig.get("buffer_alarm_fraction", float, 0.8, low=0.05, high=1.0),
        deadletter_file=ig.get("deadletter_file", str, "ingest-deadletter.jsonl"),
        metrics_host=ig.get("metrics_host", str, "127.0.0.1"),
        metrics_port=ig.get("metrics_port", int, None, low=0, high=65535),
        health_interval_s=ig.get("health_interval_s", float, 10.0, low=0, low_open=True),
        max_timestamp_past_s=ig.get("max_timestamp_past_s", float, 366 * 86400.0, low=0, low_open=True),
        max_timestamp_future_s=ig.get("max_timestamp_future_s", float, 3600.0, low=0, low_open=True),
        receive_maximum=ig.get("receive_maximum", int, 1000, low=1, high=65535))
    ig.done()

    raw_lanes = root.data.get("lane")
    root.used.add("lane")
    if not isinstance(raw_lanes, list) or not raw_lanes:
        raise ConfigError(f"{source}: at least one [[lane]] table is required")
    lanes = tuple(_lane(_Table(x, f"lane[{i}]", source)) for i, x in enumerate(raw_lanes))
    ids = [x.id for x in lanes]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{source}: lane ids must be unique, got {ids}")
    root.done()
    return SiteConfig(site_id, data_dir, mqtt, influx, ingest, (base_dir / model) if model else None, lanes, source)


def load(path: str | Path, environ: dict[str, str] | None = None) -> SiteConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, str(path), environ, base_dir=path.resolve().parent)
