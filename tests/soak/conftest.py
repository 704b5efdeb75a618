"""The soak test uses ingest's durable broker and deduplicating VictoriaMetrics fixtures."""

from tests.ingest.conftest import durable_mosquitto, pytest_collection_modifyitems, victoria_metrics_dedup  # noqa: F401
