"""The telemetry writer: the call path only appends to the spool; a thread does the rest.

``record(event)`` redacts, caps and serializes the event, appends it to this process's
spool segment with one ``os.write`` and returns (microseconds; it never raises and
never waits for ClickHouse). A daemon thread:

* connects (and creates/upgrades the schema) in the background, retrying with backoff;
* fsyncs the active segment every ``fsync_interval_s``;
* batches by rows, bytes and time (at most about one insert per ``batch_interval_s``),
  inserts column-wise into ``ai_events`` and ``ai_attempts`` with an
  ``insert_deduplication_token`` per batch; a failed batch is retried unchanged (same
  token), so a retry of an insert that did land is dropped by ClickHouse, and
  ``ai_events`` being a ReplacingMergeTree on the event id folds what a crash replays;
* deletes spool segments once acknowledged, and claims segments left by dead
  processes (and, in embedded mode, handed off by live non-owners) to deliver them.

Embedded mode with several processes: the process holding the store's lock (see
ownership.py) opens chDB and delivers everyone's segments. The others only spool:
every ``handoff_interval_s`` they seal their segment and release its lock so the
owner claims it, and every ``ownership_retry_s`` they try to become the owner. With
``delivery="process"`` no application process opens the store: each only spools, and
the first to find the store without an owner starts a delivery process (deliverer.py)
that owns it, so chDB's threads and memory stay out of the application's processes.

Fork (see forking.py): before a fork the writer holds its locks, and an embedded
writer closes its chDB client (the engine cannot be inherited; it reopens lazily
after ``fork_reconnect_delay_s``, keeping the store's lock meanwhile). In the child
the writer forgets what it inherited (spool segments, client, counters, thread) and
starts again on the first event: its own segment, its own thread, its own client; an
embedded child of a process that had loaded chDB stays a spooler for good. A process
near its descriptor or task limit stops reopening the store after forks and starts a
delivery process instead (deliverer.py). Under uWSGI no process opens the embedded
store: a delivery process serving the master does, started by the master or by a
worker that finds the store without an owner (forking.under_uwsgi says why); and a
master forking without Python's hooks runs no writer thread (forking.py). At
interpreter exit (and at the end of a ``multiprocessing`` child, which skips
``atexit``) every writer makes a last delivery, bounded by ``close_timeout_s``.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import logging
import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import forking
from ..clock import SYSTEM_CLOCK, Clock
from ..exceptions import ConfigurationError, TelemetryError
from ..paths import private_dir, tighten_tree
from . import connection, deliverer, limits, ownership
from .connection import preload_driver
from .events import CallEvent
from .policy import (
    DELIVERER_RESTART_S,
    BatchPolicy,
    backoff_delay,
    deliverer_restart_delay,
    delivery_delay,
    reopen_verdict,
)
from .quarantine import Delivery, Quarantine, insert_lines
from .records import DEFAULT_MAX_TEXT_BYTES, encode_event
from .schema import ensure_schema
from .settings import ClickHouseSettings
from .spool import CLAIM_LIMIT, Segment, Spool, SpoolFullError, forget_segment

__all__ = ["TelemetrySink", "TelemetryWriter", "NullSink", "DroppingSink", "WriterStats", "open_telemetry"]

logger = logging.getLogger(__name__)

Redactor = Callable[[CallEvent], CallEvent]
REDACTION_FAILED = "[redaction failed: text withheld]"


@dataclass(frozen=True)
class WriterStats:
    """Counters of one writer since it was opened.

    ``written``: events this writer inserted into ClickHouse (its own and replayed).
    ``spooled``: events recorded (each was on disk when ``record`` returned).
    ``replayed``: of ``written``, events from segments of other or earlier processes.
    ``dropped``: events not kept: the disk failed, the spool reached its cap
    (``CSCTRACKER_AI_SPOOL_MAX_BYTES``), or (best effort) the store could not be opened.
    ``pending``: events this writer spooled that are not in ClickHouse yet (after ``close``:
    what stays on disk for the next start), handed-off ones excluded.
    ``inserts``: successful INSERT statements.
    ``last_error``: the last delivery/connection error, ``None`` once delivery works.
    """

    written: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    pending: int = 0
    inserts: int = 0
    last_error: str | None = None
    failures: int = 0  # failed delivery/connection attempts
    handed_off: int = 0  # events left for the embedded store's owner process
    redaction_errors: int = 0  # events whose redaction hook raised (texts withheld)
    role: str = "starting"  # "writer", "spooler" (embedded non-owner), "off", "dropping", "closed"
    quarantined: int = 0  # rows moved to the quarantine (wrong types, refused by the store)
    sanitized: int = 0  # events whose texts were not valid UTF-8 (fixed, see sanitized_fields)
    spool_bytes: int = 0  # size of the spool folder (all processes), as last measured
    delivery_pid: int | None = None  # the delivery process this writer started (see deliverer.py)


class TelemetrySink(Protocol):
    """What the processor talks to (docs/ARCHITECTURE.md)."""

    def record(self, event: CallEvent) -> None: ...

    def flush(self, timeout_s: float = 5.0) -> bool: ...

    def close(self, timeout_s: float = 5.0) -> bool: ...

    def stats(self) -> WriterStats: ...


class DroppingSink:
    """Best effort telemetry whose store could not be opened: every event is counted dropped.

    Returned by :func:`open_telemetry` with ``best_effort`` instead of raising
    :class:`TelemetryError`. The reason is logged once (ERROR) and kept in
    ``stats().last_error``; ``stats().dropped`` counts every event recorded since.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._dropped = 0
        self._lock = threading.Lock()

    def record(self, event: CallEvent) -> None:
        with self._lock:
            self._dropped += 1

    def flush(self, timeout_s: float = 5.0) -> bool:
        return True

    def close(self, timeout_s: float = 5.0) -> bool:
        return True

    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(dropped=self._dropped, last_error=self.reason, role="dropping")

    def __repr__(self) -> str:
        return f"DroppingSink(dropped={self._dropped})"


class NullSink:
    """Telemetry turned off: every method is a no-op."""

    def record(self, event: CallEvent) -> None:
        return None

    def flush(self, timeout_s: float = 5.0) -> bool:
        return True

    def close(self, timeout_s: float = 5.0) -> bool:
        return True

    def stats(self) -> WriterStats:
        return WriterStats(role="off")

    def __repr__(self) -> str:
        return "NullSink()"


@dataclass
class _Piece:
    """One chunk of one segment, inserted on its own with its own deduplication token.

    A chunk's bounds depend on the segment alone (see :meth:`Spool.read_lines`), so
    whichever process delivers it (its writer, or the one replaying it after that writer
    died) sends the same rows under the same token, and ClickHouse keeps them once."""

    segment: Segment
    lines: list[bytes]
    next_offset: int
    consumed: int
    token: str
    # The byte of the segment's file the chunk starts at (named by a record it rejects).
    offset: int = 0


@dataclass
class _Batch:
    """The pieces of one delivery; a piece leaves it as soon as ClickHouse took it."""

    pieces: list[_Piece]


def _piece_token(seg: Segment, consumed: int) -> str:
    return hashlib.sha256(f"{seg.path.name}@{seg.delivered}+{consumed}".encode()).hexdigest()[:32]


_live_writers: weakref.WeakSet[TelemetryWriter] = weakref.WeakSet()
_atexit_registered = False
_atexit_guard = threading.Lock()


def _close_all_at_exit() -> None:
    forking.check()  # a uWSGI worker that never used us still holds its parent's writers
    for writer in list(_live_writers):
        try:
            writer.close(writer.close_timeout_s)
            # A daemon thread still inside chDB when the interpreter is torn down crashes
            # it (SIGSEGV, seen under heavy load): give a slow last delivery one more
            # close_timeout_s to end; its events are on disk either way.
            thread = writer._thread
            if thread is not None and thread.is_alive():
                thread.join(writer.close_timeout_s)
        except Exception:  # never let telemetry break interpreter exit
            logger.exception("telemetry writer failed to close at exit")


def _register_atexit(writer: TelemetryWriter) -> None:
    global _atexit_registered
    with _atexit_guard:
        _live_writers.add(writer)
        if not _atexit_registered:
            atexit.register(_close_all_at_exit)
            _atexit_registered = True


def _after_fork_in_child() -> None:
    global _atexit_guard
    _atexit_guard = threading.Lock()
    # A multiprocessing child ends with os._exit (no atexit), after running threading's
    # exit hooks: deliver (or hand over) there too. close() is idempotent.
    register = getattr(threading, "_register_atexit", None)
    if register is not None and _live_writers:
        try:
            register(_close_all_at_exit)
        except RuntimeError:  # pragma: no cover - already shutting down
            pass


forking.register(None, locks=lambda: (_atexit_guard,), in_child=_after_fork_in_child)


class TelemetryWriter:
    """Durable, batched, never-blocking telemetry sink (see the module docstring)."""

    def __init__(
        self,
        settings: ClickHouseSettings,
        *,
        redact: Redactor | None = None,
        store_images: bool = False,
        max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
        batch_interval_s: float = 1.0,
        max_batch_rows: int = 10_000,
        max_batch_bytes: int = 16 * 1024 * 1024,
        memory_limit_bytes: int | None = None,
        segment_max_bytes: int = 64 * 1024 * 1024,
        fsync_interval_s: float = 0.5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        close_timeout_s: float = 5.0,
        scan_interval_s: float = 2.0,
        handoff_interval_s: float = 1.0,
        ownership_retry_s: float = 5.0,
        connect_timeout_s: float = 3.0,
        spool_max_bytes: int | None = None,
        fork_reconnect_delay_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        connect: Callable[[ClickHouseSettings], Any] | None = None,
        start: bool = True,
    ) -> None:
        if settings.mode not in ("server", "embedded"):
            raise ConfigurationError(
                f"TelemetryWriter needs telemetry mode 'server' or 'embedded', not {settings.mode!r}; "
                "use open_telemetry(), which returns a no-op sink for 'off'."
            )
        if memory_limit_bytes is not None:
            warnings.warn(
                "TelemetryWriter(memory_limit_bytes=...) has no effect since 0.2.0: no copy of a spooled "
                "line is kept in memory (the writer reads segments back from the page cache); drop the argument.",
                DeprecationWarning,
                stacklevel=2,
            )
        self.settings = settings
        self.database = settings.database or "default"
        self.redact = redact
        self.store_images = store_images
        self.max_text_bytes = max_text_bytes
        self.policy = BatchPolicy(
            interval_s=batch_interval_s,
            max_rows=max_batch_rows,
            max_bytes=max_batch_bytes,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
        )
        self.segment_max_bytes = segment_max_bytes
        self.fsync_interval_s = fsync_interval_s
        self.close_timeout_s = close_timeout_s
        self.scan_interval_s = scan_interval_s
        self.handoff_interval_s = handoff_interval_s
        self.ownership_retry_s = ownership_retry_s
        self.connect_timeout_s = connect_timeout_s
        self.fork_reconnect_delay_s = fork_reconnect_delay_s
        self._clock = clock
        self._connect_fn = connect
        self._embedded = settings.mode == "embedded"
        # Raises TelemetryError when the folders cannot be used (see paths.py).
        self._spool = Spool(
            Path(settings.spool_path),
            max_bytes=settings.spool_max_bytes if spool_max_bytes is None else spool_max_bytes,
        )
        self._spool.on_segment_needed = self._segment_needed
        self._quarantine = Quarantine(Path(settings.spool_path))
        if self._embedded:
            _check_embedded_location(settings)

        self._counters_lock = threading.Lock()
        self._written = self._spooled = self._replayed = self._dropped = 0
        self._inserts = self._failures = self._handed_off = self._redaction_errors = 0
        self._quarantined = self._sanitized = 0
        self._drops_in_a_row = 0  # events dropped since the last one kept (log throttle)
        self._spool_warned = False  # WARNING at 80 % of the cap said, until it drains
        self._next_tighten_at = 0.0
        self._own_delivered = 0
        self._last_error: str | None = None
        self._role = "starting"

        self._client: Any = None
        self._owner = False
        self._queue: list[Segment] = []  # sealed segments to deliver, oldest first
        self._inflight: _Batch | None = None
        self._consecutive_failures = 0
        self._retry_at = 0.0
        self._next_connect_at = 0.0
        self._next_scan_at = 0.0
        self._next_fsync_at = 0.0
        self._last_insert_at = -math.inf
        # Embedded store closed for a fork and not yet reopened; reopenings so far.
        self._closed_for_fork = False
        self._fork_reopens = 0
        self._reopen_stopped = False  # for good in this process (see _may_reopen)
        # The delivery process started once the store is not reopened any more, or
        # under uWSGI (no uWSGI process opens it).
        self._deliverer: deliverer.DeliveryProcess | None = None
        self._deliverer_next_at = 0.0
        self._deliverer_started_at = 0.0
        self._deliverer_young_ends = 0  # in a row (policy.deliverer_restart_delay)
        self._deliverer_end_seen = False
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._flush_requested = 0  # flush() tickets handed out
        self._flush_served = 0  # tickets the thread has worked through
        self._closing = False
        self._close_deadline = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._started = False
        # Held around connecting and each insert, so a fork never happens mid-way.
        self._delivery_lock = threading.Lock()
        self._start_lock = threading.Lock()
        if connect is None:
            preload_driver(settings)
        _register_atexit(self)
        forking.register(
            self,
            locks=TelemetryWriter._fork_locks,
            before=TelemetryWriter._before_fork,
            in_child=TelemetryWriter._after_fork_in_child,
            outer=True,
        )
        if start:
            self.start()

    # ================================================================== call path

    def record(self, event: CallEvent) -> None:
        """Spool ``event`` (on disk when this returns) for delivery. Never raises."""
        self.record_with(event, redact=self.redact, max_text_bytes=self.max_text_bytes, store_images=self.store_images)

    def record_with(
        self, event: CallEvent, *, redact: Redactor | None, max_text_bytes: int, store_images: bool
    ) -> None:
        """:meth:`record` with one user's options (writers are shared, see shared.py)."""
        try:
            forking.check()
            redaction_failed = False
            if redact is not None:
                try:
                    event = redact(event)
                except Exception:
                    # Never store what the hook was meant to hide: keep the event's
                    # numbers, withhold its texts.
                    logger.exception(
                        "telemetry redaction hook failed; texts withheld for event %s", getattr(event, "event_id", "?")
                    )
                    event = dataclasses.replace(
                        event,
                        payload=REDACTION_FAILED,
                        result=REDACTION_FAILED,
                        error_message=REDACTION_FAILED if event.error_message else "",
                        image_base64="",
                        metadata={},
                    )
                    redaction_failed = True
            line, sanitized = encode_event(event, max_text_bytes=max_text_bytes, store_images=store_images)
            now = self._clock.time()
            active_records, active_bytes, used = self._spool.append(line, now)
            with self._counters_lock:
                self._spooled += 1
                if redaction_failed:
                    self._redaction_errors += 1
                if sanitized:
                    self._sanitized += 1
                recovered, self._drops_in_a_row = self._drops_in_a_row, 0
            if recovered:
                logger.warning(
                    "telemetry spool %s accepts events again after %d dropped", self.settings.spool_path, recovered
                )
            self._check_spool_usage(used)
            if self._closed:
                # No thread any more: leave it on disk, unlocked, for the next start.
                seg = self._spool.seal_active()
                if seg is not None:
                    self._spool.release(seg)
                return
            if self._thread is None and self._started:
                self._restart_after_fork()
                if self._thread is None:  # a process forked without hooks: see start()
                    self._hand_off(now, force=True)
                    return
            if active_records >= self.policy.max_rows or active_bytes >= self.policy.max_bytes:
                self._wake.set()
        except Exception as exc:  # the disk failed, the cap was reached (or a bug): count it, say it
            self._note_dropped(event, exc)

    def _segment_needed(self) -> None:
        # The next spare is made on the thread, now: at tens of thousands of events a
        # second a segment fills long before the next batch tick.
        self._wake.set()

    def _note_dropped(self, event: CallEvent, exc: BaseException) -> None:
        """Count a lost event; ERROR for the first of a run of drops, then every 1000th."""
        with self._counters_lock:
            self._dropped += 1
            self._drops_in_a_row += 1
            in_a_row = self._drops_in_a_row
            self._last_error = f"spool: {type(exc).__name__}: {exc}"
        if in_a_row == 1 or in_a_row % 1000 == 0:
            logger.error(
                "TELEMETRY EVENT DROPPED: could not write event %s to the spool %s (%d dropped in a row, "
                "stats().dropped counts them all): %s",
                getattr(event, "event_id", "?"),
                self.settings.spool_path,
                in_a_row,
                exc,
                exc_info=not isinstance(exc, (OSError, SpoolFullError)),
            )

    def _check_spool_usage(self, used: int | None = None) -> None:
        """WARNING once when the spool passes 80 % of its cap (again after it drained below 50 %).

        ``used``: the spool's bytes used when the caller just read them (else read here)."""
        if used is None:
            used = self._spool.usage()[0]
        cap = self._spool.max_bytes
        if not self._spool_warned and used >= 0.8 * cap:
            self._spool_warned = True
            logger.warning(
                "telemetry spool %s is %d%% full (%d of %d bytes, CSCTRACKER_AI_SPOOL_MAX_BYTES): past the cap "
                "new events are dropped; delivery is failing: %s",
                self.settings.spool_path,
                100 * used // max(1, cap),
                used,
                cap,
                self._last_error or "not yet known",
            )
        elif self._spool_warned and used < 0.5 * cap:
            self._spool_warned = False

    # ================================================================== control

    def start(self) -> None:
        """Start the background thread (done by the constructor unless ``start=False``).

        Not in a process that will be forked without Python's fork hooks (a uWSGI master
        without ``py-call-uwsgi-fork-hooks``, see forking.py): there each event's segment is
        handed over as it is written, to whichever process delivers, and each forked worker
        starts its own thread on first use.
        """
        with self._start_lock:
            if self._thread is None and not self._closed:
                self._started = True
                if forking.forks_without_hooks():
                    self._role = "spooler"
                    if self._process_delivery():
                        self._keep_store_deliverer(self._clock.time())
                    return
                self._thread = threading.Thread(target=self._run, name="csctracker-telemetry-writer", daemon=True)
                self._thread.start()

    def _restart_after_fork(self) -> None:
        """First use in a forked child: this process's own thread (then client) starts.

        The driver is loaded here, in the caller's thread, if the parent left it out."""
        if self._connect_fn is None:
            preload_driver(self.settings)
        self.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Deliver what is spooled now, ignoring batching and backoff; wait up to ``timeout_s``.

        Returns True when nothing this writer spooled is left pending.
        """
        forking.check()
        if self._thread is None and self._started and not self._closed:
            self._restart_after_fork()
        if self._closed or self._thread is None or not self._thread.is_alive():
            return self._pending() == 0
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._idle:
            self._flush_requested += 1
            ticket = self._flush_requested
        self._wake.set()
        with self._idle:
            while self._flush_served < ticket:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    break
                self._idle.wait(min(left, 0.05))
        return self._pending() == 0

    def close(self, timeout_s: float | None = None) -> bool:
        """Last delivery attempt (now, not at the next backoff), bounded by ``timeout_s``.

        What cannot be delivered in time stays in the spool for the next start (or for
        the embedded store's owner). Idempotent. Returns True when nothing is pending.
        """
        forking.check()
        if self._closed:
            return self._pending() == 0
        timeout = self.close_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + max(0.0, timeout)
        self._close_deadline = deadline
        self._closing = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()) + 0.05)
            if thread.is_alive():
                logger.warning(
                    "telemetry writer did not finish within %.1fs; %d events stay spooled in %s",
                    timeout,
                    self._pending(),
                    self.settings.spool_path,
                )
        else:
            self._shutdown_resources()
        self._closed = True
        _live_writers.discard(self)
        return self._pending() == 0

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        forking.check()
        with self._counters_lock:
            return WriterStats(
                written=self._written,
                spooled=self._spooled,
                replayed=self._replayed,
                dropped=self._dropped,
                pending=max(0, self._spooled - self._own_delivered - self._handed_off),
                inserts=self._inserts,
                last_error=self._last_error,
                failures=self._failures,
                handed_off=self._handed_off,
                redaction_errors=self._redaction_errors,
                role="closed" if self._closed else self._role,
                quarantined=self._quarantined,
                sanitized=self._sanitized,
                spool_bytes=self._spool.usage()[0],
                delivery_pid=None if self._deliverer is None else self._deliverer.pid,
            )

    @property
    def is_owner(self) -> bool:
        """True when this writer holds the embedded store (always False for a server)."""
        return self._owner

    def query_client(self) -> Any:
        """A new client on the same destination, for reports (embedded: only if owner)."""
        from .connection import connect

        return connect(self.settings, database=self.database)

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"TelemetryWriter(mode={self.settings.mode!r}, role={s.role!r}, pending={s.pending}, written={s.written})"
        )

    # ================================================================== fork

    def _fork_locks(self) -> tuple[Any, ...]:
        # The delivery lock first: a fork waits for the insert or connection in progress
        # (an embedded writer must close chDB; and a child must not inherit the driver's
        # state mid-request: lazy imports half done, HTTP pool locks held).
        return (
            self._delivery_lock,
            self._start_lock,
            self._counters_lock,
            self._idle,
            self._spool._create_lock,
            self._spool._lock,
        )

    def _before_fork(self) -> None:
        """Holding the delivery lock: no chDB engine may run across a fork."""
        if not self._embedded:
            return
        if self._client is not None:
            client, self._client = self._client, None
            _close_quietly(client)  # the store's lock stays ours: we reopen it soon
            self._closed_for_fork = True
        # Every fork of a burst (gunicorn spawning workers, a Pool starting) pushes the
        # reopening out: the burst costs one reopening, not one per fork.
        self._next_connect_at = max(self._next_connect_at, self._clock.time() + self.fork_reconnect_delay_s)

    def _after_fork_in_child(self) -> None:
        """In the child: forget everything inherited; start again on the first event."""
        self._counters_lock = threading.Lock()
        self._delivery_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._flush_requested = self._flush_served = 0
        if self._closing:
            self._closed = True
        for seg in self._queue:
            forget_segment(seg)
        if self._inflight is not None:
            for piece in self._inflight.pieces:
                forget_segment(piece.segment)
        self._queue = []
        self._inflight = None
        self._spool.forget_inherited()
        forking.abandon(self._client)  # a copy of the parent's: never used, never closed
        self._client = None
        self._closed_for_fork = False
        self._fork_reopens = 0
        self._reopen_stopped = False  # for good in this process (see _may_reopen)
        self._deliverer = None  # the parent's, not ours to watch
        self._deliverer_next_at = 0.0
        self._deliverer_young_ends = 0
        self._deliverer_end_seen = False
        self._owner = False  # ownership.py forgot the inherited lock
        self._written = self._spooled = self._replayed = self._dropped = 0
        self._inserts = self._failures = self._handed_off = self._redaction_errors = 0
        self._own_delivered = 0
        self._last_error = None
        self._role = "closed" if self._closed else "starting"
        self._consecutive_failures = 0
        self._retry_at = self._next_connect_at = self._next_scan_at = self._next_fsync_at = 0.0
        self._last_insert_at = -math.inf
        self._thread = None

    # ================================================================== internals

    def _pending(self) -> int:
        with self._counters_lock:
            return max(0, self._spooled - self._own_delivered - self._handed_off)

    def _run(self) -> None:
        try:
            while not self._closing:
                with self._idle:
                    ticket = self._flush_requested
                force = ticket > self._flush_served
                try:
                    self._step(force)
                except Exception as exc:  # a bug must not kill the thread silently
                    self._note_failure(exc, "writer step")
                if force:
                    with self._idle:
                        self._flush_served = ticket
                        self._idle.notify_all()
                    continue  # a flush() that arrived meanwhile is served at once
                self._wake.wait(self._next_wait())
                self._wake.clear()
            self._final_delivery()
        except BaseException:  # pragma: no cover - last resort
            logger.exception("telemetry writer thread died; events stay spooled in %s", self.settings.spool_path)
        finally:
            self._shutdown_resources()
            with self._idle:
                self._flush_served = self._flush_requested
                self._idle.notify_all()

    def _next_wait(self) -> float:
        now = self._clock.time()
        candidates = [self._next_fsync_at - now]
        if self._client is None:
            # Nothing can be inserted before the next connection attempt (or, for a
            # spooler, the next hand-off): waking to deliver would spin this thread every
            # 5 ms, taking the GIL from the calls, for as long as rows waited.
            candidates.append(self._next_connect_at - now)
            if self._role == "spooler":
                rows, _, created = self._spool.active_info()
                candidates.append(created + self.handoff_interval_s - now if rows else self.handoff_interval_s)
        else:
            if self._owner or not self._embedded:
                candidates.append(self._next_scan_at - now)
            candidates.append(self._delivery_delay(now, force=False))
        return min(max(min(candidates), 0.005), 1.0)

    def _delivery_delay(self, now: float, *, force: bool) -> float:
        """Seconds until the next insert is due (see :func:`.policy.delivery_delay`)."""
        rows, nbytes, oldest = self._waiting()
        return delivery_delay(
            now,
            rows=rows,
            nbytes=nbytes,
            oldest_at=oldest,
            last_insert_at=self._last_insert_at,
            retry_at=self._retry_at,
            policy=self.policy,
            force=force,
        )

    def _waiting(self) -> tuple[int, int, float]:
        """(rows, bytes, oldest spool time) waiting for delivery."""
        rows, nbytes, created = self._spool.active_info()
        oldest = created if rows else math.inf
        for seg in self._queue:
            if seg.records >= 0:
                rows += max(0, seg.records - seg.delivered)
                oldest = min(oldest, seg.created_at)
            else:  # claimed from another process: old by definition
                nbytes += max(0, seg.size - seg.offset)
                rows += 1
                oldest = -math.inf
        if self._inflight is not None:
            rows = max(rows, 1)
        return rows, nbytes, (oldest if oldest != math.inf else 0.0)

    def _step(self, force: bool) -> None:
        now = self._clock.time()
        if now >= self._next_fsync_at:
            self._fsync()
            self._next_fsync_at = now + self.fsync_interval_s
        self._collect_retired()
        self._spool.prepare_spare(now)
        if now >= self._next_tighten_at:
            self._housekeeping()
            self._next_tighten_at = now + max(self.scan_interval_s, 10.0)
        if self._client is None:
            if now >= self._next_connect_at or (force and self._role != "spooler"):
                self._try_connect(now)
            if self._client is None:
                if self._role == "spooler":
                    self._hand_off(now, force)
                    if self._reopen_stopped:
                        self._keep_deliverer(now)
                return
        if now >= self._next_scan_at:
            self._queue.extend(self._spool.claim_orphans(exclude={s.path for s in self._queue}))
            self._queue.sort(key=lambda s: s.path.name)
            self._next_scan_at = now + self.scan_interval_s
        delay = self._delivery_delay(now, force=force)
        if delay <= 0:
            ok = self._deliver_once(now)
            # A flush drains everything now; normal operation sends one batch per tick.
            while force and ok and self._client is not None and (self._inflight is not None or self._has_waiting()):
                ok = self._deliver_once(self._clock.time())

    def _collect_retired(self) -> None:
        """Segments the spool sealed itself (a short write it could not roll back)."""
        for seg in self._spool.take_retired():
            self._fsync_quietly(seg)
            if self._client is None and self._role == "spooler":
                self._spool.release(seg)
                with self._counters_lock:
                    self._handed_off += seg.records
            else:
                self._queue.append(seg)

    def _housekeeping(self) -> None:
        """Re-measure the spool (cap) and keep chDB's files private (it creates them 0644)."""
        self._spool.measure()
        self._check_spool_usage()
        if self._embedded and self._owner:
            try:
                tighten_tree(self.settings.embedded_path)
            except OSError as exc:
                logger.debug("could not tighten modes under %s: %s", self.settings.embedded_path, exc)

    def _has_waiting(self) -> bool:
        rows, nbytes, _ = self._waiting()
        return rows > 0 or nbytes > 0

    # ------------------------------------------------------------------ connecting

    def _try_connect(self, now: float) -> None:
        with self._delivery_lock:
            self._try_connect_locked(now)

    def _try_connect_locked(self, now: float) -> None:
        if self.settings.delivery == "external":
            if self._role != "spooler":
                logger.info(
                    "telemetry delivery is external: this process spools to %s and `csc-ai deliver` inserts",
                    self.settings.spool_path,
                )
            self._role = "spooler"
            self._next_connect_at = math.inf
            return
        if self._process_delivery():
            if self._role != "spooler":
                logger.info(
                    "%s: this process spools to %s and a delivery process owns the embedded telemetry store %s",
                    connection.delivery_reason(),
                    self.settings.spool_path,
                    self.settings.embedded_path,
                )
            self._role = "spooler"
            self._next_connect_at = now + self.ownership_retry_s
            self._keep_store_deliverer(now)
            return
        if self._embedded and not connection.embedded_engine_usable():
            if self._role != "spooler":
                logger.info(
                    "forked from a process that had loaded chDB (the embedded telemetry store %s): "
                    "this process spools, the store's owner delivers",
                    self.settings.embedded_path,
                )
            self._role = "spooler"
            self._next_connect_at = math.inf
            return
        if self._embedded and self._reopen_stopped:
            self._role = "spooler"
            self._next_connect_at = math.inf
            return
        if self._embedded and not self._owner:
            try:
                acquired = ownership.try_acquire(self.settings.embedded_path)
            except (OSError, TelemetryError) as exc:  # e.g. a symlink planted at the lock file
                self._note_failure(exc, "store lock")
                self._next_connect_at = now + self.ownership_retry_s
                return
            if not acquired:
                if self._role != "spooler":
                    logger.info(
                        "embedded telemetry store %s is held by PID %s: this process spools, the owner delivers",
                        self.settings.embedded_path,
                        ownership.holder_pid(self.settings.embedded_path),
                    )
                self._role = "spooler"
                self._next_connect_at = now + self.ownership_retry_s
                return
            self._owner = True
        if self._embedded and self._closed_for_fork and not self._may_reopen():
            return
        try:
            if self._connect_fn is not None:
                client = self._connect_fn(self.settings)
            else:
                from .connection import connect

                client = connect(self.settings, connect_timeout_s=self.connect_timeout_s, own_lifetime=True)
            try:
                ensure_schema(client, self.database)
            except BaseException:
                _close_quietly(client)
                raise
        except Exception as exc:
            self._note_failure(exc, "connect")
            self._next_connect_at = now + backoff_delay(self._consecutive_failures, self.policy)
            if self._embedded and self._owner:
                ownership.release(self.settings.embedded_path)
                self._owner = False
            return
        self._client = client
        if self._closed_for_fork:
            self._closed_for_fork = False
            self._fork_reopens += 1
        self._role = "writer"
        self._next_scan_at = 0.0  # claim leftovers right away
        self._next_tighten_at = 0.0
        self._retry_at = 0.0

    def _may_reopen(self) -> bool:
        """The embedded store was closed for a fork: reopen it, unless this process is
        near a limit, of descriptors or tasks (see :func:`.policy.reopen_verdict`). Then it
        becomes a spooler for good and lets go of the store and of every segment it
        holds, so that ``csc-ai deliver`` (or the next process) delivers them."""
        descriptors, tasks = limits.descriptors(), limits.tasks()
        verdict = reopen_verdict(self._fork_reopens + 1, (descriptors, tasks))
        usage = f"descriptors {limits.describe(descriptors)}, tasks {limits.describe(tasks)}"
        if verdict == "warn":
            logger.warning(
                "telemetry: the embedded store %s has now been reopened after a fork %d times in this process; "
                "chDB leaves descriptors and threads behind each time (%s). A process that forks often "
                "(gunicorn --max-requests) should use telemetry_delivery='process' (no "
                "application process opens the store), a ClickHouse server (CLICKHOUSE_HOST), or "
                "telemetry_delivery='external' with `csc-ai deliver`.",
                self.settings.embedded_path,
                self._fork_reopens + 1,
                usage,
            )
        if verdict != "stop":
            return True
        logger.error(
            "telemetry: not reopening the embedded store %s after %d reopenings after forks: this process is "
            "near a limit (%s), and chDB leaves descriptors and threads behind each time. A delivery process "
            "takes over the store and delivers the spool %s (this process's events and its children's). For a "
            "process that forks often (gunicorn --max-requests), use telemetry_delivery='process', a ClickHouse "
            "server (CLICKHOUSE_HOST), or telemetry_delivery='external' with `csc-ai deliver`.",
            self.settings.embedded_path,
            self._fork_reopens,
            usage,
            self.settings.spool_path,
        )
        for seg in self._queue:
            self._spool.release(seg)
        self._queue = []
        self._inflight = None
        ownership.release(self.settings.embedded_path)
        self._owner = False
        self._reopen_stopped = True
        self._role = "spooler"
        self._next_connect_at = math.inf
        with self._counters_lock:
            self._last_error = f"embedded store not reopened after {self._fork_reopens} forks: {usage}"
        self._keep_deliverer(self._clock.time())
        return False

    def _process_delivery(self) -> bool:
        """Whether a delivery process delivers this writer's store (below): with
        ``delivery="process"``, and under uWSGI, where no process opens the store."""
        return connection.delivered_by_process(self.settings)

    def _keep_store_deliverer(self, now: float) -> None:
        """See that a delivery process owns the store (see :meth:`_process_delivery`).

        The first process to find the store without an owner (under uWSGI the master,
        or a worker) takes its lock and hands it to the delivery process it starts: one
        delivery process, whoever looks at the same time (in this process too: the lock
        is taken ``alone``). It serves the uWSGI master, or else the process that started
        it; when that one ends, the next process to look starts another.
        """
        if self._deliverer is not None and self._deliverer.running():
            return
        try:
            if not ownership.try_acquire(self.settings.embedded_path, alone=True):
                return
        except (OSError, TelemetryError) as exc:
            self._note_failure(exc, "store lock")
            return
        try:
            serves = forking.uwsgi_master_pid() if forking.under_uwsgi() else None
            self._keep_deliverer(now, serves=serves, hand_over_lock=True)
        finally:
            ownership.release(self.settings.embedded_path)

    def _keep_deliverer(self, now: float, *, serves: int | None = None, hand_over_lock: bool = False) -> None:
        """Keep a delivery process running (deliverer.py): in a process that stopped
        reopening the store, under uWSGI, with ``delivery="process"``. One that ended is
        replaced at once, or after a wait if it ended young
        (:func:`.policy.deliverer_restart_delay`); a start that failed is tried again
        after ``DELIVERER_RESTART_S``. It serves this process, or the one ``serves``
        names (see deliverer.spawn for ``hand_over_lock``)."""
        last = self._deliverer
        if last is not None and last.running():
            return
        if last is not None and not self._deliverer_end_seen:
            self._deliverer_end_seen = True
            delay, self._deliverer_young_ends = deliverer_restart_delay(
                now - self._deliverer_started_at, self._deliverer_young_ends
            )
            self._deliverer_next_at = now + delay
            logger.warning(
                "telemetry: the delivery process %d of the spool %s ended (exit status %s); starting another%s",
                last.pid,
                self.settings.spool_path,
                "unknown" if last.returncode is None else last.returncode,
                f" in {delay:.0f} s" if delay else "",
            )
        if now < self._deliverer_next_at:
            return
        self._deliverer_started_at = now
        self._deliverer_end_seen = False
        # A start that fails (no interpreter, a task limit) is tried again this much later.
        self._deliverer_next_at = now + DELIVERER_RESTART_S
        self._deliverer = deliverer.spawn(
            self.settings,
            close_timeout_s=self.close_timeout_s,
            batch_interval_s=self.policy.interval_s,
            serves=serves,
            hand_over_lock=hand_over_lock,
        )
        if self._deliverer is not None:
            logger.info(
                "telemetry: delivery process %d started for the embedded store %s",
                self._deliverer.pid,
                self.settings.embedded_path,
            )

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)
        if self._embedded and self._owner:
            ownership.release(self.settings.embedded_path)
            self._owner = False

    # ------------------------------------------------------------------ delivering

    def _fsync(self) -> None:
        try:
            self._spool.fsync()
        except OSError as exc:
            logger.error("telemetry spool fsync failed (%s): events are in the OS cache only", exc)

    def _hand_off(self, now: float, force: bool) -> None:
        """A spooler (embedded non-owner, or external delivery): give the active segment
        to whichever process delivers."""
        rows, _, created = self._spool.active_info()
        if rows and (force or now - created >= self.handoff_interval_s):
            seg = self._spool.seal_active()
            if seg is not None:
                self._fsync_quietly(seg)
                self._spool.release(seg)
                with self._counters_lock:
                    self._handed_off += seg.records

    def _fsync_quietly(self, seg: Segment) -> None:
        try:
            self._spool.fsync_segment(seg)
        except OSError as exc:
            logger.error("telemetry spool fsync failed (%s)", exc)

    def _build_batch(self) -> _Batch | None:
        own_waiting = any(s.own for s in self._queue)
        active_rows, active_bytes, _ = self._spool.active_info()
        # Seal the active segment for delivery unless one of ours is still waiting
        # (then appends keep going to the active one, which bounds open files while
        # ClickHouse is away), or it grew too big.
        if active_rows and (not own_waiting or active_bytes >= self.segment_max_bytes):
            seg = self._spool.seal_active()
            if seg is not None:
                self._fsync_quietly(seg)
                self._queue.append(seg)
        pieces: list[_Piece] = []
        rows = nbytes = 0
        for seg in list(self._queue):
            try:
                # Always a whole chunk (never "what fits in this batch"): its bounds must
                # not depend on what else this process happens to deliver with it.
                offset = seg.offset
                lines, next_offset, consumed = self._spool.read_lines(seg, self.policy.max_rows, self.policy.max_bytes)
            except OSError as exc:
                logger.error("cannot read telemetry spool segment %s: %s", seg.path, exc)
                continue
            if consumed == 0:
                # Nothing left but the zeros a killed process had reserved: past them.
                self._spool.acknowledge(seg, 0, next_offset)
                if self._spool.is_done(seg):
                    self._queue.remove(seg)
                    self._spool.delete(seg)
                continue
            size = self._spool.chunk_bytes(seg, consumed, next_offset)
            if pieces and (rows + len(lines) > self.policy.max_rows or nbytes + size > self.policy.max_bytes):
                break  # the next delivery takes it
            pieces.append(_Piece(seg, lines, next_offset, consumed, _piece_token(seg, consumed), offset))
            rows += len(lines)
            nbytes += size
        return _Batch(pieces) if pieces else None

    def _deliver_once(self, now: float) -> bool:
        """Insert one batch (the in-flight one first). True on success or nothing to do."""
        if self._inflight is None:
            self._inflight = self._build_batch()
            if self._inflight is None:
                return True
        batch = self._inflight
        replayed = 0
        while batch.pieces:
            piece = batch.pieces[0]
            try:
                with self._delivery_lock:
                    if piece.lines and self._client is None:  # closed for a fork meanwhile: retried later
                        return False
                    delivery = insert_lines(
                        self._client,
                        self.database,
                        piece.lines,
                        piece.token,
                        self._quarantine,
                        self._clock.time(),
                        # Lines this process encoded from events are well-typed; lines of
                        # other processes' files (other versions, hand edits) are checked.
                        checked=not piece.segment.own,
                        origin=piece.segment.path.name,
                        offset=piece.offset,
                    )
            except Exception as exc:
                self._note_failure(exc, "insert")
                self._retry_at = self._clock.time() + backoff_delay(self._consecutive_failures, self.policy)
                self._drop_client()  # reconnect (and re-check the schema) before the retry
                self._next_connect_at = self._retry_at
                return False
            batch.pieces.pop(0)
            replayed += self._settle(piece, delivery)
        if replayed:
            logger.info("telemetry: replayed %d spooled events", replayed)
        self._inflight = None
        self._consecutive_failures = 0
        self._retry_at = 0.0
        self._last_insert_at = self._clock.time()
        return True

    def _settle(self, piece: _Piece, delivery: Delivery) -> int:
        """ClickHouse took ``piece``: acknowledge it, delete its segment when done, count.

        Returns how many of its events were replayed (from another process's segment)."""
        seg = piece.segment
        self._spool.acknowledge(seg, piece.consumed, piece.next_offset)
        landed = len(piece.lines) - len(delivery.not_inserted)
        if self._spool.is_done(seg):
            if seg in self._queue:
                self._queue.remove(seg)
            self._spool.delete(seg)
        with self._counters_lock:
            self._quarantined += delivery.quarantined
            self._written += landed
            self._inserts += delivery.inserts
            self._last_error = None
            if seg.own:
                self._own_delivered += piece.consumed
            else:
                self._replayed += landed
        return 0 if seg.own else landed

    def _note_failure(self, exc: BaseException, what: str) -> None:
        self._consecutive_failures += 1
        msg = f"{what}: {type(exc).__name__}: {str(exc)[:300]}"
        with self._counters_lock:
            self._failures += 1
            first = self._last_error is None
            self._last_error = msg
        level = (
            logging.WARNING
            if first or self._consecutive_failures in (1, 5, 20) or self._consecutive_failures % 100 == 0
            else logging.DEBUG
        )
        logger.log(
            level,
            "telemetry %s failed (%d in a row); events stay spooled in %s: %s",
            what,
            self._consecutive_failures,
            self.settings.spool_path,
            msg,
        )

    def _final_delivery(self) -> None:
        """Close: deliver what we can before the deadline, then let go of everything."""
        try:
            if self._client is None and time.monotonic() < self._close_deadline:
                self._try_connect(self._clock.time())  # now, not at the next backoff
            if self._client is None:
                if self._embedded or self._role == "spooler":
                    self._hand_off(self._clock.time(), force=True)
                return
            # Segments handed over (or left by dead processes) until now: gunicorn's
            # workers hand theirs to the master just before it exits.
            more = self._claim_for_close()
            reconnected = False
            while time.monotonic() < self._close_deadline:
                if self._inflight is None and not self._has_waiting():
                    # A claim takes at most CLAIM_LIMIT segments: a backlog larger than
                    # that (a delivery process whose predecessor was killed) is claimed
                    # again once those are in. Not what live processes hand over
                    # meanwhile: a claim that took less than the limit took it all.
                    if not more:
                        break
                    more = self._claim_for_close()
                    continue
                if self._client is None or not self._deliver_once(self._clock.time()):
                    # One fresh connection, now (not at the backoff): a client closed
                    # under us at exit or by a fork is not a reason to leave events behind.
                    if reconnected:
                        break
                    reconnected = True
                    if self._client is None:
                        self._try_connect(self._clock.time())
                    if self._client is None:
                        break
        except Exception as exc:
            self._note_failure(exc, "final delivery")
        finally:
            self._fsync()

    def _claim_for_close(self) -> bool:
        """Queue the segments nobody holds (oldest first); True when the claim was full
        (more may be waiting)."""
        claimed = self._spool.claim_orphans(exclude={s.path for s in self._queue}, limit=CLAIM_LIMIT)
        self._queue.extend(claimed)
        self._queue.sort(key=lambda s: s.path.name)
        return len(claimed) >= CLAIM_LIMIT

    def _shutdown_resources(self) -> None:
        """Release every segment (kept on disk if undelivered), the client and the store lock."""
        self._spool.discard_spare()
        seg = self._spool.seal_active()
        if seg is not None:
            self._fsync_quietly(seg)
            self._queue.append(seg)
        self._queue.extend(self._spool.take_retired())
        if self._embedded and self._owner:
            try:
                tighten_tree(self.settings.embedded_path)  # files chDB made since the last pass
            except OSError:
                logger.debug("could not tighten modes under %s", self.settings.embedded_path, exc_info=True)
        for seg in self._queue:  # undelivered ones stay on disk, counted as pending
            self._spool.release(seg)
        self._queue = []
        self._inflight = None
        self._drop_client()


def _check_embedded_location(settings: ClickHouseSettings) -> None:
    """The embedded store's folders must be usable and private before we rely on them."""
    private_dir(Path(settings.embedded_path).parent, narrow=False)
    lock = ownership.lock_path(settings.embedded_path)
    if lock.is_symlink():
        raise TelemetryError(
            f"the embedded store's lock file {lock} is a symbolic link: the library never writes through "
            f"one (it would truncate its target). Remove it: rm {lock}"
        )
    if Path(settings.embedded_path).exists():
        private_dir(settings.embedded_path)


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:
        logger.debug("closing a ClickHouse client failed", exc_info=True)


def open_telemetry(
    settings: ClickHouseSettings,
    *,
    redact: Redactor | None = None,
    store_images: bool = False,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
    batch_interval_s: float = 1.0,
    **options: Any,
) -> TelemetrySink:
    """The sink for ``settings``: a share of the process's writer for that store
    (:class:`~.shared.SharedSink`), or a :class:`NullSink` when off.

    Never blocks on ClickHouse: connecting and creating the schema happen in the
    writer's thread. Other ``options`` are :class:`TelemetryWriter` keyword arguments,
    used when this call opens the writer. With an injected ``connect`` the writer is
    this caller's own.

    When the spool or the embedded store's folder cannot be used as configured (cannot
    be created, belongs to another user, writable by others, a symlink at the lock
    file) this raises :class:`TelemetryError`, unless ``settings.best_effort``
    (``CSCTRACKER_AI_TELEMETRY_BEST_EFFORT=1``): then one ERROR is logged and a
    :class:`DroppingSink` counts every event as dropped.
    """
    if settings.mode == "off":
        return NullSink()
    try:
        if options.get("connect") is not None:
            return TelemetryWriter(
                settings,
                redact=redact,
                store_images=store_images,
                max_text_bytes=max_text_bytes,
                batch_interval_s=batch_interval_s,
                **options,
            )
        from .shared import open_shared

        return open_shared(
            settings,
            redact=redact,
            store_images=store_images,
            max_text_bytes=max_text_bytes,
            batch_interval_s=batch_interval_s,
            **options,
        )
    except (TelemetryError, OSError) as exc:
        if not settings.best_effort:
            if isinstance(exc, TelemetryError):
                raise
            raise TelemetryError(
                f"cannot open the telemetry spool {settings.spool_path}: {exc}. Set CSCTRACKER_AI_DATA_DIR to a "
                "folder of your own, or CSCTRACKER_AI_TELEMETRY=off, or CSCTRACKER_AI_TELEMETRY_BEST_EFFORT=1 to "
                "run without telemetry (events counted as dropped)."
            ) from exc
        reason = f"telemetry store unusable, events dropped (best effort): {exc}"
        logger.error("TELEMETRY OFF (best effort): %s; every event will be counted in stats().dropped", exc)
        return DroppingSink(reason)
