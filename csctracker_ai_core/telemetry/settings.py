"""Where telemetry goes: a ClickHouse server, the embedded chDB store, or nowhere.

Resolved from explicit arguments first, then the original library's environment
variables (``CLICKHOUSE_HOST``, ``CLICKHOUSE_PORT``, ``CLICKHOUSE_USER``,
``CLICKHOUSE_PASSWORD``, ``CLICKHOUSE_DB``), then the new ``CSCTRACKER_AI_*`` ones.
When no server is named anywhere, the embedded store is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import ConfigurationError
from ..paths import embedded_clickhouse_path, spool_dir

__all__ = ["ClickHouseSettings", "resolve_clickhouse_settings", "DEFAULT_SPOOL_MAX_BYTES"]

DEFAULT_SPOOL_MAX_BYTES = 1024 * 1024 * 1024  # 1 GiB: about 500 000 events of 2 KB
SPOOL_MAX_BYTES_ENV = "CSCTRACKER_AI_SPOOL_MAX_BYTES"
BEST_EFFORT_ENV = "CSCTRACKER_AI_TELEMETRY_BEST_EFFORT"
DELIVERY_ENV = "CSCTRACKER_AI_TELEMETRY_DELIVERY"

_MODES = ("server", "embedded", "off")
# "thread": each process's writer thread inserts its events. "process" (embedded store
# only): processes only spool, and a delivery process the first of them starts
# (deliverer.py) owns the store and inserts, so no application process loads chDB.
# "external": processes only spool and hand their segments over; `csc-ai deliver`
# (another process, run by the user) inserts them.
DELIVERIES = ("thread", "process", "external")


@dataclass(frozen=True)
class ClickHouseSettings:
    """Resolved telemetry destination. ``password`` is hidden from ``repr``."""

    mode: str  # "server", "embedded" or "off"
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str = "default"
    secure: bool = False
    dsn: str | None = field(default=None, repr=False)
    # Defaults: the default data folder (no environment read here; see settings.py).
    embedded_path: Path = field(default_factory=lambda: embedded_clickhouse_path({}))
    spool_path: Path = field(default_factory=lambda: spool_dir({}))
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES  # past it new events are dropped (counted)
    best_effort: bool = False  # a store that cannot be opened drops events (counted) instead of raising
    delivery: str = "thread"  # see DELIVERIES

    def __post_init__(self) -> None:
        if self.delivery == "process" and self.mode == "server":
            raise ConfigurationError(
                "telemetry delivery 'process' is for the embedded store, and this telemetry goes to a ClickHouse "
                f"server: use 'thread' (default) or 'external' with `csc-ai deliver` (telemetry_delivery= or "
                f"{DELIVERY_ENV})."
            )

    @property
    def location(self) -> str:
        """Where events go, in words fit for a log line (never the password or DSN)."""
        if self.mode == "off":
            return "nowhere (telemetry off)"
        if self.mode == "embedded":
            return f"embedded ClickHouse (chDB) at {self.embedded_path}, table {self.database}.ai_events"
        if self.host:
            scheme = "https" if self.secure else "http"
            port = f":{self.port}" if self.port else ""
            return f"ClickHouse server {scheme}://{self.host}{port}, table {self.database}.ai_events"
        return f"ClickHouse server from CSCTRACKER_AI_CLICKHOUSE_DSN, table {self.database}.ai_events"


def resolve_clickhouse_settings(
    host: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    *,
    database: str | None = None,
    dsn: str | None = None,
    telemetry: str | None = None,
    spool_max_bytes: int | None = None,
    best_effort: bool | None = None,
    delivery: str | None = None,
    env: Mapping[str, str],
) -> ClickHouseSettings:
    """Build :class:`ClickHouseSettings` from arguments and the environment.

    ``telemetry`` (or ``CSCTRACKER_AI_TELEMETRY``) forces ``"server"``, ``"embedded"`` or
    ``"off"``; by default a configured host or DSN (``CSCTRACKER_AI_CLICKHOUSE_DSN``)
    means server, anything else embedded. ``env`` is the facade's environment mapping
    (see :mod:`csctracker_ai_core.settings`). ``spool_max_bytes``
    (``CSCTRACKER_AI_SPOOL_MAX_BYTES``, default 1 GiB) caps the spool; ``best_effort``
    (``CSCTRACKER_AI_TELEMETRY_BEST_EFFORT=1``) turns a store that cannot be opened into
    dropped (counted) events instead of a :class:`TelemetryError` at construction.
    ``delivery`` (``CSCTRACKER_AI_TELEMETRY_DELIVERY``) is ``"thread"`` (default: this
    process's writer thread inserts), ``"process"`` (embedded store only: this process
    only spools, and a delivery process it starts when none runs inserts; chDB is never
    loaded here) or ``"external"`` (this process only spools, ``csc-ai deliver`` inserts).
    """
    mode = (telemetry or env.get("CSCTRACKER_AI_TELEMETRY") or "").strip().lower() or None
    if mode is not None and mode not in _MODES:
        raise ConfigurationError(
            f"telemetry mode {mode!r} is unknown: use one of {', '.join(_MODES)} "
            "(argument telemetry= or CSCTRACKER_AI_TELEMETRY)."
        )
    host = host or env.get("CLICKHOUSE_HOST") or None
    dsn = dsn or env.get("CSCTRACKER_AI_CLICKHOUSE_DSN") or None
    raw_port = port if port is not None else env.get("CLICKHOUSE_PORT")
    try:
        port_value = int(raw_port) if raw_port not in (None, "") else None
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"ClickHouse port {raw_port!r} is not a number: pass port=8123 or set CLICKHOUSE_PORT."
        ) from None
    if mode is None:
        mode = "server" if (host or dsn) else "embedded"
    if mode == "server" and not (host or dsn):
        raise ConfigurationError(
            "telemetry mode 'server' needs a ClickHouse host: pass host= or set CLICKHOUSE_HOST "
            "(or CSCTRACKER_AI_CLICKHOUSE_DSN)."
        )
    cap = spool_max_bytes if spool_max_bytes is not None else _spool_cap_from(env)
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 1024 <= cap < float("inf"):
        raise ConfigurationError(
            f"spool cap {cap!r} is not a size in bytes of at least 1024: pass spool_max_bytes= or set "
            f"{SPOOL_MAX_BYTES_ENV} (default {DEFAULT_SPOOL_MAX_BYTES})."
        )
    if best_effort is None:
        best_effort = (env.get(BEST_EFFORT_ENV) or "").strip().lower() in ("1", "true", "yes", "on")
    how = (delivery or env.get(DELIVERY_ENV) or "thread").strip().lower()
    if how not in DELIVERIES:
        raise ConfigurationError(
            f"telemetry delivery {how!r} is unknown: use 'thread' (this process inserts its events), "
            f"'process' (embedded store: a delivery process it starts inserts them) or 'external' (it only "
            f"spools; run `csc-ai deliver`), as telemetry_delivery= or {DELIVERY_ENV}."
        )
    secure_raw = env.get("CLICKHOUSE_SECURE", "")
    return ClickHouseSettings(
        mode=mode,
        host=host,
        port=port_value,
        username=username or env.get("CLICKHOUSE_USER") or None,
        password=password if password is not None else env.get("CLICKHOUSE_PASSWORD"),
        database=database or env.get("CLICKHOUSE_DB") or "default",
        secure=secure_raw.strip().lower() in ("1", "true", "yes"),
        dsn=dsn,
        embedded_path=embedded_clickhouse_path(env),
        spool_path=spool_dir(env),
        spool_max_bytes=int(cap),
        best_effort=bool(best_effort),
        delivery=how,
    )


def _spool_cap_from(env: Mapping[str, str]) -> float:
    raw = (env.get(SPOOL_MAX_BYTES_ENV) or "").strip()
    if not raw:
        return DEFAULT_SPOOL_MAX_BYTES
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(
            f"{SPOOL_MAX_BYTES_ENV}={raw!r} is not a number of bytes; e.g. {DEFAULT_SPOOL_MAX_BYTES} (1 GiB)."
        ) from None
