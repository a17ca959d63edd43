"""The durable local spool: every event is on disk before the call returns.

Layout (``settings.spool_path``, by default ``<data dir>/spool``)::

    seg-<time_ns>-<pid>-<random>.jsonl     one JSON record per line, append-only

* A process appends to its *active* segment with one ``os.write`` per event
  (``O_APPEND``; handed to the OS, no fsync: a ``SIGKILL`` right after loses nothing,
  only a machine crash inside the fsync interval could). The writer thread fsyncs
  the active segment every ``fsync_interval_s``.
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
import os
import stat
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import TelemetryError
from ..paths import open_private_file, private_dir
from .records import decode_record
from .settings import DEFAULT_SPOOL_MAX_BYTES

__all__ = [
    "Segment",
    "Spool",
    "SpoolFullError",
    "SEGMENT_PREFIX",
    "SEGMENT_SUFFIX",
    "DEFAULT_SPOOL_MAX_BYTES",
    "forget_segment",
]

logger = logging.getLogger(__name__)

SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".jsonl"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


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
    mem: list[dict[str, Any]] | None = field(default_factory=list)  # None: read from disk
    mem_sizes: list[int] = field(default_factory=list)  # line length of each record in mem
    mem_bytes: int = 0
    created_at: float = 0.0  # clock time of the first record
    sealed: bool = False
    delivered: int = 0  # records acknowledged so far
    offset: int = 0  # byte offset of the first record not yet acknowledged
    dirty: bool = False  # written since the last fsync
    torn: bool = False  # a short write left a partial last line (sealed at once)
    pid: int = field(default_factory=os.getpid)  # the process that holds it


class Spool:
    """Append-only segment files with per-file locks. Thread-safe."""

    def __init__(
        self,
        directory: Path,
        *,
        memory_limit_bytes: int = 32 * 1024 * 1024,
        max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.memory_limit_bytes = memory_limit_bytes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._active: Segment | None = None
        self._retired: list[Segment] = []  # sealed by a failed roll-back, for the writer to take
        self._mem_bytes = 0
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
        seg, self._active = self._active, None
        self._mem_bytes = 0
        self._pid = os.getpid()
        fds, self._fds = self._fds, set()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if seg is not None:
            forget_segment(seg)

    # ------------------------------------------------------------------ writing

    def _new_segment(self, now: float) -> Segment:
        name = f"{SEGMENT_PREFIX}{int(now * 1e9):020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        tmp = self.directory / f".{name}.new"
        fd = open_private_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            final = self.directory / name
            os.rename(tmp, final)
        except BaseException:
            os.close(fd)
            raise
        return Segment(path=final, fd=fd, own=True, created_at=now)

    def append(self, line: bytes, record: dict[str, Any], now: float) -> tuple[int, int, int]:
        """Write one encoded record to the active segment (raises ``OSError`` on disk failure).

        ``record`` is kept in memory for the writer unless the memory bound is reached;
        past it the segment is read back from disk when delivered. Returns the active
        segment's ``(records, bytes)`` and the spool's bytes used, read under the lock
        the append took (the caller needs them after every append).
        """
        if self._pid != os.getpid():  # forked without our hook having run: never share a file
            self.forget_inherited()
        with self._lock:
            if self._disk_bytes + len(line) > self.max_bytes:
                raise SpoolFullError(
                    f"the telemetry spool {self.directory} reached its cap of {self.max_bytes} bytes "
                    "(CSCTRACKER_AI_SPOOL_MAX_BYTES); new events are dropped until ClickHouse takes "
                    "the backlog. Check why delivery fails (stats().last_error) or raise the cap."
                )
            seg = self._active
            if seg is None:
                seg = self._active = self._new_segment(now)
                self._fds.add(seg.fd)
            written = os.write(seg.fd, line)  # raises (nothing written) e.g. on ENOSPC
            if written != len(line):
                self._roll_back(seg, written, len(line))
            seg.records += 1
            seg.size += written
            self._disk_bytes += written
            self._appended += written
            seg.dirty = True
            if seg.mem is not None:
                if self._mem_bytes + written <= self.memory_limit_bytes:
                    seg.mem.append(record)
                    seg.mem_sizes.append(written)
                    seg.mem_bytes += written
                    self._mem_bytes += written
                else:  # past the bound: this segment lives on disk only
                    self._mem_bytes -= seg.mem_bytes
                    seg.mem, seg.mem_sizes, seg.mem_bytes = None, [], 0
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
        """Segments sealed by :meth:`append` itself (torn tail it could not cut), oldest first."""
        with self._lock:
            retired, self._retired = self._retired, []
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
                    if entry.name.endswith(SEGMENT_SUFFIX) or entry.name.endswith(".new"):
                        try:
                            total += entry.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:
                            continue
        except OSError as exc:
            logger.error("cannot measure the telemetry spool %s: %s", self.directory, exc)
            return self._disk_bytes
        with self._lock:
            self._disk_bytes = total + (self._appended - appended_before)
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
        return seg

    def fsync(self) -> None:
        """fsync the active segment if written since the last fsync."""
        with self._lock:
            seg = self._active
            if seg is None or not seg.dirty:
                return
            seg.dirty = False
            fd = seg.fd
        # Outside the lock: record() must never wait for a disk flush. The fd stays
        # open: only the writer thread (our caller) closes segment files.
        try:
            os.fsync(fd)
        except OSError:
            seg.dirty = True
            raise

    def fsync_segment(self, seg: Segment) -> None:
        if seg.dirty:
            os.fsync(seg.fd)
            seg.dirty = False

    # ------------------------------------------------------------------ claiming

    def claim_orphans(self, exclude: set[Path], limit: int = 64) -> list[Segment]:
        """Lock and return segments no live process holds (oldest first, at most ``limit``)."""
        claimed: list[Segment] = []
        try:
            names = sorted(
                n for n in os.listdir(self.directory) if n.startswith(SEGMENT_PREFIX) and n.endswith(SEGMENT_SUFFIX)
            )
        except OSError as exc:
            logger.error("cannot list the telemetry spool %s: %s", self.directory, exc)
            return claimed
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
            claimed.append(Segment(path=path, fd=fd, own=False, records=-1, size=st.st_size, mem=None, sealed=True))
        return claimed

    # ------------------------------------------------------------------ reading

    def read(self, seg: Segment, max_records: int, max_bytes: int) -> tuple[list[dict[str, Any]], int, int]:
        """The next chunk: records from the first unacknowledged one while fewer than
        ``max_records`` are taken and fewer than ``max_bytes`` read (the line crossing
        ``max_bytes`` is included).

        The rule is the same whether the records come from memory or from the file, so a
        chunk's bounds depend only on the segment's lines and where the previous chunk
        ended: a process replaying the file cuts the chunks its writer cut.

        Returns ``(records, next_offset, records_consumed)``; ``records_consumed`` may
        exceed ``len(records)`` when a torn last line was skipped. A line that is not
        JSON comes back as ``{"_unreadable": why, "_line": text}`` for the quarantine.
        """
        if seg.mem is not None:
            start = end = seg.delivered
            size = 0
            while end < len(seg.mem) and end - start < max_records and size < max_bytes:
                size += seg.mem_sizes[end]
                end += 1
            return seg.mem[start:end], seg.offset, end - start
        records: list[dict[str, Any]] = []
        consumed = 0
        offset = seg.offset
        size = 0
        with os.fdopen(os.open(seg.path, os.O_RDONLY | _CLOEXEC | _NOFOLLOW), "rb") as fh:
            fh.seek(offset)
            while len(records) < max_records and size < max_bytes:
                line = fh.readline()
                if not line:
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
                try:
                    records.append(decode_record(line))
                except ValueError as exc:
                    # Not lost and not retried forever: the writer quarantines it.
                    records.append(
                        {
                            "_unreadable": f"{seg.path.name} byte {offset - len(line)}: {exc}"[:300],
                            "_line": line[:65536].decode("utf-8", "backslashreplace"),
                        }
                    )
        return records, offset, consumed

    def chunk_bytes(self, seg: Segment, consumed: int, next_offset: int) -> int:
        """Bytes of the chunk :meth:`read` just returned (``consumed`` records, ending at ``next_offset``)."""
        if seg.mem is not None:
            return sum(seg.mem_sizes[seg.delivered : seg.delivered + consumed])
        return next_offset - seg.offset

    def acknowledge(self, seg: Segment, consumed: int, next_offset: int) -> None:
        """Mark ``consumed`` records of ``seg`` as delivered."""
        seg.delivered += consumed
        if seg.mem is None:
            seg.offset = next_offset

    def is_done(self, seg: Segment) -> bool:
        """True when a sealed segment has nothing left to deliver."""
        if not seg.sealed:
            return False
        if seg.mem is not None:
            return seg.delivered >= seg.records
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
            if seg.mem is not None:
                self._mem_bytes -= seg.mem_bytes
                seg.mem, seg.mem_sizes, seg.mem_bytes = None, [], 0
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
    seg.mem, seg.mem_sizes = None, []
