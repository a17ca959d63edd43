"""A mapped segment's pages faulted in and synced without holding the GIL.

CPython's ``mmap.madvise`` and ``mmap.flush`` make their system call with the GIL
held (3.11), so every other thread of the process stops for as long as the kernel
works: a thread spinning beside a 64 MiB fault-in stalled for the whole 280 ms of it
(4.6 ms with the call made through ``ctypes``), and a call waited up to 3.8 ms while
the writer synced 2.5 MB of lines (1.2 ms through ``ctypes``; bench/bench_writer_gil.py,
second table). ``ctypes`` lets the GIL go around a foreign call.

The address is taken from a buffer export that is let go before the call: holding it
would make a concurrent ``mm.close()`` raise. Only the writer thread unmaps a mapping it
faults in or syncs; should one be unmapped meanwhile anyway (a writer closed while its
thread was still busy), neither call changes what any memory holds: the call fails with
``ENOMEM``, or faults in or writes back whatever is mapped there by then.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import sys
from typing import Any

__all__ = ["populate", "sync"]

# Linux values; other systems keep the mmap module's own calls (sync) or none (populate).
_MADV_POPULATE_WRITE = 23  # Linux 5.14; older kernels answer EINVAL
_MS_SYNC = 4


def _libc_calls() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise, msync = libc.madvise, libc.msync
    except (OSError, AttributeError):
        return None
    for fn in (madvise, msync):
        fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        fn.restype = ctypes.c_int
    return madvise, msync


_CALLS = _libc_calls()
# False once the kernel said it has no MADV_POPULATE_WRITE: pages fault on first use.
_populate_works = _CALLS is not None


def _address(mm: mmap.mmap) -> int:
    view = ctypes.c_char.from_buffer(mm)  # a writable mapping of at least one byte
    try:
        return ctypes.addressof(view)
    finally:
        del view  # the export ends here, so mm can be closed again


def populate(mm: mmap.mmap) -> bool:
    """Fault every page of ``mm`` in writable now, so no line copied into it faults.

    The GIL is let go for the whole call. False when it could not be done (not Linux,
    a kernel older than 5.14, a mapping closed meanwhile): the pages then fault in on
    their first line, as they would without this."""
    global _populate_works
    if not _populate_works or _CALLS is None or len(mm) == 0:
        return False
    try:
        address = _address(mm)
    except (ValueError, TypeError):  # closed, or not writable
        return False
    if _CALLS[0](address, len(mm), _MADV_POPULATE_WRITE) == 0:
        return True
    if ctypes.get_errno() == errno.EINVAL:
        _populate_works = False
    return False


def sync(mm: mmap.mmap, length: int) -> None:
    """Write the first ``length`` bytes of ``mm`` to disk (``msync``, ``MS_SYNC``).

    Only the written range: a page synced is write-protected again by the kernel, so
    syncing the pages reserved ahead would make each one fault on its first line.
    Raises ``OSError`` as ``mmap.flush`` does."""
    if length <= 0:
        return
    if _CALLS is None:
        mm.flush(0, length)
        return
    try:
        address = _address(mm)
    except (ValueError, TypeError):
        mm.flush(0, length)  # raises the mmap module's own error for a closed mapping
        return
    if _CALLS[1](address, min(length, len(mm)), _MS_SYNC) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"msync of a telemetry segment failed: {errno.errorcode.get(code, code)}")
