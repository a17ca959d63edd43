"""Quota workload: a few free keys with small per-minute and per-day limits and one paid
key, a few hundred requests at a fixed concurrency, for this project, the original
library and LiteLLM's Router, on the same emulator.

    .venv/bin/python bench/bench_quota.py [-n 300] [--threads 8] [--quick]

Setup (the same for every contender, a fresh emulator each):
- free keys k1 and k2 in one Google Cloud project (they share its quota), k3 and k4 in
  their own; free quota per project x model: ``--rpm`` requests per minute and ``--rpd``
  per day; one paid key, unlimited; one model (gemini-3.5-flash), concurrency cap per
  key x model = ``--threads`` (so caps never bind);
- every reply takes ``--latency-s`` real seconds;
- time: Gemini's minute is shortened by ``--time-factor`` (default 10: a minute lasts 6 s,
  a reply's 0.5 s latency stands for 5 s). Not more: this project's pool keeps its
  per-minute windows 1 s longer than Google's to absorb the delay between reserving a
  slot and the request's arrival; at x30 that second is 33 ms of real time, less than
  the scheduling jitter of 16 threads on 2 cores, and a few 429s appear that would not
  at real speed (measured: 6 of 150 at x30, 0 at x10 and x3).
  The emulator runs in this process on a scaled clock (``peers/_runner.ScaledClock``),
  whose day is placed at noon Pacific so no per-day reset happens during a run. This
  project's pool reads the same clock (IaProcessor ``clock=``); the peers' own waits,
  in real seconds, are divided by the factor (see their runners' docstrings).

Measured upstream by the emulator: requests that succeeded, 429s received (per tier),
paid calls made (status 200 on the paid key), and the wall time. The theoretical
optimum: zero 429s and ``max(0, n - sum of free rpd)`` paid calls (the floor, if one
can wait for per-minute windows), and the optimum at each contender's own speed,
``n - sum over projects of min(rpd, rpm * windows in its wall time)``.
Writes bench/out/quota.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

from _runner import ScaledClock  # noqa: E402

import common  # noqa: E402

MODEL = "gemini-3.5-flash"
FREE = [("k-free-1", "proj-a"), ("k-free-2", "proj-a"), ("k-free-3", "proj-b"), ("k-free-4", "proj-c")]
PAID = "k-paid-1"


def noon_pacific() -> float:
    """Unix time of today's noon in America/Los_Angeles (far from the per-day reset)."""
    tz = ZoneInfo("America/Los_Angeles")
    now = datetime.now(tz)
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    if now.hour >= 20:  # keep a run from crossing midnight even at x30 for long runs
        noon += timedelta(days=1)
    return noon.timestamp()


def run_contender(name: str, peer: str, script: str, extra: list, args) -> dict:
    clock = ScaledClock(args.time_factor, time.time(), noon_pacific())
    emu = common.fast_emulator(clock=clock, minute_s=60.0, latency_s=args.latency_s, record_bodies=0)
    for key, project in FREE:
        emu.add_key(key, project=project, tier="free")
    emu.add_key(PAID, tier="paid")
    emu.set_quota("*", tier="free", rpm=args.rpm, rpd=args.rpd)
    emu.start()
    try:
        argv = ["quota", "--base-url", emu.base_url, "-n", str(args.n), "--threads", str(args.threads)]
        argv += extra(clock)
        common.log(f"quota: {name}")
        t0 = time.perf_counter()
        result = common.run_runner(peer, script, argv, timeout_s=600)
        wall = time.perf_counter() - t0
        free_429 = sum(emu.count(key=k, status=429) for k, _ in FREE)
        paid_429 = emu.count(key=PAID, status=429)
        windows = math.ceil(result["wall_s"] * args.time_factor / 60.0)
        projects = sorted({p for _, p in FREE})
        free_at_speed = sum(min(args.rpd, args.rpm * windows) for _ in projects)
        out = {
            "name": name,
            "succeeded": result["ok"],
            "failed": args.n - result["ok"],
            "errors": result.get("errors", {}),
            "upstream_requests": emu.total_requests,
            "free_200": sum(emu.count(key=k, status=200) for k, _ in FREE),
            "paid_200": emu.count(key=PAID, status=200),
            "rate_limited_free": free_429,
            "rate_limited_paid": paid_429,
            "other_status": {str(s): c for (fp, m, s), c in emu.calls().items() if s not in (200, 429)},
            "wall_s": result["wall_s"],
            "process_s": wall,
            "optimum_paid_at_its_speed": max(0, args.n - free_at_speed),
            "windows": windows,
        }
        for k in ("in_flight_at_end", "cooldown_time_s", "suspensions_by_kind"):
            if k in result:
                out[k] = result[k]
        common.log(
            f"  ok {out['succeeded']}/{args.n}, 429s {free_429}+{paid_429}, paid {out['paid_200']}, "
            f"wall {out['wall_s']:.1f}s"
        )
        return out
    finally:
        emu.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--rpm", type=int, default=10)
    ap.add_argument("--rpd", type=int, default=30)
    ap.add_argument("--latency-s", type=float, default=0.5)
    ap.add_argument("--time-factor", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="n=150, rpd=15")
    ap.add_argument("--only", default=None, help="run only contenders whose name contains this")
    ap.add_argument("--out", default="quota.json", help="file name under bench/out/")
    args = ap.parse_args()
    if args.quick:
        args.n, args.rpd = 150, 15

    limits = f"{MODEL}={args.threads}"
    free_ours = ",".join(f"{p}:{k}" for k, p in FREE)
    free_plain = ",".join(k for k, _ in FREE)
    known = json.dumps({MODEL: {"free": {"rpm": args.rpm, "rpd": args.rpd}}})
    ready = common.peers_ready()

    contenders = [
        (
            "ours (projects, no known_limits)",
            "ours",
            "ours.py",
            lambda c: ["--free", free_ours, "--paid", PAID, "--limits", limits, "--clock", c.to_arg()],
        ),
        (
            "ours (projects + known_limits)",
            "ours",
            "ours.py",
            lambda c: [
                "--free",
                free_ours,
                "--paid",
                PAID,
                "--limits",
                limits,
                "--clock",
                c.to_arg(),
                "--known-limits",
                known,
            ],
        ),
    ]
    if ready.get("original"):
        contenders.append(
            (
                "original 26.37.1",
                "original",
                "original.py",
                lambda c: [
                    "--free",
                    free_plain,
                    "--paid",
                    PAID,
                    "--limits",
                    limits,
                    "--time-scale",
                    repr(1.0 / args.time_factor),
                ],
            )
        )
    if ready.get("litellm"):
        contenders.append(
            (
                "LiteLLM Router",
                "litellm",
                "litellm_router.py",
                lambda c: [
                    "--free",
                    free_plain,
                    "--paid",
                    PAID,
                    "--model",
                    MODEL,
                    "--time-factor",
                    repr(args.time_factor),
                ],
            )
        )

    results = []
    for name, peer, script, extra in contenders:
        if args.only and args.only not in name:
            continue
        try:
            results.append(run_contender(name, peer, script, extra, args))
        except common.RunnerError as exc:
            common.log(f"  {name} failed: {exc}")
            results.append({"name": name, "error": str(exc)[-1500:]})

    projects = sorted({p for _, p in FREE})
    data = {
        "config": {
            "n": args.n,
            "threads": args.threads,
            "model": MODEL,
            "free_keys": len(FREE),
            "projects": len(projects),
            "paid_keys": 1,
            "free_rpm_per_project": args.rpm,
            "free_rpd_per_project": args.rpd,
            "paid_limits": "none",
            "latency_s": args.latency_s,
            "time_factor": args.time_factor,
            "minute_real_s": 60.0 / args.time_factor,
        },
        "optimum": {
            "rate_limited": 0,
            "paid_floor": max(0, args.n - args.rpd * len(projects)),
            "free_capacity_per_day": args.rpd * len(projects),
        },
        "results": results,
    }
    path = common.write_json(args.out, data)
    common.log(f"wrote {path}")


if __name__ == "__main__":
    main()
