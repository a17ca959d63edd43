"""Fork safety: what the library does around ``os.fork()`` (gunicorn ``--preload``,
Celery prefork, ``multiprocessing`` with the fork start method).

A forked child is a copy of one thread of its parent: every other thread is gone, a
lock another thread held stays held forever, and every socket and file is shared
with the parent. So, with ``os.register_at_fork``:

* **before** the fork, the forking thread takes each registered object's locks (the
  short "leaf" locks that guard in-memory state), so the child never inherits a
  lock held mid-update; a lock still busy after ``LOCK_TIMEOUT_S`` is skipped (the
  fork is never blocked for long) and the child gets a fresh one anyway;
* **in the parent** after the fork, those locks are released;
* **in the child**, each registered object drops what it inherited and cannot share
  (SDK clients and their kept-alive sockets, the telemetry thread and spool segment,
  database clients, file locks) *without closing it under the parent*, and recreates
  it lazily on first use.

Objects register with :func:`register` (held weakly, in registration order).
:func:`abandon` keeps an inherited object alive forever in the child: objects whose
finalizer would act on the parent's resources (an SDK client closing its HTTP pool,
whose lock may be held by a parent thread) must never be collected there.

**Forks that call no hook.** uWSGI forks its workers with C ``fork()`` and, unless
``py-call-uwsgi-fork-hooks`` is set, runs none of the hooks above (unbit/uwsgi#1978;
the option comes from unbit/uwsgi PR 2388). Two things make the library safe there:

* :func:`forks_without_hooks` says when this process will be forked that way (a uWSGI
  master or loader, ``uwsgi.worker_id() == 0``, without the option): the library then
  starts no thread in it. A Python thread running at such a fork leaves the GIL, or a
  lock, held in the child by a thread that is not there, and the worker hangs;
* :func:`check`, called by every public entry point, sees the new process id in the
  worker and runs the child's reset then, before anything inherited is used.

Hooks or not, no uWSGI process opens the embedded store (:func:`under_uwsgi` says why):
a delivery process started for the uWSGI master does.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "LOCK_TIMEOUT_S",
    "UWSGI_HOOKS_OPTION",
    "register",
    "abandon",
    "check",
    "fork_generation",
    "forks_without_hooks",
    "in_uwsgi_master",
    "under_uwsgi",
    "uwsgi_master_pid",
    "uwsgi_forks_without_hooks",
]

logger = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 5.0

LockLike = Any  # threading.Lock / RLock / Condition: acquire(timeout=) and release()
_LocksOf = Callable[..., Iterable[LockLike]]
_InChild = Callable[..., None]
_BeforeFork = Callable[..., None]

_order = itertools.count()
# id -> (weak reference or None for module-level entries, locks_of, in_child, before)
_entries: dict[int, tuple[weakref.ref[Any] | None, _LocksOf | None, _InChild | None, _BeforeFork | None]] = {}
_entries_lock = threading.Lock()
_held: list[LockLike] = []
_generation = 0

UWSGI_HOOKS_OPTION = "py-call-uwsgi-fork-hooks"
# The process whose state the registered objects hold, and whether a fork may come
# without hooks: under uWSGI (its module exists only inside it) every entry point
# compares process ids; elsewhere check() is a flag test.
_pid = os.getpid()
_watch_pid = "uwsgi" in sys.modules
_hookless_warned = False


def check() -> None:
    """Run the child's reset now if this process was forked without Python's fork hooks.

    Every public entry point calls it first. Under uWSGI it costs one ``getpid``; in any
    other process it is a flag test.
    """
    if _watch_pid and os.getpid() != _pid:
        _reset_after_hookless_fork()


def uwsgi_forks_without_hooks(opt: Mapping[str, Any], worker_id: int) -> bool:
    """True when a uWSGI process with options ``opt`` (``uwsgi.opt``) and ``worker_id``
    will fork workers calling no Python fork hook.

    Worker 0 is the master (or the process that loads the app before forking, with
    ``--lazy-apps`` only code imported there); workers are 1 and up and fork no further.
    """
    return worker_id == 0 and not _uwsgi_flag(opt.get(UWSGI_HOOKS_OPTION))


def _uwsgi_flag(value: Any) -> bool:
    """A flag option as uWSGI reads it: given without a value it is ``True`` in ``uwsgi.opt``,
    with one it is bytes, off for false/off/no/0 (uwsgi_opt_true in core/uwsgi.c); given
    twice it is a list and the last one counts."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None or value is False:
        return False
    if isinstance(value, (bytes, str)):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        return text.lower() not in ("false", "off", "no") and text != "0"
    return bool(value)


def under_uwsgi() -> bool:
    """True inside a uWSGI process (master, loader or worker): its ``uwsgi`` module exists only there.

    No uWSGI process opens the embedded store: a delivery process does
    (telemetry/deliverer.py). A master that had loaded chDB would leave every worker
    unable to open it (connection.py); a master that owned it crashed or hung at exit in
    2 of 4 measured stops; and a worker that owned it hung at exit in 1 of 25 stops under
    load (measured, chdb 4.4.0): uWSGI ends a worker with C ``exit()``, which runs chDB's
    own exit handlers, registered when the worker loaded it, before the Python ``atexit``
    handlers that would have closed the store first.
    """
    return _watch_pid


def in_uwsgi_master() -> bool:
    """True in a uWSGI process that forks workers (worker 0: the master, or the loader)."""
    module = sys.modules.get("uwsgi")
    if module is None:
        return False
    try:
        return int(module.worker_id()) == 0
    except Exception:  # an unknown uWSGI build: assume it forks
        return True


def uwsgi_master_pid() -> int:
    """The uWSGI master's process id (this process when it is the master, or when uWSGI
    runs without one); under no uWSGI, this process's."""
    module = sys.modules.get("uwsgi")
    if module is None or in_uwsgi_master():
        return os.getpid()
    try:
        return int(module.masterpid()) or os.getpid()
    except Exception:  # an unknown uWSGI build: a worker's parent is its master
        return os.getppid()


def forks_without_hooks() -> bool:
    """True in a process that will be forked without Python's fork hooks (see the module
    docstring); the first time, a WARNING says which option to set."""
    global _hookless_warned
    module = sys.modules.get("uwsgi")
    if module is None:
        return False
    try:
        verdict = uwsgi_forks_without_hooks(getattr(module, "opt", {}) or {}, int(module.worker_id()))
    except Exception:  # an unknown uWSGI build: assume the worst, it costs only the threads
        verdict = True
    if verdict and not _hookless_warned:
        _hookless_warned = True
        logger.warning(
            "uWSGI forks this process without Python's fork hooks (%s is off): csctracker-ai-core starts "
            "no background thread and opens no embedded store here, and each worker starts its own on first "
            "use. Set '%s = true' in the uWSGI configuration (or --%s) so threads may run before the fork.",
            UWSGI_HOOKS_OPTION,
            UWSGI_HOOKS_OPTION,
            UWSGI_HOOKS_OPTION,
        )
    return verdict


def fork_generation() -> int:
    """How many forks separate this process from the one that imported this module."""
    return _generation


def register(
    owner: Any,
    *,
    locks: _LocksOf | None = None,
    in_child: _InChild | None = None,
    before: _BeforeFork | None = None,
    outer: bool = False,
) -> None:
    """Make ``owner`` fork-aware (held weakly; a module passes ``owner=None``).

    ``locks(owner)`` lists the locks to hold across the fork; ``before(owner)`` then
    runs in the forking thread, holding them (e.g. to close what a child could not
    survive inheriting); ``in_child(owner)`` runs in the child, after the fork, and must drop
    inherited resources without closing them and replace every lock ``locks`` named.

    Locks are taken in registration order, ``outer`` entries first: an entry whose
    locks are held while other registered locks are taken (the telemetry writer's
    delivery lock is held while it takes the store lock) must be ``outer``, so the
    forking thread never waits for a lock held by a thread that waits for one of its own.
    """
    key = next(_order) - (1 << 40 if outer else 0)
    ref = None
    if owner is not None:

        def gone(_ref: weakref.ref[Any], key: int = key) -> None:
            _forget(key)

        ref = weakref.ref(owner, gone)
    with _entries_lock:
        _entries[key] = (ref, locks, in_child, before)


def _forget(key: int) -> None:
    # Called by the garbage collector: never block (the lock may be ours already).
    if _entries_lock.acquire(blocking=False):
        try:
            _entries.pop(key, None)
        finally:
            _entries_lock.release()


def _live() -> list[tuple[Any, _LocksOf | None, _InChild | None, _BeforeFork | None]]:
    with _entries_lock:
        items = sorted(_entries.items())
    out = []
    for _key, (ref, locks, in_child, before) in items:
        owner = ref() if ref is not None else None
        if ref is not None and owner is None:
            continue
        out.append((owner, locks, in_child, before))
    return out


def _call(fn: Callable[..., Any], owner: Any) -> Any:
    return fn(owner) if owner is not None else fn()


def _before_fork() -> None:
    _held.clear()
    for owner, locks, _in_child, before in _live():
        try:
            if locks is not None:
                for lock in _call(locks, owner):
                    if lock.acquire(timeout=LOCK_TIMEOUT_S):
                        _held.append(lock)
                    else:  # the child replaces it; the parent goes on
                        logger.warning("a lock of %r stayed busy for %.0fs at fork", owner, LOCK_TIMEOUT_S)
            if before is not None:
                _call(before, owner)
        except Exception:  # a fork must never fail because of us
            logger.exception("preparing %r for fork failed", owner)


def _release_held() -> None:
    while _held:
        lock = _held.pop()
        try:
            lock.release()
        except RuntimeError:
            pass


def _after_fork_in_parent() -> None:
    _release_held()


def _after_fork_in_child() -> None:
    _release_held()  # the forking thread is the one that survives: these are its own
    _reset_children()


def _reset_after_hookless_fork() -> None:
    # No before-hook ran: nothing in _held was taken for this fork (and whatever the
    # parent's threads held stays held; every in_child replaces its locks).
    _held.clear()
    _reset_children()
    logger.debug("process %d was forked without fork hooks: reset on first use", _pid)


def _reset_children() -> None:
    global _generation, _entries_lock, _pid
    _generation += 1
    _pid = os.getpid()
    _entries_lock = threading.Lock()
    for owner, _locks, in_child, _before in _live():
        if in_child is None:
            continue
        try:
            _call(in_child, owner)
        except Exception:
            logger.exception("resetting %r after fork failed", owner)


def abandon(obj: Any) -> None:
    """Keep ``obj`` alive until the process ends (never collected, never finalized).

    For inherited objects whose finalizer would touch the parent's resources. Their
    memory is already there (a copy of the parent's); only their descriptors stay
    open in the child.
    """
    if obj is None:
        return
    try:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    except Exception:  # pragma: no cover - not CPython: a module-level list is the fallback
        _abandoned.append(obj)


_abandoned: list[Any] = []

if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
