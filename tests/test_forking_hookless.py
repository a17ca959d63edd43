"""Forks that call no Python fork hook: uWSGI's default (unbit/uwsgi#1978).

uWSGI forks its workers with C fork(); only with ``py-call-uwsgi-fork-hooks`` (unbit/uwsgi
PR 2388) does it call PyOS_BeforeFork / PyOS_AfterFork_*. Facts used here, from the
uWSGI 2.0.31 source: ``uwsgi.opt`` holds a flag given without a value as ``True``, with a
value as bytes, twice as a list (plugins/python/python_plugin.c); a flag's value is off
for false/off/no/0 (uwsgi_opt_true, core/uwsgi.c); the master is worker 0. The real
uWSGI runs are in test_fork.py (test_uwsgi_master_workers)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import types

import pytest
from fork_scenarios import spooled_lines
from test_telemetry_support import delivered_count, embedded_settings, make_event, wait_until

from csctracker_ai_core import forking
from csctracker_ai_core.pool.redis_keeper import Keeper
from csctracker_ai_core.telemetry import ownership
from csctracker_ai_core.telemetry.writer import TelemetryWriter

HOOKS = forking.UWSGI_HOOKS_OPTION


@pytest.mark.parametrize(
    ("opt", "worker_id", "hookless"),
    [
        ({}, 0, True),  # the master, default options
        ({}, 1, False),  # a worker forks no further
        ({HOOKS: True}, 0, False),  # --py-call-uwsgi-fork-hooks
        ({HOOKS: b"true"}, 0, False),  # py-call-uwsgi-fork-hooks = true (ini)
        ({HOOKS: b"1"}, 0, False),
        ({HOOKS: b"false"}, 0, True),
        ({HOOKS: b"OFF"}, 0, True),
        ({HOOKS: b"no"}, 0, True),
        ({HOOKS: b"0"}, 0, True),
        ({HOOKS: [True, b"no"]}, 0, True),  # given twice: the last one counts
        ({HOOKS: [b"no", True]}, 0, False),
        ({"lazy-apps": True}, 0, True),  # code imported in a lazy-apps master still forks hookless
        ({"master": True, "processes": b"3"}, 0, True),
    ],
)
def test_uwsgi_forks_without_hooks(opt, worker_id, hookless):
    assert forking.uwsgi_forks_without_hooks(opt, worker_id) is hookless


def _fake_uwsgi(monkeypatch, opt, worker_id):
    module = types.ModuleType("uwsgi")
    module.opt = opt
    module.worker_id = lambda: worker_id() if callable(worker_id) else worker_id
    monkeypatch.setitem(__import__("sys").modules, "uwsgi", module)
    monkeypatch.setattr(forking, "_hookless_warned", False)
    return module


def test_a_uwsgi_master_without_the_option_is_said_once_with_the_fix(monkeypatch, caplog):
    _fake_uwsgi(monkeypatch, {"master": True}, 0)
    with caplog.at_level(logging.WARNING, logger="csctracker_ai_core.forking"):
        assert forking.forks_without_hooks() and forking.forks_without_hooks()
        assert forking.in_uwsgi_master()
    (record,) = caplog.records
    assert f"'{HOOKS} = true'" in record.getMessage() and "no background thread" in record.getMessage()


def test_outside_uwsgi_and_in_a_worker_nothing_changes(monkeypatch, caplog):
    assert not forking.forks_without_hooks() and not forking.in_uwsgi_master()
    _fake_uwsgi(monkeypatch, {}, 2)
    with caplog.at_level(logging.WARNING):
        assert not forking.forks_without_hooks() and not forking.in_uwsgi_master()
    assert caplog.records == []


def test_an_unknown_uwsgi_build_is_taken_as_forking_without_hooks(monkeypatch):
    def broken():
        raise RuntimeError("no worker_id here")

    _fake_uwsgi(monkeypatch, {}, broken)
    assert forking.forks_without_hooks() and forking.in_uwsgi_master()


class _Marked:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        forking.register(self, in_child=_Marked.reset)

    def reset(self) -> None:
        os.write(self.fd, f"reset in {os.getpid()} gen {forking.fork_generation()}\n".encode())


def test_check_resets_a_child_forked_by_c_fork_once_before_use(monkeypatch):
    """libc's fork() runs none of Python's hooks, as uWSGI's default does: check() sees the
    new pid and runs each registered reset once, in the child, on first use."""
    monkeypatch.setattr(forking, "_watch_pid", True)
    read_fd, write_fd = os.pipe()
    marked = _Marked(write_fd)
    generation = forking.fork_generation()
    forking.check()  # the same process: nothing to do
    pid = ctypes.CDLL(None).fork()
    if pid == 0:  # the child: no Python code ran since the fork, until here
        try:
            forking.check()
            forking.check()
            os.write(write_fd, b"end\n")
        finally:
            os._exit(0)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd) as pipe:
        lines = pipe.read().splitlines()
    assert os.waitstatus_to_exitcode(status) == 0
    assert lines == [f"reset in {pid} gen {generation + 1}", "end"]
    assert forking.fork_generation() == generation and marked.fd == write_fd


def test_the_keeper_waits_for_the_fork_in_a_hookless_master(monkeypatch):
    class Owner:
        def keeper_round(self) -> None:
            pass

        def keeper_interval(self) -> float:
            return 0.05

    owner = Owner()
    keeper = Keeper(owner, "csc-ai-test")
    monkeypatch.setattr(forking, "forks_without_hooks", lambda: True)
    keeper.start_keeper()
    keeper.start_listener(client=None, channel="chg")
    assert keeper._keeper is None and keeper._listener is None
    monkeypatch.setattr(forking, "forks_without_hooks", lambda: False)
    keeper.after_fork()  # in the worker: the keeper asked for in the master starts now
    try:
        assert keeper._keeper is not None and keeper._keeper.is_alive()
        assert keeper._keeper.name == "csc-ai-test-keeper"
    finally:
        keeper.stop()
        keeper._keeper.join(5)


def _end(process) -> None:
    """SIGTERM a delivery process (it serves this test process, which outlives the test)."""
    if process is not None and process.running():
        os.kill(process.pid, signal.SIGTERM)
        assert wait_until(lambda: not process.running(), timeout_s=30)
        assert process.returncode == 0


def test_a_writer_in_a_hookless_uwsgi_master_runs_no_thread_and_starts_the_delivery_process(tmp_path, monkeypatch):
    """No thread, no store opened: each event's segment is handed over as written, and the
    delivery process started at once (holding the store's lock from its first instant)
    delivers them."""
    monkeypatch.setattr(forking, "under_uwsgi", lambda: True)
    monkeypatch.setattr(forking, "forks_without_hooks", lambda: True)
    monkeypatch.setattr(forking, "in_uwsgi_master", lambda: True)
    settings = embedded_settings(tmp_path)
    writer = TelemetryWriter(settings)
    process = writer._deliverer
    try:
        assert process is not None and ownership.is_held(settings.embedded_path)
        for i in range(3):
            writer.record(make_event(i, task="hookless-master"))
        stats = writer.stats()
        assert writer._thread is None and writer._client is None
        assert (stats.role, stats.spooled, stats.handed_off, stats.pending) == ("spooler", 3, 3, 0)
        assert (stats.delivery_pid, ownership.descriptor(settings.embedded_path)) == (process.pid, None)
        assert wait_until(lambda: spooled_lines(tmp_path / "spool") == 0, timeout_s=60)
        assert ownership.holder_pid(settings.embedded_path) == process.pid
    finally:
        writer.close(1.0)
        _end(process)
    monkeypatch.undo()  # counting opens the store here: no longer "under uWSGI"
    assert delivered_count(settings, "SELECT count() FROM ai_events WHERE task = 'hookless-master'") == 3


def test_uwsgi_workers_never_open_the_store_and_start_one_delivery_process(tmp_path, monkeypatch):
    """Two writers (as two workers would) find the store without an owner: the first takes
    its lock and hands it to the delivery process it starts, the other finds it held.
    Neither opens the store; the one delivery process delivers both writers' events."""
    monkeypatch.setattr(forking, "under_uwsgi", lambda: True)
    monkeypatch.setattr(forking, "forks_without_hooks", lambda: False)
    monkeypatch.setattr(forking, "in_uwsgi_master", lambda: False)
    settings = embedded_settings(tmp_path)
    writers = [TelemetryWriter(settings, handoff_interval_s=0.2, ownership_retry_s=0.2) for _ in range(2)]
    try:
        for n, w in enumerate(writers):
            for i in range(4):
                w.record(make_event(10 * n + i, task="uwsgi-workers"))
        assert wait_until(lambda: spooled_lines(tmp_path / "spool") == 0, timeout_s=60)
        started = [w._deliverer for w in writers if w._deliverer is not None]
        assert len(started) == 1, started
        assert ownership.holder_pid(settings.embedded_path) == started[0].pid
        assert all(w._client is None and w.stats().role == "spooler" for w in writers)
    finally:
        for w in writers:
            w.close(1.0)
        for w in writers:
            _end(w._deliverer)
    monkeypatch.undo()  # counting opens the store here: no longer "under uWSGI"
    assert delivered_count(settings, "SELECT count() FROM ai_events WHERE task = 'uwsgi-workers'") == 8
