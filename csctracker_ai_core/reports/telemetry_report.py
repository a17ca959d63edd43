"""``Telemetry.get_telemetry_data(group, period)``: what each task cost, per time bucket.

Compatible with the original library's report (same name, same arguments, same
column names) with these differences, all on purpose:

* every call counts in events and tokens, free ones included (the original counted
  paid calls only); free calls cost 0, and ``custo_lista_usd`` / ``economia_usd`` say
  what they would have cost on a paid key;
* the long-context price applies when the *prompt* exceeds 200k tokens (Google's
  rule; the original looked at input + output);
* a missing exchange rate gives ``custo_total_reais = None`` and
  ``taxa_cambio_ausente = 1`` instead of an invented rate;
* an unknown group or period raises :class:`~csctracker_ai_core.exceptions.ReportError`
  (the original fell back to 24h silently).

Columns (one row per task and bucket, ordered by bucket then task):

=========================  ===========================================================
task, data                 the task label; the bucket (``group`` format) or "group"
ultimo_evento              last call's start (aware UTC datetime)
total_events               calls, free and paid, failed ones included
custo_total_reais          cost in BRL (None when a rate is missing)
custo_medio_por_evento     BRL / total_events
custo_medio_por_dia        BRL / dias_ativos
custo_medio_por_hora       BRL / horas_ativas
total_input_tokens ...     sums and averages of prompt / output tokens (output has thinking)
dias_ativos, horas_ativas  distinct days / clock hours with at least one call
custo_total_usd            cost in USD (Decimal)
tempo_*_por_evento         time_spent (seconds of the successful request) avg / max / min
--- new ------------------------------------------------------------------------------
custo_lista_usd            what every call would cost on a paid key
economia_usd               custo_lista_usd - custo_total_usd: the free keys' saving
custo_lista_reais, economia_reais  the same in BRL (None when a rate is missing)
taxa_cambio_ausente        1 when some priced call has no exchange rate on or before its day
custo_medio_por_evento_usd USD / total_events
custo_registrado_usd       sum of the cost recorded at call time (prices of that day)
total_reasoning_tokens, total_cached_tokens, total_image_tokens, total_tokens
free_events, paid_events   calls served on free / paid keys
ok_events, errors          calls that returned / raised
total_attempts             upstream requests made (retries included)
latencia_p50_ms ...        whole-call duration percentiles (p50, p95) and max, ok calls
=========================  ===========================================================

Money is :class:`~decimal.Decimal` (12 places, truncated), times are floats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import forking
from ..exceptions import TelemetryError
from ..pricing import PriceTable, get_prices
from . import price_tables, views
from .periods import Period, group_format, period_bounds
from .queries import events_cte, period_parameters

if TYPE_CHECKING:
    from .reprice import RepriceResult
from .rows import result_to_dicts

__all__ = ["DateUtils", "Telemetry", "ORIGINAL_COLUMNS"]

logger = logging.getLogger(__name__)

ORIGINAL_COLUMNS: tuple[str, ...] = (
    "task",
    "data",
    "ultimo_evento",
    "total_events",
    "custo_total_reais",
    "custo_medio_por_evento",
    "custo_medio_por_dia",
    "custo_medio_por_hora",
    "total_input_tokens",
    "total_output_tokens",
    "avg_input_tokens",
    "avg_output_tokens",
    "dias_ativos",
    "horas_ativas",
    "custo_total_usd",
    "tempo_medio_por_evento",
    "tempo_maximo_por_evento",
    "tempo_minimo_por_evento",
)

NowArg = datetime | Callable[[], datetime] | None


class DateUtils:
    """The original's period helper, kept for code that called it directly."""

    @staticmethod
    def get_period_dates(period: str, now: NowArg = None, tz: tzinfo | str | None = None) -> tuple[datetime, datetime]:
        """``(start, end)`` of ``period`` as aware UTC datetimes; ``end`` is exclusive.

        See :mod:`csctracker_ai_core.reports.periods` for the names. Raises
        :class:`ReportError` for an unknown one.
        """
        p = period_bounds(period, now, tz)
        return p.start, p.end


class Telemetry:
    """Reports over the telemetry store.

    ``Telemetry()`` reads the same settings as the processor (``CLICKHOUSE_*`` /
    ``CSCTRACKER_AI_*``; the embedded store when no server is named). Pass ``db`` (a
    :class:`~csctracker_ai_core.telemetry.clickhouse_db.ClickHouseDb`) or ``client``
    (a clickhouse-connect client) to use an existing connection. ``prices`` replaces the
    price file (see :mod:`csctracker_ai_core.pricing`); ``tz`` is the zone of calendar
    periods and buckets (UTC by default, like the original); ``now`` fixes the clock;
    ``settings`` (a :class:`~csctracker_ai_core.telemetry.settings.ClickHouseSettings`)
    replaces the environment lookup; ``env`` replaces ``os.environ`` as the environment
    read (the store's location and ``CSCTRACKER_AI_PRICES_FILE``). Opens nothing until
    the first report.
    """

    def __init__(
        self,
        db: Any = None,
        *,
        client: Any = None,
        database: str | None = None,
        prices: PriceTable | None = None,
        tz: str = "UTC",
        now: NowArg = None,
        seed_prices: bool = True,
        settings: Any = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        from ..settings import prices_file_from, process_environment

        self._db = db
        self._env = process_environment(env)
        self._prices_file = prices_file_from(self._env)
        self._settings = settings
        self._client = client
        self._database = database
        self._base_prices = prices
        self._tz = tz
        self._now = now
        self._seed_prices = seed_prices
        self._lock = threading.RLock()
        self._ready = False
        self._owned_db: Any | None = None  # a ClickHouseDb made here (holds the embedded store)
        self._owned_client = False
        # The lock is held across a whole connect + schema check (seconds): a fork does not
        # wait for it; the child gets a new one and its own connection (see forking.py).
        forking.register(self, in_child=Telemetry._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        """In a forked child: a new lock; a connection opened here is dropped (its socket
        is the parent's) unclosed, and the next report opens this process's own."""
        self._lock = threading.RLock()
        if self._owned_client and self._client is not None:
            forking.abandon(self._client)
            self._client = None
            self._ready = False
            self._owned_client = False

    # ------------------------------------------------------------------ connection

    def _connect(self) -> tuple[Any, str]:
        with self._lock:
            if self._client is None:
                self._client, database = _open_client(self._db, self)
                if self._database is None:
                    self._database = database
            if self._database is None:
                self._database = getattr(self._client, "database", None) or "default"
            if not self._ready:
                from ..telemetry.schema import ensure_schema

                ensure_schema(self._client, self._database)
                if self._seed_prices:
                    price_tables.seed_model_prices(self._client, self._database, self._file_prices())
                self._ready = True
            return self._client, self._database

    @property
    def database(self) -> str:
        """The ClickHouse database the reports read."""
        return self._connect()[1]

    @property
    def client(self) -> Any:
        """The clickhouse-connect client in use (opened on first use)."""
        return self._connect()[0]

    def close(self) -> None:
        """Close a connection this object opened (not one it was given)."""
        with self._lock:
            if self._owned_client and self._client is not None:
                try:
                    self._client.close()
                except Exception:  # pragma: no cover - closing is best effort
                    logger.debug("closing the report client failed", exc_info=True)
                self._client = None
                self._ready = False
                self._owned_client = False
            if self._owned_db is not None:
                self._owned_db.close()
                self._owned_db = None

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ prices

    def _file_prices(self) -> PriceTable:
        return self._base_prices if self._base_prices is not None else get_prices(self._prices_file)

    def prices(self) -> PriceTable:
        """The prices reports use: the price file overlaid with ``model_prices``."""
        client, database = self._connect()
        return price_tables.effective_prices(client, database, self._file_prices())

    def set_model_price(
        self,
        model: str,
        input_price_less_200: Decimal | str | float,
        output_price_less_200: Decimal | str | float,
        input_price_more_200: Decimal | str | float | None = None,
        output_price_more_200: Decimal | str | float | None = None,
        *,
        valid_from: date | datetime | str | None = None,
        valid_to: date | datetime | str | None = None,
        **other_prices: Decimal | str | float | None,
    ) -> None:
        """Store a price of ``model`` (USD per 1M tokens) from ``valid_from`` (default: since always).

        ``model_prices`` keeps every row; for one (model, ``valid_from``) the newest wins.
        ``other_prices``: cached / per-modality fields of the price file. Stored costs
        follow after :meth:`reprice`.
        """
        client, database = self._connect()
        price_tables.insert_model_price(
            client,
            database,
            model,
            input_price_less_200,
            output_price_less_200,
            input_price_more_200,
            output_price_more_200,
            valid_from=valid_from,
            valid_to=valid_to,
            other_prices=other_prices,
        )

    def set_exchange_rate(self, day: date | datetime | str, rate: Decimal | str | float, currency: str = "BRL") -> None:
        """Record the USD->``currency`` rate of ``day`` (e.g. ``("2025-01-31", "5.87")``).

        A second call for the same day replaces the first. Raises :class:`ReportError`
        for a bad date or a rate that is not a positive number.
        """
        client, database = self._connect()
        price_tables.insert_exchange_rate(client, database, day, rate, currency)

    def exchange_rates(self, currency: str = "BRL") -> list[tuple[date, Decimal]]:
        """Stored ``(date, rate)`` pairs, oldest first."""
        client, database = self._connect()
        return price_tables.exchange_rates(client, database, currency)

    # ------------------------------------------------------------------ reports

    def period(self, period: str) -> Period:
        """Resolve a period name with this report's clock and zone."""
        return period_bounds(period, self._now, self._tz)

    def get_telemetry_data(self, group: str | None = "day", period: str = "24h") -> list[dict[str, Any]]:
        """Per task and ``group`` bucket over ``period``: events, tokens, cost, latency.

        ``group``: ``year``, ``month``, ``day``, ``hour`` (hour of the day, as the
        original), ``datehour``, ``minute``, or ``group`` / ``all`` for one bucket.
        ``period``: see :mod:`~csctracker_ai_core.reports.periods`. Raises
        :class:`ReportError` on bad names, before touching the store.
        """
        fmt = group_format(group)
        resolved = self.period(period)
        client, database = self._connect()
        source = events_cte(database, tz=self._tz)
        tz_lit = price_tables.sql_string(self._tz)
        bucket = f"formatDateTime(timestamp, {price_tables.sql_string(fmt)}, {tz_lit})" if fmt else "'group'"
        sql = f"""
SELECT
    task, data, ultimo_evento, total_events,
    if(taxa_cambio_ausente, NULL, _brl) AS custo_total_reais,
    custo_total_reais / total_events AS custo_medio_por_evento,
    custo_total_reais / dias_ativos AS custo_medio_por_dia,
    custo_total_reais / horas_ativas AS custo_medio_por_hora,
    total_input_tokens, total_output_tokens, avg_input_tokens, avg_output_tokens,
    dias_ativos, horas_ativas, custo_total_usd,
    tempo_medio_por_evento, tempo_maximo_por_evento, tempo_minimo_por_evento,
    custo_lista_usd, custo_lista_usd - custo_total_usd AS economia_usd,
    if(taxa_cambio_ausente, NULL, _brl_list) AS custo_lista_reais,
    if(taxa_cambio_ausente, NULL, _brl_list - _brl) AS economia_reais,
    taxa_cambio_ausente,
    custo_total_usd / total_events AS custo_medio_por_evento_usd,
    custo_registrado_usd,
    total_reasoning_tokens, total_cached_tokens, total_image_tokens, total_tokens,
    free_events, paid_events, ok_events, errors, total_attempts,
    latencia_p50_ms, latencia_p95_ms, latencia_max_ms
FROM (
    SELECT
        toString(task) AS task,
        {bucket} AS data,
        max(timestamp) AS ultimo_evento,
        count() AS total_events,
        toUInt8(countIf(_list_cost > 0 AND NOT (coalesce(_rate, 0) > 0)) > 0) AS taxa_cambio_ausente,
        toDecimal128(sum(_cost * coalesce(_rate, 0)), 12) AS _brl,
        toDecimal128(sum(_list_cost * coalesce(_rate, 0)), 12) AS _brl_list,
        toDecimal128(sum(_cost), 12) AS custo_total_usd,
        toDecimal128(sum(_list_cost), 12) AS custo_lista_usd,
        toDecimal128(sum(cost_usd), 12) AS custo_registrado_usd,
        sum(tokens_input) AS total_input_tokens,
        sum(tokens_output) AS total_output_tokens,
        avg(tokens_input) AS avg_input_tokens,
        avg(tokens_output) AS avg_output_tokens,
        sum(tokens_reasoning) AS total_reasoning_tokens,
        sum(tokens_cached) AS total_cached_tokens,
        sum(tokens_image) AS total_image_tokens,
        sum(tokens_total) AS total_tokens,
        uniqExact(_day) AS dias_ativos,
        uniqExact(toStartOfHour(timestamp)) AS horas_ativas,
        avgIf(time_spent, outcome = 'ok') AS tempo_medio_por_evento,
        if(countIf(outcome = 'ok') = 0, NULL, maxIf(time_spent, outcome = 'ok')) AS tempo_maximo_por_evento,
        if(countIf(outcome = 'ok') = 0, NULL, minIf(time_spent, outcome = 'ok')) AS tempo_minimo_por_evento,
        countIf(tier = 'free') AS free_events,
        countIf(tier = 'paid') AS paid_events,
        countIf(outcome = 'ok') AS ok_events,
        countIf(outcome != 'ok') AS errors,
        sum(attempts) AS total_attempts,
        quantileExactIf(0.5)(total_duration_ms, outcome = 'ok') AS latencia_p50_ms,
        quantileExactIf(0.95)(total_duration_ms, outcome = 'ok') AS latencia_p95_ms,
        if(countIf(outcome = 'ok') = 0, NULL, maxIf(total_duration_ms, outcome = 'ok')) AS latencia_max_ms
    FROM {source}
    GROUP BY task, data
)
ORDER BY data, task
"""
        result = client.query(sql, parameters=period_parameters(resolved))
        rows = result_to_dicts(result)
        for row in rows:
            if not row["ok_events"]:
                row["latencia_p50_ms"] = row["latencia_p95_ms"] = None
            row["taxa_cambio_ausente"] = int(row["taxa_cambio_ausente"])
        return rows

    def usage_by(self, dimension: str, period: str = "24h") -> list[dict[str, Any]]:
        """Calls, errors, 429s by quota id, tokens and cost per ``dimension``.

        ``dimension``: ``key`` (fingerprints), ``project``, ``model``, ``tier``,
        ``task`` or ``service_tier``. See :func:`views.usage_by`.
        """
        resolved = self.period(period)
        client, database = self._connect()
        return views.usage_by(client, database, resolved, dimension, tz=self._tz)

    def usage_by_key(self, period: str = "24h") -> list[dict[str, Any]]:
        """:meth:`usage_by` per key fingerprint."""
        return self.usage_by("key", period)

    def usage_by_project(self, period: str = "24h") -> list[dict[str, Any]]:
        """:meth:`usage_by` per Google Cloud project."""
        return self.usage_by("project", period)

    def usage_by_model(self, period: str = "24h") -> list[dict[str, Any]]:
        """:meth:`usage_by` per model."""
        return self.usage_by("model", period)

    def usage_by_tier(self, period: str = "24h") -> list[dict[str, Any]]:
        """:meth:`usage_by` per key tier (free / paid)."""
        return self.usage_by("tier", period)

    def quota_errors(self, period: str = "24h", by: str = "key") -> list[dict[str, Any]]:
        """429 answers per ``by`` and Gemini quota id (from ``ai_attempts``)."""
        resolved = self.period(period)
        client, database = self._connect()
        return views.quota_errors(client, database, resolved, by)

    def waste(self, period: str = "24h") -> list[dict[str, Any]]:
        """Cost of attempts that did not produce the result, per task, model and failure kind."""
        resolved = self.period(period)
        client, database = self._connect()
        return views.waste(client, database, resolved)

    def cost_by_served_tier(self, period: str = "24h") -> list[dict[str, Any]]:
        """Requests and cost per service tier billed (served when known, else asked)."""
        resolved = self.period(period)
        client, database = self._connect()
        return views.cost_by_served_tier(client, database, resolved)

    def reprice(self, period: str = "max") -> RepriceResult:
        """Recompute the stored costs of ``period`` with the current prices (see :mod:`.reprice`)."""
        from .reprice import reprice

        resolved = self.period(period)
        client, database = self._connect()
        return reprice(client, database, self.prices(), resolved)

    def latency(self, period: str = "24h", by: str = "model") -> list[dict[str, Any]]:
        """Latency percentiles (ms) of successful calls and of upstream requests, per ``by``."""
        resolved = self.period(period)
        client, database = self._connect()
        return views.latency_percentiles(client, database, resolved, by)

    def get_budget_status(
        self,
        budgets: Any = None,
        *,
        redis_url: str | None = None,
    ) -> list[Any]:
        """Each budget rule now: spent, reserved, limit, remaining, when it resets.

        ``budgets``: rules as :class:`~csctracker_ai_core.Budget` s or dicts, default
        ``CSCTRACKER_AI_BUDGETS``. Spent is what the store holds for the rule's current
        period; with ``redis_url`` (default ``CSCTRACKER_AI_REDIS_URL``) the processes'
        shared counters add what they reserved for calls in flight (and spend not yet
        delivered to the store). Returns :class:`~csctracker_ai_core.BudgetLine` s.
        """
        from ..budgets import history
        from ..budgets.rules import BUDGETS_ENV, parse_budgets
        from ..settings import env_text

        rules = parse_budgets(budgets if budgets is not None else env_text(self._env, BUDGETS_ENV))
        if not rules:
            return []
        url = redis_url or env_text(self._env, "CSCTRACKER_AI_REDIS_URL")
        state = None
        if url:
            from ..budgets.redis_state import RedisBudgetState

            state = RedisBudgetState.from_url(url, namespace=env_text(self._env, "CSCTRACKER_AI_REDIS_NAMESPACE"))
        client, database = self._connect()
        return history.budget_status(client, database, rules, self._now_ts(), state)

    def _now_ts(self) -> float:
        now = self._now() if callable(self._now) else self._now
        return now.timestamp() if now is not None else time.time()

    def timeseries(self, period: str = "24h", group: str | None = None, by: str = "task") -> list[dict[str, Any]]:
        """Calls, tokens and cost per time bucket and ``by`` (task, model, tier...), for charts.

        ``group`` defaults to a bucket size that suits the period's length.
        """
        resolved = self.period(period)
        client, database = self._connect()
        return views.timeseries(client, database, resolved, group, by, tz=self._tz)


def _open_client(db: Any, owner: Telemetry) -> tuple[Any, str]:
    """A query client for ``db`` (a ClickHouseDb), or for the processor's settings.

    Without ``db`` a :class:`ClickHouseDb` is made from ``settings`` (or the
    environment), so reports find the store exactly where the processor writes it.
    """
    if db is None:
        from ..telemetry.clickhouse_db import ClickHouseDb

        db = ClickHouseDb(settings=owner._settings, env=owner._env)
        owner._owned_db = db
    getter = getattr(db, "get_ch_client", None)
    if callable(getter):
        client = getter()
        owner._owned_client = True  # a new client per call: ours to close
    else:
        client = getattr(db, "client", None)
        if client is None:
            raise TelemetryError(f"{type(db).__name__} gives no ClickHouse client to read reports from.")
    settings = getattr(db, "settings", None)
    database = getattr(settings, "database", None) or getattr(client, "database", None) or "default"
    return client, database
