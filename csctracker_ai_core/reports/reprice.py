"""Re-pricing: recompute the stored costs of a period after a price-table fix.

Every cost in the store was computed at call time by
:func:`~csctracker_ai_core.pricing.price_usage` with the prices then in force. When a
price turns out wrong (or a dated change was entered late), :func:`reprice` prices every
attempt of the period again with the current table (price file + ``model_prices``),
sums them into their events, and rewrites only the rows whose cost changed:

* idempotent: a second run finds nothing to change and writes nothing;
* nothing is lost: each change is kept in ``ai_cost_revisions`` (old and new figures,
  when, and from which prices), so the original figures stay queryable;
* events without attempt usage (the original library's rows, or 0.1.0's) are priced
  from the event's own tokens, model, tier and timestamp: the same function.

Rows are rewritten by inserting the new version (the tables are ``ReplacingMergeTree``:
the last insert of a key wins, and reports read with ``FINAL``); the insert is not
deduplicated, so re-pricing back and forth always lands.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from ..pricing import PriceTable, billed_tier, cost_on_key, price_usage
from .periods import Period
from .queries import PERIOD_WHERE, period_parameters, table

__all__ = ["RepriceResult", "reprice", "REVISIONS_TABLE"]

logger = logging.getLogger(__name__)

REVISIONS_TABLE = "ai_cost_revisions"
_ZERO = Decimal("0E-12")
_CHUNK = 500
_NO_DEDUP = {"insert_deduplicate": 0}

_REVISIONS_DDL = """CREATE TABLE IF NOT EXISTS {t} (
  `repriced_at` DateTime64(3, 'UTC'),
  `timestamp` DateTime64(3, 'UTC'),
  `event_id` String,
  `attempt` UInt16,
  `cost_usd_before` Decimal(18, 12),
  `list_cost_usd_before` Decimal(18, 12),
  `cost_usd_after` Decimal(18, 12),
  `list_cost_usd_after` Decimal(18, 12),
  `prices` String
) ENGINE = MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (event_id, attempt, repriced_at)"""

_TOKENS = ("tokens_input", "tokens_output", "tokens_cached", "tokens_image", "tokens_audio", "tokens_video")


@dataclass(frozen=True)
class RepriceResult:
    """What :func:`reprice` changed: rows rewritten and the period's cost before and after."""

    events_seen: int
    attempts_changed: int
    events_changed: int
    cost_before_usd: Decimal
    cost_after_usd: Decimal


def _usage(row: dict[str, Any]) -> dict[str, int]:
    return {name[len("tokens_") :]: int(row.get(name) or 0) for name in _TOKENS}


def _select(
    client: Any, database: str, name: str, columns: Sequence[str], where: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    present = _existing(client, database, name)
    cols = [c for c in columns if c in present]
    result = client.query(f"SELECT {', '.join(cols)} FROM {table(database, name)} WHERE {where}", parameters=params)
    return [dict(zip(cols, r, strict=True)) for r in result.result_rows]


def _existing(client: Any, database: str, name: str) -> set[str]:
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        parameters={"db": database, "t": name},
    ).result_rows
    return {r[0] for r in rows}


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def reprice(client: Any, database: str, prices: PriceTable, period: Period) -> RepriceResult:
    """Price every event of ``period`` (and its attempts) again with ``prices``; see the module doc."""
    params = period_parameters(period)
    events = _select(
        client,
        database,
        "ai_events",
        (
            "event_id",
            "timestamp",
            "task",
            "outcome",
            "model_name",
            "model",
            "tier",
            "service_tier",
            "served_tier",
            "cost_usd",
            "list_cost_usd",
            "cost_wasted_usd",
        )
        + _TOKENS,
        PERIOD_WHERE,
        params,
    )
    attempts_by_event: dict[str, list[dict[str, Any]]] = {}
    ids = [e["event_id"] for e in events]
    for i in range(0, len(ids), _CHUNK):
        for a in _select(
            client,
            database,
            "ai_attempts",
            (
                "event_id",
                "attempt",
                "timestamp",
                "model_name",
                "tier",
                "service_tier",
                "served_tier",
                "outcome",
                "usage_known",
                "cost_usd",
                "list_cost_usd",
            )
            + _TOKENS,
            "event_id IN {ids:Array(String)}",
            {"ids": ids[i : i + _CHUNK]},
        ):
            attempts_by_event.setdefault(a["event_id"], []).append(a)

    changed_attempts: dict[tuple[str, int], tuple[Decimal, Decimal]] = {}
    changed_events: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
    revisions: list[list[Any]] = []
    now = datetime.now(timezone.utc)
    source = ",".join(prices.sources) + "+model_prices"
    before = after = _ZERO
    for event in events:
        attempts = [a for a in attempts_by_event.get(event["event_id"], ()) if a.get("usage_known")]
        if attempts:
            cost = list_cost = waste = _ZERO
            for a in attempts:
                new_list = price_usage(
                    a["model_name"],
                    billed_tier(a["service_tier"], a["served_tier"]),
                    _usage(a),
                    _aware(a["timestamp"]),
                    prices=prices,
                )
                new_cost = cost_on_key(a["tier"], new_list)
                if (new_cost, new_list) != (Decimal(a["cost_usd"]), Decimal(a["list_cost_usd"])):
                    changed_attempts[(a["event_id"], int(a["attempt"]))] = (new_cost, new_list)
                    revisions.append(
                        [
                            now,
                            a["timestamp"],
                            a["event_id"],
                            int(a["attempt"]),
                            a["cost_usd"],
                            a["list_cost_usd"],
                            new_cost,
                            new_list,
                            source,
                        ]
                    )
                cost += new_cost
                list_cost += new_list
                if a["outcome"] != "ok":
                    waste += new_cost
        else:
            # No attempt usage (the original library's rows, 0.1.0's): the event's own tokens.
            model = event.get("model_name") or event.get("model") or ""
            list_cost = price_usage(
                model,
                billed_tier(event.get("service_tier", ""), event.get("served_tier", "")),
                _usage(event),
                _aware(event["timestamp"]),
                prices=prices,
            )
            tier = event.get("tier") or ("free" if str(event.get("model", "")).endswith("-free") else "")
            cost = cost_on_key(tier, list_cost)
            waste = cost if event["outcome"] != "ok" else _ZERO
        old = (Decimal(event["cost_usd"]), Decimal(event["list_cost_usd"]), Decimal(event.get("cost_wasted_usd", 0)))
        before += old[0]
        after += cost
        if (cost, list_cost, waste) != old:
            changed_events[event["event_id"]] = (cost, list_cost, waste)
            revisions.append([now, event["timestamp"], event["event_id"], 0, old[0], old[1], cost, list_cost, source])

    _rewrite(client, database, "ai_attempts", "attempt", changed_attempts)
    _rewrite(client, database, "ai_events", None, changed_events)
    if revisions:
        client.command(_REVISIONS_DDL.format(t=f"`{database}`.`{REVISIONS_TABLE}`"))
        client.insert(
            REVISIONS_TABLE,
            revisions,
            database=database,
            column_names=[
                "repriced_at",
                "timestamp",
                "event_id",
                "attempt",
                "cost_usd_before",
                "list_cost_usd_before",
                "cost_usd_after",
                "list_cost_usd_after",
                "prices",
            ],
        )
    logger.info(
        "repriced %s: %d events seen, %d events and %d attempts changed, USD %s -> %s",
        period,
        len(events),
        len(changed_events),
        len(changed_attempts),
        before,
        after,
    )
    return RepriceResult(len(events), len(changed_attempts), len(changed_events), before, after)


def _rewrite(
    client: Any, database: str, name: str, attempt_col: Any, changes: Mapping[Any, tuple[Decimal, ...]]
) -> None:
    """Insert a new version of each changed row, every other column as stored."""
    if not changes:
        return
    columns = [c for c in _ordered_columns(client, database, name) if c != "ingested_at"]
    ids = sorted({k[0] if isinstance(k, tuple) else k for k in changes})
    for i in range(0, len(ids), _CHUNK):
        result = client.query(
            f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM {table(database, name)} "
            "WHERE event_id IN {ids:Array(String)}",
            parameters={"ids": ids[i : i + _CHUNK]},
        )
        rows = []
        for raw in result.result_rows:
            row = dict(zip(columns, raw, strict=True))
            key = (row["event_id"], int(row[attempt_col])) if attempt_col else row["event_id"]
            new = changes.get(key)
            if new is None:
                continue
            row["cost_usd"], row["list_cost_usd"] = new[0], new[1]
            if len(new) > 2:
                row["cost_wasted_usd"] = new[2]
            rows.append([row[c] for c in columns])
        if rows:
            client.insert(name, rows, column_names=columns, database=database, settings=_NO_DEDUP)


def _ordered_columns(client: Any, database: str, name: str) -> list[str]:
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        parameters={"db": database, "t": name},
    ).result_rows
    return [r[0] for r in rows]
