"""Telemetry on the embedded store (chDB): schema, migration, writer, dedup, redaction, capping."""

from __future__ import annotations

import json
import os
from datetime import datetime
from decimal import Decimal

import chdb  # noqa: F401  (a dev dependency: fail loudly when it is missing)
import pytest
from test_telemetry_support import embedded_settings, make_event

from csctracker_ai_core.telemetry import ClickHouseDb, open_telemetry
from csctracker_ai_core.telemetry.connection import connect
from csctracker_ai_core.telemetry.records import TRUNCATION_MARKER_FORMAT
from csctracker_ai_core.telemetry.schema import SCHEMA_VERSION, ensure_schema
from csctracker_ai_core.telemetry.writer import TelemetryWriter

ORIGINAL_DDL = (
    "CREATE TABLE ai_events (timestamp DateTime, event_id String CODEC(ZSTD(9)), "
    "tokens_input UInt32 DEFAULT 0, tokens_image UInt32 DEFAULT 0, tokens_output UInt32 DEFAULT 0, "
    "payload String CODEC(ZSTD(9)), result String CODEC(ZSTD(9)), model String CODEC(ZSTD(9)), "
    "task String CODEC(ZSTD(9)), time_spent Float) ENGINE = MergeTree() ORDER BY timestamp"
)


@pytest.fixture
def store(tmp_path):
    """A chDB client on a store inside tmp_path, closed after the test."""
    settings = embedded_settings(tmp_path)
    client = connect(settings)
    yield settings, client
    client.close()


def _writer(settings, **kw):
    kw.setdefault("batch_interval_s", 0.05)
    kw.setdefault("backoff_base_s", 0.05)
    kw.setdefault("backoff_max_s", 0.2)
    return TelemetryWriter(settings, **kw)


def test_memory_limit_bytes_is_accepted_and_says_it_has_no_effect(tmp_path):
    with pytest.warns(DeprecationWarning, match="memory_limit_bytes=.*no effect"):
        w = TelemetryWriter(embedded_settings(tmp_path), memory_limit_bytes=1 << 20, start=False)
    w.close(0)


def _final_count(client, table="ai_events"):
    return client.command(f"SELECT count() FROM {table} FINAL")


def test_schema_created_with_expected_engines_and_keys(store):
    """Fresh store: all tables, ReplacingMergeTree keyed on fixed values, monthly partitions, versions recorded."""
    settings, client = store
    report = ensure_schema(client)
    assert report.version == SCHEMA_VERSION and len(report.applied) == SCHEMA_VERSION
    rows = {
        r[0]: r[1:]
        for r in client.query(
            "SELECT name, engine, sorting_key, partition_key FROM system.tables WHERE database = 'default'"
        ).result_rows
    }
    assert rows["ai_events"] == ("ReplacingMergeTree", "toDate(timestamp), task, event_id", "toYYYYMM(timestamp)")
    assert rows["ai_attempts"][0] == "ReplacingMergeTree"
    assert rows["ai_attempts"][1] == "toDate(timestamp), event_id, attempt"
    assert rows["model_prices"][:2] == ("ReplacingMergeTree", "model, timestamp, valid_from")
    assert rows["daily_exchange_rates"][:2] == ("ReplacingMergeTree", "currency, date")
    assert rows["ai_events_rejected"][:2] == ("ReplacingMergeTree", "rejected_at, event_id, source_table")
    cols = dict(client.query("SELECT name, type FROM system.columns WHERE table = 'ai_events'").result_rows)
    for original in (
        "timestamp",
        "event_id",
        "tokens_input",
        "tokens_image",
        "tokens_output",
        "tokens_reasoning",
        "payload",
        "result",
        "model",
        "task",
        "time_spent",
        "service_tier",
    ):
        assert original in cols
    assert cols["cost_usd"].startswith("Decimal(18, 12)")
    assert cols["metadata"].startswith("Map(")
    assert client.command("SELECT count() FROM ai_schema_version") == SCHEMA_VERSION
    # Idempotent: a second run applies nothing.
    assert ensure_schema(client).applied == ()


def test_migration_from_original_table_keeps_every_row(store):
    """An original-library ai_events (MergeTree ORDER BY timestamp, with rows) is upgraded with all rows."""
    settings, client = store
    client.command(ORIGINAL_DDL)
    client.command("ALTER TABLE ai_events ADD COLUMN tokens_reasoning UInt32 DEFAULT 0")
    client.command("ALTER TABLE ai_events ADD COLUMN service_tier String default 'standard'")
    ts = datetime(2025, 5, 1, 10, 0, 0)
    rows = [
        [ts, "e1", 10, 0, 5, 1, json.dumps("p1"), "r1", "gemini-2.5-flash-free", "t", 0.5, "standard"],
        [ts, "e2", 20, 3, 6, 0, json.dumps("p2"), "r2", "gemini-2.5-pro-paid", "t", 1.5, "flex"],
        [ts, "e3", 30, 0, 7, 0, json.dumps("p3"), "r3", "custom-model", "t", 2.5, "standard"],
        # the same event id twice on one day and task: both rows must survive
        [ts, "dup", 1, 0, 1, 0, json.dumps("a"), "x", "m-free", "t", 0.1, "standard"],
        [ts, "dup", 2, 0, 2, 0, json.dumps("b"), "y", "m-free", "t", 0.2, "standard"],
    ]
    client.insert(
        "ai_events",
        rows,
        column_names=[
            "timestamp",
            "event_id",
            "tokens_input",
            "tokens_image",
            "tokens_output",
            "tokens_reasoning",
            "payload",
            "result",
            "model",
            "task",
            "time_spent",
            "service_tier",
        ],
    )
    report = ensure_schema(client)
    assert report.legacy_rows_migrated == 5
    client.command("OPTIMIZE TABLE ai_events FINAL")
    assert _final_count(client) == 5
    got = {
        r[0]: r[1:]
        for r in client.query(
            "SELECT event_id, model, model_name, tier, tokens_input, service_tier, payload FROM ai_events FINAL"
        ).result_rows
    }
    assert got["e1"] == ("gemini-2.5-flash-free", "gemini-2.5-flash", "free", 10, "standard", '"p1"')
    assert got["e2"][:4] == ("gemini-2.5-pro-paid", "gemini-2.5-pro", "paid", 20)
    assert got["e2"][4] == "flex"
    assert got["e3"][1:3] == ("custom-model", "")
    assert {k for k in got if k.startswith("dup")} == {"dup#1", "dup#2"}
    engine = client.command("SELECT engine FROM system.tables WHERE name = 'ai_events'")
    assert engine == "ReplacingMergeTree"
    assert client.command("SELECT count() FROM ai_events_legacy_v0") == 5  # the old table is kept
    assert ensure_schema(client).legacy_rows_migrated == 0  # re-run: nothing to do


def test_migration_resumes_after_interruption(store):
    """A copy cut short (build table half full) is redone; nothing is lost or doubled."""
    settings, client = store
    client.command(ORIGINAL_DDL)
    ts = datetime(2025, 6, 1, 8, 0, 0)
    client.insert(
        "ai_events",
        [[ts, f"e{i}", i, 0, 1, json.dumps("p"), "r", "m-paid", "t", 0.1] for i in range(10)],
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
        ],
    )
    # Simulate a crash in the middle of the copy.
    from csctracker_ai_core.telemetry.schema import ai_events_ddl

    client.command(ai_events_ddl("default", "ai_events__migrating_v1"))
    client.command("INSERT INTO ai_events__migrating_v1 (timestamp, event_id, task) VALUES (now64(3), 'e0', 't')")
    report = ensure_schema(client)
    assert report.legacy_rows_migrated == 10
    assert _final_count(client) == 10
    assert client.command("SELECT sum(tokens_input) FROM ai_events FINAL") == sum(range(10))
    assert client.command("SELECT count() FROM system.tables WHERE name = 'ai_events__migrating_v1'") == 0


def test_writer_inserts_calls_attempts_and_failures(tmp_path):
    """Successful and failed calls land in ai_events, their attempts in ai_attempts, all columns typed."""
    settings = embedded_settings(tmp_path)
    w = _writer(settings)
    try:
        ok = [make_event(i) for i in range(5)]
        failed = make_event(99, ok=False)
        for e in ok + [failed]:
            w.record(e)
        assert w.flush(20)
        s = w.stats()
        assert (s.written, s.spooled, s.pending, s.dropped, s.replayed) == (6, 6, 0, 0, 0)
        assert 1 <= s.inserts <= 4  # batched: never one insert per event
        client = w.query_client()
        try:
            assert _final_count(client) == 6
            row = client.query(
                "SELECT outcome, error_type, error_message, quota_id, model, cost_usd, metadata, result "
                "FROM ai_events FINAL WHERE event_id = {e:String}",
                parameters={"e": failed.event_id},
            ).result_rows[0]
            assert row[:3] == ("error", "QuotaExhaustedError", "all keys cooling down")
            assert row[4] == "gemini-2.5-flash-free"
            assert row[5] == Decimal("0.000012345678")
            assert row[6] == {"run": "t"}
            att = client.query(
                "SELECT outcome, http_status, quota_id, decision, suspended_until FROM ai_attempts "
                "WHERE event_id = {e:String}",
                parameters={"e": failed.event_id},
            ).result_rows
            assert att[0][:4] == ("quota", 429, "GenerateRequestsPerDay", "suspend")
            assert att[0][4] is not None
            assert client.command("SELECT count() FROM ai_attempts") == 6
        finally:
            client.close()
    finally:
        assert w.close(10)
    assert not [p for p in (tmp_path / "spool").iterdir() if p.name.startswith("seg-")]


def test_replayed_batch_is_deduplicated(tmp_path):
    """A batch delivered twice (same dedup token) lands once; a segment replayed after a crash folds on event_id."""
    settings = embedded_settings(tmp_path)
    w = _writer(settings, start=False)
    events = [make_event(i) for i in range(20)]
    for e in events:
        w.record(e)
    seg = next(p for p in (tmp_path / "spool").iterdir() if p.name.startswith("seg-"))
    copy = seg.read_bytes()
    w.start()
    assert w.flush(20)
    assert w.close(10)
    # The same records again, as if the writer died after the insert but before deleting
    # the segment: a new process replays them.
    (tmp_path / "spool" / ("seg-0" + seg.name[5:])).write_bytes(copy)
    w2 = _writer(settings)
    assert w2.flush(20)
    assert w2.stats().replayed == 20
    client = w2.query_client()
    try:
        assert _final_count(client) == 20
        assert client.command("SELECT uniqExact(event_id) FROM ai_events") == 20
        # The same insert retried with its token is dropped by ClickHouse itself.
        from csctracker_ai_core.telemetry.records import EVENT_COLUMN_NAMES, event_columns, event_to_record

        cols = event_columns([event_to_record(make_event(1000, event_id="same"))])
        before = client.command("SELECT count() FROM ai_events")
        for _ in range(2):
            client.insert(
                "ai_events",
                cols,
                column_names=list(EVENT_COLUMN_NAMES),
                column_oriented=True,
                settings={"insert_deduplication_token": "tok-1"},
            )
        assert client.command("SELECT count() FROM ai_events") == before + 1
    finally:
        client.close()
        w2.close(10)


def test_redaction_applied_before_disk_and_clickhouse(tmp_path):
    """The redact hook runs before the spool: the secret is neither on disk nor in ClickHouse."""
    settings = embedded_settings(tmp_path)
    import dataclasses

    def redact(e):
        return dataclasses.replace(e, payload=e.payload.replace("s3cr3t", "[REDACTED]"))

    w = _writer(settings, redact=redact, start=False)
    w.record(make_event(1, payload="my password is s3cr3t"))
    spooled = b"".join(p.read_bytes() for p in (tmp_path / "spool").iterdir() if p.name.startswith("seg-"))
    assert b"s3cr3t" not in spooled and b"[REDACTED]" in spooled
    w.start()
    assert w.flush(20)
    client = w.query_client()
    try:
        assert client.command("SELECT payload FROM ai_events") == json.dumps("my password is [REDACTED]")
    finally:
        client.close()
        w.close(10)


def test_failing_redaction_withholds_texts(tmp_path):
    """A redact hook that raises never lets the raw text through; the event is still kept."""
    settings = embedded_settings(tmp_path)

    def boom(e):
        raise RuntimeError("bug in hook")

    w = _writer(settings, redact=boom, start=False)
    w.record(make_event(1, payload="s3cr3t"))
    spooled = b"".join(p.read_bytes() for p in (tmp_path / "spool").iterdir() if p.name.startswith("seg-"))
    assert b"s3cr3t" not in spooled
    assert w.stats().redaction_errors == 1 and w.stats().dropped == 0
    w.close(0)


def test_truncation_marker_and_images(tmp_path):
    """Long texts are capped with an explicit marker; images are kept as hash/size/mime unless opted in."""
    settings = embedded_settings(tmp_path)
    w = _writer(settings, max_text_bytes=1000)
    big = "é" * 5000  # 10000 UTF-8 bytes
    w.record(
        make_event(
            1,
            payload=big,
            result=big,
            image_sha256="ab" * 32,
            image_bytes=123,
            image_mime="image/png",
            image_base64="aGVsbG8=",
        )
    )
    assert w.flush(20)
    client = w.query_client()
    try:
        payload, result, pb, rb, sha, ib, mime, b64 = client.query(
            "SELECT payload, result, payload_bytes, result_bytes, image_sha256, image_bytes, image_mime, image_base64 "
            "FROM ai_events FINAL"
        ).result_rows[0]
        marker = TRUNCATION_MARKER_FORMAT.format(kept=1000, total=10000)
        assert result.endswith(marker) and len(result.encode()) <= 1000 + len(marker.encode())
        assert json.loads(payload).endswith(marker)
        assert (pb, rb) == (10000, 10000)
        assert (sha, ib, mime, b64) == ("ab" * 32, 123, "image/png", "")
    finally:
        client.close()
        w.close(10)


def test_clickhouse_db_compatible_api(tmp_path, monkeypatch):
    """ClickHouseDb().log_event_telemetry(...) as the original; get_ch_client() queries the same store."""
    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(tmp_path))
    db = ClickHouseDb(batch_interval_s=0.05)
    try:
        db.log_event_telemetry(
            "ev-1",
            {"input": 10, "output": 5, "reasoning": 2},
            "the prompt",
            "the answer",
            "gemini-2.5-flash-paid",
            "task-x",
            0.75,
            "flex",
        )
        assert db.writer.flush(20)
        client = db.get_ch_client()
        try:
            row = client.query(
                "SELECT model, model_name, tier, tokens_input, tokens_output, tokens_reasoning, "
                "payload, result, task, time_spent, service_tier FROM ai_events FINAL"
            ).result_rows
            assert row == [
                (
                    "gemini-2.5-flash-paid",
                    "gemini-2.5-flash",
                    "paid",
                    10,
                    5,
                    2,
                    '"the prompt"',
                    "the answer",
                    "task-x",
                    0.75,
                    "flex",
                )
            ]
        finally:
            client.close()
    finally:
        db.close(10)
    assert not (tmp_path / "chdb.lock").read_text() == ""  # PID written for others to see


def test_open_telemetry_off_returns_null_sink(tmp_path):
    """mode off: a sink that does nothing and never touches the disk."""
    from csctracker_ai_core.telemetry import ClickHouseSettings, NullSink

    sink = open_telemetry(ClickHouseSettings(mode="off", spool_path=tmp_path / "s", embedded_path=tmp_path / "c"))
    assert isinstance(sink, NullSink)
    sink.record(make_event())
    assert sink.stats().role == "off" and sink.close(0)
    assert not (tmp_path / "s").exists()


def test_embedded_non_owner_process_hands_events_to_owner(tmp_path):
    """Two processes on one embedded store: the non-owner spools and hands off, the owner delivers all."""
    import subprocess
    import sys
    import textwrap

    settings = embedded_settings(tmp_path)
    owner = _writer(settings, scan_interval_s=0.1)
    try:
        assert owner.flush(20)  # nothing spooled yet: the first pass leaves nothing pending
        from test_telemetry_support import wait_until

        assert wait_until(lambda: owner.is_owner, 20)
        script = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {os.path.dirname(__file__)!r})
            from test_telemetry_support import embedded_settings, make_event
            from csctracker_ai_core.telemetry.writer import TelemetryWriter
            from pathlib import Path
            w = TelemetryWriter(embedded_settings(Path({str(tmp_path)!r})), handoff_interval_s=0.05,
                                batch_interval_s=0.05)
            for i in range(50):
                w.record(make_event(i, task="child"))
            w.close(5)
            s = w.stats()
            assert s.handed_off == 50 and s.written == 0, s
            print("ok", s.role)
        """)
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        )
        assert out.returncode == 0, out.stderr[-3000:]
        client = owner.query_client()
        try:
            assert wait_until(
                lambda: client.command("SELECT count() FROM ai_events FINAL WHERE task = 'child'") == 50, 20
            )
            assert wait_until(lambda: owner.stats().replayed == 50, 5)  # counters follow the insert
        finally:
            client.close()
    finally:
        owner.close(10)


def test_a_backlog_lives_in_the_spool_files_not_in_the_heap(tmp_path):
    """No copy of a spooled line stays in memory (a burst used to keep up to 32 MiB of
    them, whose fresh heap pages slowed the calls): the writer reads its own segments
    back from the files, in chunks, and loses none."""
    import tracemalloc

    settings = embedded_settings(tmp_path)
    w = _writer(settings, max_batch_rows=7, start=False)
    w.record(make_event(0, result="r" * 2000))  # the first segment, and every lazy import
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, 40):
            w.record(make_event(i, result="r" * 2000))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert w._spool.usage()[0] > 39 * 2000
    assert held < 39 * 2000 / 4, held  # the lines are in the file, not in the heap
    w.start()
    assert w.flush(30)
    s = w.stats()
    assert (s.written, s.pending, s.dropped) == (40, 0, 0)
    client = w.query_client()
    try:
        assert _final_count(client) == 40
    finally:
        client.close()
        w.close(10)


# --------------------------------------------------------------- the JSON insert path


class _Spy:
    """A client that counts its typed and JSON inserts (and can refuse JSON ones)."""

    def __init__(self, client, refuse_json=False):
        self.client, self.refuse_json = client, refuse_json
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def insert(self, table, *args, **kw):
        self.calls.append(("typed", table))
        return self.client.insert(table, *args, **kw)

    def raw_insert(self, table, *args, **kw):
        self.calls.append(("json", table))
        if self.refuse_json:
            from clickhouse_connect.driver.exceptions import DatabaseError

            err = DatabaseError("Code: 27. DB::Exception: Cannot parse input (refused for the test)")
            err.code = 27  # type: ignore[attr-defined]
            raise err
        return self.client.raw_insert(table, *args, **kw)


def _varied_records(n):
    """Records that exercise every encoding: fractions of a second, decimals at full
    scale, maps, non-ASCII and escaped text, empty and None values."""
    import dataclasses

    from csctracker_ai_core.telemetry.records import event_to_record

    out = []
    for i in range(n):
        e = make_event(i, ok=i % 3 != 0)
        e = dataclasses.replace(
            e,
            # Binary fractions: a float like 1764000000.124 is stored .124 by the JSON path
            # (the store parses its shortest decimal form) but .123 by the typed one
            # (the driver truncates the float's milliseconds), 1 ms apart.
            timestamp=1764000000.125 + i * 0.0625,
            cost_usd=Decimal("0.000000123456") * i,
            metadata={"origem": "fila", "ç": "ü"} if i % 2 else {},
            payload='olá "mundo"\n\t\\ é 😀' * (i % 4),
            total_duration_ms=1.5 * i,
            served_tier="flex" if i % 5 == 0 else "",
        )
        out.append(event_to_record(e))
    return out


def test_json_inserts_store_exactly_what_typed_inserts_store(store):
    """The writer inserts JSONEachRow lines that the store parses; every column of every
    row (both tables) equals what the typed path (Python columns, driver encoding) stores."""
    from csctracker_ai_core.telemetry.quarantine import Quarantine, insert_batch
    from csctracker_ai_core.telemetry.records import (
        ATTEMPT_COLUMN_NAMES,
        EVENT_COLUMN_NAMES,
        attempt_columns,
        event_columns,
    )
    from csctracker_ai_core.telemetry.schema import ATTEMPTS_TABLE, EVENTS_TABLE

    settings, client = store
    ensure_schema(client)
    settings.spool_path.mkdir()
    records = _varied_records(30)
    spy = _Spy(client)
    done = insert_batch(spy, "default", records, "tok-json", Quarantine(settings.spool_path), 0.0)
    assert done.inserts == 2 and done.quarantined == 0
    assert spy.calls == [("json", f"`default`.`{EVENTS_TABLE}`"), ("json", f"`default`.`{ATTEMPTS_TABLE}`")]
    for table, names, columns in (
        (EVENTS_TABLE, EVENT_COLUMN_NAMES, event_columns),
        (ATTEMPTS_TABLE, ATTEMPT_COLUMN_NAMES, attempt_columns),
    ):
        client.command(f"CREATE TABLE typed_{table} AS {table}")
        client.insert(f"typed_{table}", columns(records), column_names=list(names), column_oriented=True)
        cols = ", ".join(f"`{n}`" for n in names)
        order = "event_id, attempt" if table == ATTEMPTS_TABLE else "event_id"
        via_json = client.query(f"SELECT {cols} FROM {table} ORDER BY {order}").result_rows
        typed = client.query(f"SELECT {cols} FROM typed_{table} ORDER BY {order}").result_rows
        assert len(via_json) == len(typed) > 0
        assert via_json == typed


def test_a_json_insert_the_store_refuses_takes_the_typed_path_and_isolates_the_bad_row(store):
    """A record the store refuses fails the whole JSON insert (one block: nothing lands);
    the typed path, with the same token, then finds the one bad row: the others land,
    it goes to the quarantine."""
    from csctracker_ai_core.telemetry.quarantine import Quarantine, insert_batch

    settings, client = store
    ensure_schema(client)
    settings.spool_path.mkdir()
    records = _varied_records(8)
    records[5]["tokens_input"] = -7  # UInt32: the store and the driver both refuse it
    done = insert_batch(_Spy(client), "default", records, "tok-bad", Quarantine(settings.spool_path), 0.0, screen=set())
    assert done.quarantined == 1 and done.not_inserted == frozenset({id(records[5])})
    assert client.command("SELECT count() FROM ai_events") == 7
    assert client.command(f"SELECT count() FROM ai_events WHERE event_id = '{records[5]['event_id']}'") == 0
    assert client.command("SELECT count() FROM ai_attempts") == sum(
        len(r["_a"]) for i, r in enumerate(records) if i != 5
    )
    quarantined = (settings.spool_path / "quarantine.jsonl").read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in quarantined] == [records[5]["event_id"]]


def test_a_refused_json_insert_retried_typed_keeps_its_token(store):
    """Both paths carry the same deduplication token: a batch that landed as JSON and is
    sent again typed (a replay after a refusal elsewhere) is dropped by the store."""
    from csctracker_ai_core.telemetry.quarantine import Quarantine, insert_batch

    settings, client = store
    ensure_schema(client)
    settings.spool_path.mkdir()
    records = _varied_records(10)
    insert_batch(_Spy(client), "default", records, "tok-same", Quarantine(settings.spool_path), 0.0)
    spy = _Spy(client, refuse_json=True)
    insert_batch(spy, "default", records, "tok-same", Quarantine(settings.spool_path), 0.0)
    assert [kind for kind, _ in spy.calls] == ["json", "typed", "json", "typed"]
    assert client.command("SELECT count() FROM ai_events") == 10
    assert client.command("SELECT count() FROM ai_attempts") == sum(len(r["_a"]) for r in records)


def test_a_json_insert_into_a_table_that_lost_a_column_fails_instead_of_dropping_it(store):
    """The JSON insert names its columns: a column dropped from the table after the writer
    connected fails the insert (a schema error, retried after the reconnection repairs the
    table), where skipping unknown keys alone would store the rows without that value."""
    from csctracker_ai_core.telemetry.quarantine import Quarantine, insert_batch, is_data_error

    settings, client = store
    ensure_schema(client)
    settings.spool_path.mkdir()
    client.command("ALTER TABLE ai_events DROP COLUMN quota_id")
    records = _varied_records(3)
    with pytest.raises(Exception) as caught:
        insert_batch(_Spy(client), "default", records, "tok-drift", Quarantine(settings.spool_path), 0.0)
    assert not is_data_error(caught.value) and "quota_id" in str(caught.value)
    assert client.command("SELECT count() FROM ai_events") == 0
    assert not (settings.spool_path / "quarantine.jsonl").exists()


def test_lines_are_inserted_in_one_pass_and_a_refused_chunk_still_isolates_its_bad_row(store):
    """insert_lines (what the writer calls): the usual chunk goes as two JSON inserts built
    line by line; a chunk the store refuses is decoded and isolated like insert_batch does,
    under the same tokens, so nothing lands twice and only the bad row is quarantined."""
    from csctracker_ai_core.telemetry.quarantine import Quarantine, insert_lines
    from csctracker_ai_core.telemetry.records import encode_event, encode_record
    from csctracker_ai_core.telemetry.schema import ATTEMPTS_TABLE, EVENTS_TABLE

    settings, client = store
    ensure_schema(client)
    settings.spool_path.mkdir()
    quarantine = Quarantine(settings.spool_path)
    events = [make_event(i, event_id=f"ok-{i}") for i in range(6)]
    lines = [encode_event(e)[0] for e in events]
    spy = _Spy(client)
    done = insert_lines(spy, "default", lines, "tok-lines", quarantine, 0.0, checked=False, origin="seg-a")
    assert done.inserts == 2 and done.quarantined == 0 and done.not_inserted == frozenset()
    assert spy.calls == [("json", f"`default`.`{EVENTS_TABLE}`"), ("json", f"`default`.`{ATTEMPTS_TABLE}`")]
    assert client.command("SELECT count() FROM ai_events") == 6
    assert client.command("SELECT count() FROM ai_attempts") == 6

    records = _varied_records(8)
    records[3]["tokens_input"] = -7  # refused by the store: the JSON chunk fails whole
    bad = [encode_record(r) for r in records]
    done = insert_lines(_Spy(client), "default", bad, "tok-bad-lines", quarantine, 0.0, checked=False, origin="seg-b")
    assert done.quarantined == 1 and len(done.not_inserted) == 1
    assert client.command("SELECT count() FROM ai_events") == 6 + 7
    again = insert_lines(_Spy(client), "default", lines, "tok-lines", quarantine, 0.0, checked=False, origin="seg-a")
    assert again.quarantined == 0
    assert client.command("SELECT count() FROM ai_events") == 6 + 7  # the same token: not stored again
