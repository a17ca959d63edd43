"""A Grafana dashboard over the ClickHouse tables (``csc-ai grafana-dashboard > dash.json``).

For the official ClickHouse data source plugin (``grafana-clickhouse-datasource``): each
panel is raw SQL over ``ai_events`` / ``ai_attempts`` with the plugin's macros
(``$__timeFilter``, ``$__timeInterval``) and one dashboard variable,
``daily_budget_usd``. Point the data source's default database at the telemetry
database (``CLICKHOUSE_DB``, ``default`` unless set).

:func:`expand_macros` does what the plugin does to a query for a given time range, so
the tests run every panel's SQL on chDB over seeded events and check its figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PANELS", "Panel", "dashboard", "dashboard_json", "expand_macros"]


@dataclass(frozen=True)
class Panel:
    """One panel: its title, Grafana panel type, plugin query format and SQL."""

    title: str
    kind: str  # "timeseries", "barchart", "table", "stat", "gauge"
    format: int  # the plugin's format: 0 table, 1 time series
    sql: str
    unit: str = ""
    description: str = ""


PANELS: tuple[Panel, ...] = (
    Panel(
        "Custo por dia, por tier e modelo (USD)",
        "barchart",
        0,
        """SELECT toStartOfDay(timestamp) AS time, concat(tier, ' / ', model_name) AS series,
       sum(cost_usd) AS cost_usd
FROM ai_events FINAL
WHERE $__timeFilter(timestamp) AND outcome = 'ok'
GROUP BY time, series
ORDER BY time, series""",
        unit="currencyUSD",
        description="What Gemini billed, per day, split by key tier and model.",
    ),
    Panel(
        "Economia das chaves gratuitas (USD)",
        "stat",
        0,
        """SELECT sumIf(list_cost_usd, tier = 'free') AS saved_usd,
       sumIf(cost_usd, tier = 'paid') AS paid_usd,
       countIf(tier = 'free') AS free_calls,
       countIf(tier = 'paid') AS paid_calls
FROM ai_events FINAL
WHERE $__timeFilter(timestamp) AND outcome = 'ok'""",
        unit="currencyUSD",
        description="What the calls served on free keys would have cost at paid list prices.",
    ),
    Panel(
        "429 por tipo de cota e projeto",
        "timeseries",
        1,
        """SELECT $__timeInterval(timestamp) AS time, concat(toString(outcome), ' / ', project) AS series,
       count() AS http_429
FROM ai_attempts FINAL
WHERE $__timeFilter(timestamp) AND http_status = 429
GROUP BY time, series
ORDER BY time, series""",
        description="Quota answers by kind (quota_minute, quota_day, quota_zero, quota) and Google Cloud project.",
    ),
    Panel(
        "Latência das chamadas p50 / p95 (ms)",
        "timeseries",
        1,
        """SELECT $__timeInterval(timestamp) AS time,
       quantile(0.5)(total_duration_ms) AS p50_ms,
       quantile(0.95)(total_duration_ms) AS p95_ms
FROM ai_events FINAL
WHERE $__timeFilter(timestamp)
GROUP BY time
ORDER BY time""",
        unit="ms",
        description="Whole calls, waits for a slot and retries included.",
    ),
    Panel(
        "Tentativas que falharam, por tipo",
        "table",
        0,
        """SELECT toString(outcome) AS outcome, model_name, tier, count() AS attempts,
       countIf(http_status = 0) AS without_http_answer
FROM ai_attempts FINAL
WHERE $__timeFilter(timestamp) AND toString(outcome) != 'ok'
GROUP BY outcome, model_name, tier
ORDER BY attempts DESC""",
        description="Requests that did not produce the answer: each one used quota, and paid ones may be billed.",
    ),
    Panel(
        "Uso do orçamento diário (chaves pagas, hoje)",
        "gauge",
        0,
        """SELECT round(100 * sumIf(cost_usd, tier = 'paid') / ${daily_budget_usd}, 2) AS budget_used_percent
FROM ai_events FINAL
WHERE timestamp >= toStartOfDay(now()) AND outcome = 'ok'""",
        unit="percent",
        description="Paid spend since midnight (server time) against the dashboard variable daily_budget_usd.",
    ),
)


def dashboard(datasource_uid: str = "${DS_CLICKHOUSE}") -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (import it, then pick the data source)."""
    panels = []
    for i, p in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": p.kind,
                "title": p.title,
                "description": p.description,
                "datasource": {"type": "grafana-clickhouse-datasource", "uid": datasource_uid},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": p.unit} if p.unit else {}, "overrides": []},
                "targets": [
                    {
                        "refId": "A",
                        "datasource": {"type": "grafana-clickhouse-datasource", "uid": datasource_uid},
                        "editorType": "sql",
                        "queryType": "timeseries" if p.format == 1 else "table",
                        "format": p.format,
                        "rawSql": p.sql,
                    }
                ],
            }
        )
    return {
        "title": "csctracker-ai-core: Gemini",
        "uid": "csctracker-ai-core",
        "tags": ["gemini", "csctracker-ai-core", "clickhouse"],
        "schemaVersion": 39,
        "time": {"from": "now-7d", "to": "now"},
        "__inputs": [
            {
                "name": "DS_CLICKHOUSE",
                "label": "ClickHouse",
                "type": "datasource",
                "pluginId": "grafana-clickhouse-datasource",
                "pluginName": "ClickHouse",
            }
        ],
        "templating": {
            "list": [
                {
                    "name": "daily_budget_usd",
                    "label": "Orçamento diário (USD)",
                    "type": "textbox",
                    "query": "10",
                    "current": {"text": "10", "value": "10"},
                }
            ]
        },
        "panels": panels,
    }


def dashboard_json(datasource_uid: str = "${DS_CLICKHOUSE}") -> str:
    """:func:`dashboard` as indented JSON text."""
    return json.dumps(dashboard(datasource_uid), ensure_ascii=False, indent=2) + "\n"


_MACRO = re.compile(r"\$__(timeFilter|timeInterval)\(([^)]+)\)")
_VARIABLE = re.compile(r"\$\{(\w+)\}")


def expand_macros(
    sql: str, start_s: int, end_s: int, interval_s: int, variables: Mapping[str, str] | None = None
) -> str:
    """``sql`` as the ClickHouse plugin sends it for the range [start_s, end_s] (epoch s).

    ``$__timeFilter(c)`` becomes ``c >= toDateTime(start) AND c <= toDateTime(end)``,
    ``$__timeInterval(c)`` ``toStartOfInterval(toDateTime(c), INTERVAL n second)``, and
    ``${name}`` the dashboard variable's value. An unknown macro or variable raises
    ``KeyError``, so a panel cannot ship with one the tests did not expand.
    """
    values = dict(variables or {})

    def macro(m: re.Match[str]) -> str:
        column = m.group(2).strip()
        if m.group(1) == "timeFilter":
            return f"{column} >= toDateTime({int(start_s)}) AND {column} <= toDateTime({int(end_s)})"
        return f"toStartOfInterval(toDateTime({column}), INTERVAL {int(interval_s)} second)"

    out = _MACRO.sub(macro, sql)
    out = _VARIABLE.sub(lambda m: values[m.group(1)], out)
    if "$__" in out:
        raise KeyError(f"unexpanded macro in: {out}")
    return out
