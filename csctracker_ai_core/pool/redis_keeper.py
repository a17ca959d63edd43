"""The two background threads of a Redis pool state, in one small object.

* the keeper: every :meth:`KeeperOwner.keeper_interval` seconds calls
  :meth:`KeeperOwner.keeper_round` (renew this process's leases, or probe the primary
  during an outage: its owner is the :class:`~.fallback_state.FallbackPoolState`); it
  never dies of an exception, since it is what returns leases;
* the listener: subscribes to the pool's change channel and turns each message into
  :meth:`ListenerOwner.note` (wakes local waiters of ``wait_for_change``; its owner is
  the :class:`~.redis_primary.RedisPrimary`).

Both hold only a weak reference to their owner between rounds, so a state nobody uses
any more is collected and its threads end; :meth:`Keeper.stop` ends them at once. After
a fork the child has no threads: :meth:`Keeper.after_fork` forgets the parent's. In a
process that will be forked without Python's fork hooks (a uWSGI master without
``py-call-uwsgi-fork-hooks``, see forking.py) neither thread starts: waiters poll every
0.5 s, and each worker starts the keeper after the fork.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .. import forking

__all__ = ["Keeper", "KeeperOwner", "ListenerOwner"]

_log = logging.getLogger(__name__)


class KeeperOwner(Protocol):
    """What the keeper thread calls on the state it serves."""

    def keeper_round(self) -> None: ...

    def keeper_interval(self) -> float: ...


class ListenerOwner(Protocol):
    """What the listener thread calls on the state it serves."""

    def note(self, version: int | None) -> None: ...


class Keeper:
    """Starts (once, and again after a fork) and stops the keeper and listener threads.

    The owner implements :class:`KeeperOwner` if :meth:`start_keeper` is used and
    :class:`ListenerOwner` if :meth:`start_listener` is. ``prefix`` starts the threads'
    names (``<prefix>-keeper``, ``<prefix>-listener``), as thread dumps and ``py-spy``
    show them: the generic fallback wrapper's keeper is ``csc-ai-pool-keeper``, the
    Redis primary's listener ``csc-ai-redis-listener``.
    """

    def __init__(self, owner: KeeperOwner | ListenerOwner, prefix: str) -> None:
        self._ref: weakref.ref[Any] = weakref.ref(owner)
        self._prefix = prefix
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._keeper_wanted = False  # asked for in a process that may run no thread

    def start_keeper(self) -> None:
        """Start the keeper thread unless it runs."""
        with self._lock:
            self._keeper_wanted = True
            if self._keeper is not None and self._keeper.is_alive():
                return
            if forking.forks_without_hooks():
                return
            self._keeper = self._spawn(_keeper_loop, (self._ref, self._stop), f"{self._prefix}-keeper")

    def start_listener(self, client: Any, channel: str) -> None:
        """Start the listener thread on ``channel`` unless it runs."""
        if self._listener is not None and self._listener.is_alive():
            return
        if forking.forks_without_hooks():
            return
        with self._lock:
            if self._listener is not None and self._listener.is_alive():
                return
            self._listener = self._spawn(
                _listen_loop, (self._ref, self._stop, client, channel), f"{self._prefix}-listener"
            )

    def after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here; start the keeper again
        if the parent had one (the listener starts again on the next wait)."""
        had_keeper = self._keeper_wanted
        self._lock = threading.Lock()
        self._keeper = None
        self._listener = None
        if had_keeper:
            self.start_keeper()

    def stop(self) -> None:
        """Ask both threads to end (they do within about a second)."""
        self._stop.set()

    @staticmethod
    def _spawn(target: Callable[..., None], args: tuple[Any, ...], name: str) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        return t


def _keeper_loop(ref: weakref.ref[KeeperOwner], stop: threading.Event) -> None:
    """Renews leases and probes Redis; holds no strong reference between rounds."""
    while True:
        owner = ref()
        if owner is None:
            return
        interval = owner.keeper_interval()
        del owner
        if stop.wait(interval):
            return
        owner = ref()
        if owner is None:
            return
        try:
            owner.keeper_round()
        except Exception:  # never let the keeper die: it is what returns leases
            _log.exception("Redis pool keeper round failed")
        del owner


def _listen_loop(ref: weakref.ref[ListenerOwner], stop: threading.Event, client: Any, channel: str) -> None:
    """Turns the pool's change notifications into wake-ups of local waiters."""
    pubsub = None
    while not stop.is_set():
        try:
            if pubsub is None:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
            msg = pubsub.get_message(timeout=1.0)
        except Exception:
            _close(pubsub)
            pubsub = None
            if stop.wait(0.5):
                break
            continue
        owner = ref()
        if owner is None:
            break
        if msg is not None and msg.get("type") == "message":
            try:
                owner.note(int(msg["data"]))
            except (TypeError, ValueError):
                owner.note(None)
        del owner
    _close(pubsub)


def _close(pubsub: Any) -> None:
    try:
        if pubsub is not None:
            pubsub.close()
    except Exception:  # a dead connection: nothing left to close
        _log.debug("closing the pub/sub connection failed", exc_info=True)
