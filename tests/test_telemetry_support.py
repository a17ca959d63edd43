"""Shared helpers of the telemetry tests (no tests here): events, settings inside tmp_path."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from csctracker_ai_core.telemetry.events import AttemptEvent, CallEvent
from csctracker_ai_core.telemetry.settings import ClickHouseSettings

NOW = datetime(2026, 3, 14, 12, 0, 0, tzinfo=timezone.utc)


def embedded_settings(tmp_path: Path) -> ClickHouseSettings:
    """Embedded store and spool, both inside the test's temporary folder."""
    return ClickHouseSettings(mode="embedded", embedded_path=tmp_path / "chdb", spool_path=tmp_path / "spool")


def server_settings(tmp_path: Path, port: int) -> ClickHouseSettings:
    return ClickHouseSettings(mode="server", host="127.0.0.1", port=port, spool_path=tmp_path / "spool")


def make_event(i: int = 0, *, ok: bool = True, event_id: str = "", **kw: Any) -> CallEvent:
    """A call with one attempt (two for a failed one)."""
    eid = event_id or str(uuid.uuid4())
    attempts = (
        AttemptEvent(
            event_id=eid,
            attempt=1,
            timestamp=NOW.timestamp(),
            key_fingerprint="k-0123456789",
            project="p1",
            tier="free",
            model_name="gemini-2.5-flash",
            duration_ms=12.5,
            outcome="ok" if ok else "quota",
            http_status=200 if ok else 429,
            error_type="" if ok else "ClientError",
            quota_id="" if ok else "GenerateRequestsPerDay",
            decision="served" if ok else "suspend",
            suspended_until=None if ok else datetime(2026, 3, 15, 7, 0, tzinfo=timezone.utc).timestamp(),
        ),
    )
    fields = dict(
        event_id=eid,
        timestamp=NOW.timestamp(),
        task="task-a",
        outcome="ok" if ok else "error",
        model_name="gemini-2.5-flash",
        tier="free",
        key_fingerprint="k-0123456789",
        project="p1",
        attempts=len(attempts),
        tokens_input=100 + i,
        tokens_output=20,
        tokens_total=120 + i,
        cost_usd=Decimal("0.000012345678"),
        payload=f"prompt {i}",
        result="" if not ok else f'{{"n": {i}}}',
        error_type="" if ok else "QuotaExhaustedError",
        error_message="" if ok else "all keys cooling down",
        metadata={"run": "t"},
        attempt_events=attempts,
    )
    fields.update(kw)
    return CallEvent(**fields)


def delivered_count(settings: ClickHouseSettings, sql: str) -> int:
    """Open a writer on ``settings``, deliver what is spooled, and run the count ``sql``."""
    from csctracker_ai_core.telemetry.writer import TelemetryWriter

    writer = TelemetryWriter(settings)
    try:
        assert writer.flush(60)
        client = writer.query_client()
        try:
            return int(client.command(sql))
        finally:
            client.close()
    finally:
        writer.close(30)


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return cond()


def read_records(spool, seg, max_records, max_bytes):
    """``spool.read_lines`` with each line decoded as the writer's record path decodes it."""
    from csctracker_ai_core.telemetry.records import records_of_lines

    start = seg.offset
    lines, next_offset, consumed = spool.read_lines(seg, max_records, max_bytes)
    return records_of_lines(lines, seg.path.name, start), next_offset, consumed
