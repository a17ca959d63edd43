"""The delivery process a writer starts once it stops reopening the embedded store, or
under uWSGI (telemetry/deliverer.py): how it is started, what it is told, that it
delivers and ends with its parent (or the process it serves), and that the writer starts
another when it died."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import fork_scenarios
from test_fork import process_gone
from test_telemetry_support import delivered_count, embedded_settings, make_event, wait_until

from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.telemetry import deliverer, ownership, spool, writer
from csctracker_ai_core.telemetry.policy import DELIVERER_RESTART_S
from csctracker_ai_core.telemetry.settings import ClickHouseSettings
from csctracker_ai_core.telemetry.writer import TelemetryWriter

HERE = Path(__file__).resolve().parent


def _executable(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_interpreter_is_python_even_under_uwsgi(tmp_path):
    """Under uWSGI ``sys.executable`` is the uwsgi binary (and embedders may leave it
    empty): the installation's own python3.X is used then, else python3, else none."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uwsgi = _executable(bin_dir, "uwsgi")
    python = _executable(tmp_path, "python-of-the-app")
    assert deliverer.interpreter(str(python), str(tmp_path)) == str(python)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    versioned = _executable(bin_dir, version)
    assert deliverer.interpreter(str(uwsgi), str(tmp_path)) == str(versioned)
    assert deliverer.interpreter("", str(tmp_path)) == str(versioned)
    versioned.unlink()
    major = _executable(bin_dir, f"python{sys.version_info.major}")
    assert deliverer.interpreter(str(uwsgi), str(tmp_path)) == str(major)
    major.unlink()
    assert deliverer.interpreter(str(uwsgi), str(tmp_path)) is None
    # Named python but not executable: not used.
    python.chmod(0o644)
    assert deliverer.interpreter(str(python), str(tmp_path)) is None


def test_a_delivery_process_is_running_until_it_is_reaped_here_or_elsewhere():
    """Real children: one that exits (its status read here), one reaped by someone else
    (as gunicorn's master reaps every child): both ended, neither mistaken for running."""
    quick = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    quick.returncode = 0  # as spawn() does: this test reaps it
    proc = deliverer.DeliveryProcess(quick.pid)
    assert wait_until(lambda: not proc.running(), timeout_s=20)
    assert proc.returncode == 3 and not proc.running()
    other = subprocess.Popen([sys.executable, "-c", "pass"])
    tracked = deliverer.DeliveryProcess(other.pid)
    other.wait(20)  # someone else reaps it
    assert not tracked.running() and tracked.returncode is None
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert deliverer.DeliveryProcess(slow.pid).running()
    finally:
        slow.kill()
        slow.wait(10)


def test_the_delivery_process_is_told_the_writers_store_not_the_environments(tmp_path):
    """Paths given as arguments (no CSCTRACKER_AI_DATA_DIR) reach the process as they
    are: every field an embedded store is defined by survives the one JSON argument."""
    settings = dataclasses.replace(
        embedded_settings(tmp_path), spool_max_bytes=5 * 2**20, database="audit", delivery="external"
    )
    raw = deliverer.arguments(settings, parent_pid=4321, close_timeout_s=7.5, batch_interval_s=2.0, lock_fd=9)
    back, options = deliverer.settings_from_arguments(raw)
    assert back == dataclasses.replace(settings, delivery="thread")  # it is the delivery
    assert (options["parent_pid"], options["close_timeout_s"], options["batch_interval_s"]) == (4321, 7.5, 2.0)
    assert options["lock_fd"] == 9
    process_options = {"parent_pid", "close_timeout_s", "batch_interval_s", "lock_fd"}
    assert set(json.loads(raw)) == set(deliverer.STORE_FIELDS) | process_options
    # A field added to ClickHouseSettings is either passed on or said to concern a server
    # or the parent's own delivery: this fails until it is placed.
    not_passed = {"mode", "host", "port", "username", "password", "secure", "dsn", "best_effort", "delivery"}
    assert {f.name for f in dataclasses.fields(ClickHouseSettings)} == set(deliverer.STORE_FIELDS) | not_passed


class _Started:
    """A delivery process as the writer sees it; the test says when it ended."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode, self.ended = pid, None, False

    def running(self) -> bool:
        return not self.ended


def test_a_delivery_process_that_ended_is_replaced_at_once_or_after_a_growing_wait(tmp_path, monkeypatch, caplog):
    """One that ran 30 s or more is replaced as soon as its end is seen; one that ended
    young waits 1 s, then 2, 4... for each young end in a row (a crash loop forks the
    application at a slowing pace), and a long-lived one resets the count."""
    clock = FakeClock(1000.0)
    w = TelemetryWriter(embedded_settings(tmp_path), start=False, clock=clock)
    started: list[_Started] = []

    def spawn(settings, *, close_timeout_s, batch_interval_s, serves, hand_over_lock):
        assert settings is w.settings and close_timeout_s == w.close_timeout_s
        assert serves is None and not hand_over_lock  # it serves this process, and takes the lock itself
        proc = _Started(100 + len(started))
        started.append(proc)
        return proc

    def end_last(returncode=None) -> None:
        started[-1].ended, started[-1].returncode = True, returncode

    monkeypatch.setattr(writer.deliverer, "spawn", spawn)
    w._keep_deliverer(clock.time())
    assert [p.pid for p in started] == [100] and w.stats().delivery_pid == 100
    clock.advance(3600)
    w._keep_deliverer(clock.time())  # running: left alone, however late
    assert len(started) == 1
    end_last(-9)  # killed after an hour
    with caplog.at_level(logging.WARNING, logger="csctracker_ai_core.telemetry.writer"):
        w._keep_deliverer(clock.time())
    assert [p.pid for p in started] == [100, 101] and w.stats().delivery_pid == 101  # at once
    assert "delivery process 100" in caplog.text and "-9" in caplog.text
    for young, wait_s in enumerate([1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0], start=1):
        clock.advance(0.5)
        end_last()  # ended half a second after its start (reaped elsewhere: no status)
        w._keep_deliverer(clock.time())
        assert len(started) == 1 + young, young  # not yet
        clock.advance(wait_s - 0.01)
        w._keep_deliverer(clock.time())
        assert len(started) == 1 + young, young
        clock.advance(0.01)
        w._keep_deliverer(clock.time())
        assert len(started) == 2 + young, young
    clock.advance(DELIVERER_RESTART_S)
    end_last()  # this one lived 30 s: the count starts over
    w._keep_deliverer(clock.time())
    assert len(started) == 10
    clock.advance(0.5)
    end_last()
    w._keep_deliverer(clock.time())
    clock.advance(1.0)
    w._keep_deliverer(clock.time())
    assert len(started) == 11  # 1 s again
    w.close(0)


def test_a_failed_start_is_logged_and_tried_again_later(tmp_path, monkeypatch, caplog):
    clock = FakeClock(50.0)
    w = TelemetryWriter(embedded_settings(tmp_path), start=False, clock=clock)
    monkeypatch.setattr(deliverer, "interpreter", lambda *a: None)
    with caplog.at_level(logging.ERROR, logger="csctracker_ai_core.telemetry.deliverer"):
        w._keep_deliverer(clock.time())
    assert w.stats().delivery_pid is None and "csc-ai deliver" in caplog.text
    calls = []
    monkeypatch.setattr(writer.deliverer, "spawn", lambda *a, **k: calls.append(1))
    clock.advance(DELIVERER_RESTART_S)
    w._keep_deliverer(clock.time())
    assert calls == [1]
    w.close(0)


_PARENT = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_telemetry_support import embedded_settings, make_event
from csctracker_ai_core.telemetry import deliverer
from csctracker_ai_core.telemetry.writer import TelemetryWriter
import dataclasses
root = Path(sys.argv[2])
settings = embedded_settings(root)
child = deliverer.spawn(settings, close_timeout_s=10, batch_interval_s=0.2)
spooler = TelemetryWriter(dataclasses.replace(settings, delivery="external"), handoff_interval_s=0.2)
for i in range(int(sys.argv[3])):
    spooler.record(make_event(i, task="by-deliverer"))
spooler.flush(10)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_the_delivery_process_delivers_and_ends_when_its_parent_is_killed(tmp_path):
    """A parent starts the delivery process, spools 25 events and hands them over: they
    land while it lives; SIGKILL to the parent (no exit hook runs) ends the delivery
    process within seconds, and the store is left to the next process."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(HERE), str(tmp_path), "25"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child_pid = int(parent.stdout.readline())
        assert wait_until(lambda: fork_scenarios.spooled_lines(tmp_path / "spool") == 0, timeout_s=60)
        assert not process_gone(child_pid)  # it waits for more while its parent runs
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert wait_until(lambda: process_gone(child_pid), timeout_s=20)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdout.close()
    sql = "SELECT count() FROM ai_events WHERE task = 'by-deliverer'"
    assert delivered_count(embedded_settings(tmp_path), sql) == 25


def test_a_delivery_process_whose_parent_is_already_gone_delivers_the_whole_backlog(tmp_path):
    """A process whose close() found the store without an owner starts the delivery
    process and exits at once, leaving it a backlog. Its last delivery is not bounded by
    the writer's close_timeout_s (0.5 s here, less than chDB's start-up), nor by what one
    claim takes: found with a SIGKILLed delivery process replaced as the application
    closed, 336-774 of 6,000 events left in the spool. With nobody waiting for it, it
    takes everything there."""
    settings = embedded_settings(tmp_path)
    # 150 segments of 20 events, more than one claim takes (spool.CLAIM_LIMIT): claimed
    # once, 64 segments were delivered and the rest left.
    for k in range(150):
        spooler = TelemetryWriter(dataclasses.replace(settings, delivery="external"), start=False)
        for i in range(20):
            spooler.record(make_event(k * 20 + i, task="backlog"))
        spooler.close(0)  # its segment sealed and let go
    assert len(list((tmp_path / "spool").glob("seg-*"))) == 150 > spool.CLAIM_LIMIT
    gone = subprocess.Popen(["true"])
    gone.wait(10)
    child = deliverer.spawn(settings, close_timeout_s=0.5, batch_interval_s=0.2, serves=gone.pid)
    assert child is not None
    assert wait_until(lambda: not child.running(), timeout_s=60) and child.returncode == 0
    assert fork_scenarios.spooled_lines(tmp_path / "spool") == 0
    assert delivered_count(settings, "SELECT count() FROM ai_events WHERE task = 'backlog'") == 3000


def test_process_running_is_false_for_a_zombie_and_for_a_reaped_process():
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        assert deliverer.process_running(sleeper.pid)
        sleeper.kill()
        # Ended, not reaped yet: a zombie until wait() below.
        assert wait_until(lambda: Path(f"/proc/{sleeper.pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z")
        assert not deliverer.process_running(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait(10)
    assert not deliverer.process_running(sleeper.pid)


def test_a_delivery_process_handed_the_lock_serves_another_process_and_ends_after_it(tmp_path):
    """The uWSGI case (forking.under_uwsgi): a process takes the store's lock, starts the
    delivery process for another one (the master) and lets go of the lock. The child holds
    it from its first instant (nobody can take the store in between), delivers what is
    handed over, and ends after the process it serves, even while that one is a zombie."""
    settings = embedded_settings(tmp_path)
    served = subprocess.Popen(["sleep", "600"])
    child = None
    try:
        assert ownership.try_acquire(settings.embedded_path)
        try:
            child = deliverer.spawn(
                settings, close_timeout_s=10, batch_interval_s=0.2, serves=served.pid, hand_over_lock=True
            )
        finally:
            ownership.release(settings.embedded_path)
        assert child is not None
        assert ownership.is_held(settings.embedded_path) and not ownership.try_acquire(settings.embedded_path)
        assert wait_until(lambda: ownership.holder_pid(settings.embedded_path) == child.pid, timeout_s=30)
        spooler = TelemetryWriter(dataclasses.replace(settings, delivery="external"), handoff_interval_s=0.2)
        try:
            for i in range(10):
                spooler.record(make_event(i, task="served"))
            assert spooler.flush(10)
        finally:
            spooler.close(5)
        assert wait_until(lambda: fork_scenarios.spooled_lines(tmp_path / "spool") == 0, timeout_s=60)
        assert child.running()  # its parent (this process) lives, but it serves `served`
        served.kill()  # left a zombie until the wait below
        assert wait_until(lambda: not child.running(), timeout_s=20)
        assert child.returncode == 0 and not ownership.is_held(settings.embedded_path)
    finally:
        served.kill()
        served.wait(10)
        if child is not None and child.running():
            os.kill(child.pid, signal.SIGKILL)
    sql = "SELECT count() FROM ai_events WHERE task = 'served'"
    assert delivered_count(settings, sql) == 10


def test_ownership_is_held_probes_without_taking_the_lock(tmp_path):
    path = tmp_path / "chdb"
    assert not ownership.is_held(path)  # no lock file yet
    assert ownership.try_acquire(path)
    try:
        assert ownership.is_held(path)
        assert ownership.descriptor(path) is not None
    finally:
        ownership.release(path)
    assert not ownership.is_held(path) and ownership.descriptor(path) is None
    assert ownership.holder_pid(path) == os.getpid()  # the probe wrote nothing


def test_a_lock_taken_alone_is_not_shared_within_the_process(tmp_path):
    """Two writers of one process looking at once: only one may take the lock it will
    hand to a delivery process (shared, both would start one on the same lock)."""
    path = tmp_path / "chdb"
    assert ownership.try_acquire(path, alone=True)
    try:
        assert not ownership.try_acquire(path, alone=True)
        assert ownership.try_acquire(path)  # the ordinary sharing is unchanged
        ownership.release(path)
    finally:
        ownership.release(path)
    assert not ownership.is_held(path)
