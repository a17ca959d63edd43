"""How long a call waits for the GIL while the writer thread builds an insert's bodies.

    .venv/bin/python bench/bench_writer_gil.py [--lines 3000] [--rounds 3]

The writer turns a chunk of spool lines into the two JSONEachRow bodies
(``records.lines_json``) on its own thread, holding the GIL the calls need. A second
thread, standing for a call, sleeps 200 µs at a time and records how late it wakes up:
that lateness is the wait a call whose reply arrives during the build would have.

Compared, in alternating rounds: the writer's release every ``YIELD_EVERY`` lines (64,
then this module's value) and, with ``old``, the final ``bytes()`` copy of each body that
``lines_json`` made before (a memcpy of the whole body into fresh pages, GIL held).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_insert import LateWakeups, note_lateness, print_medians  # noqa: E402
from bench_telemetry import _event  # noqa: E402

from csctracker_ai_core.telemetry import records  # noqa: E402


def _probe_during(work) -> tuple[float, list[float]]:
    """Run ``work`` on this thread while a probe thread records its late wake-ups (µs)."""
    with LateWakeups() as probe:
        probe.late.clear()  # only what happens during the work
        t0 = time.perf_counter()
        work()
        wall = time.perf_counter() - t0
    return wall, sorted(probe.late)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    payload = ("lorem ipsum " * 200)[:2000]
    lines = [records.encode_event(_event(i, payload))[0] for i in range(args.lines)]
    now_every = records.YIELD_EVERY
    ways = {
        "before: every 64 lines, bytes() copy": (64, True),
        f"now: every {now_every} lines, no copy": (now_every, False),
    }
    results: dict[str, dict[str, list[float]]] = {name: {} for name in ways}
    for _ in range(args.rounds):
        for name, (every, copy) in ways.items():
            records.YIELD_EVERY = every

            def build(copy: bool = copy) -> None:
                bodies = records.lines_json(lines, check=None)
                if copy and bodies is not None:
                    bytes(bodies[0]), bytes(bodies[1])

            wall, late = _probe_during(build)
            r = results[name]
            r.setdefault("wall", []).append(wall * 1e3)
            note_lateness(r, late)
    records.YIELD_EVERY = now_every
    print(f"{args.rounds} alternating rounds, {args.lines} event lines of 2 kB prompts each (median of rounds).\n")
    print_medians(
        ["writer", "build ms", "a call's GIL wait p50 µs", "p99 µs", "max µs"],
        results,
        ["{wall:.0f}", "{p50:.0f}", "{p99:.0f}", "{max:.0f}"],
    )


if __name__ == "__main__":
    main()
