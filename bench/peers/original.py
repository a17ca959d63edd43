"""Runner for the original csctracker-ai-core 26.37.1 (PyPI), in its own venv.

    bench/.venvs/original/bin/python bench/peers/original.py overhead --base-url URL --key K \
        [--model M] [-n 500] [--warmup 50] [--ch-port P | --ch-port 0 for unreachable]
    bench/.venvs/original/bin/python bench/peers/original.py quota --base-url URL \
        --free k1,k2 --paid p1 --limits gemini-3.5-flash=2 -n 300 --threads 8 [--time-scale 0.0333]

How it is pointed at the emulator: the original creates ``genai.Client(api_key=key)`` per
attempt, with no base URL argument. google-genai 1.70 (its pinned SDK) reads the
``GOOGLE_GEMINI_BASE_URL`` environment variable when a client is created
(``google/genai/_base_url.py``), so the runner sets that variable; nothing is patched.

Its telemetry opens a new clickhouse-connect client and does one synchronous INSERT per
call. ``--ch-port`` names the ClickHouse HTTP server (the loopback server over chDB);
port 0 means an unreachable one (a closed port on 127.0.0.1): every call then pays a
failed connect and logs the error, which the original swallows.

``--time-scale`` (quota mode only): the quota workload runs Gemini's minute faster
(the emulator reads a scaled clock), so the original's fixed short waits, all in real
seconds, are multiplied by this factor (1 / the clock's speed-up) to keep their
proportion to the minute: the suspensions of 120 s after a per-minute 429 and 60 s
after an unclassified one, and its 1 s sleep when no slot is free. Per-day and limit-0
suspensions are left as they are (they outlast the run either way).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket

import _runner


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed as soon as the socket is: connects are refused


def make_processor(args: argparse.Namespace, free: str, paid: str, limits: str):
    os.environ["GOOGLE_GEMINI_BASE_URL"] = args.base_url
    os.environ["CLICKHOUSE_DB"] = "default"
    from csctracker_ai_core.service.IaProcessor import IaProcessor

    port = args.ch_port or closed_port()
    return IaProcessor(
        host="127.0.0.1",
        port=port,
        username="default",
        password="",
        google_models_limits=limits,
        google_free_keys=free,
        google_paid_keys=paid or None,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["overhead", "quota"])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--key", help="overhead mode: the one free key")
    ap.add_argument("--free", default="")
    ap.add_argument("--paid", default="")
    ap.add_argument("--model", default="gemini-3.5-flash")
    ap.add_argument("--limits", default=None, help="GOOGLE_MODEL_LIMITS (default: <model>=1)")
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--ch-port", type=int, default=0)
    ap.add_argument("--time-scale", type=float, default=1.0)
    args = ap.parse_args()
    # The original logs through the root logger; keep the default (WARNING) level, but do
    # not let its warnings flood the orchestrator's terminal.
    logging.basicConfig(level=logging.WARNING, filename=os.devnull)

    limits = args.limits or f"{args.model}=1"
    if args.mode == "overhead":
        proc = make_processor(args, args.key, "", limits)

        def call(i: int) -> None:
            proc.analisar_com_gemini(
                input_text=f"Qual a capital da França? #{i}", prompt="Responda em JSON.", task="bench"
            )

        result = _runner.sequential(call, args.n, args.warmup)
        result["ch_port"] = args.ch_port
        _runner.emit(result)
        return

    proc = make_processor(args, args.free, args.paid, limits)
    rotator = proc.api_key_rotator
    if args.time_scale != 1.0:
        original_suspend = rotator.suspender_modelo

        def scaled_suspend(key, model, seconds):
            if seconds <= 120:
                seconds = seconds * args.time_scale
            return original_suspend(key, model, seconds)

        rotator.suspender_modelo = scaled_suspend
        # Its "no free slot" wait is time.sleep(1) in the IaProcessor module: scale it too.
        import time as real_time
        import types

        import csctracker_ai_core.service.IaProcessor as ia_module

        ia_module.time = types.SimpleNamespace(
            strftime=real_time.strftime,
            time=real_time.time,
            sleep=lambda s: real_time.sleep(s * args.time_scale),
        )

    def call(i: int) -> None:
        proc.analisar_com_gemini(
            input_text=f"Pergunta {i}", prompt="Responda em JSON.", task="bench-quota", model_variant=args.model
        )

    result = _runner.concurrent(call, args.n, args.threads)
    result.pop("durations_s", None)
    _runner.emit(result)


if __name__ == "__main__":
    main()
