"""Budgets on the call path: the real google-genai SDK against the Gemini emulator.

Priced replies: the emulator reports usage (prompt tokens ~ characters / 4, reply
tokens of its fixed JSON answer), the processor prices it with ``pricing``.
"""

from __future__ import annotations

import base64
import json
import threading
from decimal import Decimal

import pytest

from csctracker_ai_core import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    FakeClock,
    GeminiServiceException,
    IaProcessor,
    Telemetry,
)
from csctracker_ai_core.budgets import cost as budget_cost
from csctracker_ai_core.pricing import estimate_cost

FREE = ["AIzaFREE-bud-0000000000000000000000"]
PAID = ["AIzaPAID-bud-0000000000000000000000"]
MODEL = "gemini-2.5-flash"
PROMPT = "Qual a capital da França?"


class ListSink:
    location = "memory"

    def __init__(self):
        self.events = []

    def record(self, event):
        self.events.append(event)

    def close(self, timeout_s=None):
        pass


@pytest.fixture
def emu(make_gemini_emulator):
    emu = make_gemini_emulator()
    emu.add_keys(FREE, tier="free", project="free-project")
    emu.add_keys(PAID, tier="paid", project="paid-project")
    return emu


def _processor(emu, *, free=(), paid=PAID, cap=8, **kw):
    kw.setdefault("telemetry_sink", ListSink())
    return IaProcessor(
        google_free_keys=list(free),
        google_paid_keys=list(paid),
        google_models_limits={MODEL: cap},
        base_url=emu.base_url,
        max_wait_s=0,
        **kw,
    )


@pytest.fixture
def one_call(emu):
    """Usage and list cost of one call of PROMPT (measured on the emulator, no budget)."""
    with _processor(emu) as p:
        _, tokens, _ = p.analisar_com_gemini(input_text=PROMPT, task="medida")
    emu.reset_counters()
    cost = estimate_cost(MODEL, "paid", "standard", tokens.input, tokens.output)[1]
    return tokens, cost


@pytest.fixture
def bounded_output(one_call):
    """(tokens, cost of a call, its worst case) when ``max_output_tokens`` is the reply's size.

    The emulator honours maxOutputTokens (thinking + text), so the reply fits exactly;
    the worst case counts input as UTF-8 bytes, above the emulator's ~4 characters a token.
    """
    tokens, cost = one_call
    worst = budget_cost.worst_case_usd(MODEL, "standard", len(PROMPT.encode()), tokens.output)
    assert cost < worst < 2 * cost
    return tokens, cost, worst


def _bounded(emu, tokens, **kw):
    return _processor(emu, max_output_tokens=tokens.output, **kw)


def test_fifty_paid_calls_from_eight_threads_never_pass_the_limit(emu, bounded_output):
    tokens, cost, worst = bounded_output
    limit = cost * 10
    with _bounded(emu, tokens, budgets=[{"limit": str(limit), "name": "dez"}]) as p:
        ok, refused, other = [], [], []

        def worker(n):
            for _ in range(n):
                try:
                    p.analisar_com_gemini(input_text=PROMPT, task="carga")
                    ok.append(1)
                except BudgetExceededError as exc:
                    refused.append(exc)
                except Exception as exc:  # pragma: no cover - reported by the assert below
                    other.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in (7, 7, 6, 6, 6, 6, 6, 6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        line = p.budgets.status()[0]
    assert other == []
    assert len(ok) + len(refused) == 50
    spent = len(ok) * cost
    assert line.spent == spent and line.reserved == 0
    assert spent <= limit  # 0 overshoot: max_output_tokens bounds the reply
    # the reservation counts input by bytes (>= Gemini's tokens), so a few calls' worth of
    # headroom can stay unused, never more than one worst case per call in flight
    assert limit - spent < worst + cost
    assert len(ok) >= 8
    assert emu.count(status=200) == len(ok)  # a refused call sent nothing
    assert emu.total_requests == len(ok)
    exc = refused[0]
    assert isinstance(exc, GeminiServiceException) and exc.attempts == 0
    assert exc.rule == "dez" and exc.limit == limit and exc.currency == "USD"
    assert exc.resets_at is not None and "dez" in str(exc) and "Nothing was sent" in str(exc)


def test_free_keys_keep_serving_while_paid_is_capped(emu, one_call):
    emu.set_quota(MODEL, tier="free", rpd=3)
    sink = ListSink()
    with _processor(emu, free=FREE, budgets=[{"limit": "0.000000001"}], telemetry_sink=sink) as p:
        for _ in range(3):
            p.analisar_com_gemini(input_text=PROMPT)
        with pytest.raises(BudgetExceededError) as info:
            p.analisar_com_gemini(input_text=PROMPT)
        with pytest.raises(BudgetExceededError):
            p.analisar_com_gemini(input_text=PROMPT)  # the free key is now known to be out for the day
    assert [e.tier for e in sink.events[:3]] == ["free"] * 3
    assert emu.count(key=PAID[0]) == 0  # nothing ever reached the paid key
    assert emu.count(key=FREE[0], status=429) == 1  # the 4th call learned the free quota was spent
    assert info.value.attempts == 1 and sink.events[3].outcome == "error"
    assert sink.events[3].error_type == "BudgetExceededError"


def test_rule_per_task_and_per_metadata_value(emu, bounded_output):
    tokens, cost, worst = bounded_output
    rules = [  # room for one call, not two
        Budget(limit=worst * Decimal("1.5"), task="resumo", name="resumo"),
        {"limit": str(worst * Decimal("1.5")), "metadata": {"cliente": "acme"}, "name": "acme"},
    ]
    with _bounded(emu, tokens, budgets=rules) as p:
        p.analisar_com_gemini(input_text=PROMPT, task="resumo")
        with pytest.raises(BudgetExceededError, match="resumo"):
            p.analisar_com_gemini(input_text=PROMPT, task="resumo")
        p.analisar_com_gemini(input_text=PROMPT, task="outra")  # another task: not capped
        p.analisar_com_gemini(input_text=PROMPT, task="x", metadata={"cliente": "acme"})
        with pytest.raises(BudgetExceededError, match="acme"):
            p.analisar_com_gemini(input_text=PROMPT, task="y", metadata={"cliente": "acme"})
        p.analisar_com_gemini(input_text=PROMPT, task="y", metadata={"cliente": "zeta"})
        status = {line.rule: line for line in p.budgets.status()}
    assert status["resumo"].spent == cost and status["acme"].spent == cost
    assert emu.count(status=200) == 4


def test_period_rollover_on_a_fake_clock(emu, bounded_output):
    tokens, cost, worst = bounded_output
    clock = FakeClock(1_790_000_000.0)
    with _bounded(emu, tokens, clock=clock, budgets=[{"limit": str(worst), "period": "hour", "timezone": "UTC"}]) as p:
        p.analisar_com_gemini(input_text=PROMPT)
        with pytest.raises(BudgetExceededError) as info:
            p.analisar_com_gemini(input_text=PROMPT)
        assert info.value.resets_at == 1_790_002_800.0  # the next full UTC hour
        clock.set(info.value.resets_at)
        p.analisar_com_gemini(input_text=PROMPT)
        line = p.budgets.status()[0]
    assert (line.spent, line.period_key) == (cost, "2026-09-21T15")
    assert emu.count(status=200) == 2


def test_brl_rule_with_the_reports_exchange_rate(emu, bounded_output):
    tokens, cost, worst = bounded_output
    with Telemetry() as t:
        t.set_exchange_rate("2001-01-01", "5.5")  # the latest rate on or before today
    limit_brl = (cost + worst) * Decimal("5.5")  # room for two calls
    with _bounded(emu, tokens, telemetry_sink=None, budgets=[{"limit": str(limit_brl), "currency": "BRL"}]) as p:
        p.analisar_com_gemini(input_text=PROMPT)
        p.analisar_com_gemini(input_text=PROMPT)
        with pytest.raises(BudgetExceededError) as info:
            p.analisar_com_gemini(input_text=PROMPT)
        line = p.budgets.status()[0]
    assert line.currency == "BRL" and line.spent == cost * Decimal("5.5") * 2
    assert info.value.currency == "BRL" and info.value.limit == limit_brl


def test_brl_rule_without_rate_refuses_paid_calls_clearly(emu, one_call):
    with _processor(emu, telemetry_sink=None, budgets=[{"limit": "100", "currency": "BRL"}]) as p:
        with pytest.raises(BudgetExceededError, match="no USD->BRL exchange rate") as info:
            p.analisar_com_gemini(input_text=PROMPT)
    assert info.value.no_rate and emu.total_requests == 0


def test_restart_against_the_same_store_resumes_the_spent_amount(emu, bounded_output):
    tokens, cost, worst = bounded_output
    rules = [{"limit": str(cost * 2 + worst), "name": "tres"}]  # room for three calls
    with _bounded(emu, tokens, telemetry_sink=None, budgets=rules) as p:
        p.analisar_com_gemini(input_text=PROMPT)
        p.analisar_com_gemini(input_text=PROMPT)
        p.close(timeout_s=120)  # deliver to the store, however loaded the machine
    with _bounded(emu, tokens, telemetry_sink=None, budgets=rules) as p2:
        assert p2.budgets.status()[0].spent == cost * 2
        p2.analisar_com_gemini(input_text=PROMPT)
        with pytest.raises(BudgetExceededError):
            p2.analisar_com_gemini(input_text=PROMPT)
    assert emu.count(status=200) == 3


def test_budgets_from_the_environment_and_bad_rules(emu, monkeypatch):
    monkeypatch.setenv("CSCTRACKER_AI_BUDGETS", '[{"limit": "5", "period": "month", "task": "t"}]')
    with _processor(emu) as p:
        assert [r.name for r in p.budgets.rules] == ["paid month USD 5 task=t"]
    monkeypatch.setenv("CSCTRACKER_AI_BUDGETS", '[{"limit": "5", "period": "week"}]')
    with pytest.raises(ConfigurationError, match="period"):
        _processor(emu)
    with pytest.raises(ConfigurationError, match="limit"):
        _processor(emu, budgets=[{"limit": "-3"}])
    assert emu.total_requests == 0


def test_on_budget_callback_gets_frozen_alerts(emu, bounded_output):
    tokens, cost, worst = bounded_output
    alerts = []
    with _bounded(emu, tokens, budgets=[{"limit": str(cost * 3 + worst)}], on_budget=alerts.append) as p:
        for _ in range(4):
            p.analisar_com_gemini(input_text=PROMPT)
    assert [a.threshold for a in alerts] == [50, 80, 100]
    with pytest.raises(AttributeError):
        alerts[0].threshold = 1  # frozen


def test_cli_budgets_and_get_budget_status_read_the_store(emu, one_call, monkeypatch):
    import io
    import json

    from csctracker_ai_core.cli import main

    _, cost = one_call
    with _processor(emu, telemetry_sink=None) as p:  # no budgets: the store still records the spend
        p.analisar_com_gemini(input_text=PROMPT, task="a")
        p.analisar_com_gemini(input_text=PROMPT, task="b")
        p.close(timeout_s=120)  # deliver to the store, however loaded the machine
    rules = [{"limit": "1", "name": "todas"}, {"limit": "0.5", "task": "a", "name": "so-a"}]
    with Telemetry() as t:
        lines = {line.rule: line for line in t.get_budget_status(rules)}
    assert (lines["todas"].spent, lines["so-a"].spent) == (cost * 2, cost)
    assert lines["so-a"].remaining == Decimal("0.5") - cost and lines["so-a"].reserved == 0

    out, err = io.StringIO(), io.StringIO()
    assert main(["budgets", "--budgets", json.dumps(rules), "--json"], stdout=out, stderr=err) == 0, err.getvalue()
    rows = {r["rule"]: r for r in json.loads(out.getvalue())}
    assert Decimal(rows["todas"]["spent"]) == cost * 2 and rows["todas"]["limit"] == "1"
    assert rows["so-a"]["task"] == "a" and rows["so-a"]["resets_at"].endswith("+00:00")

    monkeypatch.setenv("CSCTRACKER_AI_BUDGETS", json.dumps(rules[:1]))
    out = io.StringIO()
    assert main(["budgets"], stdout=out, stderr=io.StringIO()) == 0
    assert "todas" in out.getvalue() and "resets at" in out.getvalue()
    monkeypatch.delenv("CSCTRACKER_AI_BUDGETS")
    err = io.StringIO()
    assert main(["budgets"], stdout=io.StringIO(), stderr=err) == 2
    assert "CSCTRACKER_AI_BUDGETS" in err.getvalue()


def test_unreadable_store_starts_from_zero_with_a_warning(emu, caplog):
    import socket

    with socket.socket() as s:  # a port nobody listens on: the ClickHouse server is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with caplog.at_level("WARNING", logger="csctracker_ai_core.budgets.setup"):
        with _processor(
            emu, telemetry_sink=None, host="127.0.0.1", port=port, budgets=[{"limit": "1", "name": "um"}]
        ) as p:
            line = p.budgets.status()[0]
            p.analisar_com_gemini(input_text=PROMPT)  # the call itself is unaffected
            p.close(timeout_s=0.5)
    assert line.spent == 0 and line.reserved == 0
    assert "the telemetry store cannot be read" in caplog.text and "starts from zero" in caplog.text


PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()


def test_a_budget_counts_exactly_what_the_ledger_says_an_attempt_cost(emu, tmp_path, monkeypatch):
    """The cost of a usage record is one fact: the budget's settled amount is the sum of
    the attempts' list_cost_usd, image and cached tokens priced as the ledger prices them.
    A user's price file gives images a price of their own here; budgets used to price
    every prompt token but the cached ones at the text price (estimate_cost)."""
    price = {
        "input_price_less_200": "0.30",
        "output_price_less_200": "2.50",
        "input_price_more_200": "0.30",
        "output_price_more_200": "2.50",
        "cached_input_price_less_200": "0.03",
        "cached_input_price_more_200": "0.03",
        "image_input_price_less_200": "7.00",
        "image_input_price_more_200": "7.00",
    }
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {MODEL: price}}))
    monkeypatch.setenv("CSCTRACKER_AI_PRICES_FILE", str(prices))
    emu.cached_tokens = 3
    sink = ListSink()
    with _processor(emu, telemetry_sink=sink, budgets=[{"limit": "100", "name": "tudo"}]) as p:
        _, tokens, _ = p.analisar_com_gemini(
            prompt="Descreva a imagem.", file_base64=PNG_B64, mime_type="image/png", task="img"
        )
        line = p.budgets.status()[0]
    (event,) = sink.events
    (attempt,) = event.attempt_events
    assert attempt.tokens_image > 0 and attempt.tokens_cached == 3
    assert line.spent == attempt.list_cost_usd > 0 and line.reserved == 0
    text_priced = estimate_cost(MODEL, "paid", "standard", tokens.input, tokens.output, tokens_cached=3)[1]
    assert line.spent > text_priced  # the image tokens at their own price
