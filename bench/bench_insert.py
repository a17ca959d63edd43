"""What the writer thread's insert costs the calls: JSON lines against typed columns.

    .venv/bin/python bench/bench_insert.py [--rows 1000] [--rounds 3] [--store embedded|server]

The writer shares the GIL with the application's calls, so its cost that matters is the
CPU it spends holding the GIL. For each way of inserting one chunk of ``rows`` records
(2 kB prompt, one attempt each) into ``ai_events`` and ``ai_attempts``:

- ``json``: what the writer does now, ``insert_batch`` (JSONEachRow bodies the store parses);
- ``typed``: what it did before, columns built in Python and serialized by the driver
  (``records.event_columns`` / ``attempt_columns`` + ``client.insert``);

it reports the inserting thread's CPU per row (``time.thread_time``: Python, the driver,
and with chDB the engine's work done on that thread) and the wall time per row, while a
second thread, standing for a call, wakes every 200 µs: the p99 and max of its late
wake-ups is how long a call could wait for the GIL during the insert. Rounds alternate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_telemetry import _event  # noqa: E402

from csctracker_ai_core.telemetry.connection import connect  # noqa: E402
from csctracker_ai_core.telemetry.quarantine import Quarantine, insert_batch  # noqa: E402
from csctracker_ai_core.telemetry.records import (  # noqa: E402
    ATTEMPT_COLUMN_NAMES,
    EVENT_COLUMN_NAMES,
    attempt_columns,
    event_columns,
    event_to_record,
)
from csctracker_ai_core.telemetry.schema import ensure_schema  # noqa: E402
from csctracker_ai_core.telemetry.settings import ClickHouseSettings  # noqa: E402

import common  # noqa: E402


class LateWakeups:
    """A thread that sleeps 200 µs at a time and records how late it wakes up (µs)."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            time.sleep(0.0002)
            self.late.append((time.perf_counter() - t - 0.0002) * 1e6)

    def __enter__(self) -> LateWakeups:
        self._thread.start()
        time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def note_lateness(figures: dict[str, list[float]], late: list[float]) -> None:
    """Add one round's p50, p99 and max of ``late`` (sorted, µs) to ``figures``."""
    figures.setdefault("p50", []).append(late[len(late) // 2])
    figures.setdefault("p99", []).append(late[int(0.99 * (len(late) - 1))])
    figures.setdefault("max", []).append(late[-1])


def print_medians(header: list[str], results: dict[str, dict[str, list[float]]], cells: list[str]) -> None:
    """A markdown table: a row per contender, the median over rounds of each figure
    (``cells``: format strings over those medians, e.g. ``"{p99:.0f}"``)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, figures in results.items():
        med = {k: statistics.median(v) for k, v in figures.items()}
        print("| " + " | ".join([name, *(cell.format(**med) for cell in cells)]) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--store", choices=["embedded", "server"], default="embedded")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-insert-"))
    server = None
    if args.store == "server":
        server = common.ClickHouseServer(root / "ch").start()
        settings = ClickHouseSettings(mode="server", host="127.0.0.1", port=server.port, spool_path=root / "spool")
    else:
        settings = ClickHouseSettings(mode="embedded", embedded_path=root / "chdb", spool_path=root / "spool")
    settings.spool_path.mkdir(parents=True)
    client = connect(settings)
    ensure_schema(client, settings.database)
    quarantine = Quarantine(settings.spool_path)
    payload = ("lorem ipsum " * 200)[:2000]
    results: dict[str, dict[str, list[float]]] = {"json": {}, "typed": {}}
    chunk = 0
    try:
        for _ in range(args.rounds):
            for way in ("json", "typed"):
                chunk += 1
                records = [event_to_record(_event(chunk * args.rows + i, payload)) for i in range(args.rows)]
                token = f"bench-{way}-{chunk}"
                with LateWakeups() as probe:
                    c0, t0 = time.thread_time(), time.perf_counter()
                    if way == "json":
                        insert_batch(client, settings.database, records, token, quarantine, time.time(), screen=set())
                    else:
                        for table, names, columns, suffix in (
                            ("ai_events", EVENT_COLUMN_NAMES, event_columns, ":e"),
                            ("ai_attempts", ATTEMPT_COLUMN_NAMES, attempt_columns, ":a"),
                        ):
                            client.insert(
                                table,
                                columns(records),
                                column_names=list(names),
                                database=settings.database,
                                column_oriented=True,
                                settings={"insert_deduplication_token": token + suffix},
                            )
                    cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
                late = sorted(probe.late)
                r = results[way]
                r.setdefault("cpu", []).append(cpu / args.rows * 1e6)
                r.setdefault("wall", []).append(wall / args.rows * 1e6)
                note_lateness(r, late)
        rows = client.command("SELECT count() FROM ai_events")
        assert rows == 2 * args.rounds * args.rows, f"{rows} rows stored"
    finally:
        client.close()
        if server is not None:
            server.stop()
    print(f"{args.rounds} alternating rounds, one chunk of {args.rows} records each, store: {args.store}.\n")
    print_medians(
        ["insert", "thread CPU µs/row", "wall µs/row", "a call's GIL wait p99 µs", "max µs"],
        results,
        ["{cpu:.1f}", "{wall:.1f}", "{p99:.0f}", "{max:.0f}"],
    )


if __name__ == "__main__":
    main()
