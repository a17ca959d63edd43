"""Budget rules, periods and the reserve/settle core (no network, fake clock)."""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from csctracker_ai_core import Budget, ConfigurationError, FakeClock
from csctracker_ai_core.budgets import (
    AttemptScope,
    BudgetGuard,
    ExchangeRates,
    InMemoryBudgetState,
    parse_budgets,
    period_of,
)
from csctracker_ai_core.budgets.cost import (
    DEFAULT_RESERVED_OUTPUT_TOKENS,
    actual_usd,
    local_input_tokens,
    worst_case_usd,
)
from csctracker_ai_core.budgets.guard import BudgetRefusal, Hold
from csctracker_ai_core.budgets.rules import from_units, to_units
from csctracker_ai_core.pricing import estimate_cost
from csctracker_ai_core.tokens import TokenUsage


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


PAID = AttemptScope(tier="paid", project="p1", model="gemini-2.5-flash", task="resumo", metadata={"cliente": "acme"})
FREE = AttemptScope(tier="free", project="p0", model="gemini-2.5-flash", task="resumo")


# -- rules ---------------------------------------------------------------------------


def test_rule_defaults_and_normalization():
    rule = Budget.from_value({"limit": "10.50"})
    assert rule.limit == Decimal("10.50")
    assert (rule.currency, rule.period, rule.timezone, rule.tier) == ("USD", "day", "America/Sao_Paulo", "paid")
    assert rule.name == "paid day USD 10.5"
    rule2 = Budget(limit=3, currency="brl", period="MONTH", model="models/Gemini-2.5-Flash", metadata={"cliente": "x"})
    assert (rule2.currency, rule2.period, rule2.model, rule2.metadata) == (
        "BRL",
        "month",
        "gemini-2.5-flash",
        (("cliente", "x"),),
    )


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"limit": "abc"}, "not a number"),
        ({"limit": "-1"}, "positive"),
        ({"limit": 0}, "positive"),
        ({"limit": True}, "decimal string"),
        ({"limit": "NaN"}, "positive"),
        ({"limit": "1", "currency": "EUR"}, "USD or BRL"),
        ({"limit": "1", "period": "week"}, "hour, day, month"),
        ({"limit": "1", "timezone": "Mars/Olympus"}, "IANA"),
        ({"limit": "1", "tier": "gold"}, "paid, free, any"),
        ({"limit": "1", "task": ""}, "non-empty"),
        ({"limit": "1", "metadata": {"k": 1}}, "strings"),
        ({"limit": "1", "colour": "red"}, "unknown fields"),
        ({"period": "day"}, "no limit"),
        ("10", "dict or a Budget"),
    ],
)
def test_invalid_rules_are_configuration_errors(raw, words):
    with pytest.raises(ConfigurationError, match=words):
        parse_budgets([raw])


def test_parse_budgets_json_and_duplicates():
    rules = parse_budgets('[{"limit": "1"}, {"limit": "2", "task": "t"}]')
    assert [r.limit for r in rules] == [Decimal(1), Decimal(2)]
    assert parse_budgets(None) == () and parse_budgets("  ") == ()
    with pytest.raises(ConfigurationError, match="valid JSON"):
        parse_budgets("[{limit: 1}]")
    with pytest.raises(ConfigurationError, match="count the same calls"):
        parse_budgets([{"limit": "1"}, {"limit": "2"}])


def test_covers_filters():
    assert Budget(limit=1).covers(PAID) and not Budget(limit=1).covers(FREE)
    assert Budget(limit=1, tier="any").covers(FREE)
    assert Budget(limit=1, task="resumo").covers(PAID) and not Budget(limit=1, task="outra").covers(PAID)
    assert Budget(limit=1, metadata={"cliente": "acme"}).covers(PAID)
    assert not Budget(limit=1, metadata={"cliente": "zeta"}).covers(PAID)
    assert Budget(limit=1, model="gemini-2.5-flash").covers(PAID)
    assert not Budget(limit=1, model="gemini-2.5-flash-lite").covers(PAID)
    assert not Budget(limit=1, project="p2").covers(PAID)


# -- periods -------------------------------------------------------------------------


def test_day_period_in_sao_paulo():
    # 02:30 UTC on 2026-11-25 is still 23:30 of the 24th in Sao Paulo (UTC-3).
    p = period_of(Budget(limit=1), _ts("2026-11-25T02:30:00+00:00"))
    assert p.key == "2026-11-24"
    assert p.start == _ts("2026-11-24T00:00:00-03:00") and p.end == _ts("2026-11-25T00:00:00-03:00")


def test_month_and_hour_periods():
    p = period_of(Budget(limit=1, period="month", timezone="UTC"), _ts("2026-12-31T23:59:59+00:00"))
    assert (p.key, p.end) == ("2026-12", _ts("2027-01-01T00:00:00+00:00"))
    h = period_of(Budget(limit=1, period="hour", timezone="Asia/Kolkata"), _ts("2026-11-25T10:10:00+00:00"))
    # Kolkata is UTC+5:30: 15:40 local, the hour began at 15:00 local = 09:30 UTC.
    assert (h.key, h.start, h.end - h.start) == ("2026-11-25T15", _ts("2026-11-25T09:30:00+00:00"), 3600.0)


def test_dst_day_is_23_hours():
    p = period_of(Budget(limit=1, timezone="America/New_York"), _ts("2026-03-08T12:00:00+00:00"))
    assert p.end - p.start == 23 * 3600


# -- amounts -------------------------------------------------------------------------


def test_units_round_up():
    assert to_units(Decimal("0.0000000001")) == 1
    assert to_units(Decimal("1.5")) == 1_500_000_000
    assert from_units(1_500_000_000) == Decimal("1.5")


def test_reserved_output_is_the_cap_within_the_model_limit():
    from csctracker_ai_core.budgets.cost import reserved_output_tokens
    from csctracker_ai_core.catalog import model_info

    assert reserved_output_tokens("gemini-2.5-flash", 300) == 300
    assert reserved_output_tokens("gemini-2.5-flash", None) == DEFAULT_RESERVED_OUTPUT_TOKENS
    limit = model_info("gemini-2.5-flash").output_token_limit
    assert reserved_output_tokens("gemini-2.5-flash", limit * 10) == limit


def test_worst_case_uses_the_one_cost_function():
    n_in = local_input_tokens("olá mundo")  # 10 UTF-8 bytes
    assert n_in == 10
    expected = estimate_cost("gemini-2.5-flash", "paid", "standard", 10, 100)[1]
    assert worst_case_usd("gemini-2.5-flash", "standard", 10, 100) == expected
    default = estimate_cost("gemini-2.5-flash", "paid", "standard", 10, DEFAULT_RESERVED_OUTPUT_TOKENS)[1]
    assert worst_case_usd("gemini-2.5-flash", "standard", 10, None) == default
    # flex may be served at standard: the worst case is standard's price
    assert worst_case_usd("gemini-2.5-flash", "flex", 10, 100) == expected
    usage = TokenUsage(input=10, output=50, total=60)
    assert actual_usd("gemini-2.5-flash", "flex", usage) == estimate_cost("gemini-2.5-flash", "paid", "flex", 10, 50)[1]
    assert actual_usd("gemini-2.5-flash", "standard", None) == 0


# -- guard ---------------------------------------------------------------------------


def _guard(*rules, **kw):
    clock = kw.pop("clock", None) or FakeClock(_ts("2026-11-25T12:00:00+00:00"))
    return BudgetGuard(parse_budgets(list(rules)), clock=clock, **kw), clock


def test_reserve_settle_and_refuse_at_the_limit():
    guard, _ = _guard({"limit": "1.00"})
    holds = [guard.reserve(PAID, Decimal("0.30")) for _ in range(3)]
    assert all(isinstance(h, Hold) for h in holds)
    refusal = guard.reserve(PAID, Decimal("0.30"))
    assert isinstance(refusal, BudgetRefusal)
    assert (refusal.spent, refusal.reserved, refusal.needed, refusal.limit) == (0, Decimal("0.9"), Decimal("0.3"), 1)
    guard.settle(holds[0], Decimal("0.05"))  # the reply was shorter than the worst case
    line = guard.status()[0]
    assert (line.spent, line.reserved, line.remaining) == (Decimal("0.05"), Decimal("0.6"), Decimal("0.35"))
    assert isinstance(guard.reserve(PAID, Decimal("0.30")), Hold)
    assert guard.reserve(FREE, Decimal("5")) is None  # a paid rule does not cover free calls


def test_refusal_reserves_nothing_on_any_rule():
    guard, _ = _guard({"limit": "10"}, {"limit": "0.5", "task": "resumo"})
    assert isinstance(guard.reserve(PAID, Decimal("0.6")), BudgetRefusal)
    assert [line.reserved for line in guard.status()] == [0, 0]


def test_release_gives_everything_back():
    guard, _ = _guard({"limit": "1"})
    hold = guard.reserve(PAID, Decimal("1"))
    guard.release(hold)
    assert guard.status()[0].reserved == 0 and guard.status()[0].spent == 0


def test_period_rollover_on_fake_clock():
    guard, clock = _guard({"limit": "1", "period": "hour", "timezone": "UTC"})
    guard.settle(guard.reserve(PAID, Decimal("1")), Decimal("1"))
    refusal = guard.reserve(PAID, Decimal("0.01"))
    assert isinstance(refusal, BudgetRefusal)
    assert refusal.resets_at == _ts("2026-11-25T13:00:00+00:00")
    clock.set(refusal.resets_at)
    assert isinstance(guard.reserve(PAID, Decimal("0.01")), Hold)
    assert guard.status()[0].period_key == "2026-11-25T13"


def test_brl_rule_converts_and_refuses_without_rate():
    rates = ExchangeRates([(date(2026, 11, 20), "5.00")])
    guard, _ = _guard({"limit": "10", "currency": "BRL"}, rates=rates)
    hold = guard.reserve(PAID, Decimal("1"))  # USD 1 = BRL 5 (rate of the 20th: the latest on or before)
    guard.settle(hold, Decimal("0.5"))
    assert guard.status()[0].spent == Decimal("2.5")
    assert isinstance(guard.reserve(PAID, Decimal("1.6")), BudgetRefusal)  # 2.5 + 8 > 10
    no_rate, _ = _guard({"limit": "10", "currency": "BRL"}, rates=ExchangeRates([(date(2026, 12, 1), "5")]))
    refusal = no_rate.reserve(PAID, Decimal("0.01"))
    assert isinstance(refusal, BudgetRefusal) and refusal.no_rate
    assert "no USD->BRL exchange rate" in refusal.describe()


def test_rates_loader_is_asked_when_a_rate_is_missing():
    calls = []

    def load():
        calls.append(1)
        return ExchangeRates([(date(2026, 11, 25), "6")])

    guard, _ = _guard({"limit": "10", "currency": "BRL"}, rates_loader=load)
    assert isinstance(guard.reserve(PAID, Decimal("1")), Hold)
    assert isinstance(guard.reserve(PAID, Decimal("1")), BudgetRefusal)  # 6 + 6 > 10
    assert calls == [1]


def test_warnings_once_per_threshold_per_period(caplog):
    alerts = []
    guard, clock = _guard({"limit": "1", "period": "hour", "timezone": "UTC", "name": "cap"}, on_budget=alerts.append)
    with caplog.at_level(logging.WARNING, logger="csctracker_ai_core.budgets.guard"):
        for amount in ("0.4", "0.1", "0.05", "0.3", "0.15"):
            guard.settle(guard.reserve(PAID, Decimal(amount)), Decimal(amount))
        guard.reserve(PAID, Decimal("0.01"))  # refused: 100% already warned this period
    # Reservations count: a rule warns before the call that would cross a threshold is sent.
    assert [(a.threshold, a.spent + a.reserved) for a in alerts] == [
        (50, Decimal("0.5")),
        (80, Decimal("0.85")),
        (100, Decimal("1")),
    ]
    assert not any(a.refused for a in alerts)
    assert alerts[0].rule == "cap" and alerts[0].resets_at == datetime(2026, 11, 25, 13, tzinfo=timezone.utc)
    assert sum("budget 'cap' at" in r.message for r in caplog.records) == 3
    clock.advance(3600)
    guard.settle(guard.reserve(PAID, Decimal("0.6")), Decimal("0.6"))
    assert alerts[-1].threshold == 50 and alerts[-1].period == "2026-11-25T13"


def test_callback_errors_never_reach_the_call(caplog):
    def boom(alert):
        raise RuntimeError("callback bug")

    guard, _ = _guard({"limit": "1"}, on_budget=boom)
    with caplog.at_level(logging.ERROR):
        assert isinstance(guard.reserve(PAID, Decimal("0.9")), Hold)
    assert "on_budget callback failed" in caplog.text


def test_resume_raises_spent_to_the_store_amount():
    guard, _ = _guard({"limit": "1", "name": "a"})
    guard.resume({"a": Decimal("0.7")})
    guard.resume({"a": Decimal("0.2")})  # max, never lower
    assert guard.status()[0].spent == Decimal("0.7")
    assert isinstance(guard.reserve(PAID, Decimal("0.4")), BudgetRefusal)


def test_threads_never_pass_the_limit():
    guard, _ = _guard({"limit": "1"})
    state = guard.state
    assert isinstance(state, InMemoryBudgetState)
    granted = []

    def worker():
        for _ in range(50):
            h = guard.reserve(PAID, Decimal("0.013"))
            if isinstance(h, Hold):
                granted.append(h)
                guard.settle(h, Decimal("0.013"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 76  # floor(1 / 0.013)
    assert guard.status()[0].spent == Decimal("0.988")
