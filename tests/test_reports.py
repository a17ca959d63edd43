"""Telemetry.get_telemetry_data and the further views, against events with known tokens
and prices, in a chDB store under tmp_path: exact costs in USD and BRL."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from csctracker_ai_core.exceptions import ReportError
from csctracker_ai_core.pricing import estimate_cost
from csctracker_ai_core.reports.telemetry_report import ORIGINAL_COLUMNS, Telemetry

from test_reports_support import attempt, call_event, chdb_client, insert_events

UTC = timezone.utc
D = Decimal
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)  # Sunday noon


def t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 6, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CSCTRACKER_AI_PRICES_FILE", raising=False)
    with chdb_client(tmp_path / "chdb") as client:
        yield client


@pytest.fixture
def report(store):
    tel = Telemetry(client=store, now=NOW)
    yield tel
    tel.close()


def _events():
    k_free, k_paid = "k-free00001", "k-paid00001"
    return [
        # 2025-06-14, notas: one paid flash call, one free flash call
        call_event(
            t(14, 10),
            "notas",
            "gemini-2.5-flash",
            "paid",
            1000,
            500,
            tokens_reasoning=200,
            key=k_paid,
            project="proj-paid",
            time_spent=1.0,
            total_duration_ms=1100.0,
        ),
        call_event(
            t(14, 11, 30),
            "notas",
            "gemini-2.5-flash",
            "free",
            2000,
            1000,
            key=k_free,
            time_spent=2.0,
            total_duration_ms=2300.0,
            attempts=[
                attempt(
                    t(14, 11, 30),
                    1,
                    k_free,
                    "free",
                    "gemini-2.5-pro",
                    status=429,
                    quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                ),
                attempt(t(14, 11, 30), 2, k_free, "free", "gemini-2.5-flash"),
            ],
        ),
        # 2025-06-14, resumo: pro in flex, long prompt, part cached
        call_event(
            t(14, 15),
            "resumo",
            "gemini-2.5-pro",
            "paid",
            250_000,
            2000,
            tokens_cached=50_000,
            service_tier="flex",
            key=k_paid,
            project="proj-paid",
            time_spent=4.0,
            total_duration_ms=4000.0,
        ),
        # 2025-06-15, notas: a paid 3.1 pro call and a failed call
        call_event(
            t(15, 9),
            "notas",
            "gemini-3.1-pro-preview",
            "paid",
            100_000,
            10_000,
            key=k_paid,
            project="proj-paid",
            time_spent=3.0,
            total_duration_ms=3000.0,
        ),
        call_event(
            t(15, 9, 5),
            "notas",
            "gemini-2.5-flash",
            "free",
            outcome="error",
            key=k_free,
            time_spent=0.0,
            total_duration_ms=500.0,
            attempts=[
                attempt(
                    t(15, 9, 5),
                    1,
                    k_free,
                    "free",
                    "gemini-2.5-flash",
                    status=429,
                    quota_id="GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                ),
                attempt(
                    t(15, 9, 5),
                    2,
                    k_free,
                    "free",
                    "gemini-2.5-flash",
                    status=429,
                    quota_id="GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                ),
            ],
        ),
        # 2025-06-15, resumo: a model nobody priced
        call_event(
            t(15, 10),
            "resumo",
            "gemini-9-ultra",
            "paid",
            1000,
            1000,
            key=k_paid,
            project="proj-paid",
            time_spent=1.0,
            total_duration_ms=1000.0,
        ),
    ]


def _by(rows, *keys):
    return {tuple(r[k] for k in keys): r for r in rows}


def test_daily_report_exact_costs_in_usd_and_brl(store, report):
    insert_events(store, _events())
    report.set_exchange_rate("2025-06-14", "5.5")
    report.set_exchange_rate("2025-06-15", "5.6")
    rows = report.get_telemetry_data("day", "week")
    assert [(r["data"], r["task"]) for r in rows] == [
        ("2025-06-14", "notas"),
        ("2025-06-14", "resumo"),
        ("2025-06-15", "notas"),
        ("2025-06-15", "resumo"),
    ]
    by = _by(rows, "data", "task")
    for r in rows:
        assert list(r)[: len(ORIGINAL_COLUMNS)] == list(ORIGINAL_COLUMNS)

    n14 = by[("2025-06-14", "notas")]
    # paid: 1000 x 0.30 + 500 x 2.50 per 1M = 0.00155 USD; free call: 0, would be 0.0031
    assert n14["total_events"] == 2 and n14["free_events"] == 1 and n14["paid_events"] == 1
    assert n14["custo_total_usd"] == D("0.00155")
    assert n14["custo_lista_usd"] == D("0.00465")
    assert n14["economia_usd"] == D("0.0031")
    assert n14["custo_total_reais"] == D("0.008525")  # 0.00155 x 5.5
    assert n14["economia_reais"] == D("0.01705")
    assert n14["custo_medio_por_evento"] == D("0.0042625")
    assert n14["dias_ativos"] == 1 and n14["horas_ativas"] == 2
    assert n14["custo_medio_por_dia"] == D("0.008525")
    assert n14["custo_medio_por_hora"] == D("0.0042625")
    assert (n14["total_input_tokens"], n14["total_output_tokens"], n14["total_reasoning_tokens"]) == (3000, 1500, 200)
    assert (n14["avg_input_tokens"], n14["avg_output_tokens"]) == (1500.0, 750.0)
    assert (n14["tempo_medio_por_evento"], n14["tempo_maximo_por_evento"], n14["tempo_minimo_por_evento"]) == (
        1.5,
        2.0,
        1.0,
    )
    assert n14["ultimo_evento"] == t(14, 11, 30)
    assert n14["taxa_cambio_ausente"] == 0
    assert n14["total_attempts"] == 3

    r14 = by[("2025-06-14", "resumo")]
    # > 200k prompt: (200k x 2.50 + 50k cached x 0.25 + 2k x 15.00) / 1M x 0.5 (flex) = 0.27125
    assert r14["custo_total_usd"] == D("0.27125")
    assert r14["custo_total_reais"] == D("1.491875")
    assert r14["total_cached_tokens"] == 50_000
    assert r14["economia_usd"] == 0

    n15 = by[("2025-06-15", "notas")]
    # 100k x 2.00 + 10k x 12.00 = 0.32 USD; the failed call counts as an event, costs 0
    assert n15["total_events"] == 2 and n15["errors"] == 1 and n15["ok_events"] == 1
    assert n15["custo_total_usd"] == D("0.32")
    assert n15["custo_total_reais"] == D("1.792")  # 0.32 x 5.6
    assert n15["custo_medio_por_evento"] == D("0.896")
    assert n15["custo_medio_por_evento_usd"] == D("0.16")
    # times are of successful calls only
    assert (n15["tempo_medio_por_evento"], n15["tempo_minimo_por_evento"]) == (3.0, 3.0)
    assert n15["latencia_p50_ms"] == 3000.0

    r15 = by[("2025-06-15", "resumo")]
    assert r15["custo_total_usd"] == 0 and r15["custo_total_reais"] == 0  # unpriced model: 0, no error
    assert r15["total_events"] == 1


def test_sql_cost_equals_the_per_call_estimate_and_the_recorded_cost(store, report):
    events = _events()
    insert_events(store, events)
    rows = report.get_telemetry_data("group", "max")
    total = sum(r["custo_total_usd"] for r in rows)
    listed = sum(r["custo_lista_usd"] for r in rows)
    assert total == sum(e.cost_usd for e in events)
    assert listed == sum(e.list_cost_usd for e in events)
    assert sum(r["custo_registrado_usd"] for r in rows) == total
    assert {r["data"] for r in rows} == {"group"}


def test_random_events_sql_matches_python(store, report):
    rng = random.Random(7)
    models = [
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash-lite",
        "gemini-3.1-pro-preview",
        "gemini-3-flash-preview",
        "gemini-2.5-flash-preview-09-2025",
        "unknown-model",
    ]
    events = []
    for i in range(300):
        tin = rng.choice([0, 1, 999, 200_000, 200_001, rng.randint(0, 400_000)])
        events.append(
            call_event(
                NOW - timedelta(minutes=rng.randint(1, 60 * 24 * 6)),
                rng.choice(["a", "b", "c"]),
                rng.choice(models),
                rng.choice(["free", "paid"]),
                tin,
                rng.randint(0, 70_000),
                tokens_cached=rng.randint(0, tin),
                service_tier=rng.choice(["standard", "flex", "priority"]),
                event_id=f"r{i}",
            )
        )
    insert_events(store, events)
    rows = report.get_telemetry_data("group", "week")
    by_task = _by(rows, "task")
    for task in "abc":
        mine = [e for e in events if e.task == task]
        assert by_task[(task,)]["custo_total_usd"] == sum(e.cost_usd for e in mine)
        assert by_task[(task,)]["custo_lista_usd"] == sum(e.list_cost_usd for e in mine)
        assert by_task[(task,)]["total_events"] == len(mine)


def test_missing_exchange_rate_is_reported_not_invented(store, report):
    insert_events(store, _events())
    report.set_exchange_rate("2025-06-15", "5.6")  # nothing for the 14th nor before
    by = _by(report.get_telemetry_data("day", "week"), "data", "task")
    n14 = by[("2025-06-14", "notas")]
    assert n14["custo_total_reais"] is None and n14["taxa_cambio_ausente"] == 1
    assert n14["custo_medio_por_evento"] is None and n14["economia_reais"] is None
    assert n14["custo_total_usd"] == D("0.00155")  # USD is still known
    assert by[("2025-06-15", "notas")]["custo_total_reais"] == D("1.792")
    assert by[("2025-06-15", "notas")]["taxa_cambio_ausente"] == 0


def test_rate_of_an_earlier_day_applies_asof(store, report):
    insert_events(store, _events())
    report.set_exchange_rate("2025-06-01", "5")
    by = _by(report.get_telemetry_data("day", "week"), "data", "task")
    assert by[("2025-06-15", "notas")]["custo_total_reais"] == D("1.6")
    # a corrected rate for a day replaces the first
    report.set_exchange_rate("2025-06-01", "6")
    by = _by(report.get_telemetry_data("day", "week"), "data", "task")
    assert by[("2025-06-15", "notas")]["custo_total_reais"] == D("1.92")
    assert report.exchange_rates() == [(datetime(2025, 6, 1).date(), D("6"))]


@pytest.mark.parametrize("bad_rate", ["0", "-1", "abc", "nan"])
def test_bad_exchange_rates_raise(report, bad_rate):
    with pytest.raises(ReportError):
        report.set_exchange_rate("2025-06-01", bad_rate)


def test_bad_exchange_rate_date_raises(report):
    with pytest.raises(ReportError, match="ISO date"):
        report.set_exchange_rate("15/06/2025", "5")


def test_groups_and_period_filter(store, report):
    insert_events(store, _events())
    assert [r["data"] for r in report.get_telemetry_data("month", "week")] == ["2025-06", "2025-06"]
    assert [r["data"] for r in report.get_telemetry_data("year", "week")] == ["2025", "2025"]
    hours = report.get_telemetry_data("hour", "week")
    assert sorted({r["data"] for r in hours}) == ["09", "10", "11", "15"]
    only_today = report.get_telemetry_data("day", "today")
    assert {r["data"] for r in only_today} == {"2025-06-15"}
    assert report.get_telemetry_data("day", "2025-06-14|2025-06-14")[0]["data"] == "2025-06-14"
    assert report.get_telemetry_data("day", "lastWeek") == []


@pytest.mark.parametrize("group,period", [("days", "24h"), ("day", "2d"), ("semana", "today"), ("day", "")])
def test_bad_names_raise_report_error(report, group, period):
    with pytest.raises(ReportError):
        report.get_telemetry_data(group, period)


def test_prices_seeded_from_the_file_and_updatable_in_the_table(store, report):
    insert_events(store, _events())
    assert int(store.command("SELECT count() FROM model_prices")) == 0
    assert report.prices().models["gemini-2.5-flash"][0].input_price_less_200 == D("0.30")
    # seeded on first use from the shipped price file, every dated period a row
    seeded = int(store.command("SELECT count() FROM model_prices"))
    assert seeded == sum(len(p) for p in report.prices().models.values())
    assert int(store.command("SELECT count() FROM model_prices WHERE model = 'gemini-3.8-flash'")) == 2
    # a user raises the flash price with one insert: the table keeps both rows (history)
    report.set_model_price("gemini-2.5-flash", "1.00", "3.00")
    assert int(store.command("SELECT count() FROM model_prices")) == seeded + 1
    assert report.prices().models["gemini-2.5-flash"][0].input_price_less_200 == D("1.00")
    # reports read the stored cost: it changes only when re-priced (csc-ai reprice)
    by = _by(report.get_telemetry_data("day", "week"), "data", "task")
    assert by[("2025-06-14", "notas")]["custo_total_usd"] == D("0.00155")


def test_existing_price_table_is_not_overwritten(store):
    store.insert(
        "model_prices",
        [[datetime(2024, 1, 1), "gemini-2.5-flash", D("9"), D("9"), D("9"), D("9"), "mine"]],
        column_names=[
            "timestamp",
            "model",
            "input_price_less_200",
            "output_price_less_200",
            "input_price_more_200",
            "output_price_more_200",
            "source",
        ],
    )
    with Telemetry(client=store, now=NOW) as tel:
        assert tel.prices().models["gemini-2.5-flash"][0].input_price_less_200 == D("9")
        # models the table lacks still have the file's price
        assert tel.prices().models["gemini-2.5-pro"][0].input_price_less_200 == D("1.25")
    assert int(store.command("SELECT count() FROM model_prices")) == 1


def test_usage_by_key_with_429s_by_quota_id(store, report):
    insert_events(store, _events())
    rows = _by(report.usage_by_key("week"), "key_fingerprint")
    free = rows[("k-free00001",)]
    assert free["calls"] == 2 and free["errors"] == 1 and free["free_events"] == 2
    assert free["requests"] == 4 and free["http_429"] == 3
    assert free["quota_429"] == {
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier": 1,
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier": 2,
    }
    assert free["custo_usd"] == 0 and free["economia_usd"] == D("0.0031")
    paid = rows[("k-paid00001",)]
    assert paid["calls"] == 4 and paid["custo_usd"] == D("0.59280")  # 0.00155 + 0.27125 + 0.32 + 0
    assert paid["http_429"] == 0 and paid["quota_429"] == {}


def test_usage_by_project_model_tier(store, report):
    insert_events(store, _events())
    projects = _by(report.usage_by_project("week"), "project")
    assert projects[("proj-paid",)]["calls"] == 4 and projects[("proj-a",)]["calls"] == 2
    models = _by(report.usage_by_model("week"), "model_name")
    assert models[("gemini-2.5-flash",)]["calls"] == 3
    assert models[("gemini-2.5-flash",)]["tokens_input"] == 3000
    assert models[("gemini-2.5-pro",)]["custo_usd"] == D("0.27125")
    tiers = _by(report.usage_by_tier("week"), "tier")
    assert tiers[("free",)]["calls"] == 2 and tiers[("paid",)]["calls"] == 4
    assert tiers[("free",)]["http_429"] == 3
    with pytest.raises(ReportError, match="unknown dimension"):
        report.usage_by("colour", "week")


def test_quota_errors_view(store, report):
    insert_events(store, _events())
    rows = report.quota_errors("week", by="key")
    assert [(r["key_fingerprint"], r["quota_id"], r["count"]) for r in rows] == [
        ("k-free00001", "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", 2),
        ("k-free00001", "GenerateRequestsPerDayPerProjectPerModel-FreeTier", 1),
    ]
    by_model = report.quota_errors("week", by="model")
    assert {(r["model_name"], r["count"]) for r in by_model} == {("gemini-2.5-flash", 2), ("gemini-2.5-pro", 1)}


def test_latency_percentiles(store, report):
    events = [
        call_event(
            NOW - timedelta(minutes=i + 1),
            "lat",
            "gemini-2.5-flash",
            "free",
            10,
            10,
            total_duration_ms=float(ms),
            event_id=f"lat{i}",
            attempts=[
                attempt(NOW - timedelta(minutes=i + 1), 1, "k-x", "free", "gemini-2.5-flash", duration_ms=float(ms) / 2)
            ],
        )
        for i, ms in enumerate(range(100, 2100, 100))
    ]  # 100, 200, ..., 2000 ms
    insert_events(store, events)
    (row,) = report.latency("1h", by="model")
    assert row["model_name"] == "gemini-2.5-flash" and row["calls"] == 20
    # quantileExact returns an observed value: the element at floor(q x n) of the sorted list
    assert (row["p50_ms"], row["p90_ms"], row["p95_ms"], row["p99_ms"], row["max_ms"]) == (
        1100.0,
        1900.0,
        2000.0,
        2000.0,
        2000.0,
    )
    assert row["avg_ms"] == 1050.0
    assert row["request_p50_ms"] == 550.0


def test_timeseries_for_charts(store, report):
    insert_events(store, _events())
    rows = report.timeseries("week", "day", by="tier")
    assert [(r["bucket"], r["series"], r["calls"]) for r in rows] == [
        ("2025-06-14", "free", 1),
        ("2025-06-14", "paid", 2),
        ("2025-06-15", "free", 1),
        ("2025-06-15", "paid", 2),
    ]
    free14 = rows[0]
    assert free14["custo_usd"] == 0 and free14["custo_lista_usd"] == D("0.0031") and free14["tokens"] == 3000
    auto = report.timeseries("24h", None, by="task")  # 24h -> hourly buckets
    assert all(len(r["bucket"]) == len("2025-06-15 09:00") for r in auto)
    with pytest.raises(ReportError):
        report.timeseries("week", "group")


def test_replayed_rows_count_once(store, report):
    events = _events()
    insert_events(store, events)
    insert_events(store, events[:2])  # a writer replaying its spool after a crash
    rows = report.get_telemetry_data("group", "week")
    assert sum(r["total_events"] for r in rows) == len(events)


def test_default_constructor_reads_the_processor_settings(tmp_path, monkeypatch):
    """Telemetry() with no argument finds the embedded store where the processor writes it."""
    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(tmp_path / "data"))
    for name in ("CLICKHOUSE_HOST", "CSCTRACKER_AI_CLICKHOUSE_DSN", "CSCTRACKER_AI_TELEMETRY"):
        monkeypatch.delenv(name, raising=False)
    import os

    from csctracker_ai_core.paths import embedded_clickhouse_path

    with chdb_client(embedded_clickhouse_path(os.environ)) as client:
        insert_events(client, _events()[:1])
    from csctracker_ai_core.service.Telemetry import Telemetry as ShimTelemetry

    tel = ShimTelemetry(now=NOW)
    try:
        (row,) = tel.get_telemetry_data("day", "week")
        assert row["custo_total_usd"] == D("0.00155")
        assert row["custo_total_reais"] is None and row["taxa_cambio_ausente"] == 1
    finally:
        tel.close()


def test_estimate_and_sql_agree_on_the_threshold(store, report):
    events = [
        call_event(NOW - timedelta(hours=1), "th", "gemini-2.5-pro", "paid", n, 100, event_id=f"th{n}")
        for n in (199_999, 200_000, 200_001)
    ]
    insert_events(store, events)
    (row,) = report.get_telemetry_data("group", "24h")
    expected = sum(estimate_cost("gemini-2.5-pro", "paid", "standard", n, 100)[0] for n in (199_999, 200_000, 200_001))
    assert row["custo_total_usd"] == expected


def test_a_key_that_only_met_429s_still_shows(store, report):
    when = NOW - timedelta(hours=1)
    insert_events(
        store,
        [
            call_event(
                when,
                "x",
                "gemini-2.5-flash",
                "free",
                10,
                10,
                key="k-served0001",
                event_id="q1",
                attempts=[
                    attempt(
                        when,
                        1,
                        "k-only42901",
                        "free",
                        "gemini-2.5-flash",
                        status=429,
                        quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    ),
                    attempt(when, 2, "k-served0001", "free", "gemini-2.5-flash"),
                ],
            )
        ],
    )
    rows = _by(report.usage_by_key("24h"), "key_fingerprint")
    only = rows[("k-only42901",)]
    assert only["calls"] == 0 and only["requests"] == 1 and only["http_429"] == 1
    assert only["quota_429"] == {"GenerateRequestsPerDayPerProjectPerModel-FreeTier": 1}
    assert rows[("k-served0001",)]["calls"] == 1 and rows[("k-served0001",)]["http_429"] == 0
