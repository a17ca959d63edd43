"""Query results as report rows: dicts of values a caller can use directly."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

__all__ = ["result_to_dicts", "to_report_value"]


def to_report_value(value: Any) -> Any:
    """NaN (ClickHouse's empty aggregate) becomes None; a naive datetime becomes aware UTC.

    The store keeps UTC without a zone, so a naive datetime read back is UTC. Every
    other value is returned unchanged.
    """
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def result_to_dicts(result: Any) -> list[dict[str, Any]]:
    """The rows of a clickhouse-connect query result as ``{column: report value}`` dicts."""
    return [
        {name: to_report_value(v) for name, v in zip(result.column_names, raw, strict=True)}
        for raw in result.result_rows
    ]
