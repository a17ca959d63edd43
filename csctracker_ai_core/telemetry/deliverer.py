"""A delivery process for the embedded store, started by a writer that must stop opening it.

chDB leaves threads and descriptors behind each time a process reopens its engine
after a fork (see the fork section of docs/TELEMETRY.md). A process that forks for as
long as it runs (gunicorn's master with ``--max-requests``) therefore stops reopening
the store once it nears a limit (:func:`.policy.reopen_verdict`). Without anyone else
delivering, its events and its workers' events would then wait in the spool until the
next restart, and once the spool reached its cap new ones would be dropped.

So that process starts this one: a fresh interpreter (``subprocess``, no fork of the
parent's state, no chDB inherited) that takes the store's lock, claims every segment
the spoolers hand over and delivers them, exactly as ``csc-ai deliver`` does. It ends
when its parent is gone (it watches ``os.getppid()``), after a last delivery of
everything there (bounded by ``LAST_DELIVERY_S``), and on SIGTERM or SIGINT (after one
bounded by the writer's ``close_timeout_s``). Its settings come as one JSON argument (no secret is needed for
the embedded store), so it delivers what the parent's writer was configured with,
arguments included, whatever the environment says.

The same process owns the store wherever no application process opens it
(connection.opens_embedded_store): under uWSGI, where it serves the master
(forking.under_uwsgi says why), and with ``delivery="process"``, where it serves the
process that started it. There the starter hands it the store's lock (``lock_fd``).

The parent watches it (:class:`DeliveryProcess`) and starts another if it died (see
``TelemetryWriter._keep_deliverer``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from . import ownership
from .settings import ClickHouseSettings

__all__ = [
    "DeliveryProcess",
    "spawn",
    "interpreter",
    "arguments",
    "settings_from_arguments",
    "main",
    "process_running",
    "PARENT_POLL_S",
    "LAST_DELIVERY_S",
    "STORE_FIELDS",
]

logger = logging.getLogger(__name__)

#: How often the delivery process checks that its parent still runs.
PARENT_POLL_S = 0.5
#: The bound of its last delivery once the process it serves is gone. Nobody waits for
#: it then, and a process that starts it as it exits (its close found the store without
#: an owner) leaves it a backlog and chDB's start-up: the writer's ``close_timeout_s``
#: (5 s by default) left events in the spool until the next start.
LAST_DELIVERY_S = 120.0
#: The delivery process's CPU priority below the application's (as ``csc-ai deliver --nice``).
NICE = 10

#: The return code spawn() gives the Popen object it lets go of (see spawn()).
_REAPED_BY_US = -(2**31)

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from csctracker_ai_core.telemetry.deliverer import main; sys.exit(main(sys.argv[2:]))"
)


def interpreter(executable: str | None = None, exec_prefix: str | None = None) -> str | None:
    """The Python to run the delivery process with, or ``None`` when none is found.

    ``sys.executable`` is not always Python: under uWSGI it is the ``uwsgi`` binary, and
    embedding applications may leave it empty. Then the interpreter of this
    installation (``<exec_prefix>/bin/python3.X``, then ``python3``) is used.
    """
    executable = sys.executable if executable is None else executable
    exec_prefix = sys.exec_prefix if exec_prefix is None else exec_prefix
    if executable and Path(executable).name.startswith("python") and os.access(executable, os.X_OK):
        return executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for name in (version, f"python{sys.version_info.major}"):
        candidate = Path(exec_prefix) / "bin" / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


#: The fields of :class:`ClickHouseSettings` an embedded store is defined by: what the
#: delivery process is told (the others concern a server, or how the parent delivers).
STORE_FIELDS = ("embedded_path", "spool_path", "spool_max_bytes", "database")
_PATH_FIELDS = ("embedded_path", "spool_path")


def arguments(
    settings: ClickHouseSettings,
    *,
    parent_pid: int,
    close_timeout_s: float,
    batch_interval_s: float,
    lock_fd: int | None = None,
) -> str:
    """The one JSON argument of the delivery process (see :func:`settings_from_arguments`)."""
    store = {name: getattr(settings, name) for name in STORE_FIELDS}
    for name in _PATH_FIELDS:
        store[name] = str(store[name])
    return json.dumps(
        {
            **store,
            "parent_pid": parent_pid,
            "close_timeout_s": close_timeout_s,
            "batch_interval_s": batch_interval_s,
            "lock_fd": lock_fd,
        }
    )


def settings_from_arguments(raw: str) -> tuple[ClickHouseSettings, dict[str, Any]]:
    """The store settings and the process options of :func:`arguments`' JSON."""
    args = json.loads(raw)
    store = {name: args[name] for name in STORE_FIELDS}
    for name in _PATH_FIELDS:
        store[name] = Path(store[name])
    # This process is the delivery, whatever the parent's setting says.
    return ClickHouseSettings(mode="embedded", delivery="thread", **store), args


class DeliveryProcess:
    """The delivery process this process started: its PID, whether it still runs.

    This process reaps it itself (``os.waitpid``). A PID that is not our child any more
    (reaped by someone else, e.g. gunicorn's master reaps every child) counts as ended,
    so a reused PID is never mistaken for it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None  # once ended, when we reaped it
        self._ended = False

    def running(self) -> bool:
        """False once it ended (reaped here, or by another part of the program)."""
        if self._ended:
            return False
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self._ended = True
            return False
        if pid == 0:
            return True
        self._ended = True
        self.returncode = os.waitstatus_to_exitcode(status)
        return False


def spawn(
    settings: ClickHouseSettings,
    *,
    close_timeout_s: float,
    batch_interval_s: float,
    serves: int | None = None,
    hand_over_lock: bool = False,
) -> DeliveryProcess | None:
    """Start a delivery process for ``settings``' embedded store; ``None`` (logged) if it cannot.

    It ends after the process ``serves`` (default: this one) is gone. With
    ``hand_over_lock`` this process holds the store's lock and the child inherits it
    (ownership.descriptor): no other process can take the store in between.

    Its standard error is this process's (its warnings and errors show in the same
    log); it runs in a session of its own, so a Ctrl-C or a signal to the process
    group does not cut its last delivery short. It is meant to outlive this process's
    writer (it ends after this process does).
    """
    python = interpreter()
    if python is None:
        logger.error(
            "telemetry: no Python interpreter found to start a delivery process (sys.executable is %r); "
            "run `csc-ai deliver` beside this application so the spool %s is delivered",
            sys.executable,
            settings.spool_path,
        )
        return None
    lock_fd = ownership.descriptor(settings.embedded_path) if hand_over_lock else None
    if hand_over_lock and lock_fd is None:
        raise RuntimeError("hand_over_lock: this process does not hold the store's lock")
    payload = arguments(
        settings,
        parent_pid=os.getpid() if serves is None else serves,
        close_timeout_s=close_timeout_s,
        batch_interval_s=batch_interval_s,
        lock_fd=lock_fd,
    )
    try:
        proc = subprocess.Popen(
            [python, "-c", _BOOTSTRAP, str(_PACKAGE_ROOT), payload],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            close_fds=True,  # chDB's descriptors may be inheritable: none must reach it
            pass_fds=() if lock_fd is None else (lock_fd,),
            start_new_session=True,
        )
    except OSError as exc:  # EAGAIN at a task limit, ENOMEM
        logger.error(
            "telemetry: could not start a delivery process for the spool %s (%s); it is tried again later, "
            "and `csc-ai deliver` can deliver it meanwhile",
            settings.spool_path,
            exc,
        )
        return None
    # DeliveryProcess reaps it from now on. Popen's own bookkeeping would warn
    # (ResourceWarning) when it is collected, or the interpreter exits, with the
    # process still running, which is what this process wants; a return code set
    # turns that bookkeeping off.
    proc.returncode = _REAPED_BY_US
    return DeliveryProcess(proc.pid)


def _serving(pid: int, direct: bool) -> bool:
    """Whether the process this one serves still runs."""
    if direct:  # reparented (to init or a subreaper) once the parent exits, however it ended
        return os.getppid() == pid
    return process_running(pid)


def process_running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): kill(0) is all there is
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def main(argv: list[str]) -> int:
    """The delivery process: deliver until the process it serves is gone (or SIGTERM/SIGINT), then once more."""
    from .writer import TelemetryWriter

    settings, args = settings_from_arguments(argv[0])
    parent = int(args["parent_pid"])
    logging.basicConfig(
        level=logging.WARNING,
        format=f"csctracker-ai delivery process [{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        os.nice(NICE)
    except OSError:  # pragma: no cover - a priority that cannot be lowered: deliver anyway
        pass
    if args.get("lock_fd") is not None:
        ownership.adopt(settings.embedded_path, int(args["lock_fd"]))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    writer = TelemetryWriter(
        settings,
        close_timeout_s=float(args["close_timeout_s"]),
        batch_interval_s=float(args["batch_interval_s"]),
        scan_interval_s=PARENT_POLL_S,
    )
    direct = os.getppid() == parent
    while _serving(parent, direct) and not stop.wait(PARENT_POLL_S):
        pass
    close_timeout = float(args["close_timeout_s"])
    # Asked to stop (SIGTERM, SIGINT): the configured bound. The served process gone:
    # deliver what is there, bounded by LAST_DELIVERY_S.
    writer.close(close_timeout if stop.is_set() else max(close_timeout, LAST_DELIVERY_S))
    return 0
