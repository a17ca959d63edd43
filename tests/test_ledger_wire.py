"""The ledger over the wire: the real SDK against the emulator, the embedded store, the reports.

Each case is checked to the exact decimal against a hand computation (gemini-2.5-pro on a
paid key: 1.25 / 10.00 USD per 1M tokens up to 200k prompt tokens, 2.50 / 15.00 above,
cached input 0.125) in the event row, the attempt rows and the report. Token counts are
the emulator's: ceil(characters / 4) of the prompt it received and of the reply text,
plus the thinking tokens its reply rule bills (40; thinking is billed as output), or 64
on a MAX_TOKENS reply that spent its whole budget thinking (finishReason MAX_TOKENS with
content {"role": "model"} and only thoughtsTokenCount: google/adk-python#1357; Google
bills those tokens).
"""

from __future__ import annotations

import json
import math
import os
from decimal import Decimal

import pytest

from csctracker_ai_core import IaProcessor, InvalidResponseError, TruncatedResponseError
from csctracker_ai_core.paths import embedded_clickhouse_path
from csctracker_ai_core.reports.telemetry_report import Telemetry
from csctracker_ai_core.testing import emulator_wire as wire
from csctracker_ai_core.testing.emulator import ReplyRule

from test_reports_support import chdb_client

pytest.importorskip("chdb")

PAID = ["AIzaPAID-ledger-000000000000000000000"]
MODEL = "gemini-2.5-pro"
REPLY = {"ok": 1}
D = Decimal
M = D(1_000_000)


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


THINK = 40
REPLY_TOKENS = tokens(json.dumps(REPLY)) + THINK  # '{"ok": 1}' -> 3, plus thinking


def pro(prompt: int, output: int, cached: int = 0, mult: str = "1") -> Decimal:
    """USD of one gemini-2.5-pro request, by hand."""
    if prompt > 200_000:
        inp, out, cin = D("2.50"), D("15.00"), D("0.25")
    else:
        inp, out, cin = D("1.25"), D("10.00"), D("0.125")
    return ((prompt - cached) * inp + cached * cin + output * out) * D(mult) / M


@pytest.fixture
def emu(make_gemini_emulator):
    emu = make_gemini_emulator(replies=(ReplyRule(contains="", json=REPLY, thoughts=THINK),))
    emu.add_keys(PAID, tier="paid")
    return emu


def run(emu, *, max_retries=3, **call):
    processor = IaProcessor(
        google_paid_keys=PAID, google_models_limits=f"{MODEL}=100", base_url=emu.base_url, max_retries=max_retries
    )
    error = None
    try:
        try:
            _, _, event_id = processor.analisar_com_gemini(
                input_text=call.pop("input_text", "Quanto custa?"),
                prompt="Responda em JSON.",
                task="ledger",
                model_variant=MODEL,
                exact_match=True,
                **call,
            )
        except InvalidResponseError as exc:
            error, event_id = exc, exc.event_id
    finally:
        processor.close(60)  # deliver every event before the rows are read
    prompts = [wire.parse_request(r.body).prompt_tokens for r in emu.requests if r.method == "generateContent"]
    return event_id, error, prompts


def rows(event_id):
    with chdb_client(embedded_clickhouse_path(os.environ)) as client:
        ev = client.query(
            "SELECT tokens_input, tokens_output, tokens_cached, cost_usd, list_cost_usd, cost_wasted_usd, outcome, "
            "served_tier FROM ai_events FINAL WHERE event_id = {e:String}",
            parameters={"e": event_id},
        ).result_rows
        at = client.query(
            "SELECT attempt, outcome, usage_known, tokens_input, tokens_output, tokens_cached, cost_usd, "
            "list_cost_usd, served_tier, finish_reason FROM ai_attempts FINAL WHERE event_id = {e:String} "
            "ORDER BY attempt",
            parameters={"e": event_id},
        ).result_rows
    assert len(ev) == 1
    return ev[0], at


def report_total():
    with Telemetry() as tel:
        (row,) = tel.get_telemetry_data("group", "max")
        return row["custo_total_usd"], tel.waste("max"), tel.cost_by_served_tier("max")


def test_invalid_json_then_success(emu):
    emu.inject("invalid_json", 1)
    event_id, error, prompts = run(emu)
    assert error is None and len(prompts) == 2
    p = prompts[0]
    # the emulator cuts the reply mid-value; the thinking is billed all the same
    cut = tokens(json.dumps(REPLY)[: len(json.dumps(REPLY)) // 2] + "…") + THINK
    first, second = pro(p, cut), pro(p, REPLY_TOKENS)
    ev, at = rows(event_id)
    # attempt 1: billed by Gemini, unusable: it keeps its tokens and cost
    assert at[0][1:8] == ("invalid_output", True, p, cut, 0, first, first)
    assert at[1][1:8] == ("ok", True, p, REPLY_TOKENS, 0, second, second)
    # the event: sums over its attempts; the first attempt is waste
    assert ev[:6] == (2 * p, cut + REPLY_TOKENS, 0, first + second, first + second, first)
    total, waste, _ = report_total()
    assert total == first + second
    assert [(w["task"], w["model_name"], w["failure"], w["attempts"], w["custo_usd"]) for w in waste] == [
        ("ledger", MODEL, "invalid_output", 1, first)
    ]


def test_two_max_tokens_then_a_typed_error(make_gemini_emulator):
    emu = make_gemini_emulator(replies=(ReplyRule(contains="", text="", finish_reason="MAX_TOKENS", thoughts=64),))
    emu.add_keys(PAID, tier="paid")
    event_id, error, prompts = run(emu, max_retries=1)
    assert isinstance(error, TruncatedResponseError) and len(prompts) == 2
    each = pro(prompts[0], 64)  # only thinking tokens, billed as output
    ev, at = rows(event_id)
    assert [a[1:8] for a in at] == [("invalid_output", True, prompts[0], 64, 0, each, each)] * 2
    assert [a[9] for a in at] == ["MAX_TOKENS", "MAX_TOKENS"]
    assert ev[3:7] == (2 * each, 2 * each, 2 * each, "error")  # all of it wasted
    total, waste, _ = report_total()
    assert total == 2 * each and waste[0]["custo_usd"] == 2 * each and waste[0]["attempts"] == 2


def test_flex_requested_standard_served_is_billed_standard(emu):
    emu.served_tiers = {"flex": "standard"}
    event_id, error, prompts = run(emu, service_tier="flex")
    standard = pro(prompts[0], REPLY_TOKENS)  # not half: Gemini served (and bills) standard
    ev, at = rows(event_id)
    assert ev[3] == standard and ev[7] == "standard"
    assert (at[0][6], at[0][8]) == (standard, "standard")
    total, _, tiers = report_total()
    assert total == standard
    assert [(t["service_tier"], t["requests"], t["custo_usd"]) for t in tiers] == [("standard", 1, standard)]


def test_flex_served_flex_is_half(emu):
    event_id, _, prompts = run(emu, service_tier="flex")
    ev, at = rows(event_id)
    assert ev[3] == at[0][6] == pro(prompts[0], REPLY_TOKENS, mult="0.5")


def test_a_prompt_above_200k_tokens_takes_the_long_context_prices(emu):
    event_id, _, prompts = run(emu, input_text="x" * 801_000)
    assert prompts[0] > 200_000
    expected = pro(prompts[0], REPLY_TOKENS)
    assert expected == (prompts[0] * D("2.50") + REPLY_TOKENS * D(15)) / M
    ev, at = rows(event_id)
    assert ev[3] == at[0][6] == expected
    assert report_total()[0] == expected


def test_cached_tokens_at_the_cached_price(emu):
    emu.cached_tokens = 4000
    event_id, _, prompts = run(emu, input_text="y" * 40_000)
    expected = pro(prompts[0], REPLY_TOKENS, cached=4000)
    assert expected == ((prompts[0] - 4000) * D("1.25") + 4000 * D("0.125") + REPLY_TOKENS * D(10)) / M
    ev, at = rows(event_id)
    assert ev[2] == at[0][5] == 4000
    assert ev[3] == at[0][6] == expected
    assert report_total()[0] == expected


def test_reprice_after_a_price_fix_is_idempotent_and_keeps_the_original(emu):
    event_id, _, prompts = run(emu)
    original = pro(prompts[0], REPLY_TOKENS)
    with Telemetry() as tel:
        # a price change dated before the call: the call's cost follows; the revision keeps the old figure
        tel.set_model_price(MODEL, "2.00", "20.00", valid_from="2020-01-01")
        first = tel.reprice("max")
        second = tel.reprice("max")
        (row,) = tel.get_telemetry_data("group", "max")
    fixed = (prompts[0] * D(2) + REPLY_TOKENS * D(20)) / M
    assert (first.events_changed, first.attempts_changed) == (1, 1)
    assert (first.cost_before_usd, first.cost_after_usd) == (original, fixed)
    assert (second.events_changed, second.attempts_changed) == (0, 0)  # idempotent
    assert row["custo_total_usd"] == fixed
    ev, at = rows(event_id)
    assert ev[3] == at[0][6] == fixed
    with chdb_client(embedded_clickhouse_path(os.environ)) as client:
        kept = client.query(
            "SELECT attempt, cost_usd_before, cost_usd_after FROM ai_cost_revisions ORDER BY attempt"
        ).result_rows
    assert kept == [(0, original, fixed), (1, original, fixed)]


def test_cli_and_html_show_waste_and_served_tiers(emu, tmp_path, capsys):
    from csctracker_ai_core.cli import main

    emu.inject("invalid_json", 1)
    emu.served_tiers = {"flex": "standard"}
    event_id, _, prompts = run(emu, service_tier="flex")
    cut = tokens(json.dumps(REPLY)[: len(json.dumps(REPLY)) // 2] + "…") + THINK
    wasted, served = pro(prompts[0], cut), pro(prompts[1], REPLY_TOKENS)
    assert main(["report", "--period", "max", "--waste", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["failure"], D(row["custo_usd"])) == ("invalid_output", wasted)
    assert main(["report", "--period", "max", "--tiers", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("service_tier,requests") and lines[1].startswith("standard,2,")
    assert D(lines[1].split(",")[4]) == wasted + served
    page = tmp_path / "r.html"
    assert main(["report", "--period", "max", "--html", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    data = json.loads(html.split('<script id="report-data" type="application/json">')[1].split("</script>")[0])
    assert [(w["failure"], D(str(w["custo_usd"]))) for w in data["waste"]] == [("invalid_output", wasted)]
    assert [(t["service_tier"], D(str(t["custo_usd"]))) for t in data["served_tiers"]] == [
        ("standard", wasted + served)
    ]
    assert "table-waste" in html and "table-tiers" in html


def test_a_pricing_failure_never_fails_the_call(emu, monkeypatch):
    """The ledger is telemetry: if pricing breaks, the caller still gets the answer and the tokens are kept."""
    from csctracker_ai_core import call as call_module

    events = []

    class Sink:
        location = "memory"

        def record(self, event):
            events.append(event)

        def close(self, timeout_s=None):
            pass

    def broken(*args, **kwargs):
        raise ArithmeticError("price table on fire")

    monkeypatch.setattr(call_module, "price_usage", broken)
    with IaProcessor(
        google_paid_keys=PAID, google_models_limits=f"{MODEL}=100", base_url=emu.base_url, telemetry_sink=Sink()
    ) as processor:
        result, usage, _ = processor.analisar_com_gemini(input_text="x", prompt="JSON", model_variant=MODEL)
    assert result == REPLY
    (event,) = events
    (attempt,) = event.attempt_events
    assert attempt.usage_known and attempt.tokens_input == usage.input and attempt.cost_usd == 0
    assert event.tokens_input == usage.input and event.cost_usd == 0
