"""Ours against the raw SDK in one process, side by side: per-call latency and the caller's CPU.

    .venv/bin/python bench/bench_inprocess.py [--rounds 30] [--block 100] [--no-server]
                                              [--delivery thread|external]

Across processes (``bench_interleaved.py``) this VM's speed drifts by more than the effect
measured, even block by block (a block's p50 ratio ranges over x0.8-x1.9). Here one
process holds a reused raw google-genai client and one ``IaProcessor`` per configuration
(telemetry off, the embedded store, a ClickHouse server over HTTP), all on the same
in-process emulator (no latency), and runs blocks of ``block`` calls of each in turn,
``rounds`` times, in a rotating order, with no pause: what telemetry does in the
background (the writer's inserts, chDB's engine) runs while the calls run, as it would
in an application. The two processors with telemetry share nothing but the process.

Per configuration: the latency p50 and p99 over every call (wall clock), their ratio to
the raw SDK's, and the calling thread's CPU per call (``time.thread_time``; the median of
the per-round ratios to raw, with its interquartile range). A second raw contender sends
the same request in this project's request models (``gemini/sdk_models.py``): ours
against it is our layer's own cost, the SDK's saving set apart.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402

KEY = "AIzaBENCH-inprocess-000000000000000000"
MODEL = "gemini-3.5-flash"
RAW = "raw SDK (reused client)"
LEAN = "raw SDK, this project's request models"


def _pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--no-server", action="store_true", help="leave out the ClickHouse server configuration")
    ap.add_argument("--delivery", choices=["thread", "external"], default="thread")
    args = ap.parse_args()
    from google import genai
    from google.genai import types

    emulator = common.fast_emulator()
    emulator.start()
    work = Path(tempfile.mkdtemp(prefix="bench-inprocess-"))
    ch = None if args.no_server else common.ClickHouseServer(work / "ch").start()
    from csctracker_ai_core import IaProcessor

    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=emulator.base_url))
    config = types.GenerateContentConfig(temperature=0.1, response_mime_type="application/json")

    def raw(i: int) -> None:
        reply = client.models.generate_content(
            model=MODEL, contents=f"Responda em JSON. Qual a capital da França? #{i}", config=config
        )
        json.loads(reply.text or "")

    from csctracker_ai_core.gemini.sdk_models import RequestConfig, RequestContent, RequestPart

    lean_config = RequestConfig(
        temperature=0.1,
        response_mime_type="application/json",
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )

    def lean(i: int) -> None:
        text = f"Responda em JSON. Qual a capital da França? #{i}"
        reply = client.models.generate_content(
            model=MODEL, contents=RequestContent(role="user", parts=[RequestPart(text=text)]), config=lean_config
        )
        json.loads(reply.text or "")

    def processor(telemetry: str, **extra: object) -> IaProcessor:
        env = {"CSCTRACKER_AI_DATA_DIR": str(work / f"data-{telemetry}")}
        return IaProcessor(
            google_free_keys=[KEY],
            base_url=emulator.base_url,
            telemetry=telemetry,
            google_models_limits=f"{MODEL}=1",
            telemetry_delivery=args.delivery,
            env=env,
            **extra,  # type: ignore[arg-type]
        )

    processors = {"ours, telemetry off": processor("off"), "ours, embedded (chDB)": processor("embedded")}
    if ch is not None:
        processors["ours, ClickHouse server (HTTP)"] = processor("server", host="127.0.0.1", port=ch.port)

    def ours(p: IaProcessor) -> Callable[[int], None]:
        def call(i: int) -> None:
            p.analisar_com_gemini(input_text=f"Qual a capital da França? #{i}", prompt="Responda em JSON.", task="b")

        return call

    contenders: dict[str, Callable[[int], None]] = {
        RAW: raw,
        LEAN: lean,
        **{n: ours(p) for n, p in processors.items()},
    }
    for i in range(args.warmup):
        for fn in contenders.values():
            fn(i)
    time.sleep(2.0)  # the writers' start-up (connect, schema) is not what is measured
    names = list(contenders)
    wall: dict[str, list[int]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    p50s: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = contenders[name]
            block: list[int] = []
            c0 = time.thread_time()
            for i in range(args.block):
                t = time.perf_counter_ns()
                fn(i)
                block.append(time.perf_counter_ns() - t)
            cpu[name].append((time.thread_time() - c0) / args.block)
            wall[name].extend(block)
            p50s[name].append(statistics.median(block))
    for p in processors.values():
        p.close(30)
    rows = {n: p.telemetry.stats() for n, p in processors.items() if "off" not in n}
    emulator.stop()
    if ch is not None:
        ch.stop()
    print(
        f"{args.rounds} rounds x {args.block} calls per configuration, one process, blocks in rotating order; "
        f"telemetry delivery: {args.delivery}.\n"
    )
    print(
        "| configuration | p50 ms | p99 ms | p50 vs raw | p99 vs raw | block p50 vs raw (median, IQR) | CPU ms/call "
        "| CPU vs raw (median, IQR) | CPU vs raw in our request models (median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in names:
        block_ratio = [a / b for a, b in zip(p50s[n], p50s[RAW], strict=True)]
        cpu_ratio = [a / b for a, b in zip(cpu[n], cpu[RAW], strict=True)]
        own = statistics.median(a / b for a, b in zip(cpu[n], cpu[LEAN], strict=True))
        bq1, _, bq3 = statistics.quantiles(block_ratio, n=4)
        cq1, _, cq3 = statistics.quantiles(cpu_ratio, n=4)
        print(
            f"| {n} | {_pct(wall[n], 0.5):.3f} | {_pct(wall[n], 0.99):.3f} "
            f"| x{_pct(wall[n], 0.5) / _pct(wall[RAW], 0.5):.3f} | x{_pct(wall[n], 0.99) / _pct(wall[RAW], 0.99):.3f} "
            f"| x{statistics.median(block_ratio):.3f} ({bq1:.3f}-{bq3:.3f}) | {statistics.median(cpu[n]) * 1000:.3f} "
            f"| x{statistics.median(cpu_ratio):.3f} ({cq1:.3f}-{cq3:.3f}) | x{own:.3f} |"
        )
    for n, s in rows.items():
        print(f"\n{n}: written {s.written}, spooled {s.spooled}, dropped {s.dropped}, pending {s.pending}")
    from csctracker_ai_core.telemetry.shared import close_idle_embedded

    close_idle_embedded()  # the idle embedded writer stays open until exit otherwise
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
