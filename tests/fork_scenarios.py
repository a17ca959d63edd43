"""Scenarios of tests/test_fork.py, each run as its own Python process (a fresh interpreter,
so children exit the way real workers do: ``sys.exit``, atexit hooks, C exit handlers).

    python tests/fork_scenarios.py <scenario> '<json arguments>'

The store comes from the environment (``CSCTRACKER_AI_DATA_DIR`` for the embedded one,
``CLICKHOUSE_HOST``/``CLICKHOUSE_PORT`` for the loopback server); the Gemini emulator
runs in the test process and echoes each prompt, so every reply carries its caller's
marker. The last stdout line is a JSON report.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from csctracker_ai_core import IaProcessor

KEY = "AIzaFORK-0000000000000000000000000000"


def _processor(args: dict[str, Any]) -> IaProcessor:
    return IaProcessor(
        google_free_keys=[KEY],
        base_url=args["emulator"],
        max_retries=0,
        request_timeout_s=30,
        redis_url=args.get("redis_url"),
    )


def _ask(p: IaProcessor, marker: str) -> bool:
    """One call; True when the reply is this caller's own."""
    text, _tokens, _event_id = p.analisar_com_gemini(prompt=marker, return_json=False, task="fork")
    return text.strip() == marker


def _count_while(p: IaProcessor, expected: int, timeout_s: float, alive: Callable[[], bool]) -> int:
    """Events in the store, polled until ``expected`` (or the deadline), from the parent."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while time.monotonic() < deadline and alive():
        p.telemetry.flush(2.0)
        client = p.telemetry.writer.query_client()
        try:
            seen = int(client.command("SELECT count() FROM ai_events WHERE task = 'fork'"))
        finally:
            client.close()
        if seen >= expected:
            break
        time.sleep(0.2)
    return seen


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
        time.sleep(0.02)
    return False


def os_fork(args: dict[str, Any]) -> dict[str, Any]:
    """Parent makes a call, forks ``children`` that make ``calls`` each, then counts while they live."""
    p = _processor(args)
    wrong = 0 if _ask(p, "parent-0") else 1
    kids: list[tuple] = []
    for k in range(args["children"]):
        results_r, results_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(results_r)
            os.close(go_w)
            bad = sum(0 if _ask(p, f"child-{k}-{os.getpid()}-{i}") else 1 for i in range(args["calls"]))
            os.write(results_w, f"{bad}\n".encode())
            os.read(go_r, 1)  # stay alive until the parent has counted
            if args.get("exit") == "os._exit":
                os._exit(0)
            sys.exit(0)
        os.close(results_w)
        os.close(go_r)
        kids.append((pid, results_r, go_w))
    for i in range(args.get("parent_calls", 0)):  # the parent keeps calling meanwhile
        wrong += 0 if _ask(p, f"parent-{i + 1}") else 1
    for _pid, results_r, _go in kids:
        wrong += int(os.read(results_r, 64).decode().strip() or 1)
    expected = 1 + args.get("parent_calls", 0) + args["children"] * args["calls"]
    alive = lambda: all(os.waitpid(pid, os.WNOHANG)[0] == 0 for pid, _r, _g in kids)  # noqa: E731
    counted = _count_while(p, expected, args.get("wait_s", 60), alive) if args.get("count", True) else -1
    for _pid, _r, go_w in kids:
        os.write(go_w, b"x")
    hangs = sum(0 if _wait_exit(pid, args.get("exit_bound_s", 60)) else 1 for pid, _r, _g in kids)
    p.close(30)
    return {"expected": expected, "counted_while_alive": counted, "wrong_replies": wrong, "hangs": hangs}


def _mp_child(emulator: str, k: int, calls: int, queue: Any) -> None:
    p = _PARENT_PROCESSOR[0]
    bad = sum(0 if _ask(p, f"mp-{k}-{os.getpid()}-{i}") else 1 for i in range(calls))
    queue.put(bad)


_PARENT_PROCESSOR: list[IaProcessor] = []


def mp_fork(args: dict[str, Any]) -> dict[str, Any]:
    """multiprocessing with the fork start method: children use the parent's processor and return."""
    p = _processor(args)
    _PARENT_PROCESSOR.append(p)
    wrong = 0 if _ask(p, "parent-0") else 1
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_mp_child, args=(args["emulator"], k, args["calls"], queue)) for k in range(args["children"])
    ]
    for proc in procs:
        proc.start()
    wrong += sum(queue.get(timeout=120) for _ in procs)
    hangs = 0
    for proc in procs:
        proc.join(args.get("exit_bound_s", 60))
        hangs += 1 if proc.is_alive() else 0
    expected = 1 + args["children"] * args["calls"]
    counted = _count_while(p, expected, args.get("wait_s", 60), lambda: True)
    p.close(30)
    return {
        "expected": expected,
        "counted_while_alive": counted,
        "wrong_replies": wrong,
        "hangs": hangs,
        "exitcodes": [proc.exitcode for proc in procs],
    }


def fork_during_calls(args: dict[str, Any]) -> dict[str, Any]:
    """Threads call continuously while the main thread forks ``forks`` times; each child calls once."""
    p = _processor(args)
    stop = threading.Event()
    wrong = [0] * args["threads"]
    calls = [0] * args["threads"]  # one counter per thread: += is not atomic across threads

    def caller(n: int) -> None:
        while not stop.is_set():
            if not _ask(p, f"thread-{n}-{calls[n]}"):
                wrong[n] += 1
            calls[n] += 1

    threads = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(args["threads"])]
    for t in threads:
        t.start()
    while not all(calls):  # every thread is inside the library
        time.sleep(0.01)
    kids = []
    child_wrong = 0
    child_errors: list[str] = []
    for k in range(args["forks"]):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                answer = b"1" if _ask(p, f"forked-{k}-{os.getpid()}") else b"0wrong reply"
            except Exception as exc:  # reported to the parent, then to the test
                answer = f"0{type(exc).__name__}: {exc}"[:500].encode()
            os.write(w, answer)
            sys.exit(0)
        os.close(w)
        kids.append((pid, r))
        time.sleep(args.get("gap_s", 0.02))
    deadlocks = 0
    for pid, r in kids:
        ready, _, _ = select.select([r], [], [], args.get("exit_bound_s", 180))
        answer = os.read(r, 600) if ready else b"0no answer"
        if answer != b"1":
            child_wrong += 1
            child_errors.append(answer[1:].decode(errors="replace"))
        if not _wait_exit(pid, args.get("exit_bound_s", 180)):
            deadlocks += 1
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    stop.set()
    for t in threads:
        t.join(60)
    thread_calls = sum(calls)
    expected = thread_calls + args["forks"]
    counted = _count_while(p, expected, args.get("wait_s", 90), lambda: True)
    p.close(30)
    return {
        "expected": expected,
        "counted": counted,
        "wrong_replies": sum(wrong),
        "child_failures": child_wrong,
        "child_errors": child_errors,
        "deadlocks": deadlocks,
    }


def exit_without_close(args: dict[str, Any]) -> dict[str, Any]:
    """Calls, then the script ends without close(); a late exit hook from another library too."""
    p = _processor(args)
    wrong = sum(0 if _ask(p, f"exit-{i}") else 1 for i in range(args["calls"]))
    if args.get("late_finalizer"):
        # A library that creates its first weakref.finalize now registers weakref's
        # exit hook after ours: it runs first (the order that lost events before).
        import atexit
        import weakref

        class Thing:
            pass

        keep = Thing()
        weakref.finalize(keep, lambda: None)
        atexit.register(lambda: None)
        _PARENT_PROCESSOR.append(keep)  # type: ignore[arg-type]
    _PARENT_PROCESSOR.append(p)
    return {"wrong_replies": wrong}


def many_processors(args: dict[str, Any]) -> dict[str, Any]:
    """Create, use and close processors one after another; threads and fds before and after."""

    def cycle(i: int) -> None:
        p = _processor(args)
        _ask(p, f"cycle-{i}")
        p.close(30)

    def counts() -> tuple:
        return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))

    for i in range(args["warmup"]):
        cycle(i)
    before = counts()
    for i in range(args["cycles"]):
        cycle(args["warmup"] + i)
    after = counts()
    return {"threads_before": before[0], "fds_before": before[1], "threads_after": after[0], "fds_after": after[1]}


def forks_until_a_limit_runs_low(args: dict[str, Any]) -> dict[str, Any]:
    """A parent that forks for ever (gunicorn's master with --max-requests), its
    descriptor limit set ``headroom`` above what it has open (or its task limit
    ``tasks_headroom`` above its threads): one call and one flush (which reopens the
    embedded store) after each fork, until the writer stops reopening."""
    import resource

    p = _processor(args)
    _ask(p, "fork-0")
    p.telemetry.flush(30)
    start = len(os.listdir("/proc/self/fd"))
    limit = start + args["headroom"]
    if args.get("tasks_headroom"):  # the task limit instead (RLIMIT_NPROC: no cgroup limit here)
        threads = len(os.listdir("/proc/self/task"))
        resource.setrlimit(
            resource.RLIMIT_NPROC, (threads + args["tasks_headroom"], resource.getrlimit(resource.RLIMIT_NPROC)[1])
        )
    else:
        # Both limits: chDB raises the soft one to the hard one whenever its engine starts.
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    asked, errors, forks = 1, [], 0
    while forks < args["max_forks"] and p.telemetry.stats().role != "spooler":
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        forks += 1
        try:
            _ask(p, f"fork-{forks}")
            asked += 1
            p.telemetry.flush(30)
        except Exception as exc:  # EMFILE would show here
            errors.append(f"{type(exc).__name__}: {exc}")
    for i in range(3):  # after the stop: spooled, handed off
        _ask(p, f"after-{i}")
        asked += 1
    stats = p.telemetry.stats()
    most = len(os.listdir("/proc/self/fd"))
    # The delivery process the writer started takes everything while this one lives.
    p.telemetry.flush(30)  # a spooler's flush hands its segment over now
    handed_at = time.monotonic()
    deadline = handed_at + 60
    while spooled_lines(Path(os.environ["CSCTRACKER_AI_DATA_DIR"]) / "spool") and time.monotonic() < deadline:
        time.sleep(0.1)
    left_while_alive = spooled_lines(Path(os.environ["CSCTRACKER_AI_DATA_DIR"]) / "spool")
    drained_s = time.monotonic() - handed_at
    p.close(30)
    return {
        "forks": forks,
        "role": stats.role,
        "asked": asked,
        "dropped": stats.dropped,
        "errors": errors,
        "fds_start": start,
        "fds_at_end": most,
        "limit": limit,
        "delivery_pid": stats.delivery_pid,
        "left_while_alive": left_while_alive,
        "drained_s": round(drained_s, 2),
    }


def process_delivery(args: dict[str, Any]) -> dict[str, Any]:
    """``telemetry_delivery="process"`` (from the environment): ``calls`` calls, a forked
    child (a worker) making ``child_calls``, the spool drained while this process lives,
    then ``last_calls`` more and an exit without close()."""
    p = _processor(args)
    wrong = sum(0 if _ask(p, f"app-{i}") else 1 for i in range(args["calls"]))
    pid = os.fork()
    if pid == 0:
        ok = all(_ask(p, f"child-{i}") for i in range(args["child_calls"]))
        child = p.telemetry.stats()
        # A worker finds the store owned: it starts no delivery process of its own.
        sys.exit(0 if ok and child.delivery_pid is None and "chdb" not in sys.modules else 3)
    _pid, status = os.waitpid(pid, 0)
    p.telemetry.flush(30)  # a spooler's flush hands its segment over now
    spool = Path(os.environ["CSCTRACKER_AI_DATA_DIR"]) / "spool"
    handed_at = time.monotonic()
    while spooled_lines(spool) and time.monotonic() - handed_at < 60:
        time.sleep(0.1)
    drained_s = time.monotonic() - handed_at
    left_while_alive = spooled_lines(spool)
    stats = p.telemetry.stats()
    wrong += sum(0 if _ask(p, f"last-{i}") else 1 for i in range(args["last_calls"]))
    return {
        "wrong": wrong,
        "child_exit": os.waitstatus_to_exitcode(status),
        "role": stats.role,
        "written": stats.written,
        "dropped": stats.dropped,
        "delivery_pid": stats.delivery_pid,
        "chdb_loaded": "chdb" in sys.modules,
        "left_while_alive": left_while_alive,
        "drained_s": round(drained_s, 2),
    }


def spooled_lines(spool: Path) -> int:
    """Lines in the spool folder's segments (spares are zeros: none)."""
    lines = 0
    for f in spool.glob("seg-*"):
        try:
            lines += f.read_bytes().count(b"\n")
        except FileNotFoundError:  # delivered and deleted since the listing
            pass
    return lines


SCENARIOS = {
    f.__name__: f
    for f in (
        os_fork,
        mp_fork,
        fork_during_calls,
        exit_without_close,
        many_processors,
        forks_until_a_limit_runs_low,
        process_delivery,
    )
}

if __name__ == "__main__":
    scenario, raw = sys.argv[1], sys.argv[2]
    report = SCENARIOS[scenario](json.loads(raw))
    print(json.dumps(report), flush=True)
