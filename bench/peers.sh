#!/usr/bin/env bash
# Creates the peer virtual environments used by the benchmarks, each isolated from the project:
#   bench/.venvs/original  the original csctracker-ai-core 26.37.1 from PyPI (with its own pins:
#                          google-genai 1.70.0, clickhouse_connect 0.11.0, csctracker-py-core)
#   bench/.venvs/litellm   LiteLLM, latest from PyPI (its Router is the peer for the quota workload)
# Idempotent: a venv whose stamp matches is left alone. Usage: bench/peers.sh [--force]
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
mkdir -p .venvs
force=${1:-}

make_venv() {  # name, pip requirement...
  local name=$1; shift
  local dir=.venvs/$name stamp=.venvs/$name/.installed want="$*"
  if [ "$force" != "--force" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "peers: creating $dir ($*)" >&2
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  echo "$want" > "$stamp"
}

make_venv original "csctracker-ai-core==26.37.1"
make_venv litellm "litellm"
