"""Per-call overhead over a reused raw google-genai client, contenders interleaved block by block.

    .venv/bin/python bench/bench_interleaved.py [--block 200] [--rounds 15] [--gap 1.0]

bench_overhead.py runs each contender for a whole run in turn, so a machine whose speed
drifts within minutes (this 2-vCPU VM: the raw call's p50 moved between 2.1 and 5.4 ms
from one run to the next) moves the ratios by more than the effect measured. Here every
contender of this project's venv (the raw SDK and this project's configurations, see
``bench_overhead.contenders``) runs at once as a process of its own, warmed up and
settled, and the orchestrator makes each run ``block`` calls in turn, ``rounds`` times,
in a rotating order, with ``gap`` seconds of quiet between blocks. A contender's own
background work (its writer's insert, a ``csc-ai deliver`` process, a ClickHouse
server's merges) is waited for after its block (untimed) and during the gap, so it is
not charged to the next one.

Ratio: for each round, (contender p50 / raw p50 of the same round); the median over
rounds and its range. p99 ratio: pooled p99 / raw pooled p99, and the median over rounds
of (the block's p99 / the raw block's p99 of the same round), which a few slow blocks on
a noisy machine do not set. The same p50 ratio to the
raw call in this project's request models (``--lean`` of the raw runner) is our layer's
own cost, the SDK's saving set apart. CPU: process CPU per call (all threads, the
untimed settling included). Writes bench/out/interleaved.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_overhead import KEY, contenders  # noqa: E402

import common  # noqa: E402

RAW = "raw SDK (google-genai 3.x, reused client)"
LEAN = "raw SDK, this project's request models"


class Contender:
    """One runner process serving blocks of calls (``BENCH_INTERLEAVED=1``)."""

    def __init__(self, name: str, script: str, extra: list[str], needs_ch: bool, base_url: str, work: Path) -> None:
        self.name = name
        self.data = work / f"data-{abs(hash(name))}"
        self.ch = common.ClickHouseServer(work / f"ch-{abs(hash(name))}").start() if needs_ch else None
        self.deliverer = common.start_deliverer(self.data, self.ch) if "--delivery" in extra else None
        argv = [*extra, "--base-url", base_url, "--key", KEY, "-n", "0", "--warmup", "100"]
        if "--telemetry" in extra:
            argv += ["--data-dir", str(self.data)]
        if self.ch is not None:
            argv += ["--ch-port", str(self.ch.port)]
        env = dict(os.environ, BENCH_INTERLEAVED="1")
        self.proc = subprocess.Popen(
            [str(common.OURS_PY), str(common.BENCH / "peers" / script), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=common.BENCH / "peers",
        )
        if not json.loads(self._line()).get("ready"):
            raise RuntimeError(f"{name}: runner did not start")
        self.rounds: list[list[float]] = []

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: runner ended early (exit {self.proc.wait()})")
        return line

    def block(self, n: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {n}\n")
        self.proc.stdin.flush()
        self.rounds.append(json.loads(self._line())["block_s"])

    def finish(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("done\n")
        self.proc.stdin.flush()
        result = json.loads(self._line())
        self.proc.wait(120)
        if self.deliverer is not None:
            common.stop_deliverer(self.deliverer)
        if self.ch is not None:
            result["rows_in_clickhouse"] = common.count_rows_http(self.ch.port, "ai_events")
            self.ch.stop()
        return result


def _p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[int(0.99 * (len(ordered) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=int, default=200, help="calls per block")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--gap", type=float, default=1.0, help="seconds of quiet between blocks")
    args = ap.parse_args()
    work = common.OUT / "interleaved-tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    mine = [(name, script, extra, ch) for name, peer, script, extra, ch in contenders({}) if peer == "ours"]
    results: dict[str, dict] = {}
    with common.fast_emulator(keys=[KEY], latency_s=0.0) as emu:
        running = [Contender(name, script, list(extra), ch, emu.base_url, work) for name, script, extra, ch in mine]
        try:
            for rnd in range(args.rounds):
                order = running[rnd % len(running) :] + running[: rnd % len(running)]
                for c in order:
                    c.block(args.block)
                    time.sleep(args.gap)
                common.log(f"interleaved round {rnd + 1}/{args.rounds} done")
        finally:
            for c in running:
                results[c.name] = c.finish()
    raw_rounds = [statistics.median(b) for b in next(c for c in running if c.name == RAW).rounds]
    raw_round_p99 = [_p99(b) for b in next(c for c in running if c.name == RAW).rounds]
    raw_pooled = common.summarize(results[RAW]["times_s"])
    lean_rounds = [statistics.median(b) for b in next(c for c in running if c.name == LEAN).rounds]
    table = []
    for c in running:
        s = common.summarize(results[c.name]["times_s"])
        ratios = sorted(statistics.median(b) / r for b, r in zip(c.rounds, raw_rounds, strict=True))
        own = statistics.median(statistics.median(b) / r for b, r in zip(c.rounds, lean_rounds, strict=True))
        table.append(
            {
                "name": c.name,
                "n": len(results[c.name]["times_s"]),
                "p50_ms": s["p50_ms"],
                "p99_ms": s["p99_ms"],
                "ratio_p50_median": statistics.median(ratios),
                "ratio_p50_range": [ratios[0], ratios[-1]],
                "ratio_p99": s["p99_ms"] / raw_pooled["p99_ms"],
                "ratio_p99_median_of_rounds": statistics.median(
                    _p99(b) / r for b, r in zip(c.rounds, raw_round_p99, strict=True)
                ),
                "ratio_p50_to_lean_raw": own,
                "cpu_ms_per_call": results[c.name]["cpu_s"] / max(1, results[c.name]["n"]) * 1e3,
                "rows_in_clickhouse": results[c.name].get("rows_in_clickhouse"),
            }
        )
    out = {"config": vars(args), "results": table}
    (common.OUT / "interleaved.json").write_text(json.dumps(out, indent=2))
    print(f"{args.rounds} rounds x {args.block} calls per contender, blocks interleaved, {args.gap} s gaps.\n")
    print(
        "| contender | p50 ms | p99 ms | p50 vs raw (median of rounds, range) | p99 vs raw (pooled) "
        "| p99 vs raw (median of rounds) | p50 vs raw in our request models | CPU ms/call |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        lo, hi = r["ratio_p50_range"]
        print(
            f"| {r['name']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | x{r['ratio_p50_median']:.3f} "
            f"({lo:.3f}-{hi:.3f}) | x{r['ratio_p99']:.2f} | x{r['ratio_p99_median_of_rounds']:.2f} "
            f"| x{r['ratio_p50_to_lean_raw']:.3f} "
            f"| {r['cpu_ms_per_call']:.3f} |"
        )


if __name__ == "__main__":
    main()
