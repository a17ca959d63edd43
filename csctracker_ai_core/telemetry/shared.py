"""One telemetry writer per store location per process, shared by reference count.

Every ``IaProcessor`` (and ``ClickHouseDb``) of a process that points at the same
store shares one :class:`~.writer.TelemetryWriter`: one spool segment, one thread,
one ClickHouse client. Each user holds a :class:`SharedSink` with its own record
options (``redact``, ``store_images``, ``max_text_bytes``); ``close()`` delivers what
is pending (bounded) and drops the user's reference.

When the last reference goes:

* server store: the writer is closed (thread and HTTP client released);
* embedded store: the writer stays open, idle, until interpreter exit, or until this
  process asks for an embedded store at another path (chDB runs one path per
  process). chDB cannot restart its engine in a process without leaving threads and
  descriptors behind (measured: 5-6 threads and 25-30 descriptors per restart with
  the writer's inserts), and an idle
  owner still delivers the events other processes hand over to it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from .. import forking
from .events import CallEvent
from .settings import ClickHouseSettings
from .writer import TelemetryWriter, WriterStats

__all__ = ["SharedSink", "open_shared", "close_idle_embedded"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Entry:
    writer: TelemetryWriter
    refs: int = 0


_entries: dict[ClickHouseSettings, _Entry] = {}
_guard = threading.Lock()


def _after_fork_in_child() -> None:
    global _guard
    _guard = threading.Lock()  # the writers reset themselves (writer.py)


forking.register(None, locks=lambda: (_guard,), in_child=_after_fork_in_child)


class SharedSink:
    """One user's share of the process's writer for a store (see the module docstring)."""

    def __init__(
        self,
        settings: ClickHouseSettings,
        writer: TelemetryWriter,
        *,
        redact: Callable[[CallEvent], CallEvent] | None,
        store_images: bool,
        max_text_bytes: int,
    ) -> None:
        self.settings = settings
        self._writer = writer
        self._redact = redact
        self._store_images = store_images
        self._max_text_bytes = max_text_bytes
        self._closed = False

    @property
    def writer(self) -> TelemetryWriter:
        """The process-wide writer behind this share."""
        return self._writer

    @property
    def close_timeout_s(self) -> float:
        return self._writer.close_timeout_s

    def record(self, event: CallEvent) -> None:
        """Spool ``event`` with this share's options. Never raises; works after :meth:`close`
        too (a call that ends while its processor closes still leaves its event)."""
        self._writer.record_with(
            event, redact=self._redact, max_text_bytes=self._max_text_bytes, store_images=self._store_images
        )

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Deliver now, bounded; True when nothing is pending."""
        return self._writer.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> bool:
        """Deliver what is pending (bounded by ``timeout_s``) and drop this share. Idempotent."""
        timeout = self._writer.close_timeout_s if timeout_s is None else timeout_s
        if self._closed:
            return self._writer.stats().pending == 0
        self._closed = True
        delivered = self._writer.flush(timeout)
        _release(self.settings, self._writer, timeout)
        return delivered

    def stats(self) -> WriterStats:
        """The shared writer's counters (``role`` is ``closed`` once this share is closed)."""
        s = self._writer.stats()
        return dataclasses.replace(s, role="closed") if self._closed else s

    def __repr__(self) -> str:
        return f"SharedSink({self._writer!r}, closed={self._closed})"


def open_shared(
    settings: ClickHouseSettings,
    *,
    redact: Callable[[CallEvent], CallEvent] | None = None,
    store_images: bool = False,
    max_text_bytes: int,
    **writer_options: Any,
) -> SharedSink:
    """A share of the process's writer for ``settings``, opening it if needed.

    ``writer_options`` apply when the writer is opened; a later user with other
    options shares the writer as it is.
    """
    if settings.mode == "embedded":
        close_idle_embedded(except_path=settings.embedded_path)
    with _guard:
        entry = _entries.get(settings)
        if entry is None or entry.writer.stats().role == "closed":  # new, or closed at exit / by hand
            entry = _entries[settings] = _Entry(TelemetryWriter(settings, **writer_options))
        entry.refs += 1
    return SharedSink(settings, entry.writer, redact=redact, store_images=store_images, max_text_bytes=max_text_bytes)


def close_idle_embedded(except_path: Any = None) -> None:
    """Close idle embedded writers (all, or those not on ``except_path``): chDB opens one path per process."""
    with _guard:
        stale = [
            e.writer
            for k, e in list(_entries.items())
            if k.mode == "embedded" and e.refs == 0 and (except_path is None or k.embedded_path != except_path)
        ]
        for k in [k for k, e in _entries.items() if e.writer in stale]:
            del _entries[k]
    for writer in stale:
        writer.close()


def _release(settings: ClickHouseSettings, writer: TelemetryWriter, timeout_s: float) -> None:
    close_now = False
    with _guard:
        entry = _entries.get(settings)
        if entry is None or entry.writer is not writer:
            return
        entry.refs = max(0, entry.refs - 1)
        if entry.refs == 0 and settings.mode != "embedded":
            del _entries[settings]
            close_now = True
    if close_now:
        writer.close(timeout_s)
