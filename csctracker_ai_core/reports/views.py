"""Further views of the telemetry: per key / project / model / tier, 429s by quota id,
latency percentiles, and time series for charts.

Functions take a clickhouse-connect ``client``, the ``database``, and a resolved
:class:`~.periods.Period`; :class:`~.telemetry_report.Telemetry` wraps them. Rows
are dicts; keys are shown as fingerprints only (the store never holds a key).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from ..exceptions import ReportError
from .periods import Period, group_format
from .price_tables import billed_tier_sql, sql_string
from .queries import PERIOD_WHERE, events_cte, period_parameters, table
from .rows import result_to_dicts

__all__ = [
    "DIMENSIONS",
    "auto_group",
    "cost_by_served_tier",
    "waste",
    "latency_percentiles",
    "quota_errors",
    "timeseries",
    "usage_by",
]

# dimension name -> column (present in both ai_events and ai_attempts, except service_tier)
DIMENSIONS: dict[str, str] = {
    "key": "key_fingerprint",
    "key_fingerprint": "key_fingerprint",
    "project": "project",
    "model": "model_name",
    "tier": "tier",
    "task": "task",
    "service_tier": "service_tier",
}


def _column(dimension: str) -> str:
    try:
        return DIMENSIONS[dimension.strip().lower()]
    except (KeyError, AttributeError):
        raise ReportError(f"unknown dimension {dimension!r}: use one of {', '.join(DIMENSIONS)}.") from None


def usage_by(client: Any, database: str, period: Period, dimension: str, *, tz: str = "UTC") -> list[dict[str, Any]]:
    """One row per value of ``dimension``: calls, outcomes, tokens, cost, 429s.

    Columns: the dimension's column (e.g. ``key_fingerprint``), ``calls``, ``ok``,
    ``errors``, ``free_events``, ``paid_events``, ``tokens_input``, ``tokens_output``,
    ``tokens_reasoning``, ``tokens_cached``, ``tokens_total``, ``custo_usd``,
    ``custo_lista_usd``, ``economia_usd``, ``latencia_p50_ms``, ``latencia_p95_ms``,
    ``requests`` (upstream requests), ``http_429`` and ``quota_429`` (``{quota_id:
    count}``) from ``ai_attempts``. Ordered by calls, most first; values seen only in
    attempts (a key that only met 429s) come last, with ``calls`` 0.
    """
    col = _column(dimension)
    source = events_cte(database, tz=tz)
    params = period_parameters(period)
    result = client.query(
        f"""
SELECT toString({col}) AS {col},
       count() AS calls,
       countIf(outcome = 'ok') AS ok,
       countIf(outcome != 'ok') AS errors,
       countIf(tier = 'free') AS free_events,
       countIf(tier = 'paid') AS paid_events,
       sum(tokens_input) AS tokens_input,
       sum(tokens_output) AS tokens_output,
       sum(tokens_reasoning) AS tokens_reasoning,
       sum(tokens_cached) AS tokens_cached,
       sum(tokens_total) AS tokens_total,
       toDecimal128(sum(_cost), 12) AS custo_usd,
       toDecimal128(sum(_list_cost), 12) AS custo_lista_usd,
       custo_lista_usd - custo_usd AS economia_usd,
       quantileExactIf(0.5)(total_duration_ms, outcome = 'ok') AS latencia_p50_ms,
       quantileExactIf(0.95)(total_duration_ms, outcome = 'ok') AS latencia_p95_ms
FROM {source}
GROUP BY {col}
ORDER BY calls DESC, {col}
""",
        parameters=params,
    )
    rows = result_to_dicts(result)
    for row in rows:
        if not row["ok"]:
            row["latencia_p50_ms"] = row["latencia_p95_ms"] = None
        row.update(requests=0, http_429=0, quota_429={})
    if col == "service_tier":  # attempts do not carry the asked service tier
        return rows
    by_value = {row[col]: row for row in rows}
    attempts = client.query(
        f"""
SELECT toString({col}) AS value, toString(quota_id) AS quota_id,
       count() AS requests,
       countIf(http_status = 429) AS http_429
FROM {table(database, "ai_attempts")}
WHERE {PERIOD_WHERE}
GROUP BY value, quota_id
""",
        parameters=params,
    ).result_rows
    for value, quota_id, requests, http_429 in attempts:
        found = by_value.get(value)
        if found is None:
            # Only attempts, no call of its own: e.g. a key that answered 429 all day while
            # other keys served the calls. It must show, with its 429s.
            found = by_value[value] = _empty_usage_row(col, value)
            rows.append(found)
        row = found
        row["requests"] += int(requests)
        row["http_429"] += int(http_429)
        if http_429:
            row["quota_429"][quota_id or "(none)"] = row["quota_429"].get(quota_id or "(none)", 0) + int(http_429)
    return rows


def _empty_usage_row(col: str, value: str) -> dict[str, Any]:
    zero = Decimal(0)
    return {
        col: value,
        "calls": 0,
        "ok": 0,
        "errors": 0,
        "free_events": 0,
        "paid_events": 0,
        "tokens_input": 0,
        "tokens_output": 0,
        "tokens_reasoning": 0,
        "tokens_cached": 0,
        "tokens_total": 0,
        "custo_usd": zero,
        "custo_lista_usd": zero,
        "economia_usd": zero,
        "latencia_p50_ms": None,
        "latencia_p95_ms": None,
        "requests": 0,
        "http_429": 0,
        "quota_429": {},
    }


def quota_errors(client: Any, database: str, period: Period, by: str = "key") -> list[dict[str, Any]]:
    """429 answers per ``by`` value and quota id: ``count``, ``first_seen``, ``last_seen``.

    ``quota_id`` is Gemini's QuotaFailure id (e.g.
    ``GenerateRequestsPerDayPerProjectPerModel-FreeTier``), ``""`` when the 429 had none.
    """
    col = _column(by)
    if col == "service_tier":
        raise ReportError(
            "429s are recorded per request, which has no service tier; use key, project, model, tier or task."
        )
    result = client.query(
        f"""
SELECT toString({col}) AS {col}, toString(quota_id) AS quota_id, count() AS count,
       min(timestamp) AS first_seen, max(timestamp) AS last_seen
FROM {table(database, "ai_attempts")}
WHERE {PERIOD_WHERE} AND http_status = 429
GROUP BY {col}, quota_id
ORDER BY count DESC, {col}, quota_id
""",
        parameters=period_parameters(period),
    )
    return result_to_dicts(result)


def latency_percentiles(client: Any, database: str, period: Period, by: str = "model") -> list[dict[str, Any]]:
    """Per ``by`` value: successful calls' whole duration and upstream request duration (ms).

    Columns: ``calls``, ``p50_ms``, ``p90_ms``, ``p95_ms``, ``p99_ms``, ``max_ms``,
    ``avg_ms`` (whole call, waits and retries included, ok calls only), and
    ``request_p50_ms``, ``request_p95_ms`` (one upstream request, any outcome).
    """
    col = _column(by)
    params = period_parameters(period)
    result = client.query(
        f"""
SELECT toString({col}) AS {col}, count() AS calls,
       quantilesExact(0.5, 0.9, 0.95, 0.99)(total_duration_ms) AS q,
       q[1] AS p50_ms, q[2] AS p90_ms, q[3] AS p95_ms, q[4] AS p99_ms,
       max(total_duration_ms) AS max_ms, avg(total_duration_ms) AS avg_ms
FROM {table(database, "ai_events")}
WHERE {PERIOD_WHERE} AND outcome = 'ok'
GROUP BY {col}
ORDER BY calls DESC, {col}
""",
        parameters=params,
    )
    rows = result_to_dicts(result)
    for row in rows:
        row.pop("q", None)
        row["request_p50_ms"] = row["request_p95_ms"] = None
    if col != "service_tier":
        by_value = {row[col]: row for row in rows}
        for value, p50, p95 in client.query(
            f"""
SELECT toString({col}) AS value, quantileExact(0.5)(duration_ms), quantileExact(0.95)(duration_ms)
FROM {table(database, "ai_attempts")}
WHERE {PERIOD_WHERE}
GROUP BY value
""",
            parameters=params,
        ).result_rows:
            if value in by_value:
                by_value[value]["request_p50_ms"] = p50
                by_value[value]["request_p95_ms"] = p95
    return rows


def auto_group(period: Period) -> str:
    """A bucket size that gives a readable chart for ``period``'s length."""
    span = period.end - period.start
    if period.name == "max":
        return "month"
    if span <= timedelta(hours=3):
        return "minute"
    if span <= timedelta(days=3):
        return "datehour"
    if span <= timedelta(days=120):
        return "day"
    return "month"


def timeseries(
    client: Any,
    database: str,
    period: Period,
    group: str | None,
    by: str = "task",
    *,
    tz: str = "UTC",
) -> list[dict[str, Any]]:
    """Per bucket and ``by`` value: ``calls``, ``errors``, ``tokens``, ``custo_usd``,
    ``custo_lista_usd``, ``economia_usd`` (bucket in column ``bucket``, value in ``series``).

    ``group`` is a time group (not the one-bucket kind); ``None`` picks :func:`auto_group`.
    """
    fmt = group_format(group or auto_group(period))
    if fmt is None:
        raise ReportError("a time series needs a time group: year, month, day, datehour or minute.")
    col = _column(by)
    source = events_cte(database, tz=tz)
    result = client.query(
        f"""
SELECT formatDateTime(timestamp, {sql_string(fmt)}, {sql_string(tz)}) AS bucket,
       toString({col}) AS series,
       count() AS calls,
       countIf(outcome != 'ok') AS errors,
       sum(tokens_input + tokens_output) AS tokens,
       toDecimal128(sum(_cost), 12) AS custo_usd,
       toDecimal128(sum(_list_cost), 12) AS custo_lista_usd,
       custo_lista_usd - custo_usd AS economia_usd
FROM {source}
GROUP BY bucket, series
ORDER BY bucket, series
""",
        parameters=period_parameters(period),
    )
    return result_to_dicts(result)


def waste(client: Any, database: str, period: Period) -> list[dict[str, Any]]:
    """What attempts that did not produce the result cost, per task, model and failure kind.

    One row per (``task``, ``model_name``, ``failure``): ``failure`` is the attempt's
    outcome (``invalid_output`` for invalid JSON, MAX_TOKENS or a blocked reply Gemini
    billed; ``quota``, ``transient``... cost 0 since no usage came back). Columns
    ``attempts``, ``tokens_input``, ``tokens_output``, ``custo_usd`` (spent: 0 on free
    keys) and ``custo_lista_usd`` (at list price). Most expensive first.
    """
    result = client.query(
        f"""
SELECT toString(task) AS task, toString(model_name) AS model_name, toString(outcome) AS failure,
       count() AS attempts,
       sum(tokens_input) AS tokens_input,
       sum(tokens_output) AS tokens_output,
       toDecimal128(sum(cost_usd), 12) AS custo_usd,
       toDecimal128(sum(list_cost_usd), 12) AS custo_lista_usd
FROM {table(database, "ai_attempts")}
WHERE {PERIOD_WHERE} AND outcome != 'ok'
GROUP BY task, model_name, failure
ORDER BY custo_usd DESC, custo_lista_usd DESC, task, model_name, failure
""",
        parameters=period_parameters(period),
    )
    return result_to_dicts(result)


def cost_by_served_tier(client: Any, database: str, period: Period) -> list[dict[str, Any]]:
    """Requests, tokens and cost per service tier *billed* (served when Gemini said, else asked).

    From ``ai_attempts`` rows that carry usage (``usage_known``): rows written before the
    ledger (or migrated from the original library) have none. Columns ``service_tier``,
    ``requests``, ``tokens_input``, ``tokens_output``, ``custo_usd``, ``custo_lista_usd``.
    """
    result = client.query(
        f"""
SELECT {billed_tier_sql("service_tier", "served_tier")} AS service_tier,
       count() AS requests,
       sum(tokens_input) AS tokens_input,
       sum(tokens_output) AS tokens_output,
       toDecimal128(sum(cost_usd), 12) AS custo_usd,
       toDecimal128(sum(list_cost_usd), 12) AS custo_lista_usd
FROM {table(database, "ai_attempts")}
WHERE {PERIOD_WHERE} AND usage_known
GROUP BY service_tier
ORDER BY custo_lista_usd DESC, service_tier
""",
        parameters=period_parameters(period),
    )
    return result_to_dicts(result)
