"""External telemetry delivery: applications only spool, ``csc-ai deliver`` inserts.

Real processes on both stores: the application is this test process (an IaProcessor
with ``telemetry_delivery="external"``), the delivery is ``python -m csctracker_ai_core
deliver`` in its own process.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from test_fork import echo, spooled_lines, store  # noqa: F401  (fixtures shared with the fork tests)
from test_telemetry_support import wait_until

from csctracker_ai_core import IaProcessor
from csctracker_ai_core.exceptions import ConfigurationError
from csctracker_ai_core.settings import Settings

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
