"""The calling thread's CPU per call, ours against the raw SDK, in one process.

    .venv/bin/python bench/bench_inprocess.py [--telemetry off|embedded] [--delivery thread|external]
                                              [--blocks 30] [--block 100]

Across processes (``bench_interleaved.py``) this VM's speed drifts by more than the
effect measured, even per block. Here one process holds a reused raw google-genai client
and an ``IaProcessor`` on the same emulator (in-process, no latency), and alternates
blocks of ``block`` calls between them; for each pair of blocks it takes the ratio of
the calling thread's CPU time (``time.thread_time``: the emulator's threads, the
writer thread and chDB's threads are not counted). The median ratio over ``blocks`` is
what the call path itself costs the caller's thread; background telemetry work shows
only as it takes the GIL or the core from the calling thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402

KEY = "AIzaBENCH-inprocess-000000000000000000"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--telemetry", choices=["off", "embedded"], default="off")
    ap.add_argument("--delivery", choices=["thread", "external"], default="thread")
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--block", type=int, default=100)
    args = ap.parse_args()
    from google import genai
    from google.genai import types

    emulator = common.fast_emulator()
    emulator.start()
    os.environ["CSCTRACKER_AI_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-inprocess-")
    from csctracker_ai_core import IaProcessor

    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=emulator.base_url))
    config = types.GenerateContentConfig(temperature=0.1, response_mime_type="application/json")
    processor = IaProcessor(
        google_free_keys=[KEY],
        base_url=emulator.base_url,
        telemetry=args.telemetry,
        google_models_limits="gemini-3.5-flash=1",
        telemetry_delivery=args.delivery,
    )

    def raw(i: int) -> None:
        reply = client.models.generate_content(
            model="gemini-3.5-flash", contents=f"Responda em JSON. Qual a capital da França? #{i}", config=config
        )
        json.loads(reply.text or "")

    def ours(i: int) -> None:
        processor.analisar_com_gemini(
            input_text=f"Qual a capital da França? #{i}", prompt="Responda em JSON.", task="b"
        )

    for i in range(200):
        raw(i)
        ours(i)
    time.sleep(1.5)  # the writer's start-up (schema) is not what is measured
    ratios, raw_ms, ours_ms = [], [], []
    for _ in range(args.blocks):
        c0 = time.thread_time()
        for i in range(args.block):
            raw(i)
        c1 = time.thread_time()
        for i in range(args.block):
            ours(i)
        c2 = time.thread_time()
        raw_ms.append((c1 - c0) * 1000 / args.block)
        ours_ms.append((c2 - c1) * 1000 / args.block)
        ratios.append((c2 - c1) / (c1 - c0))
    processor.close()
    emulator.stop()
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(
        f"| {args.telemetry}, {args.delivery} | {statistics.median(raw_ms):.3f} | {statistics.median(ours_ms):.3f} "
        f"| x{statistics.median(ratios):.3f} ({q1:.3f}-{q3:.3f}) |"
    )


if __name__ == "__main__":
    main()
