"""The writer's decisions as tables: when to deliver, how long to back off, whether to reopen chDB."""

from __future__ import annotations

import math

import pytest

from csctracker_ai_core.telemetry.policy import (
    DELIVERER_RESTART_S,
    BatchPolicy,
    backoff_delay,
    deliverer_restart_delay,
    delivery_delay,
    reopen_verdict,
)
from csctracker_ai_core.telemetry.records import TRUNCATION_MARKER_FORMAT, cap_text

P = BatchPolicy(interval_s=1.0, max_rows=100, max_bytes=1000, backoff_base_s=0.5, backoff_max_s=30.0)


@pytest.mark.parametrize(
    "rows, nbytes, oldest, last_insert, retry_at, force, expected",
    [
        (0, 0, 0.0, -math.inf, 0.0, False, math.inf),  # idle
        (1, 10, 100.0, -math.inf, 0.0, False, 1.0),  # a lone event waits for the batch window
        (1, 10, 99.0, -math.inf, 0.0, False, 0.0),  # window over
        (5, 10, 99.0, 99.8, 0.0, False, 0.8),  # at most one insert per interval
        (100, 10, 100.0, 99.9, 0.0, False, 0.0),  # full batch: now
        (1, 1000, 100.0, 99.9, 0.0, False, 0.0),  # full by bytes
        (100, 10, 100.0, 99.9, 105.0, False, 5.0),  # but never inside a backoff
        (1, 10, 100.0, 99.9, 105.0, True, 0.0),  # flush/close ignore both
    ],
)
def test_delivery_delay(rows, nbytes, oldest, last_insert, retry_at, force, expected):
    """Delivery waits for the batch window, respects the insert rate and the backoff, unless forced."""
    got = delivery_delay(
        100.0,
        rows=rows,
        nbytes=nbytes,
        oldest_at=oldest,
        last_insert_at=last_insert,
        retry_at=retry_at,
        policy=P,
        force=force,
    )
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    "failures, lo, hi", [(0, 0, 0), (1, 0.25, 0.5), (2, 0.5, 1.0), (4, 2.0, 4.0), (20, 15.0, 30.0)]
)
def test_backoff_delay_is_exponential_capped_and_jittered(failures, lo, hi):
    """Exponential from the base, capped, jitter within [50 %, 100 %]."""
    assert backoff_delay(failures, P, rand=lambda: 0.0) == pytest.approx(lo)
    assert backoff_delay(failures, P, rand=lambda: 1.0) == pytest.approx(hi)


def test_cap_text_never_splits_a_character_and_says_so():
    """The cut lands on a character boundary and the marker gives kept/total bytes."""
    text, total = cap_text("aé" * 10, 6)  # 30 bytes
    assert total == 30
    assert text == "aéaé" + TRUNCATION_MARKER_FORMAT.format(kept=6, total=30)
    assert cap_text("short", 6) == ("short", 5)


@pytest.mark.parametrize("case", ["external delivery", "server unreachable"])
def test_a_writer_that_cannot_insert_sleeps_until_it_can(tmp_path, case):
    """A writer without a client (a spooler handing off every 3 s, or one waiting 5 s or more to
    reconnect) wakes for its next fsync, hand-off or connection attempt. Before, once the
    1 s batch window of its waiting rows was over, the delivery delay was 0 and the thread
    woke every 5 ms (200 times a second, each time taking the GIL from the calls)."""
    from test_telemetry_support import make_event

    from csctracker_ai_core.clock import FakeClock
    from csctracker_ai_core.telemetry.settings import ClickHouseSettings
    from csctracker_ai_core.telemetry.writer import TelemetryWriter

    def unreachable(_settings):
        raise ConnectionRefusedError("nobody listens")

    clock = FakeClock()
    external = case == "external delivery"
    settings = ClickHouseSettings(
        mode="server",
        host="127.0.0.1",
        port=9,
        spool_path=tmp_path / "spool",
        delivery="external" if external else "thread",
    )
    w = TelemetryWriter(
        settings, clock=clock, connect=unreachable, start=False, handoff_interval_s=3.0, backoff_base_s=10.0
    )
    try:
        w.record(make_event(1))
        w._step(False)  # what the thread does: fsync (next in 0.5 s), try to connect
        assert w.stats().role == ("spooler" if external else "starting")
        clock.advance(1.2)  # the batch window of the waiting row is over
        w._step(False)
        assert w._spool.active_info()[0] == 1  # still waiting: not handed off, not inserted
        assert w._next_wait() == pytest.approx(0.5)  # the next fsync, not 5 ms
    finally:
        w.close(0)


@pytest.mark.parametrize(
    ("reopens", "loads", "verdict"),
    [
        (1, [(40, 1024), (20, 4096)], "reopen"),
        (9, [(300, 1024)], "reopen"),
        (10, [(300, 1024)], "warn"),  # every REOPEN_WARN_EVERY reopenings
        (20, [(300, 1024)], "warn"),
        (11, [(819, 1024)], "reopen"),  # just under 80 %
        (11, [(820, 1024)], "stop"),  # 80 % of the limit: stop before it runs out
        (10, [(900, 1024)], "stop"),  # stopping wins over warning
        (11, [(300, 1_048_576), (3277, 4096)], "stop"),  # tasks (pids.max) first
        (11, [(300, 1_048_576), (3276, 4096)], "reopen"),
        (500, [(10_000, None), (900, None)], "warn"),  # no limit known: never stop
        (501, [(10_000, None)], "reopen"),
        (3, [(5000, 0)], "reopen"),  # a nonsense limit is no limit
        (3, [], "reopen"),
    ],
)
def test_reopen_verdict(reopens, loads, verdict):
    assert reopen_verdict(reopens, loads) == verdict


@pytest.mark.parametrize(
    ("lived_s", "young_before", "expected"),
    [
        (3600.0, 0, (0.0, 0)),  # lived long: replaced at once
        (DELIVERER_RESTART_S, 4, (0.0, 0)),  # 30 s is long enough, and resets the count
        (0.0, 0, (1.0, 1)),  # died at once: 1 s
        (29.9, 0, (1.0, 1)),
        (5.0, 1, (2.0, 2)),
        (5.0, 2, (4.0, 3)),
        (5.0, 4, (16.0, 5)),
        (5.0, 5, (DELIVERER_RESTART_S, 6)),  # 32 s capped
        (5.0, 5000, (DELIVERER_RESTART_S, 5001)),  # a loop of days: no float overflow (2.0 ** 5000)
    ],
)
def test_deliverer_restart_delay(lived_s, young_before, expected):
    assert deliverer_restart_delay(lived_s, young_before) == expected


def _fake_root(tmp_path, cgroup_lines, files):
    (tmp_path / "proc/self/task").mkdir(parents=True)
    for tid in ("1", "2", "3"):
        (tmp_path / "proc/self/task" / tid).mkdir()
    (tmp_path / "proc/self/cgroup").write_text("".join(line + "\n" for line in cgroup_lines))
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("cgroup", "files", "expected"),
    [
        # cgroup v2 (one hierarchy): the whole cgroup's tasks against its pids.max
        (
            ["0::/kubepods/pod1"],
            {"sys/fs/cgroup/kubepods/pod1/pids.max": "4096\n", "sys/fs/cgroup/kubepods/pod1/pids.current": "812\n"},
            (812, 4096),
        ),
        # cgroup v1: the pids controller's own hierarchy
        (
            ["8:pids:/docker/abc", "4:memory:/docker/abc"],
            {"sys/fs/cgroup/pids/docker/abc/pids.max": "512", "sys/fs/cgroup/pids/docker/abc/pids.current": "37"},
            (37, 512),
        ),
        # "max": no cgroup limit, so RLIMIT_NPROC against this process's 3 threads
        (["0::/"], {"sys/fs/cgroup/pids.max": "max", "sys/fs/cgroup/pids.current": "90"}, "nproc"),
        # nothing readable, or a line that is not a cgroup line
        (["garbage"], {}, "nproc"),
    ],
)
def test_the_task_limit_is_read_from_the_cgroup_or_rlimit_nproc(tmp_path, cgroup, files, expected):
    import resource

    from csctracker_ai_core.telemetry.limits import tasks

    root = _fake_root(tmp_path, cgroup, files)
    if expected == "nproc":
        soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        expected = (3, None if soft == resource.RLIM_INFINITY else soft)
    assert tasks(root) == expected
