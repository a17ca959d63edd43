"""Loops shared by the runner scripts in bench/peers/ (standard library only, so every
peer venv can import it; the runners run with their own venv's python from this folder).

- ``sequential(call, n, warmup)``: per-call wall times of ``n`` calls after ``warmup``;
  with ``BENCH_INTERLEAVED=1`` in the environment it serves blocks of calls on command
  instead (``run K`` on stdin, one JSON line per block on stdout, ``done`` ends), so an
  orchestrator can interleave several contenders block by block (bench_interleaved.py).
- ``concurrent(call, n, threads)``: ``n`` calls spread over ``threads`` workers; outcome
  of each (ok or the exception's class name), wall time.
- ``emit(obj)``: the one JSON line a runner prints on stdout for the orchestrator.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any


def sequential(call: Callable[[int], Any], n: int, warmup: int, settle: Callable[[], Any] = None) -> dict[str, Any]:
    """Time ``n`` sequential calls (after ``warmup`` untimed ones): wall and process CPU.

    ``settle`` runs between the warm-up and the measured calls (e.g. wait until a
    background telemetry writer has finished starting), so the figures are steady state.
    """
    for i in range(warmup):
        call(-1 - i)
    if settle is not None:
        settle()
    if os.environ.get("BENCH_INTERLEAVED") == "1":
        return _serve_blocks(call, settle, warmup)
    times = []
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return {"times_s": times, "wall_s": wall, "cpu_s": cpu, "n": n, "warmup": warmup}


def _serve_blocks(call: Callable[[int], Any], settle: Callable[[], Any] | None, warmup: int) -> dict[str, Any]:
    """``run K``: K timed calls, then ``settle`` (untimed: the background work a block
    caused ends before the next contender's block); one JSON line per block."""
    emit({"ready": True})
    times: list[float] = []
    cpu_s = 0.0
    i = 0
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "done":
            break
        block = []
        cpu0 = time.process_time()
        for _ in range(int(cmd[1])):
            t0 = time.perf_counter()
            call(i)
            block.append(time.perf_counter() - t0)
            i += 1
        if settle is not None:
            settle()
        cpu_s += time.process_time() - cpu0
        times += block
        emit({"block_s": block})
    return {"times_s": times, "wall_s": sum(times), "cpu_s": cpu_s, "n": len(times), "warmup": warmup}


def concurrent(call: Callable[[int], Any], n: int, threads: int) -> dict[str, Any]:
    """``n`` calls over ``threads`` workers, each taking the next index until none is left."""
    lock = threading.Lock()
    next_index = [0]
    outcomes: Counter = Counter()
    durations = []

    def worker() -> None:
        while True:
            with lock:
                i = next_index[0]
                if i >= n:
                    return
                next_index[0] += 1
            t0 = time.perf_counter()
            try:
                call(i)
                what = "ok"
            except Exception as exc:  # noqa: BLE001 - the class name is the result
                what = type(exc).__name__
            dt = time.perf_counter() - t0
            with lock:
                outcomes[what] += 1
                durations.append(dt)

    wall0 = time.perf_counter()
    workers = [threading.Thread(target=worker, name=f"bench-{k}") for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - wall0
    return {
        "n": n,
        "threads": threads,
        "ok": outcomes.get("ok", 0),
        "errors": {k: v for k, v in outcomes.items() if k != "ok"},
        "wall_s": wall,
        "durations_s": sorted(durations),
    }


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class ScaledClock:
    """Time that runs ``factor`` times faster than the wall clock, from a shared origin.

    The quota workload shortens Gemini's minute to ``60 / factor`` real seconds. The
    emulator (in the orchestrator) and this project's pool (in a runner) read the same
    scaled clock, so every quota window, RetryInfo delay and pool window keeps its real
    proportions and its real wire format. ``time() = clock_origin + (now - real_origin) * factor``;
    ``sleep(s)`` sleeps ``s / factor`` real seconds. The orchestrator passes both origins
    to the runners, so all processes agree on the time.
    """

    def __init__(self, factor: float, real_origin: float, clock_origin: float) -> None:
        self.factor = float(factor)
        self.real_origin = float(real_origin)
        self.clock_origin = float(clock_origin)

    def time(self) -> float:
        return self.clock_origin + (time.time() - self.real_origin) * self.factor

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.factor)

    def __repr__(self) -> str:
        return f"ScaledClock(x{self.factor:g})"

    @classmethod
    def from_arg(cls, text: str) -> ScaledClock:
        """From ``factor:real_origin:clock_origin`` (what the orchestrator passes)."""
        factor, real_origin, clock_origin = (float(x) for x in text.split(":"))
        return cls(factor, real_origin, clock_origin)

    def to_arg(self) -> str:
        return f"{self.factor!r}:{self.real_origin!r}:{self.clock_origin!r}"
