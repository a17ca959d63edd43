"""``ClickHouseDb``: the original library's class, on top of the telemetry writer.

Kept for code written against the original::

    db = ClickHouseDb()                      # CLICKHOUSE_* env, else the embedded store
    client = db.get_ch_client()              # a query client (reports)
    db.log_event_telemetry(event_id, tokens, payload, result, model_name, task, time_spent)

Differences that matter: ``log_event_telemetry`` no longer opens a client nor inserts
synchronously; it records the event with the background writer (microseconds) and
the row lands within about a second. ``get_ch_client`` on the embedded store needs
the store's lock (see :meth:`ClickHouseDb.get_ch_client`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from ..exceptions import TelemetryError
from . import ownership
from .connection import connect, refuse_if_delivered
from .events import CallEvent, CallOutcome
from .schema import ensure_schema
from .settings import ClickHouseSettings, resolve_clickhouse_settings
from .writer import DroppingSink, NullSink, TelemetrySink, open_telemetry

__all__ = ["ClickHouseDb"]

logger = logging.getLogger(__name__)

# Spellings of the token counts accepted in ``log_event_telemetry(tokens=...)``.
_TOKEN_KEYS = {
    "tokens_input": ("tokens_input", "input", "input_tokens", "prompt", "prompt_tokens"),
    "tokens_image": ("tokens_image", "image", "image_tokens"),
    "tokens_output": ("tokens_output", "output", "output_tokens", "candidates"),
    "tokens_reasoning": ("tokens_reasoning", "reasoning", "thinking", "thoughts", "reasoning_tokens"),
    "tokens_cached": ("tokens_cached", "cached", "cached_tokens"),
    "tokens_total": ("tokens_total", "total", "total_tokens"),
}


def _token(tokens: Mapping[str, Any], field: str) -> int:
    for key in _TOKEN_KEYS[field]:
        value = tokens.get(key)
        if value is not None:
            try:
                return max(0, int(value))
            except (TypeError, ValueError):
                return 0
    return 0


def _split_model(model: str) -> tuple[str, str]:
    for tier in ("free", "paid"):
        if model.endswith("-" + tier):
            return model[: -len(tier) - 1], tier
    return model, ""


class ClickHouseDb:
    """Telemetry store access compatible with the original ``ClickHouseDb``.

    Arguments as in the original (``host``, ``port``, ``username``, ``password``; the
    ``CLICKHOUSE_*`` environment fills what is not given), plus ``database``, ``dsn``
    and ``telemetry`` (``"server"``, ``"embedded"`` or ``"off"``); ``env`` replaces
    ``os.environ`` as the environment read. ``sink`` reuses an
    existing writer (e.g. the processor's) instead of opening one; ``writer_options``
    go to :func:`open_telemetry` when this object opens its own (lazily, on the first
    ``log_event_telemetry``).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        database: str | None = None,
        dsn: str | None = None,
        telemetry: str | None = None,
        settings: ClickHouseSettings | None = None,
        sink: TelemetrySink | None = None,
        env: Mapping[str, str] | None = None,
        **writer_options: Any,
    ) -> None:
        if settings is None:
            from ..settings import process_environment  # the facade's one environment lookup

            settings = resolve_clickhouse_settings(
                host,
                port,
                username,
                password,
                database=database,
                dsn=dsn,
                telemetry=telemetry,
                env=process_environment(env),
            )
        self.settings = settings
        self._sink = sink
        self._own_sink = False
        self._writer_options = writer_options
        self._holds_store = False
        self._schema_ready = False

    # ------------------------------------------------------------------ writing

    @property
    def writer(self) -> TelemetrySink:
        """The sink events go to (opened on first use unless one was given)."""
        if self._sink is None:
            self._sink = open_telemetry(self.settings, **self._writer_options)
            self._own_sink = True
        return self._sink

    def log_event_telemetry(
        self,
        event_id: str | None,
        tokens: Mapping[str, Any] | None,
        payload: Any,
        result: Any,
        model_name: str,
        task: str,
        time_spent: float,
        service_tier: str = "standard",
    ) -> None:
        """Record one successful call, as the original did (now asynchronous, never raises).

        ``model_name`` is the original's ``"<model>-<tier>"`` (a plain model name works
        too). ``payload`` is the prompt (stored as ``json.dumps`` of it, like the
        original); a non-string ``result`` is stored as JSON.
        """
        try:
            tokens = tokens or {}
            name, tier = _split_model(model_name or "")
            if not isinstance(payload, str):
                payload = json.dumps(payload, ensure_ascii=False, default=str)
            if not isinstance(result, str):
                result = json.dumps(result, ensure_ascii=False, default=str)
            event = CallEvent(
                event_id=event_id or str(uuid.uuid4()),
                timestamp=time.time(),
                task=task or "",
                outcome=CallOutcome.OK,
                model_name=name,
                tier=tier,
                service_tier=service_tier or "standard",
                attempts=1,
                time_spent=float(time_spent or 0.0),
                total_duration_ms=float(time_spent or 0.0) * 1000.0,
                tokens_input=_token(tokens, "tokens_input"),
                tokens_image=_token(tokens, "tokens_image"),
                tokens_output=_token(tokens, "tokens_output"),
                tokens_reasoning=_token(tokens, "tokens_reasoning"),
                tokens_cached=_token(tokens, "tokens_cached"),
                tokens_total=_token(tokens, "tokens_total")
                or _token(tokens, "tokens_input") + _token(tokens, "tokens_output"),
                payload=payload,
                result=result,
            )
        except Exception:
            logger.exception("log_event_telemetry: could not build the event %s", event_id)
            return
        try:
            sink = self.writer
        except TelemetryError as exc:
            # This method never raised in the original: keep that, but count what is
            # lost (``writer.stats().dropped``) instead of dropping silently.
            logger.error("TELEMETRY OFF for this ClickHouseDb: %s; events are counted as dropped", exc)
            sink = self._sink = DroppingSink(f"telemetry store unusable: {exc}")
            self._own_sink = True
        sink.record(event)

    # ------------------------------------------------------------------ schema

    def init_db(self) -> bool:
        """The original's first step: create (or repair) the tables now.

        Like the original it never raises: on failure it logs one ERROR saying what
        went wrong and returns ``False``; ``True`` when the tables are ready. Optional:
        the writer and :meth:`get_ch_client` ensure the schema themselves. On the
        embedded store, the store is let go again unless this object held it before.
        """
        if self.settings.mode == "off":
            logger.error("init_db: telemetry is off (CSCTRACKER_AI_TELEMETRY=off); there are no tables to create")
            return False
        held = self._holds_store
        try:
            self.get_ch_client().close()
        except TelemetryError as exc:
            logger.error("init_db: %s", exc)
            return False
        if not held and self._holds_store:
            ownership.release(self.settings.embedded_path)
            self._holds_store = False
        return True

    # ------------------------------------------------------------------ reading

    def get_ch_client(self, wait_s: float = 0.0) -> Any:
        """A new clickhouse-connect client on the telemetry database, schema ensured.

        Server: always works (a new client per call, as in the original; close it when
        done). Embedded: chDB lets one process open the store. If this process holds
        it (its writer is the owner) or can take it, a client is returned and this
        process keeps the store until it exits or :meth:`close` is called (writers in
        other processes keep spooling meanwhile; nothing is lost). If another process
        holds it, waits up to ``wait_s`` seconds for it, then raises
        :class:`TelemetryError` naming that process. Where a delivery process owns the
        store (``telemetry_delivery="process"``, or under uWSGI) this process never
        opens it: raises. Telemetry off: raises.
        """
        s = self.settings
        if s.mode == "off":
            raise TelemetryError("telemetry is off (CSCTRACKER_AI_TELEMETRY=off): there is no store to query")
        if s.mode == "embedded" and not self._holds_store:
            refuse_if_delivered(s)  # before the lock: nothing is taken or created
            deadline = time.monotonic() + max(0.0, wait_s)
            while not ownership.try_acquire(s.embedded_path):
                if time.monotonic() >= deadline:
                    raise TelemetryError(
                        f"the embedded telemetry store {s.embedded_path} is held by another process "
                        f"(PID {ownership.holder_pid(s.embedded_path)}); chDB lets one process open it. "
                        "Query it from that process, stop it, pass wait_s=, or use a ClickHouse server "
                        "(CLICKHOUSE_HOST) when several processes need the data."
                    )
                time.sleep(0.1)
            self._holds_store = True
            took_store = True
        else:
            took_store = False
        try:
            client = connect(s, database=None)
            if not self._schema_ready:
                ensure_schema(client, s.database)
                self._schema_ready = True
            if s.database and s.database != "default":
                client.close()
                client = connect(s, database=s.database)
            return client
        except Exception as exc:
            if took_store:
                # Do not keep the store from other processes' writers for a client we
                # could not even open.
                ownership.release(s.embedded_path)
                self._holds_store = False
            if isinstance(exc, TelemetryError):
                raise
            raise TelemetryError(f"cannot open the telemetry store ({s.mode}): {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------ lifetime

    def close(self, timeout_s: float | None = None) -> None:
        """Close the writer this object opened (last delivery, bounded) and let go of the store."""
        if self._own_sink and self._sink is not None and not isinstance(self._sink, NullSink):
            self._sink.close(timeout_s if timeout_s is not None else 5.0)
        if self._holds_store:
            ownership.release(self.settings.embedded_path)
            self._holds_store = False

    def __enter__(self) -> ClickHouseDb:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClickHouseDb(mode={self.settings.mode!r}, database={self.settings.database!r})"
