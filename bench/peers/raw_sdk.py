"""Baseline: one reused google-genai client, ``generate_content`` in a loop.

Runs in any venv with google-genai (the project's: SDK 3.x; the original's: SDK 1.70),
so each contender can be compared with the raw SDK of its own environment.

    <venv>/bin/python bench/peers/raw_sdk.py --base-url URL --key K [--model M] [-n 500] [--warmup 50] [--lean]

Sends what IaProcessor sends for a JSON text call (temperature 0.1, JSON mime type)
and parses the reply with ``json.loads``. Prints one JSON line (see ``_runner.sequential``).
``--lean`` (project venv only) sends the same request in this project's request models
(``csctracker_ai_core.gemini.sdk_models``, automatic function calling off): the SDK's
share of a call as IaProcessor pays it, so ours against it is our layer's own cost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _runner
from google import genai
from google.genai import types


def _text(i: int) -> str:
    return f"Responda em JSON. Qual a capital da França? #{i}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--model", default="gemini-3.5-flash")
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--lean", action="store_true", help="this project's request models (project venv only)")
    args = ap.parse_args()

    client = genai.Client(api_key=args.key, http_options=types.HttpOptions(base_url=args.base_url))
    config = types.GenerateContentConfig(temperature=0.1, response_mime_type="application/json")
    contents = _text
    if args.lean:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout, whatever the venv has
        from csctracker_ai_core.gemini.sdk_models import RequestConfig, RequestContent, RequestPart

        off = types.AutomaticFunctionCallingConfig(disable=True)
        config = RequestConfig(temperature=0.1, response_mime_type="application/json", automatic_function_calling=off)

        def contents(i: int) -> object:
            return RequestContent(role="user", parts=[RequestPart(text=_text(i))])

    def call(i: int) -> None:
        response = client.models.generate_content(model=args.model, contents=contents(i), config=config)
        json.loads(response.text)
        _ = response.usage_metadata.prompt_token_count

    result = _runner.sequential(call, args.n, args.warmup)
    result["sdk"] = getattr(genai, "__version__", None)
    _runner.emit(result)


if __name__ == "__main__":
    main()
