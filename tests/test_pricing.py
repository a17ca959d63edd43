"""Prices as data and the per-call cost function: exact Decimal values, table-tested."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from csctracker_ai_core.exceptions import ConfigurationError
from csctracker_ai_core.pricing import (
    PRICES_FILE_ENV,
    SHIPPED_PRICES_FILE,
    estimate_cost,
    get_prices,
    load_prices,
    normalize_model_name,
)

D = Decimal


@pytest.fixture(autouse=True)
def _no_user_prices(monkeypatch):
    monkeypatch.delenv(PRICES_FILE_ENV, raising=False)


# (model, tier, service_tier, input, output, cached, expected cost, expected list cost)
CASES = [
    # 1000 x 0.30 + 500 x 2.50 = 1550 per 1M
    ("gemini-2.5-flash", "paid", "standard", 1000, 500, 0, "0.00155", "0.00155"),
    # free keys cost nothing; the list cost is the saving
    ("gemini-2.5-flash", "free", "standard", 1000, 500, 0, "0", "0.00155"),
    # flex and batch: half
    ("gemini-2.5-flash", "paid", "flex", 1000, 500, 0, "0.000775", "0.000775"),
    ("gemini-2.5-flash", "paid", "batch", 1000, 500, 0, "0.000775", "0.000775"),
    # priority: the upper bound of Google's stated 75-100% premium
    ("gemini-2.5-flash", "paid", "priority", 1000, 500, 0, "0.0031", "0.0031"),
    # unknown service tier: standard price
    ("gemini-2.5-flash", "paid", "turbo", 1000, 500, 0, "0.00155", "0.00155"),
    # the original's "<model>-<tier>" names and "models/" prefix resolve
    ("gemini-2.5-flash-paid", "paid", "standard", 1000, 500, 0, "0.00155", "0.00155"),
    ("models/gemini-2.5-flash", "paid", "standard", 1000, 500, 0, "0.00155", "0.00155"),
    # a dated variant is priced as its base model; flash-lite keeps its own price
    ("gemini-2.5-flash-preview-09-2025", "paid", "standard", 1000, 500, 0, "0.00155", "0.00155"),
    ("gemini-2.5-flash-lite", "paid", "standard", 1_000_000, 1_000_000, 0, "0.5", "0.5"),
    # pro at exactly 200k prompt tokens: the <= 200k tier
    ("gemini-2.5-pro", "paid", "standard", 200_000, 1000, 0, "0.26", "0.26"),
    # one token more: > 200k prices for input AND output (2.50 / 15.00)
    ("gemini-2.5-pro", "paid", "standard", 200_001, 1000, 0, "0.5150025", "0.5150025"),
    # output is large but the prompt is small: still <= 200k (prompt size decides)
    ("gemini-2.5-pro", "paid", "standard", 1000, 300_000, 0, "3.00125", "3.00125"),
    # cached tokens at the cached price: 150k x 2.5 + 100k x 0.25 + 1k x 15, flex
    ("gemini-2.5-pro", "free", "flex", 250_000, 1000, 100_000, "0", "0.2075"),
    ("gemini-2.5-flash", "paid", "standard", 10_000, 0, 4_000, "0.00192", "0.00192"),
    # gemini 3.1 pro: 2 / 12 below, 4 / 18 above
    ("gemini-3.1-pro-preview", "paid", "standard", 100_000, 10_000, 0, "0.32", "0.32"),
    ("gemini-3.1-pro-preview", "paid", "standard", 300_000, 10_000, 0, "1.38", "1.38"),
    ("gemini-3-flash-preview", "paid", "standard", 2_000_000, 1_000_000, 0, "4", "4"),
    # nothing used, nothing paid
    ("gemini-2.5-pro", "paid", "standard", 0, 0, 0, "0", "0"),
    # the smallest amount: 1 output token of flash-lite in flex = 0.0000002 USD
    ("gemini-2.5-flash-lite", "paid", "flex", 0, 1, 0, "0.0000002", "0.0000002"),
    # unknown model: 0, not an error
    ("gemini-9-ultra", "paid", "standard", 1000, 1000, 0, "0", "0"),
    ("", "", "standard", 0, 0, 0, "0", "0"),
]


@pytest.mark.parametrize("model,tier,service,tin,tout,cached,cost,listed", CASES)
def test_estimate_cost_table(model, tier, service, tin, tout, cached, cost, listed):
    got_cost, got_list = estimate_cost(model, tier, service, tin, tout, tokens_cached=cached)
    assert (got_cost, got_list) == (D(cost), D(listed))
    assert isinstance(got_cost, Decimal) and isinstance(got_list, Decimal)


def test_image_tokens_are_input_and_change_nothing():
    assert estimate_cost("gemini-2.5-flash", "paid", "standard", 1000, 500, tokens_image=800) == estimate_cost(
        "gemini-2.5-flash", "paid", "standard", 1000, 500
    )


def test_negative_and_oversized_counts_are_clamped():
    # cached can never exceed the prompt; negative counts count as zero
    assert estimate_cost("gemini-2.5-flash", "paid", "standard", 1000, -5, tokens_cached=5000) == (
        D("0.00003"),
        D("0.00003"),
    )


def test_unknown_model_logs_at_debug_once(caplog):
    caplog.set_level(logging.DEBUG, logger="csctracker_ai_core.pricing")
    estimate_cost("brand-new-model-x", "paid", "standard", 10, 10)
    estimate_cost("brand-new-model-x", "paid", "standard", 10, 10)
    records = [r for r in caplog.records if "brand-new-model-x" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG


def test_shipped_table_matches_the_wire_notes():
    table = load_prices()
    pro = table.models["gemini-2.5-pro"][0]
    assert (
        pro.input_price_less_200,
        pro.output_price_less_200,
        pro.input_price_more_200,
        pro.output_price_more_200,
    ) == (D("1.25"), D("10.00"), D("2.50"), D("15.00"))
    assert table.models["gemini-2.5-flash"][0].input_price_less_200 == D("0.30")
    assert table.models["gemini-2.5-flash"][0].audio_input_price_less_200 == D("1.00")
    assert table.models["gemini-2.5-flash-lite"][0].output_price_less_200 == D("0.40")
    assert table.models["gemini-3-flash-preview"][0].output_price_less_200 == D("3.00")
    assert table.models["gemini-3-flash-preview"][0].cached_input_price_less_200 == D("0.05")
    assert table.models["gemini-3.5-flash"][0].output_price_less_200 == D("9.00")
    assert table.models["gemini-3.1-flash-lite"][0].cached_input_price_less_200 == D("0.025")
    # 3.8 Flash: 0.75 / 3.75 until 2026-12-31, 1.50 / 7.50 from 2027-01-01 (gemini-errors.md)
    before, after = table.models["gemini-3.8-flash"]
    assert (before.valid_from, before.valid_to) == (None, datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert (before.input_price_less_200, before.output_price_less_200) == (D("0.75"), D("3.75"))
    assert (after.valid_from, after.valid_to) == (datetime(2027, 1, 1, tzinfo=timezone.utc), None)
    assert (after.input_price_less_200, after.output_price_less_200) == (D("1.50"), D("7.50"))
    assert table.service_tier_multipliers["flex"] == D("0.5")
    assert table.service_tier_multipliers["priority"] == D("2")
    assert table.long_context_threshold == 200_000
    # the file is valid JSON with string prices (exact decimals)
    raw = json.loads(SHIPPED_PRICES_FILE.read_text(encoding="utf-8"))
    entries = [p for m in raw["models"].values() for p in (m if isinstance(m, list) else [m])]
    assert all(isinstance(v, str) for p in entries for v in p.values())


def test_user_file_overrides_and_adds(tmp_path, monkeypatch):
    user = tmp_path / "prices.json"
    user.write_text(
        json.dumps(
            {
                "models": {
                    "gemini-2.5-flash": {"input_price_less_200": "1", "output_price_less_200": "2"},
                    "my-tuned-model": {
                        "input_price_less_200": "0.5",
                        "output_price_less_200": "1.5",
                        "input_price_more_200": "1",
                        "output_price_more_200": "3",
                    },
                },
                "service_tier_multipliers": {"priority": "1.8"},
            }
        )
    )
    table = load_prices(user)
    # replaced as a whole (the >200k prices follow the <=200k ones when not given)
    assert table.models["gemini-2.5-flash"][0].input_price_more_200 == D("1")
    # cached and audio prices follow the new input price (the old ones are not mixed in)
    assert table.models["gemini-2.5-flash"][0].cached_input_price_less_200 == D("1")
    assert table.models["gemini-2.5-flash"][0].audio_input_price_less_200 == D("1")
    assert estimate_cost("gemini-2.5-flash", "paid", "standard", 1000, 1000, prices=table) == (D("0.003"), D("0.003"))
    # kept: the models the file does not name
    assert table.models["gemini-2.5-pro"][0].input_price_less_200 == D("1.25")
    # added
    assert estimate_cost("my-tuned-model", "paid", "priority", 300_000, 1000, prices=table)[1] == D("0.5454")
    # through the cached accessor (the facades pass Settings.prices_file)
    assert estimate_cost("gemini-2.5-flash", "paid", "standard", 1000, 1000, prices=get_prices(user)) == (
        D("0.003"),
        D("0.003"),
    )


def test_edited_user_file_is_reloaded(tmp_path):
    user = tmp_path / "prices.json"
    user.write_text(json.dumps({"models": {"x-model": {"input_price_less_200": "1", "output_price_less_200": "1"}}}))
    assert estimate_cost("x-model", "paid", "standard", 1_000_000, 0, prices=get_prices(user))[1] == D("1")
    user.write_text(json.dumps({"models": {"x-model": {"input_price_less_200": "3", "output_price_less_200": "1"}}}))
    stat = user.stat()
    os.utime(user, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert estimate_cost("x-model", "paid", "standard", 1_000_000, 0, prices=get_prices(user))[1] == D("3")


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "JSON object"),
        ('{"models": {"m": {"input_price_less_200": "abc", "output_price_less_200": "1"}}}', "not a number"),
        ('{"models": {"m": {"input_price_less_200": "-1", "output_price_less_200": "1"}}}', ">= 0"),
        ('{"models": {"m": {"input_price_less_200": "1"}}}', "lacks output_price_less_200"),
        (
            '{"models": {"m": {"input_price_less_200": "1", "output_price_less_200": "1", "inptu": "2"}}}',
            "unknown fields",
        ),
        # more places than model_prices' Decimal(18, 9) columns keep: SQL and Python would differ
        (
            '{"models": {"m": {"input_price_less_200": "0.0000000001", "output_price_less_200": "1"}}}',
            "9 decimal places",
        ),
        (
            (
                '{"models": {"m": [{"valid_from": "2026-01-01", "valid_to": "2026-03-01", "input_price_less_200": "1",'
                ' "output_price_less_200": "1"}, {"valid_from": "2026-02-01", "input_price_less_200": "2",'
                ' "output_price_less_200": "2"}]}}'
            ),
            "overlaps",
        ),
        (
            (
                '{"models": {"m": [{"input_price_less_200": "1", "output_price_less_200": "1"},'
                ' {"input_price_less_200": "2", "output_price_less_200": "2"}]}}'
            ),
            "two periods without valid_from",
        ),
        (
            '{"models": {"m": {"valid_from": "next tuesday", "input_price_less_200": "1", "output_price_less_200": "1"}}}',
            "ISO date",
        ),
        ('{"service_tier_multipliers": {"turbo": "3"}}', "unknown service tier"),
        ('{"models": {"m": []}}', "non-empty list"),
    ],
)
def test_bad_user_files_raise_configuration_error(tmp_path, content, message):
    user = tmp_path / "prices.json"
    user.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        load_prices(user)


def test_missing_user_file_names_the_setting(tmp_path):
    with pytest.raises(ConfigurationError, match=PRICES_FILE_ENV):
        load_prices(tmp_path / "nope.json")


def test_normalize_model_name():
    assert normalize_model_name(" Models/Gemini-2.5-Flash-free ") == "gemini-2.5-flash"
    assert normalize_model_name("gemini-2.5-pro-paid") == "gemini-2.5-pro"
    assert normalize_model_name("") == ""


def test_get_prices_is_cached():
    assert get_prices() is get_prices()


# ---------------------------------------------------------------- price_usage: the one definition

UTC = timezone.utc
NOV = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def usage_of(**kw):
    from csctracker_ai_core.tokens import TokenUsage

    return TokenUsage(**kw)


# (model, billed tier, usage, at, expected list cost): each a hand computation
USAGE_CASES = [
    # 3.8 Flash before and after its dated price change (0.75/3.75 -> 1.50/7.50)
    # 1M in + 1M out = 0.75 + 3.75
    (
        "gemini-3.8-flash",
        "standard",
        dict(input=1_000_000, output=1_000_000),
        datetime(2026, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
        "4.5",
    ),
    ("gemini-3.8-flash", "standard", dict(input=1_000_000, output=1_000_000), datetime(2027, 1, 1, tzinfo=UTC), "9"),
    # naive timestamps are UTC
    ("gemini-3.8-flash", "standard", dict(input=1_000_000, output=0), datetime(2027, 1, 1), "1.5"),
    # thinking is inside output: 100 out (60 of them thoughts) x 2.50 + 1000 x 0.30
    ("gemini-2.5-flash", "standard", dict(input=1000, output=100, reasoning=60), NOV, "0.00055"),
    # audio at its own price: 1000 audio x 1.00 + 1000 text x 0.30 + 0 out
    ("gemini-2.5-flash", "standard", dict(input=2000, audio=1000), NOV, "0.0013"),
    # image and video at the text price where Google has no separate one
    ("gemini-2.5-flash", "standard", dict(input=2000, image=1000, video=500), NOV, "0.0006"),
    # cached tokens come off text first: 3000 prompt = 1000 audio + 2000 text, 2500 cached
    # -> text 0 uncached, 2000 cached at 0.03; audio 500 cached (cached audio = cached 0.03) + 500 at 1.00
    ("gemini-2.5-flash", "standard", dict(input=3000, audio=1000, cached=2500), NOV, "0.000575"),
    # > 200k prompt: 2.5 pro 250k x 2.50 + 1000 x 15 ; with 100k cached at 0.25: 150k x 2.5 + 100k x 0.25 + 15k
    ("gemini-2.5-pro", "standard", dict(input=250_000, output=1000, cached=100_000), NOV, "0.415"),
    # priority served: x2 ; flex and batch: x0.5
    ("gemini-2.5-pro", "priority", dict(input=1000, output=1000), NOV, "0.0225"),
    ("gemini-2.5-pro", "flex", dict(input=1000, output=1000), NOV, "0.005625"),
    ("gemini-2.5-pro", "batch", dict(input=1000, output=1000), NOV, "0.005625"),
    # truncated, never rounded up: 1 token of flash-lite input in flex = 0.00000005 exactly;
    # 1 token at 0.075 x 0.5 = 0.0000000375
    ("gemini-2.0-flash-lite", "flex", dict(input=1), NOV, "0.0000000375"),
    # counts out of range are clamped into the prompt
    ("gemini-2.5-flash", "standard", dict(input=100, image=500, audio=-3, cached=1000), NOV, "0.000003"),
]


@pytest.mark.parametrize("model,tier,usage,at,expected", USAGE_CASES)
def test_price_usage_by_hand(model, tier, usage, at, expected):
    from csctracker_ai_core.pricing import price_usage

    got = price_usage(model, tier, usage_of(**usage), at, prices=load_prices())
    assert got == D(expected)
    assert got.as_tuple().exponent == -12  # the telemetry columns' scale


def test_price_usage_accepts_a_mapping_and_an_unknown_date_costs_zero(tmp_path):
    from csctracker_ai_core.pricing import price_usage

    user = tmp_path / "p.json"
    user.write_text(
        json.dumps(
            {
                "models": {
                    "m": [
                        {
                            "valid_from": "2026-01-01",
                            "valid_to": "2026-02-01",
                            "input_price_less_200": "1",
                            "output_price_less_200": "1",
                        },
                        {"valid_from": "2026-03-01", "input_price_less_200": "2", "output_price_less_200": "2"},
                    ]
                }
            }
        )
    )
    table = load_prices(user)
    usage = {"input": 1_000_000}
    assert price_usage("m", "standard", usage, datetime(2026, 1, 15, tzinfo=UTC), prices=table) == D(1)
    # a gap between two periods and a date before the first: no price, cost 0
    assert price_usage("m", "standard", usage, datetime(2026, 2, 15, tzinfo=UTC), prices=table) == D(0)
    assert price_usage("m", "standard", usage, datetime(2025, 12, 31, tzinfo=UTC), prices=table) == D(0)
    assert price_usage("m", "standard", usage, datetime(2026, 3, 1, tzinfo=UTC), prices=table) == D(2)


def test_a_model_may_carry_its_own_priority_premium(tmp_path):
    from csctracker_ai_core.pricing import price_usage

    user = tmp_path / "p.json"
    user.write_text(
        json.dumps(
            {
                "models": {
                    "m": {
                        "input_price_less_200": "1",
                        "output_price_less_200": "1",
                        "service_tier_multipliers": {"priority": "1.75"},
                    }
                }
            }
        )
    )
    table = load_prices(user)
    assert price_usage("m", "priority", {"input": 1_000_000}, NOV, prices=table) == D("1.75")
    assert price_usage("gemini-2.5-flash", "priority", {"input": 1_000_000}, NOV, prices=table) == D("0.6")


def test_the_served_tier_is_billed_when_known():
    from csctracker_ai_core.pricing import billed_tier

    assert billed_tier("flex", "standard") == "standard"  # flex asked, standard served
    assert billed_tier("priority", "") == "priority"
    assert billed_tier("priority", " Standard ") == "standard"
    assert billed_tier("", "") == "standard"
    assert billed_tier("turbo", "") == "standard"
    # estimate_cost takes the served tier too: one definition
    assert estimate_cost("gemini-2.5-pro", "paid", "flex", 1000, 1000, served_tier="standard", at=NOV) == (
        D("0.01125"),
        D("0.01125"),
    )


@pytest.mark.parametrize(
    ("fields", "prompt"),
    [
        (dict(input=500, output=100, cached=40, image=30, audio=20, video=10), 500),
        (dict(input=10, output=5, cached=50, image=60, audio=70, video=80), 10),  # parts over the prompt: clamped
        (dict(input=-5, output=-1), 0),  # negative counts read as 0
        (dict(input=True, output=2.9), 1),  # a bool and a float, as int() reads them
        (dict(input="12", output="x"), 12),  # text: int() of it, else 0
    ],
)
def test_the_billing_split_reads_a_token_usage_as_it_reads_any_object(fields, prompt):
    """_count takes an int as it is (the call path's case) and reads any other value with
    int(); a TokenUsage, an object and a dict of the same counts give the same split, whose
    eight prompt parts add up to the prompt."""
    from types import SimpleNamespace

    from csctracker_ai_core.pricing import split_prompt
    from csctracker_ai_core.tokens import TokenUsage

    as_usage = TokenUsage(**fields)
    names = ("input", "output", "cached", "image", "audio", "video")
    as_object = SimpleNamespace(**{name: getattr(as_usage, name) for name in names})
    assert split_prompt(as_usage) == split_prompt(as_object) == split_prompt(dict(vars(as_object)))
    assert sum(split_prompt(as_usage)[:8]) == prompt
