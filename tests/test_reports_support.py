"""Helpers for the report tests: a chDB store in tmp_path and events written the way
the telemetry writer writes them (no tests here).

chDB opens one data path per process at a time: every client made here is closed when
the test ends, so the next test (or another module's) can open its own path.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from csctracker_ai_core.pricing import estimate_cost
from csctracker_ai_core.telemetry.events import AttemptEvent, CallEvent
from csctracker_ai_core.telemetry.records import (
    ATTEMPT_COLUMN_NAMES,
    EVENT_COLUMN_NAMES,
    attempt_columns,
    event_columns,
    event_to_record,
)
from csctracker_ai_core.telemetry.schema import ensure_schema

UTC = timezone.utc


@contextlib.contextmanager
def chdb_client(path: Path) -> Iterator[Any]:
    """A clickhouse-connect client on a chDB store at ``path``, schema ensured, closed after."""
    import clickhouse_connect

    path.mkdir(parents=True, exist_ok=True)
    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    try:
        ensure_schema(client, "default")
        yield client
    finally:
        client.close()


def call_event(
    when: datetime,
    task: str,
    model: str,
    tier: str,
    tokens_input: int = 0,
    tokens_output: int = 0,
    *,
    tokens_cached: int = 0,
    tokens_reasoning: int = 0,
    tokens_image: int = 0,
    service_tier: str = "standard",
    outcome: str = "ok",
    key: str = "k-free00001",
    project: str = "proj-a",
    time_spent: float = 1.0,
    total_duration_ms: float = 1000.0,
    attempts: Sequence[AttemptEvent] = (),
    event_id: str | None = None,
    cost_from_prices: bool = True,
) -> CallEvent:
    """A CallEvent as the processor would record it (cost from the shipped prices)."""
    cost, list_cost = (
        estimate_cost(model, tier, service_tier, tokens_input, tokens_output, tokens_cached=tokens_cached)
        if cost_from_prices
        else (Decimal(0), Decimal(0))
    )
    eid = event_id or f"{task}-{model}-{when.isoformat()}"
    return CallEvent(
        event_id=eid,
        timestamp=when.timestamp(),
        task=task,
        outcome=outcome,
        model_name=model,
        tier=tier,
        service_tier=service_tier,
        key_fingerprint=key,
        project=project,
        attempts=max(1, len(attempts)),
        time_spent=time_spent,
        total_duration_ms=total_duration_ms,
        tokens_input=tokens_input,
        tokens_output=tokens_output,
        tokens_reasoning=tokens_reasoning,
        tokens_cached=tokens_cached,
        tokens_image=tokens_image,
        tokens_total=tokens_input + tokens_output,
        cost_usd=cost,
        list_cost_usd=list_cost,
        payload="prompt",
        result="{}" if outcome == "ok" else "",
        error_type="" if outcome == "ok" else "GeminiServiceException",
        attempt_events=tuple(a if a.event_id == eid else dataclasses.replace(a, event_id=eid) for a in attempts),
    )


def attempt(
    when: datetime,
    n: int,
    key: str,
    tier: str,
    model: str,
    *,
    status: int = 200,
    quota_id: str = "",
    duration_ms: float = 100.0,
    project: str = "proj-a",
) -> AttemptEvent:
    """One upstream request (event id filled in by :func:`call_event`)."""
    return AttemptEvent(
        event_id="",
        attempt=n,
        timestamp=when.timestamp(),
        key_fingerprint=key,
        project=project,
        tier=tier,
        model_name=model,
        duration_ms=duration_ms,
        outcome="ok" if status == 200 else ("quota" if status == 429 else "error"),
        http_status=status,
        quota_id=quota_id,
        decision="served" if status == 200 else "suspend",
    )


def insert_events(client: Any, events: Sequence[CallEvent], database: str = "default") -> None:
    """Insert ``events`` (and their attempts) as typed columns: the writer's own encoding of each row."""
    records = [event_to_record(e) for e in events]
    event_cols, attempt_cols = event_columns(records), attempt_columns(records)
    client.insert(
        "ai_events", event_cols, column_names=list(EVENT_COLUMN_NAMES), column_oriented=True, database=database
    )
    if attempt_cols and attempt_cols[0]:
        client.insert(
            "ai_attempts",
            attempt_cols,
            column_names=list(ATTEMPT_COLUMN_NAMES),
            column_oriented=True,
            database=database,
        )
