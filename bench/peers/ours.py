"""Runner for this project's IaProcessor (run with the project's .venv python).

    .venv/bin/python bench/peers/ours.py overhead --base-url URL --key K [--model M] \
        [-n 500] [--warmup 50] --telemetry off|embedded|server [--ch-port P] [--data-dir D]
    .venv/bin/python bench/peers/ours.py quota --base-url URL --free A:k1,A:k2,k3 --paid p1 \
        --limits gemini-3.5-flash=8 -n 300 --threads 8 --clock F:R:C [--known-limits JSON]

The Gemini endpoint is IaProcessor's ``base_url``. Telemetry: ``off``; ``embedded``
(chDB in ``--data-dir``); ``server`` (the ClickHouse HTTP loopback server on
``--ch-port``). In quota mode the pool reads the orchestrator's scaled clock (see
``_runner.ScaledClock``), so its one-minute windows and the emulator's agree.
Prints one JSON line, with the telemetry writer's stats after ``close()``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import _runner

# Measure this checkout (the project root), whatever the venv's install points at.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def writer_stats(proc) -> dict:
    try:
        stats = proc.telemetry.stats()
    except Exception as exc:  # noqa: BLE001
        return {"error": repr(exc)}
    if dataclasses.is_dataclass(stats):
        return dataclasses.asdict(stats)
    return dict(stats) if isinstance(stats, dict) else {"repr": repr(stats)}


class QuotaLogCounter:
    """Counts the pool's suspension log lines by kind of 429 (per-minute, per-day, ...)."""

    KINDS = ("429 per-minute", "429 per-day", "429 limit 0", "429 unclassified")

    def __init__(self) -> None:
        import collections
        import logging

        self.counts = collections.Counter()
        handler = logging.Handler(level=logging.INFO)
        handler.emit = self._emit  # type: ignore[method-assign]
        log = logging.getLogger("csctracker_ai_core.pool.rotator")
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        log.propagate = False

    def _emit(self, record) -> None:
        msg = record.getMessage()
        for kind in self.KINDS:
            if kind in msg:
                self.counts[kind] += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["overhead", "quota"])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--key")
    ap.add_argument("--free", default="")
    ap.add_argument("--paid", default="")
    ap.add_argument("--model", default="gemini-3.5-flash")
    ap.add_argument("--limits", default=None)
    ap.add_argument("--known-limits", default=None)
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--telemetry", default="off", choices=["off", "embedded", "server"])
    ap.add_argument("--ch-port", type=int, default=0)
    ap.add_argument("--delivery", default="thread", choices=["thread", "external"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--clock", default=None)
    ap.add_argument("--max-wait-s", type=float, default=None)
    args = ap.parse_args()

    if args.data_dir:
        os.environ["CSCTRACKER_AI_DATA_DIR"] = args.data_dir
    from csctracker_ai_core import IaProcessor

    kwargs = dict(
        base_url=args.base_url,
        telemetry=args.telemetry,
        google_models_limits=args.limits or f"{args.model}=1",
        telemetry_delivery=args.delivery,
    )
    if args.telemetry == "server":
        kwargs.update(host="127.0.0.1", port=args.ch_port, username="default", password="")
    if args.clock:
        kwargs["clock"] = _runner.ScaledClock.from_arg(args.clock)
    if args.known_limits:
        kwargs["known_limits"] = json.loads(args.known_limits)
    if args.max_wait_s is not None:
        kwargs["max_wait_s"] = args.max_wait_s

    if args.mode == "overhead":
        proc = IaProcessor(google_free_keys=[args.key], **kwargs)

        def call(i: int) -> None:
            proc.analisar_com_gemini(
                input_text=f"Qual a capital da França? #{i}", prompt="Responda em JSON.", task="bench"
            )

        def settle() -> None:
            # The writer connects and creates its schema in the background (chDB: ~0.4 s);
            # measure the steady state, not that start-up (bench_telemetry.py times it).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                stats = proc.telemetry.stats()
                if getattr(stats, "role", "off") in ("off", "writer", "spooler") and getattr(stats, "pending", 0) == 0:
                    break
                time.sleep(0.05)
            time.sleep(0.2)

        result = _runner.sequential(call, args.n, args.warmup, settle=settle)
    else:
        suspensions = QuotaLogCounter()
        proc = IaProcessor(google_free_keys=args.free, google_paid_keys=args.paid or None, **kwargs)

        def call(i: int) -> None:
            proc.analisar_com_gemini(input_text=f"Pergunta {i}", prompt="Responda em JSON.", task="bench-quota")

        result = _runner.concurrent(call, args.n, args.threads)
        result.pop("durations_s", None)
        status = proc.rotator.status()
        result["in_flight_at_end"] = status.in_flight
        result["suspensions_by_kind"] = dict(suspensions.counts)
    t0 = time.perf_counter()
    proc.close(timeout_s=30.0)
    result["close_s"] = time.perf_counter() - t0
    result["telemetry"] = writer_stats(proc)
    result["telemetry_mode"] = args.telemetry
    _runner.emit(result)


if __name__ == "__main__":
    main()
