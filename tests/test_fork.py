"""Forked workers and interpreter exit, for real: os.fork, multiprocessing's fork context,
gunicorn --preload, scripts that end without close(), many processors in one process.

Each scenario runs in its own interpreter (tests/fork_scenarios.py) so children exit as
workers do (``sys.exit``: atexit hooks, then chDB's C++ exit handlers, which hang in a
child forked while the engine runs). Both stores: the embedded chDB store, and the
loopback ClickHouse HTTP server (chDB behind it, in its own process). The emulator
echoes each prompt, so every reply names the process and call that asked for it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fork_scenarios
import pytest
from test_telemetry_support import delivered_count, wait_until

from csctracker_ai_core.telemetry import deliverer, ownership
from csctracker_ai_core.telemetry.connection import connect
from csctracker_ai_core.telemetry.settings import resolve_clickhouse_settings

from clickhouse_http_server import ServerProcess, free_port

HERE = Path(__file__).parent
SCENARIOS = HERE / "fork_scenarios.py"


@pytest.fixture
def echo(make_gemini_emulator):
    return make_gemini_emulator(echo_prompt=True)


@pytest.fixture(params=["embedded", "server"])
def store(request, tmp_path):
    """Environment for a scenario process, and a function counting its events afterwards.

    A test may also ask for ``"embedded-process"`` (indirect parametrization): the
    embedded store with ``CSCTRACKER_AI_TELEMETRY_DELIVERY=process``; its kind is
    "embedded" and ``count`` still reads the store itself (wait for the delivery process
    to end first)."""
    data = tmp_path / "data"
    env = dict(
        os.environ,
        CSCTRACKER_AI_DATA_DIR=str(data),
        PYTHONPATH=os.pathsep.join([str(HERE)] + [p for p in sys.path if p]),
    )
    server = None
    if request.param == "server":
        server = ServerProcess(tmp_path / "server-chdb").start()
        env.update(CLICKHOUSE_HOST="127.0.0.1", CLICKHOUSE_PORT=str(server.port))
    if request.param == "embedded-process":
        env["CSCTRACKER_AI_TELEMETRY_DELIVERY"] = "process"
    settings = dataclasses.replace(resolve_clickhouse_settings(env=env), delivery="thread")  # the test reads

    def count(where: str = "task = 'fork'") -> tuple:
        """(rows, distinct event ids) in ai_events."""
        client = connect(settings)
        try:
            rows = client.command(f"SELECT count() FROM ai_events WHERE {where}")
            ids = client.command(f"SELECT uniqExact(event_id) FROM ai_events WHERE {where}")
            return int(rows), int(ids)
        finally:
            client.close()

    yield request.param.partition("-")[0], env, count, data
    if server is not None:
        server.stop()


def run_scenario(env: dict, scenario: str, timeout_s: float = 300, **args) -> dict:
    proc = subprocess.run(
        [sys.executable, str(SCENARIOS), scenario, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def process_gone(pid: int) -> bool:
    """``pid`` ended (a zombie nobody reaped counts as ended)."""
    return not deliverer.process_running(pid)


def spooled_lines(data: Path) -> int:
    return fork_scenarios.spooled_lines(data / "spool")


def test_os_fork_children_calls_land_once_while_they_live(store, echo):
    """A processor built and used in the parent, then 3 forked children x 8 calls while the
    parent keeps calling: every event in the store once (counted by the parent before the
    children exit), every reply the caller's own, every child exits (sys.exit) in time."""
    kind, env, count, data = store
    report = run_scenario(env, "os_fork", emulator=echo.base_url, children=3, calls=8, parent_calls=4, wait_s=120)
    assert report["wrong_replies"] == 0, report
    assert report["hangs"] == 0, report
    assert report["counted_while_alive"] == report["expected"] == 1 + 4 + 3 * 8, report
    assert count() == (29, 29)
    assert spooled_lines(data) == 0


def test_os_fork_children_ending_with_os_exit_lose_nothing(store, echo):
    """Children that end with os._exit (no exit hooks at all): their events still land once."""
    kind, env, count, data = store
    report = run_scenario(env, "os_fork", emulator=echo.base_url, children=2, calls=5, exit="os._exit", count=False)
    assert report["wrong_replies"] == 0 and report["hangs"] == 0, report
    # Whatever the children had not delivered stays in their spool segments, which the
    # kernel unlocked at their death: the parent claims them before it exits, or the
    # next process does (here: a writer opened by this test).
    if spooled_lines(data):
        from csctracker_ai_core.telemetry.writer import TelemetryWriter

        writer = TelemetryWriter(resolve_clickhouse_settings(env=env), scan_interval_s=0.2, batch_interval_s=0.05)
        try:
            assert wait_until(lambda: spooled_lines(data) == 0, 60, 0.2), writer.stats()
        finally:
            writer.close(10)
    assert count() == (11, 11)


def test_os_fork_with_the_pool_on_redis(echo, redis_url, tmp_path):
    """Pool state on Redis: the children's Redis connections are their own (redis-py's
    pool checks the PID; our locks are fork-safe), so every call is served and answered
    to its caller, and every child exits."""
    env = dict(
        os.environ,
        CSCTRACKER_AI_DATA_DIR=str(tmp_path / "data"),
        CSCTRACKER_AI_TELEMETRY="off",
        PYTHONPATH=os.pathsep.join([str(HERE)] + [p for p in sys.path if p]),
    )
    report = run_scenario(
        env, "os_fork", emulator=echo.base_url, redis_url=redis_url, children=3, calls=6, parent_calls=3, count=False
    )
    assert report["wrong_replies"] == 0 and report["hangs"] == 0, report


def test_multiprocessing_fork_context(store, echo):
    """multiprocessing (fork start method): 3 children x 6 calls on the parent's processor."""
    kind, env, count, data = store
    report = run_scenario(env, "mp_fork", emulator=echo.base_url, children=3, calls=6)
    assert report["wrong_replies"] == 0 and report["hangs"] == 0, report
    assert report["exitcodes"] == [0, 0, 0], report
    assert report["counted_while_alive"] == report["expected"] == 19, report
    assert count() == (19, 19)


def test_fork_while_other_threads_are_inside_calls_never_deadlocks(store, echo):
    """40 forks while 3 threads are in the middle of calls (spool appends, HTTP requests,
    deliveries): every child makes its own call and exits; no child deadlocks; every
    event of the parent's threads and of the children lands once."""
    kind, env, count, data = store
    report = run_scenario(env, "fork_during_calls", timeout_s=600, emulator=echo.base_url, threads=3, forks=40)
    assert report["deadlocks"] == 0, report
    assert report["child_errors"] == [], report["child_errors"]
    assert report["wrong_replies"] == 0, report
    assert report["counted"] == report["expected"], report
    rows, ids = count()
    assert rows == ids == report["expected"]


@pytest.mark.parametrize("late_finalizer", [False, True], ids=["plain", "late-exit-hook"])
def test_script_ending_without_close_delivers_every_event(store, echo, late_finalizer):
    """No close(): the exit hook delivers everything, whatever exit hooks other libraries
    registered after ours (here: weakref.finalize's, which closed chDB's handle first)."""
    kind, env, count, data = store
    report = run_scenario(env, "exit_without_close", emulator=echo.base_url, calls=300, late_finalizer=late_finalizer)
    assert report["wrong_replies"] == 0
    assert count("startsWith(payload, '\"exit-')") == (300, 300)
    assert spooled_lines(data) == 0


def test_thirty_processors_keep_threads_and_fds_flat(store, echo):
    """30 processors created, used and closed one after another in one process."""
    kind, env, count, data = store
    report = run_scenario(env, "many_processors", emulator=echo.base_url, warmup=3, cycles=30)
    # Measured before the fix: threads 24 -> 195, fds 41 -> 571 (embedded store).
    assert report["threads_after"] - report["threads_before"] <= 2, report
    assert report["fds_after"] - report["fds_before"] <= 12, report  # chDB merges open a few part files


# ---------------------------------------------------------------------------- gunicorn

NOT_PROBE = "task = 'fork' AND payload != '\"probe\"'"

WSGI_APP = """
import json, os, time
from urllib.parse import parse_qs
from csctracker_ai_core import IaProcessor

# Built at import: with --preload, in the master, before the workers are forked.
processor = IaProcessor(google_free_keys=["AIzaGUNICORN-000000000000000000000000"],
                        base_url=os.environ["FORK_TEST_EMULATOR"], max_retries=0, request_timeout_s=30)
processor.analisar_com_gemini(prompt="master-0", return_json=False, task="fork")


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    marker = query.get("m", [""])[0]
    time.sleep(float(query.get("hold", ["0"])[0]))  # a busy sync worker does not accept: others serve
    text, _tokens, event_id = processor.analisar_com_gemini(prompt=marker, return_json=False, task="fork")
    body = json.dumps({"pid": os.getpid(), "reply": text, "event_id": event_id}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.mark.parametrize(
    ("limit", "extra"), [("descriptors", {"headroom": 400}), ("tasks", {"headroom": 100_000, "tasks_headroom": 60})]
)
def test_a_parent_that_forks_for_ever_stops_reopening_chdb_before_a_limit_runs_out(tmp_path, echo, limit, extra):
    """chDB leaves descriptors and threads behind each time the embedded store is closed
    for a fork and opened again (~25-30 and 5-6 with the writer's inserts). With 400
    descriptors of headroom, or 60 tasks (RLIMIT_NPROC), the parent stops reopening at
    80 % of the limit: no error, an ERROR log that says what to do, and a delivery
    process that delivers every event while the parent lives and ends after it."""

    data = tmp_path / "data"
    env = dict(os.environ, CSCTRACKER_AI_DATA_DIR=str(data), PYTHONPATH=os.pathsep.join([str(HERE)] + sys.path))
    proc = subprocess.run(
        [
            sys.executable,
            str(SCENARIOS),
            "forks_until_a_limit_runs_low",
            json.dumps({"emulator": echo.base_url, "max_forks": 60, **extra}),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["role"] == "spooler" and report["errors"] == [] and report["dropped"] == 0, report
    assert 1 < report["forks"] < 60 and report["fds_at_end"] < report["limit"], report
    (stopped,) = [line for line in proc.stderr.splitlines() if "not reopening the embedded store" in line]
    used, most = map(int, re.search(rf"{limit} (\d+) of (\d+)", stopped).groups())
    assert 0.8 * most <= used < most and "CLICKHOUSE_HOST" in stopped, stopped
    # A delivery process took the store over and delivered everything while the parent
    # lived (its events after the stop included); it ends after the parent, last
    # delivery done, and leaves the store to whoever opens it next.
    assert report["delivery_pid"] and report["left_while_alive"] == 0, report
    assert wait_until(lambda: process_gone(report["delivery_pid"]), timeout_s=60)
    assert spooled_lines(data) == 0
    sql = "SELECT uniqExact(event_id) FROM ai_events WHERE task = 'fork'"
    assert delivered_count(resolve_clickhouse_settings(env=env), sql) == report["asked"]


@pytest.mark.parametrize("store", ["embedded", "server", "embedded-process"], indirect=True)
def test_gunicorn_preload_workers(store, echo, tmp_path):
    """gunicorn --preload, 3 sync workers, the processor built (and used) in the master at
    import: 60 requests, every reply the caller's own, several workers served, every event
    lands once while gunicorn runs, and every process stops in time on SIGTERM. With
    ``delivery="process"``, and workers recycled every 5 requests, no gunicorn process
    loads chDB: the master's delivery process owns the store and ends after gunicorn."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists():
        pytest.fail("gunicorn is a test requirement (pyproject.toml, extra dev): run ./scripts/bootstrap")
    kind, env, count, data = store
    (tmp_path / "fork_wsgi_app.py").write_text(WSGI_APP)
    port = free_port()
    env = dict(env, FORK_TEST_EMULATOR=echo.base_url, PYTHONPATH=os.pathsep.join([str(tmp_path), env["PYTHONPATH"]]))
    by_process = env.get("CSCTRACKER_AI_TELEMETRY_DELIVERY") == "process"
    # With a delivery process, workers recycled every 5 requests too (--max-requests):
    # the master forks for as long as it runs, and never opens the store.
    recycle = ["--max-requests", "5"] if by_process else []
    proc = subprocess.Popen(
        [
            str(gunicorn),
            "--preload",
            "-w",
            "3",
            *recycle,
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "120",
            "fork_wsgi_app:app",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        replies = _requests_across_workers(proc, port, 60)
        assert sum(not ok for _, ok in replies) == 0
        expected = 1 + 60  # the master's call and the requests (probes counted apart: a retried one may land twice)
        if kind == "server":
            assert wait_until(lambda: count(NOT_PROBE) == (expected, expected), 60, 0.3), count(NOT_PROBE)
        else:  # only the master may open chDB: delivered = the workers' spool segments gone
            assert wait_until(lambda: spooled_lines(data) == 0, 60, 0.3), spooled_lines(data)
        if by_process:  # the store's owner is the delivery process; chDB is in no gunicorn process
            owner = ownership.holder_pid(data / "chdb")
            gunicorn_pids = {proc.pid} | {pid for pid, _ in replies}
            assert len(gunicorn_pids) > 4, gunicorn_pids  # workers were recycled
            assert owner not in gunicorn_pids and "telemetry.deliverer" in _cmdline(owner), owner
            workers_now = _children(proc.pid) - {owner}  # the master's children, but for the delivery process
            assert not [pid for pid in gunicorn_pids | workers_now if "_chdb" in _maps(pid)]
            assert "_chdb" in _maps(owner)  # the probe sees chDB where it is
        proc.send_signal(signal.SIGTERM)
        proc.wait(150)  # workers exit; one that hung would be SIGKILLed at the graceful timeout
        log = proc.stderr.read()
        assert proc.returncode == 0, log[-3000:]
        assert "SIGKILL" not in log and "Traceback" not in log, log[-3000:]
        if by_process:  # it ends after gunicorn's master, its last delivery made
            assert wait_until(lambda: process_gone(owner), timeout_s=60)
    finally:
        _kill_if_running(proc)
    _every_event_once(count, expected, data)


@pytest.mark.parametrize(
    "options", [[], ["--py-call-uwsgi-fork-hooks"], ["--lazy-apps"]], ids=["default", "fork-hooks", "lazy-apps"]
)
def test_uwsgi_master_workers(store, echo, tmp_path, options):
    """uWSGI, master and 2 workers, the processor built and used at import: in the
    master, or (``--lazy-apps``) in each worker.

    By default uWSGI forks with C fork() and calls none of Python's fork hooks
    (unbit/uwsgi#1978; py-call-uwsgi-fork-hooks comes from unbit/uwsgi PR 2388). Before
    the library knew it, 31 of 31 events stayed in the spool and the stop took 61 s
    (workers killed, SIGSEGV); with the option, a master owning chDB crashed or hung at
    exit in 2 of 4 stops, and a worker owning it hung at exit in 1 of 25 stops under load
    (uWSGI ends workers with C exit(): chDB's exit handlers ran before Python's). Now no
    uWSGI process opens the embedded store: a delivery process serving the master does,
    another one starts if it is killed, every event lands once while uWSGI runs, uWSGI
    stops in time, and the delivery process ends after it."""
    uwsgi = Path(sys.executable).with_name("uwsgi")
    if not uwsgi.exists():
        pytest.fail(
            "uWSGI is a test requirement (pyproject.toml, extra dev; it builds with gcc): run ./scripts/bootstrap"
        )
    kind, env, count, data = store
    (tmp_path / "fork_wsgi_app.py").write_text(WSGI_APP)
    port = free_port()
    env = dict(env, FORK_TEST_EMULATOR=echo.base_url, PYTHONPATH=os.pathsep.join([str(tmp_path), env["PYTHONPATH"]]))
    argv = [str(uwsgi), "--master", "--processes", "2", "--http-socket", f"127.0.0.1:{port}", "--module"]
    argv += ["fork_wsgi_app:app", "--die-on-term", "--need-app", "--disable-logging", "--worker-reload-mercy", "30"]
    proc = subprocess.Popen(argv + options, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store_path = data / "chdb"
    lazy = "--lazy-apps" in options
    expected = (2 if lazy else 1) + 20 + 10  # the import-time call: in each worker, or in the master
    try:
        replies = _requests_across_workers(proc, port, 20)
        assert all(ok for _, ok in replies)
        if kind == "embedded":
            assert wait_until(lambda: spooled_lines(data) == 0, 60, 0.3), spooled_lines(data)
            # The store's owner is no uWSGI process; killed, it is replaced (by a worker).
            first = ownership.holder_pid(store_path)
            assert ownership.is_held(store_path) and first not in {proc.pid} | {pid for pid, _ in replies}
            os.kill(first, signal.SIGKILL)
        replies += _requests_across_workers(proc, port, 10)
        assert all(ok for _, ok in replies)
        if kind == "server":
            assert wait_until(lambda: count(NOT_PROBE) == (expected, expected), 60, 0.3), count(NOT_PROBE)
        else:
            assert wait_until(lambda: spooled_lines(data) == 0, 60, 0.3), spooled_lines(data)
            second = ownership.holder_pid(store_path)
            assert second != first and second not in {proc.pid} | {pid for pid, _ in replies}
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
        stop_s = time.monotonic() - started
        log = proc.stderr.read().decode(errors="replace")
        assert "NO MERCY" not in log and "Traceback" not in log and stop_s < 20, (stop_s, log[-3000:])
        assert proc.returncode == 0, log[-3000:]
        # Without the option the library says so once, with the fix; with it, never (and a
        # lazy-apps master never loads the application).
        assert log.count("py-call-uwsgi-fork-hooks = true") == (1 if not options else 0), log[-3000:]
        if kind == "embedded":  # its last delivery done, the delivery process ends after uWSGI
            assert wait_until(lambda: not ownership.is_held(store_path), 30, 0.1)
    finally:
        _kill_if_running(proc)
    _every_event_once(count, expected, data)


def _children(pid: int) -> set[int]:
    """The live children of ``pid``, whichever of its threads started them."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return found


def _maps(pid: int) -> str:
    """The memory map of ``pid`` ("" once it ended: a recycled worker)."""
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def _cmdline(pid: int | None) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kill_if_running(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    proc.stderr.close()


def _every_event_once(count, expected: int, data: Path) -> None:
    assert count(NOT_PROBE) == (expected, expected)
    rows, ids = count()
    assert rows == ids  # probes included: nothing twice
    assert spooled_lines(data) == 0


def _requests_across_workers(proc: subprocess.Popen, port: int, n: int) -> list[tuple[int, bool]]:
    """Wait for the server on ``port``, then send ``n`` requests from 4 clients at once
    (sequential ones could all go to one worker); (pid, reply is the caller's own) each."""

    def up() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/?m=probe", timeout=5).read()
            return True
        except OSError:
            return proc.poll() is not None  # stop waiting if the server died

    assert wait_until(up, 120, 0.2) and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""

    def request(i: int) -> tuple[int, bool]:
        marker = f"req-{i}"
        reply = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/?m={marker}&hold=0.05", timeout=60).read())
        return reply["pid"], reply["reply"].strip() == marker

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(request, range(n)))
    assert len({pid for pid, _ in replies}) >= 2, replies
    return replies


def test_fork_while_another_thread_holds_the_key_registry_lock_does_not_deadlock_the_child():
    """The key registry's lock is held across fork by the forking thread, so a child forked
    while another thread registers keys can still register (and redact) its own."""
    import threading

    from csctracker_ai_core import redaction

    taken, release = threading.Event(), threading.Event()

    def hold():
        with redaction._lock:
            taken.set()
            release.wait(0.3)  # the fork waits for the lock up to this long

    t = threading.Thread(target=hold)
    t.start()
    assert taken.wait(10)
    pid = os.fork()
    if pid == 0:  # child: must not hang on the inherited lock
        try:
            redaction.register_keys(["AQ.child-key-0000000000000000"])
            os._exit(0 if "AQ.child" not in redaction.redact("x AQ.child-key-0000000000000000") else 3)
        except BaseException:
            os._exit(4)
    release.set()
    t.join()
    assert exit_code_within(pid, 30, "child hung on the registry lock") == 0


def test_reports_in_a_forked_child_use_their_own_connection_and_lock(tmp_path):
    """A Telemetry object used in the parent, then a fork while a parent thread holds its
    lock (in the middle of a report): the child's report neither waits for that lock nor
    talks over the parent's kept-alive connection."""
    import threading
    import time

    from test_telemetry_support import server_settings

    from csctracker_ai_core.reports import Telemetry

    server = ServerProcess(tmp_path / "server-chdb").start()
    try:
        t = Telemetry(settings=server_settings(tmp_path, server.port), seed_prices=False)
        assert t.usage_by_model("24h") == []
        parent_client = t.client
        taken, release = threading.Event(), threading.Event()

        def report_in_progress():
            with t._lock:
                taken.set()
                release.wait(10)

        holder = threading.Thread(target=report_in_progress)
        holder.start()
        assert taken.wait(10)
        pid = os.fork()
        if pid == 0:
            try:
                rows = t.usage_by_model("24h")
                os._exit(0 if rows == [] and t.client is not parent_client else 3)
            except BaseException:
                os._exit(4)
        release.set()
        holder.join()
        deadline = time.monotonic() + 60
        while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        if not done[0]:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child's report waited for the parent's lock")
        assert os.waitstatus_to_exitcode(done[1]) == 0
        assert t.usage_by_model("24h") == []  # the parent's connection still works
        t.close()
    finally:
        server.stop()


def test_a_fake_clock_held_by_another_thread_at_the_fork_works_in_the_child():
    """FakeClock gets a fresh lock in a forked child: the parent's lock, held at the fork by
    another thread reading the clock, would otherwise stay held in the child for ever."""

    from csctracker_ai_core.clock import FakeClock

    clock = FakeClock(100.0)
    clock._lock.acquire()  # a thread of the parent inside clock.time() at the fork
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            clock.advance(5.0)
            os._exit(0 if clock.time() == 105.0 else 1)
    finally:
        clock._lock.release()
    assert exit_code_within(pid, 20, "the child waited for the parent's FakeClock lock") == 0
    assert clock.time() == 100.0  # the parent's clock did not move


def exit_code_within(pid: int, seconds: float, hung: str) -> int:
    """The exit code of child ``pid``; the test fails with ``hung`` (the child killed) when
    it has not exited within ``seconds``."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(hung)
