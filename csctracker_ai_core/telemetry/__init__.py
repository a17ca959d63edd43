"""Telemetry: every call recorded in ClickHouse (a server, or the embedded chDB store),
never slowing a call and never losing an event. See docs/TELEMETRY.md.

    sink = open_telemetry(Settings.load().telemetry)       # never blocks
    sink.record(call_event)                                 # microseconds, on disk
    sink.close(5.0)                                         # last delivery, bounded
"""

from .clickhouse_db import ClickHouseDb
from .events import AttemptEvent, CallEvent
from .records import DEFAULT_MAX_TEXT_BYTES, TRUNCATION_MARKER_FORMAT
from .schema import SCHEMA_VERSION, SchemaReport, ensure_schema
from .settings import ClickHouseSettings, resolve_clickhouse_settings
from .writer import NullSink, TelemetrySink, TelemetryWriter, WriterStats, open_telemetry

__all__ = [
    "ClickHouseDb",
    "AttemptEvent",
    "CallEvent",
    "ClickHouseSettings",
    "resolve_clickhouse_settings",
    "open_telemetry",
    "TelemetrySink",
    "TelemetryWriter",
    "NullSink",
    "WriterStats",
    "ensure_schema",
    "SchemaReport",
    "SCHEMA_VERSION",
    "DEFAULT_MAX_TEXT_BYTES",
    "TRUNCATION_MARKER_FORMAT",
]
