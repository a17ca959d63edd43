"""Opening a clickhouse-connect client for a :class:`ClickHouseSettings`.

One client per writer, made in the writer's thread (never on the call path). Server
clients use ``autogenerate_session_id=False`` so a client can be shared by threads
(a session can only run one query at a time). Embedded clients use
clickhouse-connect's chDB backend (``chdb://<path>``); the caller must own the store
(see ownership.py).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ..exceptions import TelemetryError
from ..paths import private_dir, tighten_tree
from .settings import ClickHouseSettings

__all__ = ["connect"]

logger = logging.getLogger(__name__)


def preload_driver(settings: ClickHouseSettings) -> None:
    """Import the ClickHouse driver (and chDB) now, in the caller's thread.

    The drivers register ``atexit`` handlers when first imported. If the first import
    happened in the writer's exit-time delivery, Python would refuse them ("can't
    register atexit after shutdown") and a short script's events would stay spooled
    until the next start instead of being delivered as it exits. A missing driver
    is not an error here: :func:`connect` reports it, off the call path.
    """
    # clickhouse-connect imports pandas lazily on its first insert, and pandas imports
    # concurrent.futures.thread, which registers a threading exit hook: load it now.
    import concurrent.futures.thread  # noqa: F401

    try:
        import clickhouse_connect  # noqa: F401
        import clickhouse_connect.driver.httputil  # noqa: F401  (registers its atexit)

        if settings.mode == "embedded":
            import chdb  # noqa: F401
    except ImportError:
        logger.debug("ClickHouse driver not importable yet; connect() will say why", exc_info=True)


def connect(
    settings: ClickHouseSettings,
    *,
    database: Optional[str] = None,
    connect_timeout_s: float = 3.0,
    send_receive_timeout_s: float = 30.0,
) -> Any:
    """A new clickhouse-connect client for ``settings`` (``mode`` server or embedded).

    ``database`` (default: none, i.e. the server's default) is the client's current
    database; the writer passes none and qualifies every table, so it works before
    the database exists.
    """
    try:
        import clickhouse_connect
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise TelemetryError("clickhouse-connect is not installed: pip install clickhouse-connect") from exc
    if settings.mode == "embedded":
        try:
            import chdb  # noqa: F401
        except ImportError as exc:
            raise TelemetryError(
                "the embedded telemetry store needs chDB: pip install 'csctracker-ai-core[embedded]', "
                "or point CLICKHOUSE_HOST at a server, or set CSCTRACKER_AI_TELEMETRY=off"
            ) from exc
        path = private_dir(settings.embedded_path)  # 0700: it holds every prompt and reply
        kwargs: dict[str, Any] = {"dsn": f"chdb://{path}"}
        if database:
            kwargs["database"] = database
        client = clickhouse_connect.get_client(**kwargs)
        tighten_tree(path)  # chDB creates its files with the process umask (0644)
        return client
    if settings.mode != "server":
        raise TelemetryError(f"telemetry mode {settings.mode!r} has no ClickHouse to connect to")
    kwargs = {
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
