"""A :class:`CallEvent` as a spool record (a JSON-able dict), and records as insert columns.

One record per call: the ``ai_events`` row (keys are column names) plus its attempts
under ``"_a"``. The same dict is what goes to disk and what the writer keeps in
memory, so a replayed event and a live one take exactly the same path to ClickHouse.

What is stored (see docs/TELEMETRY.md):
* ``payload`` holds ``json.dumps(prompt)`` like the original library, the prompt first
  capped at ``max_text_bytes`` UTF-8 bytes; ``result`` the reply text, capped the same
  way. A capped text ends with :data:`TRUNCATION_MARKER_FORMAT`; ``payload_bytes`` /
  ``result_bytes`` keep the original sizes.
* an image as sha256 / size / mime; its base64 only with ``store_images=True``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .._version import __version__
from .events import AttemptEvent, CallEvent
from .schema import ATTEMPT_COLUMNS, EVENT_COLUMNS

__all__ = [
    "DEFAULT_MAX_TEXT_BYTES",
    "TRUNCATION_MARKER_FORMAT",
    "cap_text",
    "event_to_record",
    "encode_record",
    "decode_record",
    "records_to_columns",
]

DEFAULT_MAX_TEXT_BYTES = 256 * 1024
TRUNCATION_MARKER_FORMAT = "\n[csctracker-ai-core: truncated, {kept} of {total} bytes kept]"
RECORD_FORMAT_VERSION = 1

EVENT_COLUMN_NAMES: Tuple[str, ...] = tuple(c[0] for c in EVENT_COLUMNS if c[0] != "ingested_at")
ATTEMPT_COLUMN_NAMES: Tuple[str, ...] = tuple(c[0] for c in ATTEMPT_COLUMNS if c[0] != "ingested_at")

_UTC = timezone.utc


def cap_text(text: str, max_bytes: int) -> Tuple[str, int]:
    """``(text capped to max_bytes UTF-8 bytes + marker, original byte size)``.

    The cut never splits a character; the marker says how much was kept.
    """
    raw = text.encode("utf-8", "surrogatepass") if text else b""
    total = len(raw)
    if total <= max_bytes:
        return text, total
    kept = raw[:max_bytes].decode("utf-8", "ignore")
    kept_bytes = len(kept.encode("utf-8", "surrogatepass"))
    return kept + TRUNCATION_MARKER_FORMAT.format(kept=kept_bytes, total=total), total


def _ts(value: Optional[datetime]) -> Optional[float]:
    if value is None:
        return None
    if value.tzinfo is None:  # the contract says UTC; a naive value is taken as UTC
        value = value.replace(tzinfo=_UTC)
    return value.timestamp()


def _attempt_record(a: AttemptEvent, task: str) -> Dict[str, Any]:
    return {
        "timestamp": _ts(a.timestamp),
        "event_id": a.event_id,
        "attempt": a.attempt,
        "task": task,
        "key_fingerprint": a.key_fingerprint,
        "project": a.project,
        "tier": a.tier,
        "model_name": a.model_name,
        "duration_ms": a.duration_ms,
        "outcome": a.outcome,
        "http_status": a.http_status,
        "error_type": a.error_type,
        "error_message": a.error_message,
        "quota_id": a.quota_id,
        "retry_delay_s": a.retry_delay_s,
        "decision": a.decision,
        "suspended_until": _ts(a.suspended_until),
        "library_version": __version__,
    }


def event_to_record(event: CallEvent, *, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES, store_images: bool = False) -> Dict[str, Any]:
    """The spool record of ``event``: capped, image bytes removed unless opted in."""
    prompt, payload_bytes = cap_text(event.payload, max_text_bytes)
    result, result_bytes = cap_text(event.result, max_text_bytes)
    error_message, _ = cap_text(event.error_message, 16 * 1024)
    return {
        "_v": RECORD_FORMAT_VERSION,
        "timestamp": _ts(event.timestamp),
        "event_id": event.event_id,
        "tokens_input": event.tokens_input,
        "tokens_image": event.tokens_image,
        "tokens_output": event.tokens_output,
        "tokens_reasoning": event.tokens_reasoning,
        # The original stored json.dumps(prompt): keep that meaning for old queries.
        "payload": json.dumps(prompt, ensure_ascii=False),
        "result": result,
        "model": event.model,
        "task": event.task,
        "time_spent": event.time_spent,
        "service_tier": event.service_tier,
        "model_name": event.model_name,
        "tier": event.tier,
        "served_tier": event.served_tier,
        "operation": "generate_content",
        "provider": "gcp.gemini",
        "key_fingerprint": event.key_fingerprint,
        "project": event.project,
        "outcome": event.outcome,
        "attempts": event.attempts,
        "error_type": event.error_type,
        "error_message": error_message,
        "quota_id": event.quota_id,
        "total_duration_ms": event.total_duration_ms,
        "tokens_cached": event.tokens_cached,
        "tokens_total": event.tokens_total,
        "cost_usd": str(event.cost_usd),
        "list_cost_usd": str(event.list_cost_usd),
        "payload_bytes": payload_bytes,
        "result_bytes": result_bytes,
        "finish_reason": event.finish_reason,
        "response_id": event.response_id,
        "model_version": event.model_version,
        "image_sha256": event.image_sha256,
        "image_bytes": event.image_bytes,
        "image_mime": event.image_mime,
        "image_base64": event.image_base64 if store_images else "",
        "return_json": bool(event.return_json),
        "metadata": {str(k): str(v) for k, v in dict(event.metadata).items()},
        "library_version": __version__,
        "_a": [_attempt_record(a, event.task) for a in event.attempt_events],
    }


def encode_record(record: Dict[str, Any]) -> bytes:
    """One spool line: compact JSON (newlines inside strings are escaped) + ``\\n``."""
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass")


def decode_record(line: bytes) -> Dict[str, Any]:
    """Inverse of :func:`encode_record` (raises ``ValueError`` on a torn line)."""
    return json.loads(line.decode("utf-8", "surrogatepass"))


def _dt(value: Optional[float]) -> Optional[datetime]:
    return None if value is None else datetime.fromtimestamp(value, _UTC)


_EVENT_CONVERT = {"timestamp": _dt, "cost_usd": Decimal, "list_cost_usd": Decimal}
_ATTEMPT_CONVERT = {"timestamp": _dt, "suspended_until": _dt}


def _columns(rows: Iterable[Dict[str, Any]], names: Sequence[str], convert: Dict[str, Any]) -> List[List[Any]]:
    cols: List[List[Any]] = [[] for _ in names]
    for row in rows:
        for i, name in enumerate(names):
            value = row.get(name)
            fn = convert.get(name)
            cols[i].append(fn(value) if fn is not None and value is not None else value)
    return cols


def records_to_columns(records: Sequence[Dict[str, Any]]) -> Tuple[List[List[Any]], List[List[Any]]]:
    """Column-wise data for ``ai_events`` and ``ai_attempts`` (names: the *_COLUMN_NAMES)."""
    events = _columns(records, EVENT_COLUMN_NAMES, _EVENT_CONVERT)
    attempts = _columns((a for r in records for a in r.get("_a", ())), ATTEMPT_COLUMN_NAMES, _ATTEMPT_CONVERT)
    return events, attempts
