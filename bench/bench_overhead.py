"""Per-call overhead over a reused raw google-genai client, on the emulator with no latency.

    .venv/bin/python bench/bench_overhead.py [-n 500] [--warmup 50] [--rounds 2] [--quick]

Contenders, each in its own process (the runners in bench/peers/), all calling one
emulator that runs in this process with no added latency:

- raw SDK: one reused ``genai.Client``, ``generate_content`` + ``json.loads`` (project venv,
  google-genai 3.x; and the original's venv, google-genai 1.70, as that peer's own baseline);
- the same raw call in this project's request models (``gemini/sdk_models.py``): the
  SDK's share as IaProcessor pays it, so that ours against it is our layer's own cost;
- IaProcessor.analisar_com_gemini with telemetry off, embedded (chDB) and server (the
  ClickHouse HTTP loopback server, ``bench/ch_server.py``);
- the original csctracker-ai-core 26.37.1 with its ClickHouse on the loopback server, and
  with its ClickHouse unreachable (a closed port: each call pays a refused connect).

- LiteLLM's Router with one deployment (for scale; it is not a pool of Gemini keys).

Each contender runs ``n`` sequential calls after ``warmup`` (the original, ~50x slower,
``--n-original``), in ``rounds`` interleaved
rounds (so slow drift of the machine hits everyone alike). Percentiles are over the
pooled timings of all rounds; the ratio to the raw SDK is the median over rounds of
(contender p50 / raw p50 of the same round), with its range across rounds, because
the p50 of a ~1 ms call drifts by several percent from one run to the next. This project's runs are measured after its telemetry writer has finished
starting (connect + schema, in the background; its cost is in bench_telemetry.py), so
the figures are the steady state. Writes bench/out/overhead.json; bench/report.py turns it into RESULTS.md.
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
        ("raw SDK, this project's request models", "ours", "raw_sdk.py", ["--lean"], False),
        ("ours, telemetry off", "ours", "ours.py", ["overhead", "--telemetry", "off"], False),
        ("ours, telemetry embedded (chDB)", "ours", "ours.py", ["overhead", "--telemetry", "embedded"], False),
        ("ours, telemetry server (HTTP)", "ours", "ours.py", ["overhead", "--telemetry", "server"], True),
        (
            "ours, embedded, delivered by csc-ai deliver",
            "ours",
            "ours.py",
            ["overhead", "--telemetry", "embedded", "--delivery", "external"],
            False,
        ),
        (
            "ours, server, delivered by csc-ai deliver",
            "ours",
            "ours.py",
            ["overhead", "--telemetry", "server", "--delivery", "external"],
            True,
        ),
    ]
    if ready.get("original"):
        out += [
            ("raw SDK (google-genai 1.70, original's venv)", "original", "raw_sdk.py", [], False),
            ("original 26.37.1, ClickHouse server (HTTP)", "original", "original.py", ["overhead"], True),
            ("original 26.37.1, ClickHouse unreachable", "original", "original.py", ["overhead"], False),
        ]
    if ready.get("litellm"):
        out.append(("LiteLLM Router (1 deployment)", "litellm", "litellm_router.py", ["overhead"], False))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500, help="measured calls per run")
    ap.add_argument("--n-original", type=int, default=100, help="measured calls per run for the original (~50 ms each)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="n=300, n-original=60, 3 rounds")
    args = ap.parse_args()
    if args.quick:
        args.n, args.n_original, args.rounds = 300, 60, 3

    ready = common.peers_ready()
    work = common.OUT / "overhead-tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pooled: dict = {}
    round_p50: dict = {}
    calls: dict = {}
    cpu: dict = {}
    extra: dict = {}
    rows_ch = {"ours": 0, "original": 0}
    with common.fast_emulator(keys=[KEY], latency_s=0.0) as emu:
        for rnd in range(args.rounds):
            for name, peer, script, extra_args, needs_ch in contenders(ready):
                n = args.n_original if script == "original.py" else args.n
                argv = list(extra_args) + [
                    "--base-url",
                    emu.base_url,
                    "--key",
                    KEY,
                    "-n",
                    str(n),
                    "--warmup",
                    str(args.warmup),
                ]
                if needs_ch:
                    calls[peer] = calls.get(peer, 0) + n + args.warmup
                data_dir = work / f"data-{rnd}-{len(pooled)}"
                if peer == "ours" and "--telemetry" in extra_args:
                    argv += ["--data-dir", str(data_dir)]
                # A ClickHouse server runs only while a contender that writes to it runs
                # (one per contender, same data across rounds), so its background work
                # never steals CPU from the others.
                ch = common.ClickHouseServer(work / f"ch-{peer}") if needs_ch else None
                if ch is not None:
                    ch.start()
                    argv += ["--ch-port", str(ch.port)]
                common.log(f"overhead round {rnd + 1}/{args.rounds}: {name}")
                t0 = time.perf_counter()
                deliverer = common.start_deliverer(data_dir, ch) if "--delivery" in extra_args else None
                try:
                    try:
                        result = common.run_runner(peer, script, argv)
                    finally:
                        if deliverer is not None:
                            common.stop_deliverer(deliverer)
                    if ch is not None:
                        rows_ch[peer] = common.count_rows_http(ch.port, "ai_events")
                finally:
                    if ch is not None:
                        ch.stop()
                common.log(
                    f"  {time.perf_counter() - t0:.1f}s, p50 {common.percentile(result['times_s'], 50) * 1e3:.3f} ms"
                )
                pooled.setdefault(name, []).extend(result["times_s"])
                round_p50.setdefault(name, []).append(common.percentile(result["times_s"], 50))
                cpu.setdefault(name, []).append(result["cpu_s"] / result["n"])
                if "telemetry" in result:
                    extra.setdefault(name, []).append(
                        {"close_s": result.get("close_s"), "telemetry": result["telemetry"]}
                    )

    raw_name = "raw SDK (google-genai 3.x, reused client)"
    raw_170_name = "raw SDK (google-genai 1.70, original's venv)"
    raw = common.summarize(pooled[raw_name])

    def paired(name: str, base: str) -> list:
        # Per-round ratio of p50s: each contender against the baseline of the same round,
        # so drift of the machine between rounds cancels out.
        return sorted(a / b for a, b in zip(round_p50[name], round_p50[base], strict=True))

    results = []
    for name, times in pooled.items():
        s = common.summarize(times)
        s["name"] = name
        ratios = paired(name, raw_name)
        s["round_p50_ms"] = [x * 1e3 for x in round_p50[name]]
        s["ratio_p50_median"] = (
            ratios[len(ratios) // 2]
            if len(ratios) % 2
            else (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
        )
        s["ratio_p50_range"] = [ratios[0], ratios[-1]]
        if name.startswith("original") and raw_170_name in round_p50:
            own = paired(name, raw_170_name)
            s["ratio_p50_own_sdk"] = own[len(own) // 2]
        s["cpu_ms_per_call"] = sum(cpu[name]) / len(cpu[name]) * 1e3
        s["ratio_p50"] = s["p50_ms"] / raw["p50_ms"]
        s["ratio_p99"] = s["p99_ms"] / raw["p99_ms"]
        s["overhead_p50_ms"] = s["p50_ms"] - raw["p50_ms"]
        if name in extra:
            s["runs"] = extra[name]
        results.append(s)
    data = {
        "config": {
            "n": args.n,
            "n_original": args.n_original,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "emulator_latency_s": 0.0,
            "model": "gemini-3.5-flash",
        },
        "results": results,
        "rows_in_clickhouse": {
            "ours_server": rows_ch["ours"],
            "ours_server_expected": calls.get("ours", 0),
            "original": rows_ch["original"],
            "original_expected": calls.get("original", 0),
        },
        "emulator_requests": emu.total_requests,
    }
    path = common.write_json("overhead.json", data)
    common.log(f"wrote {path}")
    for r in results:
        print(
            f"{r['name']:48s} p50 {r['p50_ms']:8.3f} ms  p99 {r['p99_ms']:8.3f} ms  "
            f"x{r['ratio_p50_median']:.3f} [{r['ratio_p50_range'][0]:.3f}-{r['ratio_p50_range'][1]:.3f}]"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
