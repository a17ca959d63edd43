"""Per-call overhead over a reused raw google-genai client, on the emulator with no latency.

    .venv/bin/python bench/bench_overhead.py [-n 500] [--warmup 50] [--rounds 2] [--quick]

Contenders, each in its own process (the runners in bench/peers/), all calling one
emulator that runs in this process with no added latency:

- raw SDK: one reused ``genai.Client``, ``generate_content`` + ``json.loads`` (project venv,
  google-genai 3.x; and the original's venv, google-genai 1.70, as that peer's own baseline);
- IaProcessor.analisar_com_gemini with telemetry off, embedded (chDB) and server (the
  ClickHouse HTTP loopback server, ``bench/ch_server.py``);
- the original csctracker-ai-core 26.37.1 with its ClickHouse on the loopback server, and
  with its ClickHouse unreachable (a closed port: each call pays a refused connect).

Each contender runs ``n`` sequential calls after ``warmup``, in ``rounds`` interleaved
rounds (so slow drift of the machine hits everyone alike); the timings of all rounds
are pooled. Writes bench/out/overhead.json; bench/report.py turns it into RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

KEY = "bench-key-1"


def contenders(ready: dict) -> list:
    """(name, peer venv, runner script, extra args, needs a ClickHouse server)."""
    out = [
        ("raw SDK (google-genai 3.x, reused client)", "ours", "raw_sdk.py", [], False),
        ("ours, telemetry off", "ours", "ours.py", ["overhead", "--telemetry", "off"], False),
        ("ours, telemetry embedded (chDB)", "ours", "ours.py", ["overhead", "--telemetry", "embedded"], False),
        ("ours, telemetry server (HTTP)", "ours", "ours.py", ["overhead", "--telemetry", "server"], True),
    ]
    if ready.get("original"):
        out += [
            ("raw SDK (google-genai 1.70, original's venv)", "original", "raw_sdk.py", [], False),
            ("original 26.37.1, ClickHouse server (HTTP)", "original", "original.py", ["overhead"], True),
            ("original 26.37.1, ClickHouse unreachable", "original", "original.py", ["overhead"], False),
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="n=150, warmup=20, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.n, args.warmup, args.rounds = 150, 20, 1

    ready = common.peers_ready()
    work = common.OUT / "overhead-tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pooled: dict = {}
    cpu: dict = {}
    extra: dict = {}
    with common.fast_emulator(keys=[KEY], latency_s=0.0) as emu, \
            common.ClickHouseServer(work / "ch-ours") as ch_ours, \
            common.ClickHouseServer(work / "ch-original") as ch_orig:
        for rnd in range(args.rounds):
            for name, peer, script, extra_args, needs_ch in contenders(ready):
                argv = list(extra_args) + ["--base-url", emu.base_url, "--key", KEY,
                                           "-n", str(args.n), "--warmup", str(args.warmup)]
                if peer == "ours" and "--telemetry" in extra_args:
                    argv += ["--data-dir", str(work / f"data-{rnd}-{len(pooled)}")]
                    if needs_ch:
                        argv += ["--ch-port", str(ch_ours.port)]
                if peer == "original" and needs_ch:
                    argv += ["--ch-port", str(ch_orig.port)]
                common.log(f"overhead round {rnd + 1}/{args.rounds}: {name}")
                t0 = time.perf_counter()
                result = common.run_runner(peer, script, argv)
                common.log(f"  {time.perf_counter() - t0:.1f}s, p50 "
                           f"{common.percentile(result['times_s'], 50) * 1e3:.3f} ms")
                pooled.setdefault(name, []).extend(result["times_s"])
                cpu.setdefault(name, []).append(result["cpu_s"] / result["n"])
                if "telemetry" in result:
                    extra.setdefault(name, []).append({"close_s": result.get("close_s"),
                                                       "telemetry": result["telemetry"]})
        rows_ours_server = common.count_rows_http(ch_ours.port, "ai_events")
        rows_original = common.count_rows_http(ch_orig.port, "ai_events")

    raw = common.summarize(pooled["raw SDK (google-genai 3.x, reused client)"])
    results = []
    for name, times in pooled.items():
        s = common.summarize(times)
        s["name"] = name
        s["cpu_ms_per_call"] = sum(cpu[name]) / len(cpu[name]) * 1e3
        s["ratio_p50"] = s["p50_ms"] / raw["p50_ms"]
        s["ratio_p99"] = s["p99_ms"] / raw["p99_ms"]
        s["overhead_p50_ms"] = s["p50_ms"] - raw["p50_ms"]
        if name in extra:
            s["runs"] = extra[name]
        results.append(s)
    calls_per_run = args.n + args.warmup
    data = {
        "config": {"n": args.n, "warmup": args.warmup, "rounds": args.rounds, "emulator_latency_s": 0.0,
                   "model": "gemini-2.5-flash"},
        "results": results,
        "rows_in_clickhouse": {
            "ours_server": rows_ours_server, "ours_server_expected": calls_per_run * args.rounds,
            "original": rows_original, "original_expected": calls_per_run * args.rounds,
        },
        "emulator_requests": emu.total_requests,
    }
    path = common.write_json("overhead.json", data)
    common.log(f"wrote {path}")
    for r in results:
        print(f"{r['name']:48s} p50 {r['p50_ms']:8.3f} ms  p99 {r['p99_ms']:8.3f} ms  x{r['ratio_p50']:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
