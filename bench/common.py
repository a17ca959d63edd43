"""Shared helpers for the bench/ scripts: paths, peer interpreters, statistics, machine
and version facts, the ClickHouse loopback server, and running a peer runner script.

Not a benchmark by itself. Every bench script runs with the project's venv
(``.venv/bin/python bench/<script>.py``); peers run in their own venvs (``bench/peers.sh``)
through the runner scripts in ``bench/peers/``, which print one JSON object on stdout.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
PEERS_DIR = BENCH / "peers"
VENVS = BENCH / ".venvs"

# The benchmarks measure this checkout, whatever the venv's install points at.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OURS_PY = ROOT / ".venv" / "bin" / "python"
ORIGINAL_PY = VENVS / "original" / "bin" / "python"
LITELLM_PY = VENVS / "litellm" / "bin" / "python"


def python_for(peer: str) -> Path:
    """Interpreter of a contender: ``ours`` (project venv), ``original`` or ``litellm``."""
    return {"ours": OURS_PY, "original": ORIGINAL_PY, "litellm": LITELLM_PY}[peer]


def peers_ready() -> dict[str, bool]:
    """Which peer venvs exist (``bench/peers.sh`` makes them)."""
    return {name: python_for(name).exists() for name in ("original", "litellm")}


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize(times_s: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean / min in milliseconds, and n."""
    if not times_s:
        return {"n": 0}
    return {
        "n": len(times_s),
        "p50_ms": percentile(times_s, 50) * 1e3,
        "p90_ms": percentile(times_s, 90) * 1e3,
        "p99_ms": percentile(times_s, 99) * 1e3,
        "mean_ms": sum(times_s) / len(times_s) * 1e3,
        "min_ms": min(times_s) * 1e3,
    }


# -- running peers -------------------------------------------------------------------------


class RunnerError(RuntimeError):
    pass


def run_runner(
    peer: str, script: str, args: Sequence[str], *, env: dict[str, str] | None = None, timeout_s: float = 900.0
) -> dict[str, Any]:
    """Run ``bench/peers/<script>`` with the interpreter of ``peer``; return its JSON stdout.

    The runner's stderr is kept in ``bench/out/logs/`` (the original library logs a lot).
    """
    py = python_for(peer)
    if not py.exists():
        raise RunnerError(f"{py} missing: run bench/peers.sh first")
    full_env = dict(os.environ)
    # Never let the project's sources leak into a peer's interpreter (the original library
    # has the same package name): run from the bench folder with a clean PYTHONPATH.
    full_env.pop("PYTHONPATH", None)
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    full_env.update(env or {})
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tag = f"{peer}-{Path(script).stem}-{int(time.time() * 1000)}"
    err_path = logs / f"{tag}.stderr"
    with open(err_path, "w") as err:
        proc = subprocess.run(
            [str(py), str(PEERS_DIR / script), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=full_env,
            cwd=str(PEERS_DIR),
            timeout=timeout_s,
        )
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise RunnerError(f"{peer} {script} exited {proc.returncode}; stderr tail:\n{tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        raise RunnerError(f"{peer} {script} printed no JSON; stdout: {proc.stdout[-2000:]}")
    return json.loads(lines[-1])


# -- ClickHouse loopback server (tests/clickhouse_http_server.py) ---------------------------


def clickhouse_server_module():
    """The loopback ClickHouse HTTP server module (over chDB), loaded from tests/."""
    path = ROOT / "tests" / "clickhouse_http_server.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_clickhouse_http_server", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def count_rows_http(port: int, table: str, where: str = "1") -> int:
    """``SELECT count() FROM table WHERE ...`` over the ClickHouse HTTP interface."""
    import urllib.parse
    import urllib.request

    query = f"SELECT count() FROM {table} WHERE {where}"
    url = f"http://127.0.0.1:{port}/?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=30) as resp:
        return int(resp.read().decode().strip() or 0)


# -- facts for RESULTS.md ------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": mem_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _dist_versions(py: Path, names: Iterable[str]) -> dict[str, str | None]:
    code = (
        "import json,sys\nfrom importlib import metadata\nout={}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n]=metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: out[n]=None\n"
        "print(json.dumps(out))"
    )
    if not py.exists():
        return {}
    try:
        proc = subprocess.run(
            [str(py), "-c", code, *names],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(PEERS_DIR),
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        return json.loads(proc.stdout)
    except Exception:  # noqa: BLE001 - facts are best effort
        return {}


def versions() -> dict[str, dict[str, str | None]]:
    """Package versions per environment (ours, original, litellm)."""
    return {
        "ours": _dist_versions(
            OURS_PY,
            [
                "csctracker-ai-core",
                "google-genai",
                "clickhouse-connect",
                "chdb",
                "chdb-core",
                "httpx2",
                "httpx",
                "redis",
            ],
        ),
        "original": _dist_versions(
            ORIGINAL_PY, ["csctracker-ai-core", "google-genai", "clickhouse-connect", "csctracker-py-core", "httpx"]
        ),
        "litellm": _dist_versions(LITELLM_PY, ["litellm", "httpx", "aiohttp", "openai"]),
    }


def write_json(name: str, data: Any) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def read_json(name: str) -> Any | None:
    path = OUT / name
    if not path.exists():
        return None
    return json.loads(path.read_text())


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_deliverer(data_dir: Path, ch: ClickHouseServer | None) -> subprocess.Popen:
    """``csc-ai deliver --nice 10`` for a contender's data folder (and loopback server)."""
    env = dict(os.environ, CSCTRACKER_AI_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    if ch is not None:
        env.update(CLICKHOUSE_HOST="127.0.0.1", CLICKHOUSE_PORT=str(ch.port), CLICKHOUSE_USER="default")
    return subprocess.Popen(
        [str(OURS_PY), "-m", "csctracker_ai_core", "deliver", "--nice", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop_deliverer(proc: subprocess.Popen) -> None:
    """SIGTERM: it delivers what is left, then exits."""
    proc.terminate()
    _out, err = proc.communicate(timeout=120)
    log(f"  csc-ai deliver: {(err or '').strip().splitlines()[-1:]}")


class ClickHouseServer:
    """``bench/ch_server.py`` as a child process; stoppable and restartable on the same port."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path = Path(path)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> ClickHouseServer:
        self.path.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen(
            [str(OURS_PY), str(BENCH / "ch_server.py"), "--path", str(self.path), "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"ClickHouse loopback server did not start: {line!r}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> ClickHouseServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_emulator(**config: Any):
    """A ``GeminiEmulator`` (not started) with ``config``; kept as the benches' one entry point."""
    from csctracker_ai_core.testing import GeminiEmulator

    return GeminiEmulator(**config)
