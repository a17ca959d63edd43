"""Dated prices end to end: `csc-ai prices`, `prices check`, `reprice`, and a period split by a price change.

gemini-3.8-flash costs 0.75 / 3.75 USD per 1M tokens until 2026-12-31 and 1.50 / 7.50 from
2027-01-01 (gemini-errors.md, "Keys and models in late 2026"): calls on both sides of
midnight UTC are each priced with the price of their own instant.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from csctracker_ai_core import IaProcessor
from csctracker_ai_core.cli import main
from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.paths import embedded_clickhouse_path
from csctracker_ai_core.reports.telemetry_report import Telemetry
from csctracker_ai_core.testing import emulator_wire as wire
from csctracker_ai_core.testing.emulator import ReplyRule

from test_reports_support import chdb_client

pytest.importorskip("chdb")

PAID = ["AIzaPAID-ledger-cli-0000000000000000000"]
MODEL = "gemini-3.8-flash"
D = Decimal
M = D(1_000_000)
UTC = timezone.utc
REPLY = {"ok": 1}
THINK = 16
OUT = max(1, math.ceil(len(json.dumps(REPLY)) / 4)) + THINK  # the reply's tokens plus thinking (billed as output)


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prices_on_a_date_and_now(capsys):
    code, out, _ = run(["prices", "--date", "2026-12-31T23:59:59", "--format", "json", "--no-store"], capsys)
    assert code == 0
    by = {r["model"]: r for r in json.loads(out)}
    assert (D(by[MODEL]["input_price_less_200"]), D(by[MODEL]["output_price_less_200"])) == (D("0.75"), D("3.75"))
    assert by[MODEL]["valid_to"] == "2027-01-01T00:00:00+00:00"
    code, out, _ = run(["prices", "--date", "2027-01-01", "--format", "json", "--no-store"], capsys)
    by = {r["model"]: r for r in json.loads(out)}
    assert (D(by[MODEL]["input_price_less_200"]), D(by[MODEL]["output_price_less_200"])) == (D("1.50"), D("7.50"))
    assert by[MODEL]["valid_from"] == "2027-01-01T00:00:00+00:00"
    # the table (through the store's model_prices, seeded from the file) says the same
    code, out, err = run(["prices", "--date", "2027-06-01"], capsys)
    assert code == 0 and MODEL in out and "7.5" in out and "priority x2" in err


def test_prices_check_names_configured_models_without_a_price(capsys, monkeypatch):
    monkeypatch.setenv("GOOGLE_MODEL_LIMITS", "gemini-2.5-flash=2, gemini-9-ultra=1")
    code, out, err = run(["prices", "check", "--no-store"], capsys)
    assert code == 1
    assert "gemini-9-ultra" in out and "gemini-2.5-flash" not in out
    assert "ok       gemini-2.5-flash" in err
    monkeypatch.setenv("GOOGLE_MODEL_LIMITS", "gemini-2.5-flash=2")
    assert run(["prices", "check", "--no-store"], capsys)[0] == 0


def test_a_price_change_inside_the_period_splits_its_cost(make_gemini_emulator, capsys):
    emu = make_gemini_emulator(replies=(ReplyRule(contains="", json=REPLY, thoughts=THINK),), models=(MODEL,))
    emu.add_keys(PAID, tier="paid")
    clock = FakeClock(datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp())
    processor = IaProcessor(
        google_paid_keys=PAID, google_models_limits=f"{MODEL}=10", base_url=emu.base_url, clock=clock
    )
    try:
        processor.analisar_com_gemini(input_text="antes", prompt="JSON", task="virada")
        clock.set(datetime(2027, 1, 1, 1, 0, tzinfo=UTC).timestamp())
        processor.analisar_com_gemini(input_text="depois", prompt="JSON", task="virada")
    finally:
        processor.close(60)
    p1, p2 = (wire.parse_request(r.body).prompt_tokens for r in emu.requests if r.method == "generateContent")
    before = (p1 * D("0.75") + OUT * D("3.75")) / M
    after = (p2 * D("1.50") + OUT * D("7.50")) / M
    period = "2026-12-31|2027-01-01"
    code, out, _ = run(["report", "--period", period, "--group", "day", "--format", "json"], capsys)
    assert code == 0
    days = {r["data"]: D(r["custo_total_usd"]) for r in json.loads(out)}
    assert days == {"2026-12-31": before, "2027-01-01": after}

    # Prices were right: re-pricing changes nothing.
    code, out, _ = run(["reprice", "--period", period, "--json"], capsys)
    assert code == 0 and json.loads(out)["events_changed"] == 0
    # A price change entered late, dated 2027-01-01 00:30: only the second call moves.
    with Telemetry() as tel:
        tel.set_model_price(MODEL, "2.00", "8.00", valid_from="2027-01-01T00:30:00Z")
    code, out, _ = run(["reprice", "--period", period, "--json"], capsys)
    result = json.loads(out)
    assert (result["events_changed"], result["attempts_changed"]) == (1, 1)
    late = (p2 * D("2.00") + OUT * D("8.00")) / M
    assert D(result["cost_before_usd"]) == before + after and D(result["cost_after_usd"]) == before + late
    code, out, _ = run(["report", "--period", period, "--group", "day", "--format", "json"], capsys)
    assert {r["data"]: D(r["custo_total_usd"]) for r in json.loads(out)} == {"2026-12-31": before, "2027-01-01": late}
    # idempotent
    code, out, _ = run(["reprice", "--period", period, "--json"], capsys)
    assert json.loads(out)["events_changed"] == 0
    with chdb_client(embedded_clickhouse_path(os.environ)) as client:
        assert client.command("SELECT count() FROM ai_cost_revisions") == 2  # the event and its attempt
