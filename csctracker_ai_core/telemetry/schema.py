"""The ClickHouse schema of the telemetry store, and its versioned, idempotent migrations.

Tables (all in the configured database):

``ai_events``
    one row per call. ``ReplacingMergeTree`` ordered by
    ``(toDate(timestamp), task, event_id)``: only values fixed for the life of an event
    (the call's start time, its task, its id), so a replayed row always collapses onto
    the first one. Monthly partitions (``toYYYYMM(timestamp)``).
``ai_attempts``
    one row per upstream request (429s and errors included), ordered by
    ``(toDate(timestamp), event_id, attempt)``.
``model_prices`` / ``daily_exchange_rates``
    the original library's price and currency tables, read by the reports.
``ai_events_rejected``
    records the writer could not insert (wrong types, refused by ClickHouse), with the
    reason; the same lines are in the spool's quarantine file.
``ai_schema_version``
    one row per migration applied.

Every migration checks the state it finds and only does what is missing, so running
them again (or after a crash half-way) is safe. At every connection each table we own
gets back the columns it is missing (someone dropped one by hand); when that cannot be
done, :class:`SchemaDriftError` says which statement to run. The upgrade of a table created by the
original library (``MergeTree ORDER BY timestamp``) builds the new table beside it,
copies every row, then swaps the two with ``EXCHANGE TABLES`` (atomic); the old table
is kept as ``ai_events_legacy_v0`` until someone drops it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._version import __version__
from ..exceptions import TelemetryError

__all__ = [
    "SCHEMA_VERSION",
    "EVENT_COLUMNS",
    "ATTEMPT_COLUMNS",
    "Column",
    "Encoding",
    "SchemaReport",
    "SchemaDriftError",
    "ensure_schema",
    "ai_events_ddl",
]

logger = logging.getLogger(__name__)

EVENTS_TABLE = "ai_events"
ATTEMPTS_TABLE = "ai_attempts"
REJECTED_TABLE = "ai_events_rejected"
VERSION_TABLE = "ai_schema_version"
LEGACY_TABLE = "ai_events_legacy_v0"
_BUILD_TABLE = "ai_events__migrating_v1"

# How many recent insert blocks each table remembers for insert_deduplication_token:
# a writer retrying a batch (same token) within this many inserts lands it once.
DEDUP_WINDOW = 10_000

_LC = "LowCardinality(String)"
_TS = "DateTime64(3, 'UTC')"
_MONEY = "Decimal(18, 12)"  # exact USD; 12 places keep per-token prices exact


class Encoding(enum.Enum):
    """How a column's value travels from an event to ClickHouse.

    The spool record holds JSON values; the insert builder turns each into what
    clickhouse-connect takes for the column's type. Derived from the type.
    """

    VALUE = "value"  # JSON-native (str, int, float, bool, map) in the record and the column
    TIMESTAMP = "timestamp"  # epoch seconds (float, UTC) in events and records; datetime in the column
    DECIMAL = "decimal"  # decimal text in the record (exact); Decimal in the column


@dataclass(frozen=True)
class Column:
    """One column of a telemetry table: the single definition of it.

    ``default`` is the SQL ``DEFAULT`` expression (``None``: none), ``codec`` the
    compression. ``from_record=False`` marks a column ClickHouse fills itself
    (``ingested_at``): it is in the DDL but not in spool records.
    """

    name: str
    type: str
    default: str | None = None
    codec: str | None = None
    from_record: bool = True

    @property
    def encoding(self) -> Encoding:
        """How the value is held in a record and converted for the insert (see :class:`Encoding`)."""
        base = self.type[len("Nullable(") : -1] if self.type.startswith("Nullable(") else self.type
        if base.startswith("DateTime"):
            return Encoding.TIMESTAMP
        if base.startswith("Decimal"):
            return Encoding.DECIMAL
        return Encoding.VALUE

    def sql(self) -> str:
        """The column's definition in ``CREATE TABLE`` / ``ADD COLUMN``."""
        out = f"`{self.name}` {self.type}"
        if self.default is not None:
            out += f" DEFAULT {self.default}"
        if self.codec is not None:
            out += f" CODEC({self.codec})"
        return out


# Adding a column: one line here (name, type, default). Existing tables get it by
# ``ADD COLUMN IF NOT EXISTS`` on the next start; a field of the same name on
# CallEvent / AttemptEvent fills it (tests/test_telemetry_schema.py ties the two).
# Order = column order.
EVENT_COLUMNS: tuple[Column, ...] = (
    # --- the original library's columns, same names and meanings -----------------
    Column("timestamp", _TS),
    Column("event_id", "String"),
    Column("tokens_input", "UInt32", "0"),
    Column("tokens_image", "UInt32", "0"),
    Column("tokens_output", "UInt32", "0"),
    Column("tokens_reasoning", "UInt32", "0"),
    Column("payload", "String", None, "ZSTD(9)"),
    Column("result", "String", None, "ZSTD(9)"),
    Column("model", _LC),
    Column("task", _LC),
    Column("time_spent", "Float64", "0"),
    Column("service_tier", _LC, "'standard'"),
    # --- added for the audit --------------------------------------------------------
    Column("model_name", _LC, "''"),
    Column("tier", _LC, "''"),
    Column("served_tier", _LC, "''"),
    Column("operation", _LC, "'generate_content'"),
    Column("provider", _LC, "'gcp.gemini'"),
    Column("key_fingerprint", _LC, "''"),
    Column("project", _LC, "''"),
    Column("outcome", _LC, "'ok'"),
    Column("attempts", "UInt16", "0"),
    Column("error_type", _LC, "''"),
    Column("error_message", "String", "''", "ZSTD(3)"),
    Column("quota_id", _LC, "''"),
    Column("total_duration_ms", "Float64", "0"),
    Column("tokens_cached", "UInt32", "0"),
    Column("tokens_total", "UInt32", "0"),
    Column("cost_usd", _MONEY, "0"),
    Column("list_cost_usd", _MONEY, "0"),
    Column("payload_bytes", "UInt32", "0"),
    Column("result_bytes", "UInt32", "0"),
    Column("finish_reason", _LC, "''"),
    Column("response_id", "String", "''"),
    Column("model_version", _LC, "''"),
    Column("image_sha256", "String", "''"),
    Column("image_bytes", "UInt32", "0"),
    Column("image_mime", _LC, "''"),
    Column("image_base64", "String", "''", "ZSTD(9)"),
    Column("return_json", "Bool", "true"),
    Column("metadata", "Map(LowCardinality(String), String)", None, "ZSTD(3)"),
    # fields whose text was not valid UTF-8 (lone surrogates replaced by U+FFFD)
    Column("sanitized_fields", _LC, "''"),
    Column("library_version", _LC, "''"),
    # --- the ledger (issue 11): sums over the call's attempts ------------------------
    Column("tokens_audio", "UInt32", "0"),
    Column("tokens_video", "UInt32", "0"),
    Column("cost_wasted_usd", _MONEY, "0"),  # cost of the attempts that did not produce the result
    Column("ingested_at", _TS, "now64(3)", from_record=False),
)

ATTEMPT_COLUMNS: tuple[Column, ...] = (
    Column("timestamp", _TS),
    Column("event_id", "String"),
    Column("attempt", "UInt16"),
    Column("task", _LC, "''"),
    Column("key_fingerprint", _LC, "''"),
    Column("project", _LC, "''"),
    Column("tier", _LC, "''"),
    Column("model_name", _LC, "''"),
    Column("duration_ms", "Float64", "0"),
    Column("outcome", _LC, "''"),
    Column("http_status", "UInt16", "0"),
    Column("error_type", _LC, "''"),
    Column("error_message", "String", "''", "ZSTD(3)"),
    Column("quota_id", _LC, "''"),
    Column("retry_delay_s", "Float64", "0"),
    Column("decision", _LC, "''"),
    Column("suspended_until", f"Nullable({_TS})"),
    Column("library_version", _LC, "''"),
    # --- the ledger (issue 11): what Gemini reported for this request, and its cost ---
    Column("service_tier", _LC, "''"),  # asked
    Column("served_tier", _LC, "''"),  # x-gemini-service-tier of the reply
    Column("usage_known", "Bool", "false"),  # false: no usage came back (never reached Gemini, HTTP error)
    Column("tokens_input", "UInt32", "0"),
    Column("tokens_output", "UInt32", "0"),  # candidates + thinking
    Column("tokens_reasoning", "UInt32", "0"),
    Column("tokens_cached", "UInt32", "0"),
    Column("tokens_image", "UInt32", "0"),
    Column("tokens_audio", "UInt32", "0"),
    Column("tokens_video", "UInt32", "0"),
    Column("tokens_total", "UInt32", "0"),
    Column("cost_usd", _MONEY, "0"),
    Column("list_cost_usd", _MONEY, "0"),
    Column("finish_reason", _LC, "''"),
    Column("ingested_at", _TS, "now64(3)", from_record=False),
)

# A record the writer could not insert: what, why, and the spool record itself (JSON).
REJECTED_COLUMNS: tuple[Column, ...] = (
    Column("rejected_at", _TS),
    Column("source_table", _LC),
    Column("event_id", "String", "''"),
    Column("reason", "String", "''"),
    Column("record", "String", "''", "ZSTD(9)"),
    Column("library_version", _LC, "''"),
)

_EVENTS_ORDER_BY = "(toDate(timestamp), task, event_id)"
_ATTEMPTS_ORDER_BY = "(toDate(timestamp), event_id, attempt)"


def _q(database: str, table: str) -> str:
    return f"`{database}`.`{table}`"


def _replacing_table_ddl(database: str, table: str, columns: Sequence[Column], time_column: str, order_by: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of one of our ReplacingMergeTree tables (monthly partitions)."""
    cols = ",\n  ".join(c.sql() for c in columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {_q(database, table)} (\n  {cols}\n)\n"
        f"ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM({time_column})\n"
        f"ORDER BY {order_by}\n"
        f"SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
    )


def ai_events_ddl(database: str, table: str = EVENTS_TABLE) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of ``ai_events`` (current layout)."""
    return _replacing_table_ddl(database, table, EVENT_COLUMNS, "timestamp", _EVENTS_ORDER_BY)


def _ai_attempts_ddl(database: str) -> str:
    return _replacing_table_ddl(database, ATTEMPTS_TABLE, ATTEMPT_COLUMNS, "timestamp", _ATTEMPTS_ORDER_BY)


def _ai_events_rejected_ddl(database: str) -> str:
    return _replacing_table_ddl(
        database, REJECTED_TABLE, REJECTED_COLUMNS, "rejected_at", "(rejected_at, event_id, source_table)"
    )


# model_prices keeps every price ever inserted: one row per (model, valid_from) and
# insertion time; the reports' reader takes the last inserted per (model, valid_from).
# NULL price columns follow the row's input price (the price file's defaults).
_PRICE_COLUMNS_ADDED: tuple[Column, ...] = (
    # No DEFAULT expression (ClickHouse refuses one on a column joining the sorting key
    # in place); the type's default, the epoch, means "since always" (undated).
    Column("valid_from", _TS),
    Column("valid_to", f"Nullable({_TS})"),
    Column("service_tier_multipliers", "String", "''"),  # JSON {tier: multiplier}, '' = the table's
) + tuple(
    Column(f"{kind}_{band}", "Nullable(Decimal(18, 9))")
    for kind in (
        "cached_input_price",
        "image_input_price",
        "video_input_price",
        "audio_input_price",
        "cached_audio_input_price",
    )
    for band in ("less_200", "more_200")
)
_MODEL_PRICES_ORDER_BY = "(model, timestamp, valid_from)"

_MODEL_PRICES_DDL = (
    """CREATE TABLE IF NOT EXISTS {t} (
  `timestamp` DateTime,
  `model` String,
  `input_price_less_200` Decimal(18, 9),
  `output_price_less_200` Decimal(18, 9),
  `input_price_more_200` Decimal(18, 9),
  `output_price_more_200` Decimal(18, 9),
  `source` String DEFAULT '',
  """
    + ",\n  ".join(c.sql() for c in _PRICE_COLUMNS_ADDED)
    + """
) ENGINE = ReplacingMergeTree ORDER BY """
    + _MODEL_PRICES_ORDER_BY
    + "\n"
)

_EXCHANGE_RATES_DDL = """CREATE TABLE IF NOT EXISTS {t} (
  `date` Date,
  `currency` LowCardinality(String) DEFAULT 'BRL',
  `rate` Decimal(18, 6)
) ENGINE = ReplacingMergeTree ORDER BY (currency, date)"""


@dataclass(frozen=True)
class SchemaReport:
    """What :func:`ensure_schema` found and did."""

    version: int  # schema version after the run
    applied: tuple[str, ...]  # names of the migrations run this time
    legacy_rows_migrated: int  # rows copied from an original-library ai_events (0 if none)


# ----------------------------------------------------------------------------- helpers


def _table_info(client: Any, database: str, table: str) -> tuple[str, dict[str, str]] | None:
    """``(engine, {column: type})`` of a table, or ``None`` when it does not exist."""
    rows = client.query(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    if not rows:
        return None
    cols = client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    return rows[0][0], dict(cols)


def _is_current_events_layout(info: tuple[str, dict[str, str]]) -> bool:
    engine, cols = info
    return engine.startswith("Replacing") and "model_name" in cols


class SchemaDriftError(TelemetryError):
    """A table we own lacks columns the writer needs, and adding them failed.

    Events stay in the spool until the statement in the message is run (by a user
    allowed to ``ALTER``), then they are delivered at the next reconnection.
    """


def _add_missing_columns(client: Any, database: str, table: str, spec: Sequence[Column]) -> None:
    """Additive upgrades and drift repair: a column missing from the table is added in place.

    Raises :class:`SchemaDriftError` naming the statements to run when ClickHouse
    refuses to add them (e.g. a user without ``ALTER`` rights).
    """
    info = _table_info(client, database, table)
    if info is None:
        return
    failed: list[str] = []
    cause: BaseException | None = None
    for col in spec:
        if col.name not in info[1]:
            sql = f"ALTER TABLE {_q(database, table)} ADD COLUMN IF NOT EXISTS {col.sql()}"
            try:
                client.command(sql)
            except Exception as exc:
                failed.append(sql)
                cause = exc
            else:
                logger.warning("telemetry table %s.%s was missing column %s: added back", database, table, col.name)
    if failed:
        raise SchemaDriftError(
            f"the telemetry table {database}.{table} lacks columns the writer needs and adding them failed "
            f"({type(cause).__name__}: {str(cause)[:200]}); events stay spooled until you run: " + "; ".join(failed)
        ) from cause


def _legacy_select(
    database: str, source: str, cols: dict[str, str], model_names: list[str] | None = None, prices_file: Any = None
) -> tuple[str, str]:
    """``(target column list, SELECT ...)`` copying an original-library table.

    Columns the original added late (``tokens_reasoning``, ``service_tier``) may be
    missing from very old tables; they take their defaults. Event ids repeated within
    one (day, task) get a ``#n`` suffix so the ReplacingMergeTree cannot fold two
    distinct original rows into one.
    """

    def has(c: str) -> bool:
        return c in cols

    model = "toString(model)" if has("model") else "''"
    exprs: list[tuple[str, str]] = [
        ("timestamp", "toDateTime64(timestamp, 3, 'UTC')"),
        (
            "event_id",
            "if(count() OVER w > 1, concat(toString(event_id), '#', toString(row_number() OVER w)), toString(event_id))",
        ),
        ("tokens_input", "toUInt32(tokens_input)" if has("tokens_input") else "0"),
        ("tokens_image", "toUInt32(tokens_image)" if has("tokens_image") else "0"),
        ("tokens_output", "toUInt32(tokens_output)" if has("tokens_output") else "0"),
        ("tokens_reasoning", "toUInt32(tokens_reasoning)" if has("tokens_reasoning") else "0"),
        ("payload", "toString(payload)" if has("payload") else "''"),
        ("result", "toString(result)" if has("result") else "''"),
        ("model", model),
        ("task", "toString(task)" if has("task") else "''"),
        ("time_spent", "toFloat64(time_spent)" if has("time_spent") else "0"),
        ("service_tier", "toString(service_tier)" if has("service_tier") else "'standard'"),
        (
            "model_name",
            (
                f"multiIf(endsWith({model}, '-free') OR endsWith({model}, '-paid'), "
                f"substring({model}, 1, length({model}) - 5), {model})"
            ),
        ),
        ("tier", f"multiIf(endsWith({model}, '-free'), 'free', endsWith({model}, '-paid'), 'paid', '')"),
        ("outcome", "'ok'"),
        ("attempts", "1"),
        (
            "tokens_total",
            "toUInt32(tokens_input) + toUInt32(tokens_output)" if has("tokens_input") and has("tokens_output") else "0",
        ),
        ("library_version", "'legacy'"),
    ]
    if model_names is not None:
        # The original recorded no cost: price each row with the one cost function's
        # SQL twin, at the price in force at its timestamp (tokens_output already
        # includes thinking in the original's rows). Tier from the "-free"/"-paid" suffix.
        from ..pricing import get_prices
        from ..reports.price_tables import cost_on_key_sql, list_cost_sql

        tier = dict(exprs)["tier"]
        list_cost = list_cost_sql(
            get_prices(prices_file),
            model_names,
            model=model,
            tier=dict(exprs)["service_tier"],
            at="timestamp",
            tokens_input=dict(exprs)["tokens_input"],
            tokens_output=dict(exprs)["tokens_output"],
            tokens_cached="0",
            tokens_image=dict(exprs)["tokens_image"],
            tokens_audio="0",
            tokens_video="0",
        )
        exprs += [("list_cost_usd", list_cost), ("cost_usd", cost_on_key_sql(tier, list_cost))]
    # result / payload / timestamp / task may be reserved-ish; quote the source columns
    target = ", ".join(f"`{n}`" for n, _ in exprs)
    select = (
        f"SELECT {', '.join(e for _, e in exprs)} FROM {_q(database, source)} "
        f"WINDOW w AS (PARTITION BY toDate(timestamp), toString(task), toString(event_id) ORDER BY timestamp)"
    )
    return target, select


def _count(client: Any, database: str, table: str) -> int:
    return int(client.command(f"SELECT count() FROM {_q(database, table)}"))


# ----------------------------------------------------------------------------- migrations


def _m1_ai_events(client: Any, database: str) -> int:
    """Create ``ai_events``, or upgrade an original-library one with every row kept.

    States a crash can leave, and what a re-run does:
    * build table exists, ``ai_events`` still legacy -> the copy was cut short: drop the
      build table and copy again;
    * build table exists, ``ai_events`` current -> the swap happened, the build table
      now holds the legacy rows: rename it to ``ai_events_legacy_v0``.
    """
    info = _table_info(client, database, EVENTS_TABLE)
    build = _table_info(client, database, _BUILD_TABLE)
    if info is None:
        if build is not None:  # can only be a leftover of a copy that never swapped
            client.command(f"DROP TABLE IF EXISTS {_q(database, _BUILD_TABLE)}")
        client.command(ai_events_ddl(database))
        return 0
    if _is_current_events_layout(info):
        if build is not None:
            _park_legacy(client, database, _BUILD_TABLE)
        _add_missing_columns(client, database, EVENTS_TABLE, EVENT_COLUMNS)
        return 0
    # Legacy layout: build beside it, copy, check, swap.
    client.command(f"DROP TABLE IF EXISTS {_q(database, _BUILD_TABLE)}")
    client.command(ai_events_ddl(database, _BUILD_TABLE))
    names = (
        [r[0] for r in client.query(f"SELECT DISTINCT toString(model) FROM {_q(database, EVENTS_TABLE)}").result_rows]
        if "model" in info[1]
        else []
    )
    target, select = _legacy_select(database, EVENTS_TABLE, info[1], names)
    client.command(f"INSERT INTO {_q(database, _BUILD_TABLE)} ({target}) {select}")
    copied, source_rows = _count(client, database, _BUILD_TABLE), _count(client, database, EVENTS_TABLE)
    if copied != source_rows:
        # Rows inserted into the legacy table during the copy: start again next run
        # rather than swap and lose them.
        raise RuntimeError(f"ai_events upgrade copied {copied} of {source_rows} rows; will retry on the next start")
    client.command(f"EXCHANGE TABLES {_q(database, EVENTS_TABLE)} AND {_q(database, _BUILD_TABLE)}")
    _park_legacy(client, database, _BUILD_TABLE)
    logger.warning(
        "Upgraded %s.%s from the original library's layout: %d rows kept; the old table is kept as %s",
        database,
        EVENTS_TABLE,
        copied,
        LEGACY_TABLE,
    )
    return copied


def _park_legacy(client: Any, database: str, table: str) -> None:
    name = LEGACY_TABLE
    n = 1
    while _table_info(client, database, name) is not None:
        n += 1
        name = f"{LEGACY_TABLE}_{n}"
    client.command(f"RENAME TABLE {_q(database, table)} TO {_q(database, name)}")


def _m2_ai_attempts(client: Any, database: str) -> int:
    client.command(_ai_attempts_ddl(database))
    _add_missing_columns(client, database, ATTEMPTS_TABLE, ATTEMPT_COLUMNS)
    return 0


def _m3_prices(client: Any, database: str) -> int:
    client.command(_MODEL_PRICES_DDL.format(t=_q(database, "model_prices")))
    client.command(_EXCHANGE_RATES_DDL.format(t=_q(database, "daily_exchange_rates")))
    return 0


def _m4_rejected(client: Any, database: str) -> int:
    client.command(_ai_events_rejected_ddl(database))
    return 0


def _m5_price_history(client: Any, database: str) -> int:
    """Dated prices in ``model_prices`` (the original's table or 0.1.0's): columns added, rows kept.

    ``valid_from`` joins the sorting key in the same ALTER that adds it (the only key
    change ClickHouse allows in place), so two periods of one model inserted in the
    same second stay two rows. Re-running finds the columns there and does nothing.
    """
    table = _q(database, "model_prices")
    info = _table_info(client, database, "model_prices")
    if info is None:
        client.command(_MODEL_PRICES_DDL.format(t=table))
        return 0
    missing = [c for c in _PRICE_COLUMNS_ADDED if c.name not in info[1]]
    if not missing:
        return 0
    adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {c.sql()}" for c in missing)
    if "valid_from" not in info[1]:
        adds += f", MODIFY ORDER BY {_MODEL_PRICES_ORDER_BY}"
    client.command(f"ALTER TABLE {table} {adds}")
    return 0


_MIGRATIONS: tuple[tuple[int, str, Callable[[Any, str], int]], ...] = (
    (1, "ai_events", _m1_ai_events),
    (2, "ai_attempts", _m2_ai_attempts),
    (3, "model_prices+daily_exchange_rates", _m3_prices),
    (4, "ai_events_rejected", _m4_rejected),
    (5, "model_prices history (valid_from, valid_to, cached and modality prices)", _m5_price_history),
)

# Tables the writer inserts into, with their columns: drift repaired at every connection.
_OWNED_TABLES: tuple[tuple[str, Sequence[Column]], ...] = (
    (EVENTS_TABLE, EVENT_COLUMNS),
    (ATTEMPTS_TABLE, ATTEMPT_COLUMNS),
    (REJECTED_TABLE, REJECTED_COLUMNS),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]


def ensure_schema(client: Any, database: str | None = None) -> SchemaReport:
    """Bring the telemetry schema of ``database`` up to :data:`SCHEMA_VERSION`.

    Idempotent and safe to re-run after an interruption. ``client`` is a
    clickhouse-connect client (server or chDB). ``database`` defaults to the
    client's database, else ``default``. Also creates ``model_prices`` and
    ``daily_exchange_rates`` when missing. Raises whatever the client raises.
    """
    db = database or getattr(client, "database", None) or "default"
    client.command(f"CREATE DATABASE IF NOT EXISTS `{db}`")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {_q(db, VERSION_TABLE)} (version UInt32, name String, "
        f"applied_at {_TS} DEFAULT now64(3), library_version String) "
        f"ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {int(r[0]) for r in client.query(f"SELECT version FROM {_q(db, VERSION_TABLE)}").result_rows}
    applied: list[str] = []
    legacy = 0
    for version, name, fn in _MIGRATIONS:
        # Migration 1 always re-checks: an original-library process may re-create a
        # legacy ai_events after the upgrade only if the table was dropped; cheap anyway.
        if version in done and version != 1:
            continue
        legacy += fn(client, db)
        if version not in done:
            client.insert(
                f"{VERSION_TABLE}",
                [[version, name, __version__]],
                column_names=["version", "name", "library_version"],
                database=db,
            )
            applied.append(name)
    # Drift repair for every table we write (migration 1 already did ai_events when
    # it ran; checking again costs one query).
    for table, spec in _OWNED_TABLES:
        _add_missing_columns(client, db, table, spec)
    return SchemaReport(version=SCHEMA_VERSION, applied=tuple(applied), legacy_rows_migrated=legacy)
