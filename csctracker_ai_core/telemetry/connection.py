"""Opening a clickhouse-connect client for a :class:`ClickHouseSettings`.

One client per writer, made in the writer's thread (never on the call path). Server
clients use ``autogenerate_session_id=False`` so a client can be shared by threads
(a session can only run one query at a time). Embedded clients use
clickhouse-connect's chDB backend (``chdb://<path>``); the caller must own the store
(see ownership.py).

The embedded engine and fork: chDB's engine cannot be inherited. A child forked
while the engine runs hangs at exit (chDB's C++ exit handlers wait for engine threads
that do not exist in the child), and a child forked from a process that had loaded
chDB hangs if it opens the engine: ``import chdb`` alone is enough (measured with chdb
4.x: parent imports, child's first query never returns). So, before a fork, every chDB
client made here is closed (the writer reopens its own after the fork), and a process
forked from one that had loaded chDB never opens it: its events go to the store's
owner (:func:`embedded_engine_usable`).
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from typing import Any

from .. import forking
from ..exceptions import TelemetryError
from ..paths import private_dir, tighten_tree
from .settings import ClickHouseSettings

__all__ = ["connect", "embedded_engine_usable", "opens_embedded_store", "delivered_by_process", "refuse_if_delivered"]

logger = logging.getLogger(__name__)

_engine_lock = threading.Lock()  # held while a chDB client is being opened
_engine_touched = False  # this process started chDB's engine (or began to)
_engine_inherited = False  # forked from a process that had loaded chDB
_embedded_clients: weakref.WeakSet[Any] = weakref.WeakSet()


def opens_embedded_store(settings: ClickHouseSettings) -> bool:
    """Whether this process's writer may open ``settings``' embedded store (and so loads chDB).

    Not with ``delivery`` ``"process"`` (a delivery process owns the store) or
    ``"external"`` (``csc-ai deliver`` does), nor under uWSGI (a delivery process owns
    it: forking.under_uwsgi says why)."""
    return settings.mode == "embedded" and settings.delivery == "thread" and not forking.under_uwsgi()


def delivered_by_process(settings: ClickHouseSettings) -> bool:
    """Whether a delivery process (deliverer.py) owns ``settings``' embedded store for
    this process: with ``delivery="process"``, and under uWSGI unless ``"external"``.
    Such a process never opens the store, not even to read it (clickhouse_db.py)."""
    return settings.mode == "embedded" and settings.delivery != "external" and not opens_embedded_store(settings)


def delivery_reason() -> str:
    """Why a delivery process owns the store, in words for messages (see :func:`delivered_by_process`)."""
    return "under uWSGI" if forking.under_uwsgi() else "telemetry delivery 'process'"


def refuse_if_delivered(settings: ClickHouseSettings) -> None:
    """Raise :class:`TelemetryError` where a delivery process owns the embedded store.

    Opening it here, even to read, would load chDB into a process that must not (under
    uWSGI a worker then hangs at exit) and, while this process held the store, keep the
    delivery process from starting."""
    if delivered_by_process(settings):
        raise TelemetryError(
            f"the embedded telemetry store {settings.embedded_path} belongs to a delivery process "
            f"({delivery_reason()}): "
            "this process does not open it, not even to read it. Read it with `csc-ai report` while no "
            "application runs, or use a ClickHouse server (CLICKHOUSE_HOST) when reports must run while "
            "applications run."
        )


def embedded_engine_usable() -> bool:
    """False in a process forked from one that had loaded chDB (its engine cannot run here)."""
    return not _engine_inherited


def _close_embedded_before_fork() -> None:
    # Clients the writer did not close itself (query clients): a child would hang at
    # exit if the engine were running when it was forked.
    for client in list(_embedded_clients):
        logger.warning("closing an embedded ClickHouse client before fork (chDB cannot be inherited)")
        try:
            client.close()
        except Exception:
            logger.debug("closing a chDB client before fork failed", exc_info=True)
    _embedded_clients.clear()


def _after_fork_in_child() -> None:
    global _engine_lock, _engine_inherited, _embedded_clients
    _engine_lock = threading.Lock()
    _engine_inherited = _engine_inherited or _engine_touched or "chdb" in sys.modules
    for client in list(_embedded_clients):
        forking.abandon(client)
    _embedded_clients = weakref.WeakSet()


forking.register(None, locks=lambda: (_engine_lock,), before=_close_embedded_before_fork, in_child=_after_fork_in_child)


def _open_embedded(path: Any, database: str | None, own_lifetime: bool) -> Any:
    global _engine_touched
    import clickhouse_connect

    if _engine_inherited:
        raise TelemetryError(
            "this process was forked from one that had loaded chDB (the embedded telemetry store); "
            "chDB cannot run in it, so its events are handed to the store's owner process"
        )
    kwargs: dict[str, Any] = {"dsn": f"chdb://{path}"}
    if database:
        kwargs["database"] = database
    from .shared import close_idle_embedded

    close_idle_embedded(except_path=path)  # chDB runs one path per process
    with _engine_lock:
        _engine_touched = True
        client = clickhouse_connect.get_client(**kwargs)
        if own_lifetime:
            # clickhouse-connect closes leaked chDB handles from a weakref.finalize, which
            # also runs at interpreter exit, possibly before our exit hook has delivered
            # the last events. The writer closes its client itself (close() still works).
            release = getattr(getattr(client, "_backend", None), "_release", None)
            if release is not None:
                release.atexit = False
        _embedded_clients.add(client)
    return client


def preload_driver(settings: ClickHouseSettings) -> None:
    """Import the ClickHouse driver (and chDB) now, in the caller's thread.

    The drivers register ``atexit`` handlers when first imported. If the first import
    happened in the writer's exit-time delivery, Python would refuse them ("can't
    register atexit after shutdown") and a short script's events would stay spooled
    until the next start instead of being delivered as it exits. A missing driver
    is not an error here: :func:`connect` reports it, off the call path.

    chDB is left out where this process never opens the store (:func:`opens_embedded_store`):
    under uWSGI (forking.under_uwsgi says why) a process that loads it can have no child
    that opens it, and with a delivery process (``delivery="process"``) keeping chDB out of
    the application's address space is the point.
    """
    # clickhouse-connect imports pandas lazily on its first insert, and pandas imports
    # concurrent.futures.thread, which registers a threading exit hook: load it now.
    import concurrent.futures.thread  # noqa: F401

    try:
        import clickhouse_connect  # noqa: F401
        import clickhouse_connect.driver.httputil  # noqa: F401  (registers its atexit)

        if opens_embedded_store(settings):
            import chdb  # noqa: F401
    except ImportError:
        logger.debug("ClickHouse driver not importable yet; connect() will say why", exc_info=True)


def connect(
    settings: ClickHouseSettings,
    *,
    database: str | None = None,
    connect_timeout_s: float = 3.0,
    send_receive_timeout_s: float = 30.0,
    own_lifetime: bool = False,
) -> Any:
    """A new clickhouse-connect client for ``settings`` (``mode`` server or embedded).

    ``database`` (default: none, i.e. the server's default) is the client's current
    database; the writer passes none and qualifies every table, so it works before
    the database exists. ``own_lifetime`` (embedded): the caller closes the client
    itself, also at interpreter exit; the driver's own exit-time close is disarmed.
    """
    try:
        import clickhouse_connect
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise TelemetryError("clickhouse-connect is not installed: pip install clickhouse-connect") from exc
    if settings.mode == "embedded":
        refuse_if_delivered(settings)
        try:
            import chdb  # noqa: F401
        except ImportError as exc:
            raise TelemetryError(
                "the embedded telemetry store needs chDB: pip install 'csctracker-ai-core[embedded]', "
                "or point CLICKHOUSE_HOST at a server, or set CSCTRACKER_AI_TELEMETRY=off"
            ) from exc
        path = private_dir(settings.embedded_path)  # 0700: it holds every prompt and reply
        client = _open_embedded(path, database, own_lifetime)
        tighten_tree(path)  # chDB creates its files with the process umask (0644)
        return client
    if settings.mode != "server":
        raise TelemetryError(f"telemetry mode {settings.mode!r} has no ClickHouse to connect to")
    kwargs: dict[str, Any] = {
        "autogenerate_session_id": False,
        "connect_timeout": max(1, int(round(connect_timeout_s))),
        "send_receive_timeout": max(1, int(round(send_receive_timeout_s))),
        # The driver must not retry inserts on its own: the writer owns retries and
        # makes them idempotent with dedup tokens.
        "query_retries": 0,
    }
    if settings.dsn:
        kwargs["dsn"] = settings.dsn
    if settings.host:
        kwargs["host"] = settings.host
    if settings.port:
        kwargs["port"] = settings.port
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password:
        kwargs["password"] = settings.password
    if settings.secure:
        kwargs["secure"] = True
    if database:
        kwargs["database"] = database
    return clickhouse_connect.get_client(**kwargs)
