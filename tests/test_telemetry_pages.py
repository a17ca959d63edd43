"""telemetry/pages.py: a mapped segment faulted in and synced without holding the GIL.

What must hold: ``populate`` faults in every page of the mapping (none is left to fault
on a line's copy); ``sync`` writes back the written range and only it (a page written
back is write-protected again, so the pages reserved ahead must stay dirty); neither
keeps the GIL while the kernel works (CPython's ``mmap.madvise`` and ``mmap.flush``
do); an older kernel or another system falls back to what the mmap module does.
The page figures are read from ``/proc/self/smaps``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from csctracker_ai_core.telemetry import pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and MADV_POPULATE_WRITE")

PAGE = mmap.PAGESIZE


@pytest.fixture
def mapping(tmp_path) -> Iterator[mmap.mmap]:
    fd = os.open(tmp_path / "segment", os.O_RDWR | os.O_CREAT, 0o600)
    os.posix_fallocate(fd, 0, 256 * PAGE)
    mm = mmap.mmap(fd, 256 * PAGE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    yield mm
    mm.close()
    os.close(fd)


def _kib(mm: mmap.mmap) -> dict[str, int]:
    """The smaps figures (kB) of ``mm``'s mapping."""
    view = ctypes.c_char.from_buffer(mm)
    address = ctypes.addressof(view)
    del view
    figures: dict[str, int] = {}
    ours = False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()[0]
            if not head.endswith(":"):
                ours = int(head.split("-")[0], 16) == address
            elif ours and head in ("Rss:", "Private_Dirty:", "Shared_Dirty:"):
                figures[head[:-1]] = int(line.split()[1])
    return figures


def test_populate_faults_in_every_page_of_the_mapping(mapping):
    assert _kib(mapping)["Rss"] == 0
    assert pages.populate(mapping) is True
    assert _kib(mapping)["Rss"] == 256 * PAGE // 1024


def test_sync_writes_back_the_written_pages_and_leaves_the_reserved_ones_faulted_in(mapping):
    pages.populate(mapping)
    written = 10 * PAGE + 100  # eleven pages touched
    mapping[:written] = b"x" * written
    dirty_before = _kib(mapping)["Private_Dirty"] + _kib(mapping)["Shared_Dirty"]
    pages.sync(mapping, written)
    after = _kib(mapping)
    assert dirty_before - (after["Private_Dirty"] + after["Shared_Dirty"]) == 11 * PAGE // 1024
    assert after["Rss"] == 256 * PAGE // 1024  # still mapped: no line will fault


def test_the_kernel_work_lets_other_threads_run(tmp_path):
    """A thread counting while another faults in 64 MiB: with the GIL held through the
    call (the mmap module's madvise) its longest gap is the whole call."""
    size = 64 * 1024 * 1024
    fd = os.open(tmp_path / "big", os.O_RDWR | os.O_CREAT, 0o600)
    os.posix_fallocate(fd, 0, size)
    mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    done = threading.Event()
    took: list[float] = []

    def fault_in() -> None:
        t = time.perf_counter()
        assert pages.populate(mm)
        took.append(time.perf_counter() - t)
        done.set()

    worker = threading.Thread(target=fault_in)
    gap = 0.0
    last = time.perf_counter()
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    worker.join()
    mm.close()
    os.close(fd)
    assert gap < took[0] / 2, (gap, took)


def test_the_calls_are_ctypes_calls_that_release_the_gil():
    # ctypes lets the GIL go around a call of a CDLL function (not a PyDLL one): the
    # property the module is for, pinned on the objects it uses.
    assert pages._CALLS is not None
    for fn in pages._CALLS:
        assert isinstance(fn, ctypes._CFuncPtr)
        assert not fn._flags_ & ctypes._FUNCFLAG_PYTHONAPI


def _failing(code: int):
    def call(*_args: object) -> int:
        ctypes.set_errno(code)
        return -1

    return call


def test_a_kernel_without_populate_is_asked_once_then_pages_fault_on_first_use(mapping, monkeypatch):
    calls: list[int] = []
    einval = _failing(errno.EINVAL)

    def madvise(*args: object) -> int:
        calls.append(1)
        return einval(*args)

    monkeypatch.setattr(pages, "_CALLS", (madvise, pages._CALLS[1]))
    monkeypatch.setattr(pages, "_populate_works", True)
    assert pages.populate(mapping) is False
    assert pages.populate(mapping) is False
    assert calls == [1]
    mapping[:5] = b"still"  # the mapping works as it is
    assert mapping[:5] == b"still"


def test_a_failed_sync_raises_oserror_with_its_errno(mapping, monkeypatch):
    monkeypatch.setattr(pages, "_CALLS", (pages._CALLS[0], _failing(errno.EIO)))
    mapping[:3] = b"abc"
    with pytest.raises(OSError) as info:
        pages.sync(mapping, 3)
    assert info.value.errno == errno.EIO


class _FlushSpy:
    """A mapping whose ``flush`` is recorded (an mmap's methods cannot be replaced)."""

    def __init__(self, mm: mmap.mmap) -> None:
        self._mm = mm
        self.flushed: list[tuple[int, int]] = []

    def flush(self, offset: int, size: int) -> None:
        self.flushed.append((offset, size))
        self._mm.flush(offset, size)

    def __len__(self) -> int:
        return len(self._mm)


def test_without_the_libc_calls_sync_is_the_mmap_modules_and_populate_does_nothing(mapping, monkeypatch):
    monkeypatch.setattr(pages, "_CALLS", None)
    assert pages.populate(mapping) is False
    assert _kib(mapping)["Rss"] == 0
    mapping[:10] = b"0123456789"
    spy = _FlushSpy(mapping)
    pages.sync(spy, 10)  # type: ignore[arg-type]
    assert spy.flushed == [(0, 10)]


def test_an_empty_length_syncs_nothing(mapping, monkeypatch):
    monkeypatch.setattr(pages, "_CALLS", (pages._CALLS[0], _failing(errno.EIO)))
    pages.sync(mapping, 0)  # would raise if it reached msync
