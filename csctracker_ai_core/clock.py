"""Time, read from one injectable place so tests move a fake clock instead of sleeping.

``Clock.time()`` is wall time (Unix seconds): suspensions, ``retry_at`` and Pacific
midnights are all absolute wall times, which is what survives a process restart and
what another process (sharing state on Redis) understands. ``Clock.sleep()`` waits.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol, runtime_checkable

from . import forking

__all__ = ["Clock", "SystemClock", "FakeClock", "SYSTEM_CLOCK"]


@runtime_checkable
class Clock(Protocol):
    """What the library needs from time."""

    def time(self) -> float:
        """Current wall time in Unix seconds."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (no-op for zero or less)."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return _time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            _time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that only moves when told to; ``sleep`` advances it instantly.

    Thread-safe, so a test can share it with the threads it drives.
    """

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept: list[float] = []
        # A forked child gets a fresh lock: a parent thread may have held this one at the
        # fork, and the child would wait for it forever. Not held across the fork: other
        # registered locks are held while the clock is read (the writer's, the pool's),
        # and the forking thread takes registered locks in order. What the lock guards is
        # a float and a list: at worst the child sees a sleep recorded in ``slept`` but not
        # yet added to the time, never a torn value.
        forking.register(self, in_child=FakeClock._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            if seconds > 0:
                self._now += seconds

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self._now += seconds

    def set(self, when: float) -> None:
        """Jump to the Unix time ``when``."""
        with self._lock:
            self._now = float(when)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"
