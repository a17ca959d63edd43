"""One column table: the DDL, the spool record and the insert columns all come from it."""

import dataclasses
from datetime import datetime, timezone
from decimal import Decimal

from test_telemetry_support import NOW, make_event

from csctracker_ai_core.pool.decision import Action, FailureKind, PoolChange
from csctracker_ai_core.telemetry.events import AttemptEvent, CallEvent, CallOutcome
from csctracker_ai_core.telemetry.records import (
    ATTEMPT_COLUMN_NAMES,
    ATTEMPT_COPIED,
    ATTEMPT_DERIVED,
    EVENT_COLUMN_NAMES,
    EVENT_COPIED,
    EVENT_DERIVED,
    attempt_columns,
    decode_record,
    encode_record,
    event_columns,
    event_to_record,
)
from csctracker_ai_core.telemetry.schema import ATTEMPT_COLUMNS, EVENT_COLUMNS, Encoding, ai_events_ddl


def _fields(cls):
    return {f.name for f in dataclasses.fields(cls)}


def test_record_keys_are_exactly_the_columns():
    rec = event_to_record(make_event(ok=False))
    assert set(rec) - {"_v", "_a"} == set(EVENT_COLUMN_NAMES)
    assert [set(a) for a in rec["_a"]] == [set(ATTEMPT_COLUMN_NAMES)]
    # ClickHouse fills ingested_at; nothing else is left out of records
    assert {c.name for c in EVENT_COLUMNS if not c.from_record} == {"ingested_at"}
    assert {c.name for c in ATTEMPT_COLUMNS if not c.from_record} == {"ingested_at"}


def test_every_column_comes_from_an_event_field_of_its_name_or_is_derived():
    # a field without a column, or a column nothing fills, fails here
    assert set(EVENT_COLUMN_NAMES) == (_fields(CallEvent) - {"attempt_events"}) | EVENT_DERIVED
    assert set(ATTEMPT_COLUMN_NAMES) == _fields(AttemptEvent) | ATTEMPT_DERIVED
    assert set(EVENT_COPIED) <= _fields(CallEvent) and set(ATTEMPT_COPIED) <= _fields(AttemptEvent)


def test_ddl_lists_every_column_in_table_order():
    ddl = ai_events_ddl("db")
    positions = [ddl.index(f"`{c.name}` {c.type}") for c in EVENT_COLUMNS]
    assert positions == sorted(positions)


def test_timestamps_stay_epoch_seconds_until_the_columns_are_built():
    event = make_event(ok=False)
    rec = decode_record(encode_record(event_to_record(event)))
    assert rec["timestamp"] == NOW.timestamp() and isinstance(rec["timestamp"], float)
    assert isinstance(rec["_a"][0]["suspended_until"], float)
    events, attempts = event_columns([rec]), attempt_columns([rec])
    by_name = dict(zip(EVENT_COLUMN_NAMES, events, strict=True))
    assert by_name["timestamp"] == [NOW]
    assert by_name["cost_usd"] == [Decimal("0.000012345678")]
    att = dict(zip(ATTEMPT_COLUMN_NAMES, attempts, strict=True))
    assert att["suspended_until"] == [datetime(2026, 3, 15, 7, 0, tzinfo=timezone.utc)]
    assert att["task"] == ["task-a"]


def test_encodings_follow_the_column_types():
    kinds = {c.name: c.encoding for c in EVENT_COLUMNS + ATTEMPT_COLUMNS}
    assert kinds["timestamp"] is Encoding.TIMESTAMP and kinds["suspended_until"] is Encoding.TIMESTAMP
    assert kinds["cost_usd"] is Encoding.DECIMAL and kinds["list_cost_usd"] is Encoding.DECIMAL
    assert kinds["tokens_input"] is Encoding.VALUE and kinds["metadata"] is Encoding.VALUE


def test_outcomes_and_decisions_are_enums_and_encode_as_their_values():
    event = make_event(ok=False)
    event = dataclasses.replace(
        event,
        outcome=CallOutcome.ERROR,
        attempt_events=(
            dataclasses.replace(
                event.attempt_events[0], outcome=FailureKind.QUOTA_PER_DAY, decision=PoolChange.SUSPEND
            ),
        ),
    )
    rec = decode_record(encode_record(event_to_record(event)))
    assert rec["outcome"] == "error"
    assert (rec["_a"][0]["outcome"], rec["_a"][0]["decision"]) == ("quota_day", "suspend")


def test_decision_labels_are_the_documented_values():
    from csctracker_ai_core.pool.decision import Decision

    assert Decision(Action.DONE).label == "served"
    assert Decision(Action.RETRY, pool_change=PoolChange.COOLDOWN).label == "cooldown"
    assert Decision(Action.RAISE).label == "raise"
    documented = {a.value for a in Action} | {p.value for p in PoolChange if p.value}
    assert documented == {
        "served",
        "retry",
        "raise",
        "suspend",
        "disable_key",
        "park_slot",
        "park_project",
        "park_model",
        "park_tier",
        "skip_model",
        "cooldown",
    }


def test_the_fast_encoder_writes_what_the_json_module_writes():
    """orjson on the call path; the same bytes as the json module for a real record."""
    import json

    rec = event_to_record(make_event(ok=False, payload='ação "x"\n\t\x01 ☃ 😀', result="r\u2028"))
    expected = (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    assert encode_record(rec) == expected
    assert rec["payload"] == json.dumps('ação "x"\n\t\x01 ☃ 😀', ensure_ascii=False)
    assert decode_record(expected) == json.loads(expected)


def test_a_record_the_fast_encoder_refuses_takes_the_json_module_path():
    rec = event_to_record(make_event(payload="lone \ud800 surrogate"))
    line = encode_record(rec)
    assert line.endswith(b"\n") and line.decode("utf-8")  # still valid UTF-8 (sanitized)
    assert decode_record(line)["payload"] == '"lone \ufffd surrogate"'


def test_a_torn_line_is_a_value_error():
    import pytest

    line = encode_record(event_to_record(make_event()))
    with pytest.raises(ValueError):
        decode_record(line[: len(line) // 2])


def test_records_spooled_before_a_column_existed_still_become_columns():
    old = event_to_record(make_event(ok=False))
    del old["served_tier"]  # as if written by a version without the column
    new = event_to_record(make_event())
    events = event_columns([old, new])
    by_name = dict(zip(EVENT_COLUMN_NAMES, events, strict=True))
    assert by_name["served_tier"] == ["", ""]  # the column's default
    assert by_name["timestamp"] == [NOW, NOW]
