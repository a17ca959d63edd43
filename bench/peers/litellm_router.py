"""Runner for LiteLLM's Router (latest from PyPI), in its own venv.

    bench/.venvs/litellm/bin/python bench/peers/litellm_router.py quota --base-url URL \
        --free k1,k2,k3,k4 --paid p1 -n 300 --threads 8 [--time-factor 30]
    bench/.venvs/litellm/bin/python bench/peers/litellm_router.py overhead --base-url URL --key K [-n 500]

Set up as its documentation suggests for a key pool with a paid fallback: one deployment
``gemini/<model>`` per key, each with its ``api_key`` and ``api_base`` = the emulator's
``/v1beta`` (LiteLLM joins ``models/<model>:generateContent`` onto a custom Gemini
api_base and sends the key in ``x-goog-api-key``); free keys form the model group
``gemini-free``, the paid key the group ``gemini-paid``, and
``fallbacks=[{"gemini-free": ["gemini-paid"]}]``. Default routing (simple-shuffle),
default retries (2). LiteLLM has no per-day limits and no notion of Google projects,
and its rpm accounting counts real wall-clock minutes, so no rpm is configured.

The quota workload shortens Gemini's minute by ``--time-factor``; LiteLLM's default
cooldown after a 429 (5 s) is divided by the same factor to keep its proportion.
``LITELLM_LOCAL_MODEL_COST_MAP`` keeps LiteLLM from fetching its price map online.
"""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOG", "ERROR")

import _runner  # noqa: E402

DEFAULT_COOLDOWN_S = 5.0  # litellm.constants.DEFAULT_COOLDOWN_TIME_SECONDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["overhead", "quota"])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--key")
    ap.add_argument("--free", default="")
    ap.add_argument("--paid", default="")
    ap.add_argument("--model", default="gemini-3.5-flash")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--time-factor", type=float, default=1.0)
    args = ap.parse_args()

    import litellm
    from litellm import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logging.getLogger("LiteLLM Router").setLevel(logging.CRITICAL)

    api_base = args.base_url.rstrip("/") + "/v1beta"

    def deployment(group: str, key: str) -> dict:
        return {
            "model_name": group,
            "litellm_params": {"model": f"gemini/{args.model}", "api_key": key, "api_base": api_base},
        }

    messages = [{"role": "user", "content": "Responda em JSON. Qual a capital da França?"}]
    if args.mode == "overhead":
        router = Router(model_list=[deployment("gemini-free", args.key)])

        def call(i: int) -> None:
            router.completion(
                model="gemini-free", messages=messages, temperature=0.1, response_format={"type": "json_object"}
            )

        _runner.emit(_runner.sequential(call, args.n, args.warmup))
        return

    free = [k for k in args.free.split(",") if k]
    paid = [k for k in args.paid.split(",") if k]
    model_list = [deployment("gemini-free", k) for k in free] + [deployment("gemini-paid", k) for k in paid]
    router = Router(
        model_list=model_list,
        fallbacks=[{"gemini-free": ["gemini-paid"]}] if paid else [],
        cooldown_time=DEFAULT_COOLDOWN_S / args.time_factor,
    )

    def call(i: int) -> None:
        router.completion(
            model="gemini-free",
            messages=[{"role": "user", "content": f"Pergunta {i}"}],
            temperature=0.1,
            response_format={"type": "json_object"},
        )

    result = _runner.concurrent(call, args.n, args.threads)
    result.pop("durations_s", None)
    result["cooldown_time_s"] = DEFAULT_COOLDOWN_S / args.time_factor
    _runner.emit(result)


if __name__ == "__main__":
    main()
