"""Telemetry delivered out of the application's processes.

``telemetry_delivery="external"``: applications only spool, ``csc-ai deliver`` inserts.
Real processes on both stores: the application is this test process (an IaProcessor),
the delivery is ``python -m csctracker_ai_core deliver`` in its own process.

``telemetry_delivery="process"`` (embedded store): applications only spool, and the
first to find the store without an owner starts the delivery process (deliverer.py).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import pytest
from test_fork import HERE, echo, process_gone, run_scenario, spooled_lines, store  # noqa: F401  (shared fixtures)
from test_telemetry_support import delivered_count, wait_until

from csctracker_ai_core import IaProcessor
from csctracker_ai_core.exceptions import ConfigurationError, TelemetryError
from csctracker_ai_core.settings import Settings
from csctracker_ai_core.telemetry.settings import ClickHouseSettings, resolve_clickhouse_settings

KEY = "AIzaDELIVERY-000000000000000000000000"


def _deliverer(env: dict, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "csctracker_ai_core", "-v", "deliver", "--nice", "0", "--scan-interval", "0.2"]
    return subprocess.Popen([*argv, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _counted(count) -> tuple | None:
    """count(), or None while the deliverer has not created the schema yet."""
    try:
        return count()
    except Exception:
        return None


def _ask(p: IaProcessor, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        text, _tokens, _event_id = p.analisar_com_gemini(prompt=f"ext-{i}", return_json=False, task="fork")
        assert text.strip() == f"ext-{i}"


def test_calls_only_spool_and_csc_ai_deliver_inserts_them(store, echo):  # noqa: F811
    kind, env, count, data = store
    p = IaProcessor(
        google_free_keys=[KEY], base_url=echo.base_url, max_retries=0, telemetry_delivery="external", env=env
    )
    _ask(p, 20)
    assert p.telemetry.flush(10)  # handed over: nothing of this process's is pending
    stats = p.telemetry.stats()
    assert (stats.role, stats.handed_off, stats.written, stats.dropped) == ("spooler", 20, 0, 0)
    assert spooled_lines(data) == 20  # no process inserts them yet
    if kind == "server":  # the application never even connected: no schema was made
        with pytest.raises(Exception, match="UNKNOWN_TABLE"):
            count()
    deliverer = _deliverer(env)
    try:
        if kind == "server":  # delivered while the application runs
            assert wait_until(lambda: _counted(count) == (20, 20), 60), _counted(count)
        else:  # the deliverer owns the store; the spool drains
            assert wait_until(lambda: spooled_lines(data) == 0, 60)
        _ask(p, 10, first=20)
        p.close(10)  # the last segment is handed over at close
        if kind == "server":
            assert wait_until(lambda: _counted(count) == (30, 30), 60), _counted(count)
        else:
            assert wait_until(lambda: spooled_lines(data) == 0, 60)
    finally:
        deliverer.send_signal(signal.SIGTERM)
        _out, err = deliverer.communicate(timeout=120)
    assert deliverer.returncode == 0, err
    assert "30 events delivered, 0 quarantined, 0 spool files left" in err
    assert count() == (30, 30)


def test_deliver_once_takes_what_an_exited_application_left(store, echo):  # noqa: F811
    """An application that ended (close, then exit) with nothing delivering: `csc-ai
    deliver --once` inserts its events and exits."""
    kind, env, count, data = store
    p = IaProcessor(
        google_free_keys=[KEY], base_url=echo.base_url, max_retries=0, telemetry_delivery="external", env=env
    )
    _ask(p, 12)
    p.close(10)
    assert spooled_lines(data) == 12
    done = _deliverer(env, "--once")
    _out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert "12 events delivered" in err
    assert spooled_lines(data) == 0
    assert count() == (12, 12)


def test_delivery_setting_from_argument_and_environment():
    assert Settings.load(env={}).telemetry.delivery == "thread"
    assert Settings.load(env={"CSCTRACKER_AI_TELEMETRY_DELIVERY": "External"}).telemetry.delivery == "external"
    env = {"CSCTRACKER_AI_TELEMETRY_DELIVERY": "external"}
    assert Settings.load(env=env, telemetry_delivery="thread").telemetry.delivery == "thread"
    with pytest.raises(ConfigurationError, match="CSCTRACKER_AI_TELEMETRY_DELIVERY"):
        Settings.load(env={"CSCTRACKER_AI_TELEMETRY_DELIVERY": "sidecar"})


def test_process_delivery_keeps_chdb_out_of_the_application_and_delivers_everything(tmp_path, echo):  # noqa: F811
    """An application with ``CSCTRACKER_AI_TELEMETRY_DELIVERY=process``: 12 calls, a forked
    worker's 4, its spool delivered while it lives by the delivery process it started,
    then 5 more calls and an exit without close(). Neither process loads chDB, the
    worker starts no second delivery process, and the delivery process ends after the
    application with every event in the store once."""
    data = tmp_path / "data"
    env = dict(
        os.environ,
        CSCTRACKER_AI_DATA_DIR=str(data),
        CSCTRACKER_AI_TELEMETRY_DELIVERY="process",
        PYTHONPATH=os.pathsep.join([str(HERE)] + [p for p in sys.path if p]),
    )
    report = run_scenario(env, "process_delivery", emulator=echo.base_url, calls=12, child_calls=4, last_calls=5)
    assert report["wrong"] == 0 and report["child_exit"] == 0, report
    assert (report["role"], report["written"], report["dropped"], report["chdb_loaded"]) == ("spooler", 0, 0, False)
    assert report["delivery_pid"] and report["left_while_alive"] == 0, report
    assert wait_until(lambda: process_gone(report["delivery_pid"]), timeout_s=60)
    assert spooled_lines(data) == 0  # the last 5 too: delivered by it after the exit
    settings = resolve_clickhouse_settings(env=env)
    assert settings.delivery == "process"
    reader = dataclasses.replace(settings, delivery="thread")  # this test reads: it opens the store
    sql = "SELECT uniqExact(event_id) FROM ai_events WHERE task = 'fork'"
    assert delivered_count(reader, sql) == 12 + 4 + 5
    assert delivered_count(reader, "SELECT count() FROM ai_events WHERE task = 'fork'") == 21


@pytest.mark.parametrize("where", ["process", "uwsgi"])
def test_a_process_a_delivery_process_serves_never_opens_the_store_to_read_it(tmp_path, monkeypatch, where):
    """With ``delivery="process"``, and under uWSGI, reads in the application's process
    (ClickHouseDb, Telemetry reports) are refused before anything is opened, even when
    nobody holds the store: taking it would load chDB there (a uWSGI worker then hangs at
    exit) and keep the delivery process from starting until the reader closed."""
    from csctracker_ai_core import forking
    from csctracker_ai_core.reports.telemetry_report import Telemetry
    from csctracker_ai_core.telemetry import ownership
    from csctracker_ai_core.telemetry.clickhouse_db import ClickHouseDb
    from csctracker_ai_core.telemetry.connection import connect

    settings = ClickHouseSettings(
        mode="embedded",
        embedded_path=tmp_path / "chdb",
        spool_path=tmp_path / "spool",
        delivery="process" if where == "process" else "thread",
    )
    if where == "uwsgi":
        monkeypatch.setattr(forking, "_watch_pid", True)
    said = "telemetry delivery 'process'" if where == "process" else "under uWSGI"
    db = ClickHouseDb(settings=settings)
    with pytest.raises(TelemetryError, match=f"belongs to a delivery process \\({said}\\)") as caught:
        db.get_ch_client()
    assert "CLICKHOUSE_HOST" in str(caught.value) and "csc-ai report" in str(caught.value)
    with pytest.raises(TelemetryError, match="belongs to a delivery process"):
        Telemetry(settings=settings).get_telemetry_data("group", "today")
    with pytest.raises(TelemetryError, match="belongs to a delivery process"):
        connect(settings)  # every client of the embedded store is made here (writer.query_client too)
    assert not ownership.is_held(settings.embedded_path) and not (tmp_path / "chdb").exists()
    if where == "process":  # an external application may still read while nobody holds the store
        external = ClickHouseDb(settings=dataclasses.replace(settings, delivery="external"))
        client = external.get_ch_client()
        try:
            assert int(client.command("SELECT count() FROM ai_events")) == 0
        finally:
            client.close()
            external.close()


def test_process_delivery_is_refused_with_a_clickhouse_server():
    """A server store has no engine in the process to keep out: 'process' is refused
    before anything is opened, with what to use instead."""
    env = {"CLICKHOUSE_HOST": "127.0.0.1", "CSCTRACKER_AI_TELEMETRY_DELIVERY": "process"}
    with pytest.raises(ConfigurationError, match="'external' with `csc-ai deliver`"):
        Settings.load(env=env)
    with pytest.raises(ConfigurationError, match="embedded store"):
        ClickHouseSettings(mode="server", host="127.0.0.1", delivery="process")
    assert Settings.load(env={"CSCTRACKER_AI_TELEMETRY_DELIVERY": "Process"}).telemetry.delivery == "process"
    off = {"CSCTRACKER_AI_TELEMETRY": "off", "CSCTRACKER_AI_TELEMETRY_DELIVERY": "process"}
    assert Settings.load(env=off).telemetry.mode == "off"  # nothing to deliver: no error


def test_deliver_refuses_bad_options_before_opening_anything(tmp_path, monkeypatch):
    import io

    from csctracker_ai_core import cli

    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(tmp_path / "data"))
    for argv, said in [
        (["deliver", "--scan-interval", "0"], "--scan-interval must be above 0"),
        (["deliver", "--close-timeout", "-1"], "--close-timeout 0 or more"),
    ]:
        err = io.StringIO()
        assert cli.main(argv, stdout=io.StringIO(), stderr=err) == cli.EXIT_USAGE
        assert said in err.getvalue()
    monkeypatch.setenv("CSCTRACKER_AI_TELEMETRY", "off")
    err = io.StringIO()
    assert cli.main(["deliver", "--nice", "0", "--once"], stdout=io.StringIO(), stderr=err) == cli.EXIT_USAGE
    assert "nothing to deliver to" in err.getvalue()
    assert not (tmp_path / "data").exists()  # nothing was created


def test_a_threaded_and_an_external_processor_in_one_process_both_land(store, echo):  # noqa: F811
    """Two processors of one process on one store, one delivering in its thread and one
    external: two writers on one spool. The external one only spools and hands its
    segments off; the threaded one claims them as any deliverer does and delivers both."""
    kind, env, count, data = store
    threaded = IaProcessor(google_free_keys=[KEY], base_url=echo.base_url, max_retries=0, env=env)
    external = IaProcessor(
        google_free_keys=[KEY], base_url=echo.base_url, max_retries=0, telemetry_delivery="external", env=env
    )
    try:
        assert threaded.telemetry.writer is not external.telemetry.writer
        _ask(threaded, 5)
        _ask(external, 5, first=5)
        assert external.telemetry.flush(10) and external.telemetry.stats().role == "spooler"
        assert wait_until(lambda: threaded.telemetry.flush(2) and _counted(count) == (10, 10), 60), _counted(count)
        assert wait_until(lambda: spooled_lines(data) == 0, 30)
        assert external.telemetry.stats().written == 0 and threaded.telemetry.stats().replayed == 5
    finally:
        external.close(10)
        threaded.close(10)
