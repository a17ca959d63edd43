"""How long a call waits for the GIL while the writer thread builds an insert's bodies.

    .venv/bin/python bench/bench_writer_gil.py [--lines 3000] [--rounds 3]

The writer turns a chunk of spool lines into the two JSONEachRow bodies
(``records.lines_json``) on its own thread, holding the GIL the calls need. A second
thread, standing for a call, sleeps 200 µs at a time and records how late it wakes up:
that lateness is the wait a call whose reply arrives during the build would have.

Compared, in alternating rounds: the writer's release every ``YIELD_EVERY`` lines (64,
then this module's value) and, with ``old``, the final ``bytes()`` copy of each body that
``lines_json`` made before (a memcpy of the whole body into fresh pages, GIL held).

Then the same probe while the writer readies a spare segment (4 MiB reserved, mapped
and faulted in) and syncs 2.5 MiB of written lines: through the mmap module, whose
``madvise`` and ``flush`` keep the GIL (before: 256 KiB steps with a release between
them), against ``telemetry.pages`` (now: ctypes, the GIL let go for the call).
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_insert import LateWakeups, note_lateness, print_medians  # noqa: E402
from bench_telemetry import _event  # noqa: E402

from csctracker_ai_core.telemetry import pages, records  # noqa: E402

_SEGMENT = 4 * 1024 * 1024
_WRITTEN = 2_500_000
_OLD_STEP = 64 * mmap.PAGESIZE


def _old_populate(mm: mmap.mmap) -> None:
    for offset in range(0, len(mm), _OLD_STEP):
        mm.madvise(23, offset, min(_OLD_STEP, len(mm) - offset))  # MADV_POPULATE_WRITE
        time.sleep(0)


def _segment_rounds(rounds: int) -> dict[str, dict[str, list[float]]]:
    """Lateness of a call while a spare is faulted in, then while written lines are synced."""
    ways = {
        "before: mmap module (GIL held)": (_old_populate, lambda mm: mm.flush(0, _WRITTEN)),
        "now: telemetry.pages (GIL let go)": (pages.populate, lambda mm: pages.sync(mm, _WRITTEN)),
    }
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gil-", dir="/var/tmp") as folder:
        for i in range(rounds):
            for name, (populate, sync) in ways.items():
                fd = os.open(Path(folder) / f"{i}-{len(results)}", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    os.posix_fallocate(fd, 0, _SEGMENT)
                    mm = mmap.mmap(fd, _SEGMENT, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
                    wall, late = _probe_during(lambda mm=mm, populate=populate: populate(mm))
                    note_lateness(results.setdefault(f"{name}, fault in 4 MiB", {"wall": []}), late)
                    results[f"{name}, fault in 4 MiB"]["wall"].append(wall * 1e3)
                    mm[:_WRITTEN] = b"x" * _WRITTEN
                    wall, late = _probe_during(lambda mm=mm, sync=sync: sync(mm))
                    note_lateness(results.setdefault(f"{name}, sync 2.5 MB", {"wall": []}), late)
                    results[f"{name}, sync 2.5 MB"]["wall"].append(wall * 1e3)
                    mm.close()
                finally:
                    os.close(fd)
    return results


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
    print(f"\n{args.rounds} alternating rounds of a spare segment's work (median of rounds).\n")
    print_medians(
        ["writer", "work ms", "a call's GIL wait p50 µs", "p99 µs", "max µs"],
        _segment_rounds(args.rounds),
        ["{wall:.1f}", "{p50:.0f}", "{p99:.0f}", "{max:.0f}"],
    )


if __name__ == "__main__":
    main()
