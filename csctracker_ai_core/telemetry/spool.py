"""The durable local spool: every event is on disk before the call returns.

Layout (``settings.spool_path``, by default ``<data dir>/spool``)::

    seg-<time_ns>-<pid>-<random>.jsonl     one JSON record per line, append-only

* A process appends to its *active* segment, one line per event, handed to the OS
  before the call returns (no fsync: a ``SIGKILL`` right after loses nothing, only a
  machine crash inside the fsync interval could). The writer thread syncs the active
  segment every ``fsync_interval_s``.
* The active segment is *mapped*: ``preallocate_bytes`` are reserved on disk
  (``posix_fallocate``), mapped shared and faulted in writable ahead of time, and a
  line is copied into the mapping (the page cache itself, so it survives the process
  as a ``write`` would). The call path then makes no system call: a syscall lets the
  writer thread take the GIL, and the call waited for it (34 us a ``write`` measured
  with the writer busy, 1-2 us a copy). Sealing unmaps the segment and cuts the file
  back to its last record, so a sealed segment is a plain file of whole lines. Where
  the space cannot be reserved (a full or tiny disk, a cap too small for it) or for a
  line larger than a segment, the segment takes one ``os.write`` per event
  (``O_APPEND``) instead. A mapped segment left by a killed process ends in zeros,
  which replay reads as its end. The writer keeps one *spare* segment ready, so no
  call pays for creating one.
* Every segment a process writes or delivers is held with an exclusive
  ``fcntl.flock``. Segments nobody holds belong to a dead process (the kernel drops
  the lock with the process) or were handed off (embedded mode, see writer.py): any
  writer that can deliver *claims* them with a non-blocking flock, so two live
  processes never replay the same segment.
* A new segment is created under a hidden temporary name, locked, then renamed into
  place, so no other process can claim it between its creation and its lock.
* A segment is deleted once ClickHouse acknowledged all its records. A torn last line
  (process killed inside ``os.write``) is skipped on replay: that call had not returned.
* A short write (disk full) is rolled back: the segment is cut back to its last whole
  record, or, if even that fails, sealed so the next event starts a new segment; the
  event is reported dropped, never glued to the next one.
* The spool has a size cap (``max_bytes``): past it new events are refused (the
  oldest, the audit trail, are kept); :meth:`Spool.usage` tells the writer how full it is.
* Files are 0600, folders 0700, never opened through a symlink (see paths.py).

Names sort by creation time, so replay goes oldest first.

Fork: a segment belongs to the process that created it. A forked child forgets the
segments it inherited (closing only its copies of their descriptors: the flock
stays with the parent) and starts its own, so the parent never delivers, then
deletes, a file holding lines it did not write.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import TelemetryError
from ..paths import open_private_file, private_dir
from . import pages
from .settings import DEFAULT_SPOOL_MAX_BYTES

__all__ = [
    "Segment",
    "Spool",
    "SpoolFullError",
    "CLAIM_LIMIT",
    "SEGMENT_PREFIX",
    "SEGMENT_SUFFIX",
    "DEFAULT_SPOOL_MAX_BYTES",
    "forget_segment",
]

logger = logging.getLogger(__name__)

#: Segments one claim takes at most (a claim holds each one's descriptor until delivered).
CLAIM_LIMIT = 64
SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".jsonl"
_HIDDEN_SUFFIX = ".new"  # a segment being created, or a spare: never claimed, never read
_STALE_HIDDEN_S = 60.0  # a hidden file nobody holds for this long was left by a dead process

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

DEFAULT_PREALLOCATE_BYTES = 4 * 1024 * 1024
"""Bytes reserved and mapped per active segment (see the module docstring)."""


class SpoolFullError(TelemetryError):
    """The spool reached its size cap (``CSCTRACKER_AI_SPOOL_MAX_BYTES``): the event was not kept."""


@dataclass(eq=False)
class Segment:
    """A spool file this process holds (flocked)."""

    path: Path
    fd: int
    own: bool  # written by this process (False: claimed from another one)
    records: int = 0  # records appended (own) or -1 when unknown (claimed, not yet read)
    size: int = 0
    created_at: float = 0.0  # clock time of the first record
    sealed: bool = False
    delivered: int = 0  # records acknowledged so far
    offset: int = 0  # byte offset of the first record not yet acknowledged
    dirty: bool = False  # written since the last fsync
    torn: bool = False  # a short write left a partial last line (sealed at once)
    pid: int = field(default_factory=os.getpid)  # the process that holds it
    mm: mmap.mmap | None = None  # the writable mapping while active and preallocated
    capacity: int = 0  # bytes mapped (0: appended with os.write)


class Spool:
    """Append-only segment files with per-file locks. Thread-safe."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        preallocate_bytes: int = DEFAULT_PREALLOCATE_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # A reservation must stay a small share of the cap (the cap counts it): small
        # caps keep plain appends.
        size = (preallocate_bytes // mmap.PAGESIZE) * mmap.PAGESIZE
        self.preallocate_bytes = size if size > 0 and size * 64 <= max_bytes else 0
        self._lock = threading.Lock()
        # Held while the writer thread creates a spare (system calls: milliseconds): not
        # the appends' lock, which only takes the descriptor. A fork waits for both.
        self._create_lock = threading.Lock()
        self._active: Segment | None = None
        self._spare: Segment | None = None  # created ahead by the writer thread (prepare_spare)
        # Called (lock held) when an append needs a new segment: the writer makes the next spare.
        self.on_segment_needed: Callable[[], None] | None = None
        self._retired: list[Segment] = []  # sealed by a failed roll-back, for the writer to take
        self._pid = os.getpid()
        # Every segment descriptor this spool holds, opened and closed under _lock (which
        # a fork waits for): a child closes its copies of exactly these.
        self._fds: set[int] = set()
        private_dir(self.directory)  # raises TelemetryError when it cannot be used
        self._disk_bytes = 0  # spool size: last measure() plus this process's appends since
        self._appended = 0  # bytes this process ever appended (measure() uses the difference)
        self.measure()

    def forget_inherited(self) -> None:
        """In a forked child: let go of every segment inherited (never written or read here).

        Only this process's copies of the descriptors are closed: the files and their
        locks stay the parent's (a flock belongs to the open file, which the parent holds).
        """
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        seg, self._active = self._active, None
        spare, self._spare = self._spare, None
        retired, self._retired = self._retired, []  # the parent's writer delivers these
        self._pid = os.getpid()
        fds, self._fds = self._fds, set()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        for inherited in (seg, spare, *retired):
            if inherited is not None:
                forget_segment(inherited)

    # ------------------------------------------------------------------ writing

    def _new_segment(self, now: float, *, mapped: bool, hidden: bool = False) -> Segment:
        """A new segment of this process, locked before anyone can see it.

        ``hidden``: left under its temporary name (a spare: no reader or claimer looks
        at it until :meth:`_next_segment` renames it into place)."""
        name = f"{SEGMENT_PREFIX}{int(now * 1e9):020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        tmp = self.directory / f".{name}{_HIDDEN_SUFFIX}"
        fd = open_private_file(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        mm: mmap.mmap | None = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if mapped:
                mm = _map(fd, self.preallocate_bytes)
            path = tmp
            if not hidden:
                path = self.directory / name
                os.rename(tmp, path)
        except BaseException:
            if mm is not None:
                mm.close()
            os.close(fd)
            raise
        return Segment(path=path, fd=fd, own=True, created_at=now, mm=mm, capacity=len(mm) if mm is not None else 0)

    def prepare_spare(self, now: float) -> None:
        """Create the next active segment ahead of time (the writer thread calls this).

        Reserving and faulting in a mapping takes milliseconds: done here, no call waits
        for it. Only in a process that has appended, and while nothing is ready."""
        if not self.preallocate_bytes or self._spare is not None or not self._appended:
            return
        try:
            # A fork never sees a descriptor the spool does not know: it waits for this
            # lock, and the descriptor is known (under the appends' lock) before it is let go.
            with self._create_lock:
                spare = self._new_segment(now, mapped=True, hidden=True)
                with self._lock:
                    self._fds.add(spare.fd)
        except (OSError, TelemetryError) as exc:
            logger.debug("could not create a spare telemetry segment in %s: %s", self.directory, exc)
            return
        if spare.mm is not None:
            pages.populate(spare.mm)  # without the GIL: appends go on meanwhile
        with self._lock:
            if self._spare is None and self._pid == os.getpid():
                self._spare = spare
                return
        self._discard(spare)

    def discard_spare(self) -> None:
        """Delete the spare segment (never written): at close."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            self._discard(spare)

    def _discard(self, seg: Segment) -> None:
        with self._lock:
            self._discard_locked(seg)

    def _discard_locked(self, seg: Segment) -> None:
        try:
            os.unlink(seg.path)
        except OSError:
            pass
        self._drop_locked(seg)

    def _next_segment(self, now: float, size: int) -> Segment:
        """The segment that takes a line of ``size`` bytes when none is active (lock held)."""
        if self.on_segment_needed is not None:
            self.on_segment_needed()
        spare = self._spare
        if spare is not None and size <= spare.capacity:
            self._spare = None
            final = spare.path.with_name(spare.path.name[1 : -len(_HIDDEN_SUFFIX)])
            try:
                os.rename(spare.path, final)  # into place: from now on it holds records
            except OSError as exc:
                logger.debug("spare telemetry segment unusable (%s); a new one instead", exc)
                self._discard_locked(spare)
            else:
                spare.path = final
                spare.created_at = now
                return spare
        # No spare ready (the first event, or the writer thread busy inserting): made here,
        # faulted in at once. That one append takes a few ms; spreading the faults over
        # the segment's lines would slow one in a hundred instead of one in a thousand.
        seg = self._new_segment(now, mapped=0 < size <= self.preallocate_bytes)
        if seg.mm is not None:
            pages.populate(seg.mm)
        self._fds.add(seg.fd)
        return seg

    def append(self, line: bytes, now: float) -> tuple[int, int, int]:
        """Write one encoded record to the active segment (raises ``OSError`` on disk failure).

        No copy of ``line`` is kept: the writer reads the segment back (from the page
        cache) when it delivers it. Returns the active
        segment's ``(records, bytes)`` and the spool's bytes used, read under the lock
        the append took (the caller needs them after every append).
        """
        if self._pid != os.getpid():  # forked without our hook having run: never share a file
            self.forget_inherited()
        size = len(line)
        with self._lock:
            if self._disk_bytes + size > self.max_bytes:
                raise SpoolFullError(
                    f"the telemetry spool {self.directory} reached its cap of {self.max_bytes} bytes "
                    "(CSCTRACKER_AI_SPOOL_MAX_BYTES); new events are dropped until ClickHouse takes "
                    "the backlog. Check why delivery fails (stats().last_error) or raise the cap."
                )
            seg = self._active
            if seg is not None and seg.mm is not None and seg.size + size > seg.capacity:
                # Full: sealed here, unmapped and delivered by the writer thread
                # (take_retired; it may be flushing this mapping right now); the line
                # starts the next segment.
                self._active = None
                seg.sealed = True
                self._retired.append(seg)
                seg = None
            if seg is None:
                seg = self._active = self._next_segment(now, size)
            mm = seg.mm
            if mm is not None:
                mm[seg.size : seg.size + size] = line  # no system call, so the GIL stays here
                written = size
            else:
                written = os.write(seg.fd, line)  # raises (nothing written) e.g. on ENOSPC
                if written != size:
                    self._roll_back(seg, written, size)
            seg.records += 1
            seg.size += written
            self._disk_bytes += written
            self._appended += written
            seg.dirty = True
            return seg.records, seg.size, self._disk_bytes

    def _roll_back(self, seg: Segment, written: int, wanted: int) -> None:
        """A short write (disk full) left part of a line: cut it off, or retire the segment.

        Called with the lock held. Either way the partial line can never be glued to the
        next record; the caller's event is reported dropped (this raises).
        """
        try:
            os.ftruncate(seg.fd, seg.size)  # shrinking needs no free space
            where = "rolled back to its last whole record"
        except OSError as exc:
            # The torn tail stays; sealing means nothing is appended after it, and a
            # sealed segment's torn last line is skipped on replay.
            self._active = None
            seg.sealed = True
            seg.torn = True
            self._retired.append(seg)
            self._disk_bytes += written
            where = f"sealed with a torn tail (truncate failed: {exc}); the next event starts a new segment"
        raise OSError(
            errno.ENOSPC, f"short write to {seg.path.name} ({written} of {wanted} bytes, disk full?); {where}"
        )

    def take_retired(self) -> list[Segment]:
        """Segments sealed by :meth:`append` itself (full, or a torn tail it could not cut),
        oldest first, each a plain file of its lines (the writer thread calls this)."""
        with self._lock:
            retired, self._retired = self._retired, []
        for seg in retired:  # outside the lock: out of every append's reach already
            _unmap(seg)
        return retired

    def usage(self) -> tuple[int, int]:
        """``(bytes used, cap)`` of the spool folder as last measured plus this process's appends."""
        with self._lock:
            return self._disk_bytes, self.max_bytes

    def measure(self) -> int:
        """Re-measure the spool folder (every process's segments); returns the bytes used.

        Appends made while the folder is scanned are added on top (they may be counted
        twice: an over-estimate keeps the cap a cap).
        """
        with self._lock:
            appended_before = self._appended
        total = 0
        try:
            with os.scandir(self.directory) as it:
                for entry in it:
                    # Hidden files (spares, segments being created) never hold a record.
                    if entry.name.endswith(SEGMENT_SUFFIX) and not entry.name.startswith("."):
                        try:
                            total += entry.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:
                            continue
        except OSError as exc:
            logger.error("cannot measure the telemetry spool %s: %s", self.directory, exc)
            return self._disk_bytes
        with self._lock:
            # This process's reservation is not data (another live process's active segment
            # counts whole: at most one reservation each, an over-estimate that keeps the
            # cap a cap).
            active = self._active
            reserved = active.capacity - active.size if active is not None and active.mm is not None else 0
            self._disk_bytes = max(0, total - reserved) + (self._appended - appended_before)
            return self._disk_bytes

    def active_info(self) -> tuple[int, int, float]:
        """``(records, bytes, created_at)`` of the active segment (zeros when none)."""
        with self._lock:
            seg = self._active
            return (seg.records, seg.size, seg.created_at) if seg is not None else (0, 0, 0.0)

    def seal_active(self) -> Segment | None:
        """Close the active segment to appends; the next append starts a new one."""
        with self._lock:
            seg, self._active = self._active, None
        if seg is not None:
            seg.sealed = True
            _unmap(seg)  # outside the lock (milliseconds for a reservation): no append can reach it now
        return seg

    def fsync(self) -> None:
        """fsync the active segment if written since the last fsync."""
        with self._lock:
            seg = self._active
            if seg is None or not seg.dirty:
                return
            seg.dirty = False
            fd, mm, size = seg.fd, seg.mm, seg.size
        # Outside the lock: record() must never wait for a disk flush. The fd stays
        # open: only the writer thread (our caller) closes segment files, and only it
        # unmaps the active segment (seal_active), so the mapping outlives this flush.
        try:
            if mm is not None:
                # The written range only (a whole-file fsync would write out the
                # pages reserved ahead and make each fault again), without the GIL.
                pages.sync(mm, size)
            else:
                os.fsync(fd)
        except (OSError, ValueError):
            seg.dirty = True
            raise

    def fsync_segment(self, seg: Segment) -> None:
        if seg.dirty:
            os.fsync(seg.fd)
            seg.dirty = False

    # ------------------------------------------------------------------ claiming

    def claim_orphans(self, exclude: set[Path], limit: int = CLAIM_LIMIT) -> list[Segment]:
        """Lock and return segments no live process holds (oldest first, at most ``limit``)."""
        claimed: list[Segment] = []
        try:
            listing = os.listdir(self.directory)
        except OSError as exc:
            logger.error("cannot list the telemetry spool %s: %s", self.directory, exc)
            return claimed
        names = sorted(n for n in listing if n.startswith(SEGMENT_PREFIX) and n.endswith(SEGMENT_SUFFIX))
        for name in listing:
            if name.startswith("." + SEGMENT_PREFIX) and name.endswith(_HIDDEN_SUFFIX):
                self._remove_stale_hidden(self.directory / name)
        for name in names:
            if len(claimed) >= limit:
                break
            path = self.directory / name
            if path in exclude:
                continue
            with self._lock:  # a fork never sees a descriptor the spool does not know
                try:
                    fd = os.open(path, os.O_RDONLY | _CLOEXEC | _NOFOLLOW)
                except FileNotFoundError:
                    continue  # delivered and deleted meanwhile
                except OSError as exc:  # a symlink planted in the spool, or unreadable
                    logger.error("ignoring spool entry %s: %s", path.name, exc)
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)  # a live process holds it
                    continue
                st = os.fstat(fd)
                if st.st_nlink == 0 or not stat.S_ISREG(st.st_mode):  # deleted meanwhile, or not a file
                    os.close(fd)
                    continue
                self._fds.add(fd)
            claimed.append(Segment(path=path, fd=fd, own=False, records=-1, size=st.st_size, sealed=True))
        return claimed

    def _remove_stale_hidden(self, path: Path) -> None:
        """Delete a spare or half-created segment of a dead process (it never held records:
        a segment takes its first record only once renamed into place). The age guard
        leaves a live process the time between creating its file and locking it."""
        with self._lock:  # a fork never sees a descriptor the spool does not know
            try:
                fd = os.open(path, os.O_RDONLY | _CLOEXEC | _NOFOLLOW)
            except OSError:
                return
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or time.time() - st.st_mtime < _STALE_HIDDEN_S:
                    return
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while its process lives
                os.unlink(path)
            except OSError:
                pass
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ reading

    def read_lines(self, seg: Segment, max_records: int, max_bytes: int) -> tuple[list[bytes], int, int]:
        """The next chunk, as lines: from the first unacknowledged one while fewer than
        ``max_records`` are taken and fewer than ``max_bytes`` read (the line crossing
        ``max_bytes`` is included).

        Every segment is read from its file, this process's own (sealed first) as well
        as one claimed from another, so a chunk's bounds depend only on the segment's
        lines and where the previous chunk ended: a process replaying the file cuts the
        chunks its writer cut.

        Returns ``(lines, next_offset, records_consumed)``; ``records_consumed`` may
        exceed ``len(lines)`` when a torn last line was skipped. The lines are whole
        (each ends in a newline) but not checked: see :func:`~.records.record_of_line`.
        """
        lines: list[bytes] = []
        consumed = 0
        offset = seg.offset
        size = 0
        for line in _lines_from(seg.fd, offset):
            if len(lines) >= max_records or size >= max_bytes:
                break
            zero = line.find(b"\0")
            if zero >= 0:
                # The unused reservation of a mapped segment whose process was killed
                # (a line never holds a NUL: JSON escapes it): the data ends here,
                # after a torn line if one was being copied.
                if zero:
                    logger.warning("skipping a torn record at the end of %s", seg.path.name)
                    consumed += 1
                offset = os.fstat(seg.fd).st_size
                break
            if not line.endswith(b"\n"):
                if seg.sealed:  # torn tail of a killed writer: the call never returned
                    logger.warning("skipping a torn record at the end of %s", seg.path.name)
                    offset += len(line)
                    consumed += 1
                break
            offset += len(line)
            size += len(line)
            consumed += 1
            lines.append(line)
        return lines, offset, consumed

    def chunk_bytes(self, seg: Segment, consumed: int, next_offset: int) -> int:
        """Bytes of the chunk :meth:`read_lines` just returned (``consumed`` records, ending at ``next_offset``)."""
        return next_offset - seg.offset

    def acknowledge(self, seg: Segment, consumed: int, next_offset: int) -> None:
        """Mark ``consumed`` records of ``seg`` as delivered."""
        seg.delivered += consumed
        seg.offset = next_offset

    def is_done(self, seg: Segment) -> bool:
        """True when a sealed segment has nothing left to deliver."""
        if not seg.sealed:
            return False
        return seg.offset >= os.fstat(seg.fd).st_size

    def delete(self, seg: Segment) -> None:
        """Remove a delivered segment (unlink first, then release the lock)."""
        try:
            size = os.fstat(seg.fd).st_size if seg.fd >= 0 else 0
            os.unlink(seg.path)
        except FileNotFoundError:
            size = 0
        with self._lock:
            self._disk_bytes = max(0, self._disk_bytes - size)
        self._drop(seg)

    def release(self, seg: Segment) -> None:
        """Give a segment up (kept on disk) so another process can claim it."""
        self._drop(seg)

    def _drop(self, seg: Segment) -> None:
        with self._lock:
            self._drop_locked(seg)

    def _drop_locked(self, seg: Segment) -> None:
        _unmap(seg)
        if seg.fd in self._fds:  # else forgotten at a fork: not ours to close
            self._fds.discard(seg.fd)
            try:
                os.close(seg.fd)
            except OSError:
                pass
        seg.fd = -1


def forget_segment(seg: Segment) -> None:
    """In a forked child: forget an inherited segment (its descriptor copy is closed by
    :meth:`Spool.forget_inherited`); nothing is unlocked, deleted or flushed."""
    seg.fd = -1
    mm, seg.mm, seg.capacity = seg.mm, None, 0
    if mm is not None:
        try:
            mm.close()  # this process's view only: the parent's pages are untouched
        except (OSError, ValueError):
            pass


_READ_STEP = DEFAULT_PREALLOCATE_BYTES


def _lines_from(fd: int, offset: int) -> Iterator[bytes]:
    """The lines of ``fd`` from byte ``offset``, each with its newline (the last one
    without, when the file does not end in one).

    Read in steps of a mapped segment's size, one ``pread`` each: a buffered
    ``readline`` made a system call every 8 KiB, and each one lets the GIL go, which
    the writer thread then waits up to the 5 ms switch interval to take back from a
    busy call path."""
    pending = b""
    while True:
        data = os.pread(fd, _READ_STEP, offset)
        if not data:
            if pending:
                yield pending
            return
        offset += len(data)
        if pending:
            data = pending + data
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            yield data[start : end + 1]
            start = end + 1
        pending = data[start:]
        if b"\0" in pending:  # a killed process's unused reservation: no line after it
            yield pending
            return


def _map(fd: int, size: int) -> mmap.mmap | None:
    """``size`` bytes of ``fd`` reserved on disk and mapped writable, or ``None`` when
    they cannot be (the segment then takes plain appends).

    The reservation is what makes the mapping safe: a page copied into a file with no
    block behind it would raise SIGBUS when the disk is full, instead of an error."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None or size <= 0:
        return None
    try:
        fallocate(fd, 0, size)
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError) as exc:
        logger.debug("telemetry segment not preallocated (%s): plain appends", exc)
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        return None
    return mm


def _unmap(seg: Segment) -> None:
    """A mapped segment becomes a plain file of its lines: unmapped, the reservation cut
    off (``O_APPEND`` writes and readers then start at its last record)."""
    mm, seg.mm, seg.capacity = seg.mm, None, 0
    if mm is None:
        return
    mm.close()
    try:
        os.ftruncate(seg.fd, seg.size)
        seg.dirty = True  # the new size must reach the disk too
    except OSError as exc:
        # The zeros stay; replay reads them as the end of the data.
        logger.error("could not cut the reserved tail of %s: %s", seg.path.name, exc)
