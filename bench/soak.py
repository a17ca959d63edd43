"""Fault soak: thousands of calls through IaProcessor with 503s, 500s and dropped
connections injected, and ClickHouse taken away for a stretch in the middle.

    .venv/bin/python bench/soak.py [-n 3000] [--threads 8] [--fault-rate 0.10] [--quick]

Setup: the emulator in this process (no quotas, no latency) with 4 free keys and 1 paid
key; a fault feeder keeps injected faults at ``--fault-rate`` of the upstream requests
so far, cycling 503, 500 and dropped connection; telemetry in server mode on the
ClickHouse HTTP loopback server (``bench/ch_server.py``, its own process). When a third
of the calls are done the server is stopped; when two thirds are done it is started
again on the same port and data (the outage's length in seconds is reported).

Reported: calls that succeeded; the rest by exception class (all must derive from
``AiCoreError``); events lost = calls made - distinct event ids in ``ai_events`` after
``close()`` (must be 0; if ``close`` left events spooled, a second processor on the same
data dir replays them and the count is taken again); rows duplicated; slots leaked
(``rotator.status().in_flight`` after the run, must be 0). Writes bench/out/soak.json
(``--out``). scripts/bench runs it twice: at 10% faults, and at 40% so that some calls
exhaust their retries and the typed errors show.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FREE = ["soak-free-1", "soak-free-2", "soak-free-3", "soak-free-4"]
PAID = "soak-paid-1"
MODEL = "gemini-3.5-flash"


def stats_dict(stats) -> dict:
    return dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else {"repr": repr(stats)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--fault-rate", type=float, default=0.10)
    ap.add_argument("--quick", action="store_true", help="n=1000")
    ap.add_argument("--out", default="soak.json", help="file name under bench/out/")
    args = ap.parse_args()
    if args.quick:
        args.n = 1000

    import os

    from csctracker_ai_core import AiCoreError, IaProcessor

    work = common.OUT / "soak-tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["CSCTRACKER_AI_DATA_DIR"] = str(work / "data")

    emu = common.fast_emulator(keys=FREE, record_bodies=0)
    emu.add_key(PAID, tier="paid")
    emu.start()
    ch = common.ClickHouseServer(work / "ch").start()
    limits = f"{MODEL}=4"

    def processor() -> IaProcessor:
        return IaProcessor(
            host="127.0.0.1",
            port=ch.port,
            username="default",
            password="",
            google_free_keys=FREE,
            google_paid_keys=[PAID],
            google_models_limits=limits,
            base_url=emu.base_url,
            telemetry="server",
        )

    proc = processor()
    lock = threading.Lock()
    next_i = itertools.count()
    done = [0]
    outcomes: Counter = Counter()
    non_library: Counter = Counter()
    event_ids: list = []
    stop_feeder = threading.Event()
    injected = Counter()

    def feeder() -> None:
        kinds = itertools.cycle(["503", "500", "drop"])
        total = 0
        while not stop_feeder.is_set():
            want = int(args.fault_rate * (emu.total_requests + emu.pending_faults())) + 1
            while total < want:
                kind = next(kinds)
                emu.inject(kind, 1)
                injected[kind] += 1
                total += 1
            time.sleep(0.002)

    def worker() -> None:
        while True:
            i = next(next_i)
            if i >= args.n:
                return
            event_id = f"soak-{i:06d}"
            try:
                proc.analisar_com_gemini(
                    input_text=f"Pergunta {i}", prompt="Responda em JSON.", task="soak", event_id=event_id
                )
                what = "ok"
            except AiCoreError as exc:
                what = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - an untyped error is a finding
                what = type(exc).__name__
                with lock:
                    non_library[what] += 1
            with lock:
                outcomes[what] += 1
                event_ids.append(event_id)
                done[0] += 1

    outage = {"stopped_at_call": None, "restarted_at_call": None, "seconds": None}

    def chaos() -> None:
        third = args.n // 3
        while done[0] < third:
            time.sleep(0.01)
        ch.stop()
        t0 = time.perf_counter()
        outage["stopped_at_call"] = done[0]
        common.log(f"soak: ClickHouse stopped at call {done[0]}")
        while done[0] < 2 * third:
            time.sleep(0.01)
        ch.start()
        outage["restarted_at_call"] = done[0]
        outage["seconds"] = time.perf_counter() - t0
        common.log(f"soak: ClickHouse restarted at call {done[0]} after {outage['seconds']:.1f}s")

    common.log(f"soak: {args.n} calls, {args.threads} threads, faults {args.fault_rate:.0%}")
    feeder_t = threading.Thread(target=feeder, daemon=True)
    chaos_t = threading.Thread(target=chaos, daemon=True)
    feeder_t.start()
    chaos_t.start()
    t0 = time.perf_counter()
    workers = [threading.Thread(target=worker) for _ in range(args.threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    stop_feeder.set()
    chaos_t.join(timeout=120)
    leftover_faults = emu.pending_faults()
    emu.clear_faults()

    status = proc.rotator.status()
    in_flight = status.in_flight
    t1 = time.perf_counter()
    proc.close(timeout_s=30.0)
    close_s = time.perf_counter() - t1
    writer = stats_dict(proc.telemetry.stats())

    def distinct_events() -> int:
        return common.count_rows_http(ch.port, "(SELECT DISTINCT event_id FROM ai_events WHERE task = 'soak')")

    in_ch = distinct_events()
    replay = None
    if in_ch < args.n:  # something stayed spooled: the next start must deliver it
        second = processor()
        second.close(timeout_s=30.0)
        replay = stats_dict(second.telemetry.stats())
        in_ch_after_replay = distinct_events()
    else:
        in_ch_after_replay = in_ch
    rows = common.count_rows_http(ch.port, "ai_events", "task = 'soak'")
    attempts_rows = common.count_rows_http(ch.port, "ai_attempts")

    by_status: Counter = Counter()
    for (_, _, s), c in emu.calls().items():
        by_status[str(s)] += c
    data = {
        "config": {
            "n": args.n,
            "threads": args.threads,
            "fault_rate": args.fault_rate,
            "free_keys": len(FREE),
            "paid_keys": 1,
            "model_limits": limits,
        },
        "wall_s": wall,
        "succeeded": outcomes.get("ok", 0),
        "success_rate": outcomes.get("ok", 0) / args.n,
        "errors_by_class": {k: v for k, v in outcomes.items() if k != "ok"},
        "untyped_errors": dict(non_library),
        "faults_injected": dict(injected),
        "faults_left_unconsumed": leftover_faults,
        "upstream_by_status": dict(by_status),
        "upstream_requests": emu.total_requests,
        "outage": outage,
        "close_s": close_s,
        "writer_stats": writer,
        "events_in_clickhouse_after_close": in_ch,
        "replay_stats": replay,
        "events_in_clickhouse_final": in_ch_after_replay,
        "events_lost": args.n - in_ch_after_replay,
        "duplicate_rows": rows - in_ch_after_replay,
        "attempt_rows": attempts_rows,
        "slots_in_flight_at_end": in_flight,
        "slots_suspended_at_end": status.suspended,
    }
    ch.stop()
    emu.stop()
    path = common.write_json(args.out, data)
    common.log(f"wrote {path}")
    for k in (
        "succeeded",
        "success_rate",
        "errors_by_class",
        "untyped_errors",
        "events_lost",
        "duplicate_rows",
        "slots_in_flight_at_end",
        "wall_s",
        "close_s",
    ):
        print(f"{k}: {data[k]}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
