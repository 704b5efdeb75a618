"""MQTT to InfluxDB (or the embedded store): every ingested message becomes points, acknowledged once stored."""
