"""The SQL cost is the Python cost: 12,000 random usage records through both, equal decimals.

``reports.price_tables.list_cost_sql`` is generated from the same price table as
``pricing.price_usage``; this runs both on chDB (the real ClickHouse engine) over random
records built to hit every rule: models known, unknown and dated variants, the
<=200k / >200k edge, cached and per-modality counts out of range, served and asked
tiers (some unknown), instants on both sides of a price change to the millisecond,
prices with 9 decimal places and per-model multipliers.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from csctracker_ai_core.pricing import billed_tier, cost_on_key, load_prices, price_usage
from csctracker_ai_core.reports.price_tables import billed_tier_sql, cost_on_key_sql, list_cost_sql

pytest.importorskip("chdb")

UTC = timezone.utc
RECORDS = 12_000
CHANGE = datetime(2027, 1, 1, tzinfo=UTC)


def _user_prices(tmp_path):
    # Awkward prices (9 places), a gap, a dated change mid-day, a model's own multipliers.
    user = tmp_path / "prices.json"
    user.write_text(
        json.dumps(
            {
                "service_tier_multipliers": {"priority": "1.875"},
                "models": {
                    "odd-model": [
                        {
                            "valid_to": "2026-06-01",
                            "input_price_less_200": "0.123456789",
                            "output_price_less_200": "7.000000001",
                            "cached_input_price_less_200": "0.000000003",
                            "audio_input_price_more_200": "3.3",
                            "input_price_more_200": "0.2",
                            "video_input_price_less_200": "0.99",
                        },
                        {
                            "valid_from": "2026-07-01T12:30:00",
                            "input_price_less_200": "1.1",
                            "output_price_less_200": "2.2",
                            "image_input_price_less_200": "0.5",
                            "cached_audio_input_price_less_200": "0.7",
                            "service_tier_multipliers": {"flex": "0.333333", "priority": "1.75"},
                        },
                    ],
                },
            }
        )
    )
    return load_prices(user)


MODELS = [
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-3.8-flash",
    "gemini-3.1-pro-preview",
    "gemini-2.5-flash-preview-09-2025",
    "models/gemini-3-flash-preview",
    "gemini-2.0-flash-lite-paid",
    "odd-model",
    "odd-model-v2",
    "no-such-model",
    "",
]
TIERS = ["standard", "flex", "priority", "batch", "", "turbo", "Standard"]


def _instant(rng: random.Random) -> datetime:
    roll = rng.random()
    if roll < 0.3:  # around the 3.8 Flash change, to the millisecond
        return CHANGE + timedelta(milliseconds=rng.randint(-3, 3))
    if roll < 0.45:  # around odd-model's dates
        base = rng.choice([datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, 12, 30, tzinfo=UTC)])
        return base + timedelta(milliseconds=rng.randint(-2, 2))
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=rng.randint(0, 2 * 365 * 86_400_000))


def _count(rng: random.Random, top: int) -> int:
    roll = rng.random()
    if roll < 0.15:
        return 0
    if roll < 0.3:
        return rng.choice([199_999, 200_000, 200_001, 1, 4_294_967_295 // 8])
    return rng.randint(0, top)


def _records(rng: random.Random) -> list[dict]:
    out = []
    for i in range(RECORDS):
        prompt = _count(rng, 400_000)
        out.append(
            {
                "i": i,
                "model_name": rng.choice(MODELS),
                "key_tier": rng.choice(["free", "paid", "paid", ""]),
                "service_tier": rng.choice(TIERS),
                "served_tier": rng.choice(TIERS + ["", "", ""]),
                "timestamp": _instant(rng),
                "tokens_input": prompt,
                "tokens_output": _count(rng, 100_000),
                # sometimes more than the prompt: both sides must clamp the same way
                "tokens_cached": _count(rng, prompt + 1000),
                "tokens_image": _count(rng, prompt + 10),
                "tokens_audio": _count(rng, max(prompt // 2, 1)),
                "tokens_video": _count(rng, max(prompt // 3, 1)),
            }
        )
    return out


@pytest.mark.parametrize("which", ["shipped", "user"])
def test_sql_and_python_price_12000_random_records_to_the_same_decimal(tmp_path, which):
    import clickhouse_connect

    prices = load_prices() if which == "shipped" else _user_prices(tmp_path)
    rng = random.Random(20261125 if which == "shipped" else 7)
    records = _records(rng)
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'db'}")
    client.command(
        "CREATE TABLE usage_records (i UInt32, model_name LowCardinality(String), key_tier String, "
        "service_tier String, served_tier String, timestamp DateTime64(3, 'UTC'), tokens_input UInt32, "
        "tokens_output UInt32, tokens_cached UInt32, tokens_image UInt32, tokens_audio UInt32, "
        "tokens_video UInt32) ENGINE = MergeTree ORDER BY i"
    )
    names = list(records[0])
    client.insert("usage_records", [[r[n] for n in names] for r in records], column_names=names)
    list_cost = list_cost_sql(prices, MODELS, tier=billed_tier_sql("service_tier", "served_tier"))
    rows = client.query(
        f"SELECT i, {list_cost} AS list_cost, {cost_on_key_sql('key_tier', list_cost)} AS cost "
        f"FROM usage_records ORDER BY i"
    ).result_rows
    assert len(rows) == RECORDS
    mismatches = []
    priced = 0
    for (_, sql_list, sql_cost), r in zip(rows, records, strict=True):
        usage = {k[len("tokens_") :]: v for k, v in r.items() if k.startswith("tokens_")}
        expected = price_usage(
            r["model_name"], billed_tier(r["service_tier"], r["served_tier"]), usage, r["timestamp"], prices=prices
        )
        priced += expected > 0
        if (Decimal(sql_list), Decimal(sql_cost)) != (expected, cost_on_key(r["key_tier"], expected)):
            mismatches.append((r, sql_list, expected))
    assert not mismatches[:5], f"{len(mismatches)} of {RECORDS} differ"
    # the draw really exercised prices (not 12,000 zeros)
    assert priced > RECORDS // 2
    client.close()


def test_an_original_model_prices_table_gains_dates_with_rows_kept_idempotently(tmp_path):
    """The original library's model_prices (undated, ORDER BY (model, timestamp)) is upgraded in place."""
    import clickhouse_connect

    from csctracker_ai_core.reports.price_tables import effective_prices, insert_model_price
    from csctracker_ai_core.telemetry.schema import ensure_schema

    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'db'}")
    client.command(
        "CREATE TABLE model_prices (timestamp DateTime, model String, input_price_less_200 Decimal(18, 9), "
        "output_price_less_200 Decimal(18, 9), input_price_more_200 Decimal(18, 9), "
        "output_price_more_200 Decimal(18, 9)) ENGINE = ReplacingMergeTree ORDER BY (model, timestamp)"
    )
    client.insert(
        "model_prices",
        [[datetime(2025, 1, 1), "gemini-2.5-flash", Decimal("0.4"), Decimal("3"), Decimal("0.4"), Decimal("3")]],
        column_names=[
            "timestamp",
            "model",
            "input_price_less_200",
            "output_price_less_200",
            "input_price_more_200",
            "output_price_more_200",
        ],
    )
    first = ensure_schema(client)
    second = ensure_schema(client)
    assert "model_prices history (valid_from, valid_to, cached and modality prices)" in first.applied
    assert second.applied == ()
    key = client.command("SELECT sorting_key FROM system.tables WHERE name = 'model_prices'")
    assert key == "model, timestamp, valid_from"
    assert int(client.command("SELECT count() FROM model_prices")) == 1  # the original row is kept
    # the original's undated row is the undated price; a dated row adds a period after it
    insert_model_price(
        client, "default", "gemini-2.5-flash", "0.5", "4", valid_from="2026-03-01", when=datetime(2025, 1, 1)
    )  # same second as the old row: both kept
    table = effective_prices(client, "default", load_prices())
    old, new = table.models["gemini-2.5-flash"]
    assert (old.valid_from, old.valid_to, old.input_price_less_200) == (
        None,
        datetime(2026, 3, 1, tzinfo=UTC),
        Decimal("0.4"),
    )
    # the row gave no cached price: it follows the row's own input price, not the file's
    assert old.cached_input_price_less_200 == Decimal("0.4")
    assert (new.valid_from, new.input_price_less_200) == (datetime(2026, 3, 1, tzinfo=UTC), Decimal("0.5"))
    assert int(client.command("SELECT count() FROM model_prices")) == 2
    client.close()


def test_rows_of_the_original_table_get_their_cost_from_the_same_function(tmp_path):
    """Migrated rows keep their meaning: costs from price_usage's SQL twin, at each row's date."""
    import clickhouse_connect
    from test_telemetry_chdb import ORIGINAL_DDL

    from csctracker_ai_core.telemetry.schema import ensure_schema

    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'db'}")
    client.command(ORIGINAL_DDL)
    client.command("ALTER TABLE ai_events ADD COLUMN service_tier String DEFAULT 'standard'")
    rows = [
        [datetime(2025, 5, 1, 10), "free1", 10, 0, 5, "gemini-2.5-flash-free", "standard"],
        [datetime(2025, 5, 1, 11), "pro1", 20, 3, 6, "gemini-2.5-pro-paid", "flex"],
        [datetime(2026, 12, 31, 23, 59, 59), "f38a", 1000, 0, 100, "gemini-3.8-flash-paid", "standard"],
        [datetime(2027, 1, 1, 0, 0, 0), "f38b", 1000, 0, 100, "gemini-3.8-flash-paid", "standard"],
        [datetime(2025, 5, 1, 12), "odd", 10, 0, 10, "custom-model-paid", "standard"],
    ]
    client.insert(
        "ai_events",
        [r[:5] + ["p", "r", r[5], "t", 0.1, r[6]] for r in rows],
        column_names=[
            "timestamp",
            "event_id",
            "tokens_input",
            "tokens_image",
            "tokens_output",
            "payload",
            "result",
            "model",
            "task",
            "time_spent",
            "service_tier",
        ],
    )
    assert ensure_schema(client).legacy_rows_migrated == 5
    got = {
        r[0]: (r[1], r[2])
        for r in client.query("SELECT event_id, cost_usd, list_cost_usd FROM ai_events FINAL").result_rows
    }
    prices = load_prices()
    for ts, event_id, tin, image, tout, model, service in rows:
        expected = price_usage(
            model, service, {"input": tin, "image": image, "output": tout}, ts.replace(tzinfo=UTC), prices=prices
        )
        assert got[event_id] == (cost_on_key("free" if model.endswith("-free") else "paid", expected), expected)
    # by hand: free flash costs 0 (list 10 x 0.30 + 5 x 2.50); pro in flex is half;
    # 3.8 Flash on each side of its price change; an unknown model costs 0
    assert got["free1"] == (D0, Decimal("0.0000155"))
    assert got["pro1"] == (Decimal("0.0000425"), Decimal("0.0000425"))
    assert got["f38a"][0] == Decimal("0.001125") and got["f38b"][0] == Decimal("0.00225")
    assert got["odd"] == (D0, D0)
    client.close()


D0 = Decimal(0)
