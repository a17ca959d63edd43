"""The Grafana dashboard: every panel's SQL, macros expanded as the ClickHouse plugin
does, runs on chDB over seeded events and gives the figures computed here by hand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from csctracker_ai_core.observability.grafana import PANELS, dashboard, dashboard_json, expand_macros

from test_reports_support import attempt, call_event, chdb_client, insert_events

UTC = timezone.utc
D = Decimal
DAY1 = datetime(2026, 11, 20, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
START, END = int(DAY1.timestamp()), int((DAY2 + timedelta(days=1)).timestamp()) - 1
QUOTA_MIN = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
QUOTA_DAY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


def _at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


def _quota_attempt(when: datetime, n: int, quota_id: str, outcome: str, project: str):
    a = attempt(when, n, "k-free00001", "free", "gemini-2.5-flash", status=429, quota_id=quota_id, project=project)
    from dataclasses import replace

    return replace(a, outcome=outcome)


def _seed():
    # Costs come from the shipped prices through the same function the processor uses.
    return [
        call_event(
            _at(DAY1, 10),
            "notas",
            "gemini-2.5-flash",
            "paid",
            10_000,
            2_000,
            key="k-paid00001",
            total_duration_ms=1000.0,
        ),
        call_event(
            _at(DAY1, 11),
            "notas",
            "gemini-2.5-flash",
            "free",
            20_000,
            1_000,
            total_duration_ms=2000.0,
            attempts=[
                _quota_attempt(_at(DAY1, 11), 1, QUOTA_MIN, "quota_minute", "proj-a"),
                attempt(_at(DAY1, 11), 2, "k-free00001", "free", "gemini-2.5-flash"),
            ],
        ),
        call_event(
            _at(DAY2, 9),
            "resumo",
            "gemini-2.5-pro",
            "paid",
            100_000,
            5_000,
            key="k-paid00001",
            total_duration_ms=4000.0,
        ),
        call_event(
            _at(DAY2, 9, 30),
            "resumo",
            "gemini-2.5-flash",
            "free",
            outcome="error",
            total_duration_ms=3000.0,
            attempts=[
                _quota_attempt(_at(DAY2, 9, 30), 1, QUOTA_DAY, "quota_day", "proj-b"),
                _quota_attempt(_at(DAY2, 9, 30), 2, QUOTA_DAY, "quota_day", "proj-b"),
            ],
        ),
    ]


@pytest.fixture
def seeded(tmp_path):
    events = _seed()
    with chdb_client(tmp_path / "chdb") as client:
        insert_events(client, events)
        yield client, events


def _run(client, title: str, **variables: str):
    (panel,) = [p for p in PANELS if p.title == title]
    sql = expand_macros(panel.sql, START, END, 86400, variables)
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_cost_per_day_by_tier_and_model(seeded):
    client, events = seeded
    rows = _run(client, "Custo por dia, por tier e modelo (USD)")
    got = {(r["time"].date().isoformat(), r["series"]): D(str(r["cost_usd"])) for r in rows}
    e = events
    assert got == {
        ("2026-11-20", "free / gemini-2.5-flash"): e[1].cost_usd,  # 0: free keys cost nothing
        ("2026-11-20", "paid / gemini-2.5-flash"): e[0].cost_usd,
        ("2026-11-21", "paid / gemini-2.5-pro"): e[2].cost_usd,
    }
    assert e[0].cost_usd > 0 and e[2].cost_usd > e[0].cost_usd and e[1].cost_usd == 0


def test_free_tier_savings(seeded):
    client, events = seeded
    (row,) = _run(client, "Economia das chaves gratuitas (USD)")
    assert D(str(row["saved_usd"])) == events[1].list_cost_usd > 0
    assert D(str(row["paid_usd"])) == events[0].cost_usd + events[2].cost_usd
    assert (row["free_calls"], row["paid_calls"]) == (1, 2)  # the failed call is not a served one


def test_429_by_quota_kind_and_project(seeded):
    client, _ = seeded
    rows = _run(client, "429 por tipo de cota e projeto")
    assert {(r["time"].date().isoformat(), r["series"]): r["http_429"] for r in rows} == {
        ("2026-11-20", "quota_minute / proj-a"): 1,
        ("2026-11-21", "quota_day / proj-b"): 2,
    }


def test_latency_quantiles(seeded):
    client, _ = seeded
    rows = _run(client, "Latência das chamadas p50 / p95 (ms)")
    by_day = {r["time"].date().isoformat(): r for r in rows}
    # ClickHouse's quantile() interpolates: day 1 holds 1000 and 2000 ms, day 2 4000 and 3000 ms.
    assert by_day["2026-11-20"]["p50_ms"] == pytest.approx(1500.0)
    assert by_day["2026-11-20"]["p95_ms"] == pytest.approx(1950.0)
    assert by_day["2026-11-21"]["p50_ms"] == pytest.approx(3500.0)


def test_failed_attempts_by_kind(seeded):
    client, _ = seeded
    rows = _run(client, "Tentativas que falharam, por tipo")
    assert {(r["outcome"], r["tier"]): r["attempts"] for r in rows} == {
        ("quota_day", "free"): 2,
        ("quota_minute", "free"): 1,
    }


def test_daily_budget_use_counts_todays_paid_spend(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    today = [
        call_event(now, "notas", "gemini-2.5-pro", "paid", 200_000, 10_000, key="k-paid00001"),
        call_event(now, "notas", "gemini-2.5-flash", "free", 10_000, 1_000),
    ]
    with chdb_client(tmp_path / "chdb") as client:
        insert_events(client, today)
        (row,) = _run(client, "Uso do orçamento diário (chaves pagas, hoje)", daily_budget_usd="2")
    expected = (100 * today[0].cost_usd / 2).quantize(D("0.01"))
    assert D(str(row["budget_used_percent"])) == expected > 0


def test_every_panel_is_tested_and_expands_fully():
    """A new panel needs a test above; every macro in it is one the plugin knows."""
    tested = {
        "Custo por dia, por tier e modelo (USD)",
        "Economia das chaves gratuitas (USD)",
        "429 por tipo de cota e projeto",
        "Latência das chamadas p50 / p95 (ms)",
        "Tentativas que falharam, por tipo",
        "Uso do orçamento diário (chaves pagas, hoje)",
    }
    assert {p.title for p in PANELS} == tested
    for p in PANELS:
        assert "$" not in expand_macros(p.sql, START, END, 60, {"daily_budget_usd": "10"})
    with pytest.raises(KeyError):
        expand_macros("SELECT $__unknown(x)", START, END, 60)


def test_dashboard_json_is_importable_shape():
    model = json.loads(dashboard_json())
    assert model["uid"] == "csctracker-ai-core"
    assert [p["targets"][0]["rawSql"] for p in model["panels"]] == [p.sql for p in PANELS]
    assert all(p["datasource"]["type"] == "grafana-clickhouse-datasource" for p in model["panels"])
    assert dashboard("abc")["panels"][0]["datasource"]["uid"] == "abc"
