"""Which process may open the embedded chDB store: the one holding its lock file.

chDB lets one process open a data path at a time. The store's owner is the process
holding an exclusive ``fcntl.flock`` on ``<chdb path>.lock`` (beside the data folder);
it writes its PID there so others can say who holds it. Inside one process the lock
is shared by reference count (flock locks belong to an open file, so two opens of the
same file in one process would exclude each other).

Fork: a child does not own the store. It closes its copies of the inherited lock
descriptors (never unlocking: the lock stays with the parent, whose descriptor is
still open) and starts with an empty registry.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from .. import forking
from ..paths import open_private_file, private_dir

__all__ = ["try_acquire", "release", "descriptor", "adopt", "is_held", "holder_pid", "lock_path"]

_registry: dict[str, tuple[int, int]] = {}  # lock path -> (fd, references)
_guard = threading.Lock()


def _after_fork_in_child() -> None:
    global _guard
    _guard = threading.Lock()
    for fd, _refs in _registry.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _registry.clear()


forking.register(None, locks=lambda: (_guard,), in_child=_after_fork_in_child)


def lock_path(embedded_path: Path) -> Path:
    """The lock file of an embedded store."""
    p = Path(embedded_path)
    return p.parent / (p.name + ".lock")


def try_acquire(embedded_path: Path, *, alone: bool = False) -> bool:
    """Take (or share, within this process) the store's lock without waiting.

    ``alone``: not if this process holds it already (a lock about to be handed to a
    child must be taken by one caller only)."""
    path = lock_path(embedded_path)
    key = str(path)
    with _guard:
        held = _registry.get(key)
        if held is not None and alone:
            return False
        if held is not None:
            _registry[key] = (held[0], held[1] + 1)
            return True
        private_dir(path.parent, narrow=False)  # the data folder: checked, created 0700
        # Never through a planted symlink: the ftruncate below would empty its target.
        fd = open_private_file(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _registry[key] = (fd, 1)
        return True


def release(embedded_path: Path) -> None:
    """Drop one reference; the last one unlocks the store."""
    key = str(lock_path(embedded_path))
    with _guard:
        held = _registry.get(key)
        if held is None:
            return
        fd, refs = held
        if refs > 1:
            _registry[key] = (fd, refs - 1)
            return
        del _registry[key]
        os.close(fd)


def descriptor(embedded_path: Path) -> int | None:
    """The descriptor through which this process holds the store's lock, if it does.

    A process handing the store to a child passes it (``pass_fds``): the lock belongs to
    the open file, so the child holds it from its first instant and the store is never
    without an owner between the two."""
    with _guard:
        held = _registry.get(str(lock_path(embedded_path)))
    return None if held is None else held[0]


def adopt(embedded_path: Path, fd: int) -> None:
    """Hold the store's lock through ``fd``, inherited from the process that took it."""
    with _guard:
        _registry[str(lock_path(embedded_path))] = (fd, 1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)


def is_held(embedded_path: Path) -> bool:
    """Whether some process (this one included) holds the store's lock, without taking it
    for longer than the probe (and without writing a PID)."""
    try:
        fd = os.open(lock_path(embedded_path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


def holder_pid(embedded_path: Path) -> int | None:
    """PID written by the current (or last) owner, if readable."""
    try:
        fd = os.open(lock_path(embedded_path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        text = os.read(fd, 32).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
