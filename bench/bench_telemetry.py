"""Benchmark of the telemetry writer on the embedded store (chDB).

Measures what a call pays (``record()``: redaction and cap checks, the line, its copy into the spool),
events per second sustained into chDB, inserts per second, and memory.

``record()`` is timed five ways: in a tight loop with the writer thread delivering in
the background (the worst case: 8,000+ events/s, the writer never idle); paced at
``--pace-hz`` events a second, as calls come (the writer delivers between them); with
``telemetry_delivery="process"`` (the process only spools; the delivery process it
started owns chDB and inserts at the same time, on the same cores); with
``telemetry_delivery="external"`` (the process only spools, nothing inserts meanwhile);
and with no thread at all (the call path's own cost).

    python bench/bench_telemetry.py [--events 20000] [--payload-bytes 2000] [--pace-hz 400]

Prints a markdown table. Everything lives in a temporary folder, deleted at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csctracker_ai_core.telemetry.events import AttemptEvent, CallEvent  # noqa: E402
from csctracker_ai_core.telemetry.settings import ClickHouseSettings  # noqa: E402
from csctracker_ai_core.telemetry.writer import TelemetryWriter  # noqa: E402


def _event(i: int, payload: str) -> CallEvent:
    eid = str(uuid.uuid4())
    now = time.time()
    return CallEvent(
        event_id=eid,
        timestamp=now,
        task="bench",
        outcome="ok",
        model_name="gemini-3.5-flash",
        tier="free",
        key_fingerprint="k-0123456789",
        project="p",
        attempts=1,
        tokens_input=500,
        tokens_output=100,
        tokens_total=600,
        cost_usd=Decimal("0.000123"),
        payload=payload,
        result='{"answer": %d}' % i,
        metadata={"bench": "1"},
        attempt_events=(
            AttemptEvent(
                event_id=eid,
                attempt=1,
                timestamp=now,
                key_fingerprint="k-0123456789",
                project="p",
                tier="free",
                model_name="gemini-3.5-flash",
                duration_ms=321.0,
                outcome="ok",
                http_status=200,
                decision="served",
            ),
        ),
    )


def _timed_records(writer: TelemetryWriter, events: list[CallEvent], gap_s: float) -> list[int]:
    """Each ``record()``'s time in ns, ``gap_s`` apart (0: back to back); the writer is closed after."""
    while writer.stats().role == "starting" and writer._thread is not None:
        time.sleep(0.01)
    costs = []
    next_at = time.perf_counter()
    for e in events:
        if gap_s:
            next_at += gap_s
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        t = time.perf_counter_ns()
        writer.record(e)
        costs.append(time.perf_counter_ns() - t)
    writer.close(30)
    return costs


def _timed_with_delivery_process(settings: ClickHouseSettings, events: list[CallEvent]) -> tuple[list[int], float]:
    """``record()`` in a tight loop with ``delivery="process"``, once the delivery process
    delivers (a first event landed); and the seconds from the loop's end until the
    delivery process has taken everything. It is stopped (SIGTERM) after."""
    writer = TelemetryWriter(settings, handoff_interval_s=0.2)
    spool = settings.spool_path
    writer.record(events[0])
    writer.flush(30)
    t0 = time.perf_counter()
    while _spooled(spool) and time.perf_counter() - t0 < 60:
        time.sleep(0.05)
    pid = writer.stats().delivery_pid
    costs = []
    for e in events:
        t = time.perf_counter_ns()
        writer.record(e)
        costs.append(time.perf_counter_ns() - t)
    end = time.perf_counter()
    writer.close(30)
    while _spooled(spool) and time.perf_counter() - end < 120:
        time.sleep(0.05)
    drained_s = time.perf_counter() - end
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
    return costs, drained_s


def _spooled(spool: Path) -> int:
    """Lines still in the spool's segments (a delivered segment is deleted)."""
    lines = 0
    for f in spool.glob("seg-*"):
        try:
            lines += f.read_bytes().count(b"\n")
        except FileNotFoundError:
            pass
    return lines


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--payload-bytes", type=int, default=2000)
    ap.add_argument("--pace-hz", type=float, default=400.0, help="events a second of the paced run")
    ap.add_argument("--paced-events", type=int, default=4000)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-telemetry-"))
    try:
        settings = ClickHouseSettings(mode="embedded", embedded_path=root / "chdb", spool_path=root / "spool")
        payload = ("lorem ipsum " * (args.payload_bytes // 12 + 1))[: args.payload_bytes]
        events = [_event(i, payload) for i in range(args.events)]

        # 1. With no store opened yet (chDB's own threads, merging what the writer runs
        # insert, would share the machine): external delivery, then no writer thread at all.
        external = _timed_records(
            TelemetryWriter(dataclasses.replace(settings, spool_path=root / "spool-external", delivery="external")),
            events,
            0.0,
        )
        threadless = _timed_records(
            TelemetryWriter(dataclasses.replace(settings, spool_path=root / "spool-threadless"), start=False),
            events,
            0.0,
        )

        # 1b. A delivery process (another interpreter) owns a store of its own and inserts
        # while the loop runs: chDB's engine is out of this process, not off the machine.
        by_process, process_drain_s = _timed_with_delivery_process(
            dataclasses.replace(
                settings, embedded_path=root / "chdb-process", spool_path=root / "spool-process", delivery="process"
            ),
            events,
        )

        # 2. connect + schema off the call path: how long until the writer is ready.
        w = TelemetryWriter(settings)
        t0 = time.perf_counter()
        while w.stats().role != "writer" and time.perf_counter() - t0 < 60:
            time.sleep(0.01)
        ready_s = time.perf_counter() - t0

        # 3. record() cost with the writer delivering in the background.
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        costs = []
        start = time.perf_counter()
        for e in events:
            t = time.perf_counter_ns()
            w.record(e)
            costs.append(time.perf_counter_ns() - t)
        record_wall = time.perf_counter() - start
        inserts_before = w.stats().inserts
        ok = w.flush(120)
        total_s = time.perf_counter() - start
        s = w.stats()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        w.close(10)

        # 4. record() at the pace of calls, the writer delivering between them.
        paced = _timed_records(
            TelemetryWriter(dataclasses.replace(settings, spool_path=root / "spool-paced")),
            events[: args.paced_events],
            1.0 / args.pace_hz,
        )

        # 5. Python heap peak of the record path alone (tracemalloc slows it, so separate run).
        shutil.rmtree(root / "spool", ignore_errors=True)
        w2 = TelemetryWriter(settings, start=False)
        tracemalloc.start()
        for e in events:
            w2.record(e)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        w2.close(0)

        rows = [
            ("events", f"{args.events} (payload {args.payload_bytes} B, 1 attempt each)"),
            ("writer ready (connect + schema, background)", f"{ready_s * 1000:.0f} ms"),
            ("record() p50", f"{_pct(costs, 0.50) / 1000:.1f} µs"),
            ("record() p99", f"{_pct(costs, 0.99) / 1000:.1f} µs"),
            ("record() mean", f"{statistics.mean(costs) / 1000:.1f} µs"),
            ("record() max", f"{max(costs) / 1000:.0f} µs"),
            (
                f"record() p50 / p99, paced at {args.pace_hz:.0f} events/s ({args.paced_events} events)",
                f"{_pct(paced, 0.50) / 1000:.1f} / {_pct(paced, 0.99) / 1000:.1f} µs",
            ),
            (
                "record() p50 / p99, delivery process (a delivery process inserts meanwhile)",
                f"{_pct(by_process, 0.50) / 1000:.1f} / {_pct(by_process, 0.99) / 1000:.1f} µs "
                f"(all {len(events)} delivered {process_drain_s:.2f} s after the loop)",
            ),
            (
                "record() p50 / p99, delivery external (the process only spools)",
                f"{_pct(external, 0.50) / 1000:.1f} / {_pct(external, 0.99) / 1000:.1f} µs",
            ),
            (
                "record() p50 / p99, no writer thread",
                f"{_pct(threadless, 0.50) / 1000:.1f} / {_pct(threadless, 0.99) / 1000:.1f} µs",
            ),
            ("recording rate (call-path only)", f"{args.events / record_wall:,.0f} events/s"),
            ("sustained into chDB (record -> all acknowledged)", f"{s.written / total_s:,.0f} events/s"),
            ("all delivered", f"{ok} (written {s.written}, dropped {s.dropped}) in {total_s:.2f} s"),
            (
                "inserts (ai_events + ai_attempts statements)",
                f"{s.inserts} ({s.inserts / total_s:.1f}/s; {inserts_before} during recording)",
            ),
            ("peak RSS growth", f"{(rss1 - rss0) / 1024:.1f} MiB (max RSS {rss1 / 1024:.0f} MiB)"),
            (
                f"Python heap peak, {args.events}-event backlog (record path, no thread)",
                f"{peak / 2**20:.1f} MiB (the lines are in the spool files only)",
            ),
        ]
        print("| measure | value |\n|---|---|")
        for k, v in rows:
            print(f"| {k} | {v} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
