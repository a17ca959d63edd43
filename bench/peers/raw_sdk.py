"""Baseline: one reused google-genai client, ``generate_content`` in a loop.

Runs in any venv with google-genai (the project's: SDK 3.x; the original's: SDK 1.70),
so each contender can be compared with the raw SDK of its own environment.

    <venv>/bin/python bench/peers/raw_sdk.py --base-url URL --key K [--model M] [-n 500] [--warmup 50]

Sends what IaProcessor sends for a JSON text call (temperature 0.1, JSON mime type)
and parses the reply with ``json.loads``. Prints one JSON line (see ``_runner.sequential``).
"""

from __future__ import annotations

import argparse
import json

import _runner
from google import genai
from google.genai import types


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--model", default="gemini-3.5-flash")
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args()

    client = genai.Client(api_key=args.key, http_options=types.HttpOptions(base_url=args.base_url))
    config = types.GenerateContentConfig(temperature=0.1, response_mime_type="application/json")

    def call(i: int) -> None:
        response = client.models.generate_content(
            model=args.model, contents=f"Responda em JSON. Qual a capital da França? #{i}", config=config
        )
        json.loads(response.text)
        _ = response.usage_metadata.prompt_token_count

    result = _runner.sequential(call, args.n, args.warmup)
    result["sdk"] = getattr(genai, "__version__", None)
    _runner.emit(result)


if __name__ == "__main__":
    main()
