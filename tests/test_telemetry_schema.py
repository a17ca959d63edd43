"""One column table: the DDL, the spool record and the insert columns all come from it."""

import dataclasses
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest
from test_telemetry_support import NOW, make_event

from csctracker_ai_core.pool.decision import Action, FailureKind, PoolChange
from csctracker_ai_core.telemetry.events import AttemptEvent, CallEvent, CallOutcome, build_event
from csctracker_ai_core.telemetry.records import (
    ATTEMPT_COLUMN_NAMES,
    ATTEMPT_COPIED,
    ATTEMPT_DERIVED,
    EVENT_COLUMN_NAMES,
    EVENT_COPIED,
    EVENT_DERIVED,
    attempt_columns,
    decode_record,
    encode_event,
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


def test_the_writer_loops_let_calls_take_the_gil_every_few_records(monkeypatch):
    """Encoding and decoding a chunk (up to 10,000 records) on the writer thread releases the
    GIL every YIELD_EVERY records (time.sleep(0)): else a call needing the GIL waits for the
    interpreter's 5 ms switch interval. The bodies are the same either way."""
    from csctracker_ai_core.telemetry import records as records_module

    sleeps: list[float] = []
    monkeypatch.setattr(records_module.time, "sleep", sleeps.append)
    recs = [event_to_record(make_event(i)) for i in range(3 * records_module.YIELD_EVERY + 5)]
    body = records_module.events_json(recs)
    assert sleeps == [0, 0, 0]
    lines = [encode_record(r) for r in recs]
    sleeps.clear()
    decoded = records_module.records_of_lines(lines, "seg", None)
    assert sleeps == [0, 0, 0]
    assert decoded == [decode_record(line) for line in lines]
    sleeps.clear()
    assert records_module.lines_json(lines, check=None) is not None
    assert sleeps == [0, 0, 0]
    assert body == b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in recs)


# --------------------------------------------------------------------------- event lines

_HEAD = b'{"_v":2,'


def _via_record(event, **options):
    return decode_record(encode_record(event_to_record(event, **options)))


@pytest.mark.parametrize(
    ("event", "options"),
    [
        (make_event(1), {}),
        (make_event(2, ok=False, error_type="QuotaExhaustedError", error_message="429 for p1"), {}),
        (make_event(3, payload="São Paulo — ação 日本語 🚀", result='{"cidade": "Brasília"}', metadata={}), {}),
        (make_event(4, timestamp=1764000000.123456, total_duration_ms=3.0000001, time_spent=0.1), {}),
        (make_event(5, cost_usd=Decimal("0.000000000001"), list_cost_usd=Decimal("12.345678901234")), {}),
        (make_event(6, payload="", result="", task="", metadata={"a": "", "b": "ç"}), {}),
        (
            make_event(7, image_sha256="ab" * 32, image_bytes=3, image_mime="image/png", image_base64="AAAA"),
            {"store_images": True},
        ),
        (
            make_event(
                8, served_tier="flex", service_tier="flex", finish_reason="STOP", response_id="r", model_version="v"
            ),
            {},
        ),
        (make_event(9, model_name="", tier=""), {}),
        (make_event(10, payload="x" * 1000), {"max_text_bytes": 1000}),
    ],
)
def test_an_event_line_decodes_to_the_record_the_event_gives(event, options):
    """The call path writes the event itself (orjson, in C) when nothing has to change;
    the writer must get exactly the record the Python path builds, column for column."""
    line, sanitized = encode_event(event, **options)
    assert line.startswith(_HEAD) and line.endswith(b"}\n") and line.count(b"\n") == 1
    assert not sanitized
    assert decode_record(line) == _via_record(event, **options)


@pytest.mark.parametrize(
    ("event", "options", "hidden"),
    [
        (make_event(1, payload="minha chave AIzaSyA-0123456789abcdefghijklmnopq"), {}, b"AIzaSyA-0123456789"),
        (make_event(2, result="https://x?key=segredo123&y=1"), {}, b"segredo123"),
        (make_event(3, payload="y" * 2000), {"max_text_bytes": 1000}, None),
        (make_event(4, error_message="e" * 20_000), {}, None),
        (make_event(5, image_base64="QUJD"), {}, b"QUJD"),
        (make_event(6, task="lote-\udce9"), {}, None),
        (make_event(7, metadata={"k": "AIzaSyA-0123456789abcdefghijklmnopq"}), {}, b"AIzaSyA-0123456789"),
    ],
)
def test_an_event_that_must_change_is_written_as_its_record(event, options, hidden):
    """A key to hide, a text over its cap, an image not to store, a text that is not valid
    UTF-8: the record line of the Python path, never the event as it came."""
    line, sanitized = encode_event(event, **options)
    assert not line.startswith(_HEAD)
    assert decode_record(line) == _via_record(event, **options)
    if hidden is not None:
        assert hidden not in line
    assert sanitized == ("lote" in event.task)


def test_a_registered_key_of_any_shape_sends_the_event_down_the_record_path():
    from csctracker_ai_core.redaction import register_keys, unregister_keys

    key = "AQ.custom-shaped-key-000111"
    handle = register_keys([key])
    try:
        event = make_event(1, payload=f"usei {key} aqui")
        line, _ = encode_event(event)
        assert not line.startswith(_HEAD) and key.encode() not in line
    finally:
        unregister_keys(handle)
    line, _ = encode_event(make_event(1, payload=f"usei {key} aqui"))
    assert line.startswith(_HEAD)  # no longer a key of ours: nothing to hide


def test_an_event_line_keeps_the_version_of_the_library_that_wrote_it():
    line, _ = encode_event(make_event(1))
    old = line.replace(b'"_lib":"', b'"_lib":"0.0.1+', 1)
    rec = decode_record(old)
    assert rec["library_version"].startswith("0.0.1+")
    assert {a["library_version"] for a in rec["_a"]} == {rec["library_version"]}


@pytest.mark.parametrize(
    "line",
    [b'{"_v":2,"_lib":"x","e":{}}\n', b'{"_v":2,"_lib":"x","e":[1]}\n', b'{"_v":2,"_lib":"x"}\n'],
)
def test_a_malformed_event_line_is_unreadable_not_fatal(line):
    """Read back from a file (a hand edit, a bug): ValueError, which the spool turns into a
    quarantined line (spool.read), like any line that is not a record."""
    with pytest.raises(ValueError, match="not an event line"):
        decode_record(line)


def test_a_chunk_of_lines_becomes_the_same_bodies_in_one_pass_keeping_no_record_alive():
    """lines_json (the writer's usual path) builds exactly what events_json / attempts_json
    build from the decoded records, without a chunk of records alive: no container of it
    is left for the garbage collector (a decoded chunk outlives collections, reaches the
    oldest generation and sets off full passes over the whole heap)."""
    import gc

    from csctracker_ai_core.telemetry import records as records_module

    events = [make_event(i, ok=bool(i % 3), metadata={"i": str(i)}) for i in range(2000)]
    lines = [encode_event(e)[0] for e in events] + [encode_record(event_to_record(make_event(7)))]
    recs = [decode_record(line) for line in lines]
    bodies = records_module.lines_json(lines, check=None)
    assert bodies == (records_module.events_json(recs), records_module.attempts_json(recs))
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        records_module.lines_json(lines, check=None)
        kept_by_lines = gc.get_count()[0] - before
        before = gc.get_count()[0]
        chunk = records_module.records_of_lines(lines, "seg", None)
        kept_by_records = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert kept_by_lines < len(lines) // 100  # a handful, whatever the chunk size
    assert kept_by_records >= len(chunk)  # what the decoded chunk holds, for comparison


def test_a_line_that_is_not_a_record_or_fails_the_check_sends_the_chunk_down_the_record_path():
    from csctracker_ai_core.telemetry import records as records_module

    good = encode_event(make_event(1))[0]
    assert records_module.lines_json([good, b"not json\n"], check=None) is None
    assert records_module.lines_json([good], check=lambda rec: rec["task"] != "task-a") is None
    [unreadable] = records_module.records_of_lines([b"not json\n"], "seg-x.jsonl", 120)
    assert unreadable["_unreadable"].startswith("seg-x.jsonl byte 120: ")


# --------------------------------------------------------------------------- build_event


def _values(obj: object) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


@pytest.mark.parametrize("i", range(6))
def test_build_event_makes_the_event_the_dataclass_makes(i):
    """The call path's constructor (call.py) and the dataclass's own: equal, same repr,
    same spool line (orjson writes an instance's fields in the order of its __dict__)."""
    event = make_event(i)
    for cls, values in ((CallEvent, _values(event)), (AttemptEvent, _values(event.attempt_events[0]))):
        built, made = build_event(cls, dict(values)), cls(**values)
        assert built == made and repr(built) == repr(made)
        assert orjson.dumps(built, default=str) == orjson.dumps(made, default=str)
    some = {"event_id": "e", "timestamp": NOW, "task": "t", "outcome": CallOutcome.OK}
    assert build_event(CallEvent, dict(some)) == CallEvent(**some)  # the defaults, too


def test_build_event_refuses_what_the_dataclass_refuses_and_shares_no_default():
    some = {"event_id": "e", "timestamp": NOW, "task": "t", "outcome": CallOutcome.OK}
    with pytest.raises(TypeError, match="no field"):
        build_event(CallEvent, {**some, "tokens_inptu": 3})
    with pytest.raises(TypeError, match="'task'"):
        build_event(CallEvent, {k: v for k, v in some.items() if k != "task"})
    a, b = build_event(CallEvent, dict(some)), build_event(CallEvent, dict(some))
    assert a.metadata == {} and a.metadata is not b.metadata
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.task = "x"  # type: ignore[misc]
