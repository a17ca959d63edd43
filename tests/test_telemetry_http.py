"""Telemetry over HTTP against the loopback ClickHouse server (chDB behind it):
server down at start, restarts, SIGKILLed writers, bounded close."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import chdb  # noqa: F401  (a dev dependency: the loopback server runs on it)
import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import OperationalError
from test_telemetry_support import make_event, server_settings, wait_until

from csctracker_ai_core.telemetry.writer import TelemetryWriter

from clickhouse_http_server import ServerProcess, free_port


def _writer(settings, **kw):
    kw.setdefault("batch_interval_s", 0.05)
    kw.setdefault("backoff_base_s", 0.05)
    kw.setdefault("backoff_max_s", 0.3)
    kw.setdefault("scan_interval_s", 0.2)
    return TelemetryWriter(settings, **kw)


def _client(port):
    return clickhouse_connect.get_client(host="127.0.0.1", port=port, autogenerate_session_id=False, query_retries=0)


def _spooled_lines(spool_dir):
    return sum(p.read_bytes().count(b"\n") for p in spool_dir.iterdir() if p.name.startswith("seg-"))


@pytest.fixture
def server(tmp_path):
    """A stopped loopback server (chDB data in tmp_path) on a fixed port; stopped after the test."""
    srv = ServerProcess(tmp_path / "server-chdb")
    yield srv
    srv.stop()


def test_loopback_server_stops_and_restarts_on_the_same_port(server):
    """The test server can go down and come back at the same port, keeping its data."""
    server.start()
    c = _client(server.port)
    c.command("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
    c.insert("t", [[1], [2]], column_names=["a"])
    c.close()
    server.stop()
    with pytest.raises(OperationalError):
        _client(server.port).command("SELECT 1")
    server.start()
    c = _client(server.port)
    assert c.command("SELECT count() FROM t") == 2
    c.close()


def _hanging_connect():
    """A connect that blocks until the test releases it, then fails; with events to watch it."""
    entered, release, left = threading.Event(), threading.Event(), threading.Event()

    def connect(settings):
        entered.set()
        release.wait(30)  # bounded so a broken test cannot hang the suite
        left.set()
        raise ConnectionError("connection attempt released by the test")

    return connect, entered, release, left


def test_record_returns_while_the_connection_attempt_hangs(tmp_path):
    """record() writes to the spool, never to the network: it returns while connecting is stuck."""
    connect, entered, release, left = _hanging_connect()
    w = _writer(server_settings(tmp_path, free_port()), connect=connect)
    try:
        assert entered.wait(10)  # the writer thread is inside connect
        n = 100
        for i in range(n):
            w.record(make_event(i))
        assert not left.is_set()  # every record() returned while connect was still blocked
        s = w.stats()
        assert (s.spooled, s.written, s.pending, s.dropped) == (n, 0, n, 0)
        assert _spooled_lines(tmp_path / "spool") == n
    finally:
        release.set()
        w.close(5)


def test_close_is_bounded_while_the_connection_attempt_hangs(tmp_path):
    """close() returns after its timeout even when connecting hangs; the events stay spooled."""
    connect, entered, release, left = _hanging_connect()
    w = _writer(server_settings(tmp_path, free_port()), connect=connect)
    try:
        assert entered.wait(10)
        for i in range(40):
            w.record(make_event(i))
        assert w.close(0.2) is False
        assert not left.is_set()  # close() returned while connect was still blocked
        s = w.stats()
        assert s.role == "closed" and s.written == 0 and s.dropped == 0
        assert _spooled_lines(tmp_path / "spool") == 40
    finally:
        release.set()


def test_server_down_at_start_then_every_event_lands_once(tmp_path, server):
    """Events recorded while the server is down are spooled; when it comes up, each lands exactly once."""
    settings = server_settings(tmp_path, server.port)
    w = _writer(settings)
    try:
        n = 300
        for i in range(n):
            w.record(make_event(i))
        assert wait_until(lambda: w.stats().failures > 0, 5)
        s = w.stats()
        assert (s.spooled, s.written, s.pending, s.dropped) == (n, 0, n, 0)
        assert s.last_error and "connect" in s.last_error
        server.start()
        assert w.flush(30), w.stats()
        s = w.stats()
        assert (s.written, s.pending, s.dropped, s.last_error) == (n, 0, 0, None)
        c = _client(server.port)
        try:
            assert c.command("SELECT count() FROM ai_events") == n  # raw rows: no duplicate at all
            assert c.command("SELECT uniqExact(event_id) FROM ai_events") == n
            assert c.command("SELECT count() FROM ai_attempts") == n
        finally:
            c.close()
        # the server goes away and comes back: events recorded meanwhile land too
        server.stop()
        for i in range(50):
            w.record(make_event(1000 + i))
        assert wait_until(lambda: w.stats().failures > s.failures, 5)
        server.start()
        assert w.flush(30)
        c = _client(server.port)
        try:
            assert c.command("SELECT count() FROM ai_events FINAL") == n + 50
        finally:
            c.close()
    finally:
        w.close(5)
    assert _spooled_lines(tmp_path / "spool") == 0


def test_close_is_bounded_when_the_server_is_down(tmp_path):
    """close() returns within its timeout; what it could not deliver stays spooled for the next start."""
    settings = server_settings(tmp_path, free_port())
    w = _writer(settings)
    for i in range(40):
        w.record(make_event(i))
    assert w.close(0.5) is False
    s = w.stats()
    assert s.role == "closed" and s.written == 0 and s.dropped == 0
    assert _spooled_lines(tmp_path / "spool") == 40


def test_sigkilled_writer_process_is_replayed_by_the_next_one(tmp_path, server):
    """A writer killed with SIGKILL right after its calls loses nothing: the next process replays it."""
    settings = server_settings(tmp_path, server.port)
    n = 200
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from test_telemetry_support import make_event, server_settings
        from csctracker_ai_core.telemetry.writer import TelemetryWriter
        w = TelemetryWriter(server_settings(Path({str(tmp_path)!r}), {server.port}), batch_interval_s=0.05,
                            backoff_base_s=0.05, backoff_max_s=0.2)
        for i in range({n}):
            w.record(make_event(i, task="killed"))
        print("RECORDED", flush=True)
        time.sleep(60)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "RECORDED", child.stderr.read()
        child.send_signal(signal.SIGKILL)  # no atexit, no flush, no fsync
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
        child.stderr.close()
    assert _spooled_lines(tmp_path / "spool") == n
    server.start()
    w = _writer(settings)
    try:
        assert wait_until(lambda: w.stats().replayed == n, 30), w.stats()
        c = _client(server.port)
        try:
            assert c.command("SELECT count() FROM ai_events WHERE task = 'killed'") == n
            assert c.command("SELECT uniqExact(event_id) FROM ai_events") == n
        finally:
            c.close()
        assert w.stats().spooled == 0  # this writer recorded nothing itself
    finally:
        w.close(5)
    assert _spooled_lines(tmp_path / "spool") == 0


def test_live_process_segments_are_never_claimed_twice(tmp_path):
    """A live writer's segment is locked: a second spool in another process-like open cannot claim it."""
    from csctracker_ai_core.telemetry.records import encode_record, event_to_record
    from csctracker_ai_core.telemetry.spool import Spool

    a = Spool(tmp_path / "spool")
    rec = event_to_record(make_event(1))
    a.append(encode_record(rec), rec, 1.0)
    b = Spool(tmp_path / "spool")
    assert b.claim_orphans(exclude=set()) == []  # held by a (flock on its own open file)
    seg = a.seal_active()
    a.release(seg)  # a gives it up (dead process / hand-off)
    claimed = b.claim_orphans(exclude=set())
    assert [s.path for s in claimed] == [seg.path]
    assert a.claim_orphans(exclude=set()) == []  # now b holds it
    records, _, consumed = b.read(claimed[0], 100, 1 << 20)
    assert consumed == 1 and records[0]["event_id"] == rec["event_id"]
    b.delete(claimed[0])


def test_torn_last_line_is_skipped(tmp_path):
    """A record cut by a kill inside os.write (its call never returned) is skipped on replay, not fatal."""
    from csctracker_ai_core.telemetry.records import encode_record, event_to_record
    from csctracker_ai_core.telemetry.spool import Spool

    d = tmp_path / "spool"
    d.mkdir()
    good = encode_record(event_to_record(make_event(1)))
    (d / "seg-00000000000000000001-1-abcdef01.jsonl").write_bytes(good + good[:40])
    s = Spool(d)
    [seg] = s.claim_orphans(exclude=set())
    records, off, consumed = s.read(seg, 100, 1 << 20)
    assert len(records) == 1 and consumed == 2
    s.acknowledge(seg, consumed, off)
    assert s.is_done(seg)
    s.delete(seg)
