"""The spool's mapped segments: lines copied into a preallocated shared mapping.

What must hold (telemetry/spool.py): a line is in the page cache, readable by any
process, as soon as ``append`` returns, with no system call on the way (a syscall lets
the writer thread take the GIL from the call); a sealed segment is a plain file of its
lines; a killed process's mapped segment (zeros after its data) replays its records
and nothing else; the spare segment is invisible to readers, claimers and the cap;
where the space cannot be reserved, plain appends take over.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_telemetry_support import make_event, read_records

from csctracker_ai_core.telemetry import spool as spool_module
from csctracker_ai_core.telemetry.records import encode_record, event_to_record
from csctracker_ai_core.telemetry.spool import DEFAULT_PREALLOCATE_BYTES, Spool

PAGE = 4096


def _line(i: int, size: int = 0) -> bytes:
    return encode_record(event_to_record(make_event(i, result="r" * size)))


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.jsonl"))


def test_a_line_is_readable_from_the_file_before_any_sync_and_without_a_write_call(tmp_path, monkeypatch):
    s = Spool(tmp_path / "spool", preallocate_bytes=64 * PAGE)
    s.append(_line(0), 1.0)  # the first segment is created (and mapped) by this call
    seg = s._active
    assert seg is not None and seg.mm is not None and seg.capacity == 64 * PAGE

    def no_write(*_a, **_k):
        raise AssertionError("the call path must not make a write system call on a mapped segment")

    monkeypatch.setattr(spool_module.os, "write", no_write)
    second = _line(1)
    s.append(second, 2.0)
    monkeypatch.undo()
    # Another reader of the file (what a replaying process sees) has both lines now.
    data = (tmp_path / "spool" / seg.path.name).read_bytes()
    assert data.rstrip(b"\0").endswith(second)
    assert data.count(b"\n") == 2
    assert len(data) == 64 * PAGE  # the reservation, zeros after the data


def test_a_sealed_segment_is_cut_back_to_its_lines(tmp_path):
    s = Spool(tmp_path / "spool", preallocate_bytes=64 * PAGE)
    lines = [_line(i) for i in range(5)]
    for i, line in enumerate(lines):
        s.append(line, float(i))
    seg = s.seal_active()
    assert seg is not None and seg.mm is None and seg.capacity == 0
    assert seg.path.read_bytes() == b"".join(lines)  # no zeros left: a plain file
    s.fsync_segment(seg)  # the new size is flushed too (no error on an unmapped segment)
    records, offset, consumed = read_records(s, seg, 100, 1 << 20)
    assert consumed == 5 and offset == len(b"".join(lines))  # read back from the file
    assert [r["event_id"] for r in records] == [r["event_id"] for r in map(_decode, lines)]


def _decode(line: bytes) -> dict:
    from csctracker_ai_core.telemetry.records import decode_record

    return decode_record(line)


def test_a_full_segment_is_sealed_and_the_next_line_starts_another(tmp_path):
    s = Spool(tmp_path / "spool", preallocate_bytes=4 * PAGE)
    lines = [_line(i, size=1500) for i in range(12)]  # ~2 kB each: a handful per 16 KiB segment
    for i, line in enumerate(lines):
        s.append(line, float(i))
    retired = s.take_retired()
    assert len(retired) >= 2
    last = s.seal_active()
    assert last is not None
    got = b"".join(seg.path.read_bytes() for seg in [*retired, last])
    assert got == b"".join(lines)  # every line once, in order, no zeros anywhere
    assert all(seg.mm is None and seg.sealed for seg in [*retired, last])


def test_a_line_larger_than_a_segment_takes_a_plain_append(tmp_path):
    s = Spool(tmp_path / "spool", preallocate_bytes=2 * PAGE)
    big = _line(0, size=3 * PAGE)
    s.append(big, 1.0)
    seg = s._active
    assert seg is not None and seg.mm is None  # os.write path
    s.append(_line(1), 2.0)
    sealed = s.seal_active()
    assert sealed is not None and sealed.path.read_bytes().startswith(big)
    assert sealed.records == 2


def test_a_cap_too_small_for_the_reservation_keeps_plain_appends(tmp_path):
    s = Spool(tmp_path / "spool", max_bytes=DEFAULT_PREALLOCATE_BYTES * 8)
    assert s.preallocate_bytes == 0
    s.append(_line(0), 1.0)
    assert s._active is not None and s._active.mm is None


def test_when_the_disk_cannot_reserve_the_space_the_segment_appends(tmp_path, monkeypatch):
    def enospc(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.os, "posix_fallocate", enospc)
    s = Spool(tmp_path / "spool", preallocate_bytes=64 * PAGE)
    line = _line(0)
    s.append(line, 1.0)
    seg = s._active
    assert seg is not None and seg.mm is None
    assert seg.path.read_bytes() == line  # not a byte of reservation left behind


def test_the_spare_is_invisible_until_it_takes_a_line(tmp_path):
    d = tmp_path / "spool"
    s = Spool(d, preallocate_bytes=64 * PAGE)
    s.prepare_spare(0.0)
    assert s._spare is None  # only a process that has appended gets one
    s.append(_line(0), 1.0)
    first = s.seal_active()
    s.prepare_spare(2.0)
    spare = s._spare
    assert spare is not None and spare.mm is not None
    assert spare.path.name.startswith(".") and spare.path.exists()
    assert _segments(d) == [first.path]  # readers and claimers see no spare
    used = s.measure()
    assert used == first.size  # nor does the cap: a reservation is not data
    s.append(_line(1), 3.0)
    assert s._active is spare and s._spare is None
    assert not spare.path.name.startswith(".") and spare.path in _segments(d)
    s.prepare_spare(4.0)
    s.discard_spare()
    assert not [p for p in d.iterdir() if p.name.startswith(".")]


def test_a_stale_hidden_file_of_a_dead_process_is_removed_and_a_live_one_kept(tmp_path):
    d = tmp_path / "spool"
    live = Spool(d, preallocate_bytes=64 * PAGE)
    live.append(_line(0), 1.0)
    live.prepare_spare(1.0)
    assert live._spare is not None
    dead = d / ".seg-00000000000000000001-1-abcdef01.jsonl.new"
    dead.write_bytes(b"\0" * PAGE)
    old = time.time() - 3600
    for p in (dead, live._spare.path):
        os.utime(p, (old, old))
    other = Spool(d)
    assert other.claim_orphans(exclude=set()) == []  # the live segment is locked
    assert not dead.exists()  # nobody held it: gone
    assert live._spare.path.exists()  # held by a live process: kept


def test_a_killed_process_mapped_segment_replays_its_records_then_is_deleted(tmp_path):
    """A real process appends to a mapped segment and is SIGKILLed: the file ends in zeros.
    Replay gives exactly its records (a half-copied one is skipped) and finishes the file."""
    d = tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path[:0] = [{str(Path(__file__).resolve().parents[1])!r}, {str(Path(__file__).resolve().parent)!r}]
        from csctracker_ai_core.telemetry.spool import Spool
        from csctracker_ai_core.telemetry.records import encode_record, event_to_record
        from test_telemetry_support import make_event
        s = Spool(__import__("pathlib").Path({str(d)!r}), preallocate_bytes={64 * PAGE})
        for i in range(7):
            s.append(encode_record(event_to_record(make_event(i, event_id=f"ev-{{i}}"))), float(i))
        seg = s._active
        # A copy cut half-way, as a kill inside the copy would leave it.
        line = encode_record(event_to_record(make_event(7, event_id="ev-7")))
        seg.mm[seg.size : seg.size + len(line) // 2] = line[: len(line) // 2]
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    [path] = _segments(d)
    assert path.stat().st_size == 64 * PAGE  # the reservation is still there
    s = Spool(d)
    [seg] = s.claim_orphans(exclude=set())
    records, offset, consumed = read_records(s, seg, 100, 1 << 20)
    assert [r["event_id"] for r in records] == [f"ev-{i}" for i in range(7)]
    assert consumed == 8  # the torn one counted as consumed, never delivered
    s.acknowledge(seg, consumed, offset)
    assert s.is_done(seg)
    s.delete(seg)
    assert not _segments(d)


def test_a_segment_of_only_zeros_is_finished_with_nothing_delivered(tmp_path):
    d = tmp_path / "spool"
    d.mkdir(mode=0o700)
    (d / "seg-00000000000000000001-1-abcdef01.jsonl").write_bytes(b"\0" * PAGE)
    s = Spool(d)
    [seg] = s.claim_orphans(exclude=set())
    records, offset, consumed = read_records(s, seg, 100, 1 << 20)
    assert records == [] and consumed == 0 and offset == PAGE
    s.acknowledge(seg, 0, offset)
    assert s.is_done(seg)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_never_writes_into_the_parent_mapping(tmp_path):
    d = tmp_path / "spool"
    s = Spool(d, preallocate_bytes=4 * PAGE)
    while not s._retired:  # a full segment waits for the parent's writer thread
        s.append(_line(0, size=1500), 1.0)
    s.prepare_spare(1.0)
    parent_seg, parent_spare = s._active, s._spare
    before = parent_seg.path.read_bytes()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's exit code is the assertion
        ok = True
        try:
            s.forget_inherited()
            ok = s.take_retired() == []  # the parent delivers its full segment, not the child
            s.append(_line(1), 2.0)
            ok = ok and s._active is not parent_seg and s._active is not parent_spare
            ok = ok and s._active.path != parent_seg.path
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent_seg.path.read_bytes() == before  # the parent's segment untouched
    assert parent_spare.path.exists()  # and its spare kept (not the child's to delete)
    assert len(s.take_retired()) == 1
    s.append(_line(2), 3.0)
    assert s._active is parent_seg


@pytest.mark.parametrize("step", [7, 64, 1000, 1 << 22])
def test_chunks_read_in_steps_are_the_file_lines_whatever_the_step(tmp_path, monkeypatch, step):
    """The file is read a step at a time: lines that cross a step, and a line longer than
    a step, come back whole and in order, the chunk rule cutting where it always did."""
    monkeypatch.setattr(spool_module, "_READ_STEP", step)
    s = Spool(tmp_path / "spool", preallocate_bytes=0)
    lines = [_line(i, size=(i * 97) % 700) for i in range(30)]
    for line in lines:
        s.append(line, 1.0)
    seg = s.seal_active()
    got: list[bytes] = []
    chunks = []
    while (chunk := s.read_lines(seg, 4, 2500))[2]:
        got += chunk[0]
        chunks.append(len(chunk[0]))
        s.acknowledge(seg, chunk[2], chunk[1])
    assert got == lines
    assert seg.offset == sum(map(len, lines))
    expected, rows, size = [], 0, 0  # the rule: up to 4 lines, the one crossing 2500 bytes included
    for line in lines:
        rows, size = rows + 1, size + len(line)
        if rows == 4 or size >= 2500:
            expected.append(rows)
            rows = size = 0
    assert chunks == expected + ([rows] if rows else [])


def test_a_torn_tail_is_skipped_when_the_file_is_read_in_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "_READ_STEP", 50)
    s = Spool(tmp_path / "spool", preallocate_bytes=0)
    whole = [_line(i) for i in range(3)]
    for line in whole:
        s.append(line, 1.0)
    seg = s.seal_active()
    with open(seg.path, "ab") as fh:
        fh.write(b'{"torn": tr')  # a killed writer's last copy
    lines, next_offset, consumed = s.read_lines(seg, 100, 1 << 20)
    assert lines == whole and consumed == 4
    assert next_offset == seg.path.stat().st_size
