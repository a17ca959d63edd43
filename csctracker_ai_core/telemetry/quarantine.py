"""Records that cannot be inserted: found, set aside with the reason, never blocking the rest.

A spool record can be unusable: a line written by hand or by a buggy version with a
wrong type (``"tokens_input": "x"``), a line that is not JSON, a value ClickHouse or
the driver refuses. Retrying such a batch forever would hold back every event behind
it, so the writer:

1. screens each record before the insert (:func:`record_problem`: every value checked
   against its column's type; texts made valid UTF-8 first, see records.py);
2. when an insert still fails with an error about the data (:func:`is_data_error`),
   splits the batch in halves until the refused rows are alone
   (:func:`insert_isolating`), so every good row lands;
3. moves each refused record to the quarantine file ``<spool>/quarantine.jsonl``
   (0600, one JSON object per line: ``rejected_at``, ``table``, ``reason``,
   ``event_id``, ``record``) and to the ``ai_events_rejected`` table when the store
   takes it. Each distinct cause is logged once (WARNING) per writer.

Errors that are not about the data (connection lost, a missing column) are not
quarantine material: the batch stays spooled and is retried.
"""

from __future__ import annotations

import decimal
import functools
import json
import logging
import math
import os
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from ..paths import open_private_file
from .records import (
    ATTEMPT_COLUMN_NAMES,
    EVENT_COLUMN_NAMES,
    attempt_columns,
    attempts_json,
    event_columns,
    events_json,
    lines_json,
    records_of_lines,
)
from .schema import (
    ATTEMPT_COLUMNS,
    ATTEMPTS_TABLE,
    EVENT_COLUMNS,
    EVENTS_TABLE,
    REJECTED_COLUMNS,
    REJECTED_TABLE,
    Column,
)

__all__ = [
    "QUARANTINE_FILE",
    "Rejected",
    "Quarantine",
    "record_problem",
    "is_data_error",
    "insert_isolating",
    "insert_batch",
    "Delivery",
]

logger = logging.getLogger(__name__)

QUARANTINE_FILE = "quarantine.jsonl"

_Spec = Sequence[Column]

# ClickHouse error codes that mean "this data cannot be stored" (not "try later"):
# CANNOT_PARSE_TEXT, CANNOT_PARSE_INPUT_ASSERTION_FAILED, CANNOT_PARSE_DATE,
# CANNOT_PARSE_DATETIME, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE,
# CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE, CANNOT_PARSE_BOOL,
# DECIMAL_OVERFLOW, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, CANNOT_READ_ALL_DATA.
_DATA_ERROR_CODES = frozenset({6, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 407, 321, 467})
# JSONEachRow inserts: a record's keys that are not columns (``_v``, ``_a``) are skipped;
# a key that is absent takes the column's DEFAULT, as in the typed path.
# One thread per insert: telemetry must not compete with the application for cores (an
# embedded store parses in this process; by default ClickHouse parses a body on several
# threads, which on a 2-core machine pre-empt the calls' threads).
_JSON_INSERT_SETTINGS = {
    "input_format_skip_unknown_fields": 1,
    "input_format_defaults_for_omitted_fields": 1,
    "input_format_parallel_parsing": 0,
    "max_threads": 1,
    "max_insert_threads": 1,
}


@dataclass(frozen=True)
class Rejected:
    """One row the store will not take, and why."""

    table: str
    reason: str
    record: Mapping[str, Any]
    cause: str  # what the log line groups by (the reason without values)

    @property
    def event_id(self) -> str:
        value = self.record.get("event_id", "")
        return value if isinstance(value, str) else repr(value)


# ----------------------------------------------------------------------------- screening

_UINT_BITS = {"UInt8": 8, "UInt16": 16, "UInt32": 32, "UInt64": 64}
_MIN_TS, _MAX_TS = -2208988800.0, 10413791999.0  # DateTime64 range: 1900 .. 2299
_Check = Callable[[Any], str | None]


def _inner(typ: str, wrapper: str) -> str | None:
    prefix = wrapper + "("
    return typ[len(prefix) : -1] if typ.startswith(prefix) and typ.endswith(")") else None


def _kind(value: Any) -> str:
    return type(value).__name__


@functools.cache
def _checker(typ: str) -> _Check:
    """The check of a column type: ``value -> why it cannot go in (None: it can)``.

    Built once per type (a batch checks every value of every record). Texts are not
    re-encoded here: records are valid UTF-8 by construction (encode_record at
    record(), decode_record for lines read back); the driver refusing one anyway is
    caught by :func:`insert_isolating`.
    """
    inner = _inner(typ, "Nullable")
    if inner is not None:
        check = _checker(inner)
        return lambda v: None if v is None else check(v)
    inner = _inner(typ, "LowCardinality")
    if inner is not None:
        return _checker(inner)
    if typ == "String":
        return lambda v: None if isinstance(v, str) else f"expected text, got {_kind(v)}"
    if typ in _UINT_BITS:
        top = 2 ** _UINT_BITS[typ]

        def uint(v: Any) -> str | None:
            if not isinstance(v, int):
                return f"expected an unsigned integer ({typ}), got {_kind(v)}"
            return None if 0 <= v < top else f"integer out of the {typ} range"

        return uint
    if typ.startswith("Float"):
        return lambda v: None if isinstance(v, (int, float)) else f"expected a number ({typ}), got {_kind(v)}"
    if typ == "Bool":
        return lambda v: None if isinstance(v, int) and v in (0, 1) else f"expected a boolean, got {_kind(v)}"
    if typ.startswith("Decimal("):
        precision, scale = (int(p) for p in typ[len("Decimal(") : -1].split(","))
        limit = decimal.Decimal(10) ** (precision - scale)

        def dec(v: Any) -> str | None:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                return f"expected a decimal, got {_kind(v)}"
            try:
                number = decimal.Decimal(str(v))
            except decimal.InvalidOperation:
                return "not a decimal number"
            return None if number.is_finite() and abs(number) < limit else f"decimal out of the {typ} range"

        return dec
    if typ.startswith("DateTime"):

        def ts(v: Any) -> str | None:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"expected a timestamp (seconds), got {_kind(v)}"
            return None if math.isfinite(v) and _MIN_TS <= v <= _MAX_TS else "timestamp out of range"

        return ts
    inner = _inner(typ, "Map")
    if inner is not None:
        key_type, _, value_type = inner.partition(", ")
        key_check, value_check = _checker(key_type), _checker(value_type)

        def mapping(v: Any) -> str | None:
            if not isinstance(v, dict):
                return f"expected a map, got {_kind(v)}"
            for k, item in v.items():
                problem = key_check(k) or value_check(item)
                if problem:
                    return "map entry: " + problem
            return None

        return mapping
    return lambda v: None  # a type we do not write: let ClickHouse judge


def _compiled(spec: _Spec) -> tuple[tuple[str, bool, _Check], ...]:
    """(name, required, check) of each column a record carries."""
    return tuple(
        (c.name, c.default is None and not c.type.startswith(("Nullable", "Map")), _checker(c.type))
        for c in spec
        if c.from_record
    )


_EVENT_CHECKS = _compiled(EVENT_COLUMNS)
_ATTEMPT_CHECKS = _compiled(ATTEMPT_COLUMNS)


def _row_problem(row: Any, checks: tuple[tuple[str, bool, _Check], ...]) -> tuple[str, str] | None:
    """``(reason, cause)`` when ``row`` cannot be a row of a table with these columns."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {_kind(row)}", "not an object"
    for name, required, check in checks:
        value = row.get(name)
        if value is None:
            if required:
                return f"{name}: missing", f"{name}: missing"
            continue  # an older record without this column: its default is inserted
        problem = check(value)
        if problem:
            return f"{name}: {problem} (value {json.dumps(value, default=repr)[:80]})", f"{name}: {problem}"
    return None


def record_problem(record: Any) -> tuple[str, str] | None:
    """``(reason, cause)`` when a spool record cannot be inserted as is, else ``None``.

    Checks the ``ai_events`` row and each ``ai_attempts`` row (under ``_a``) against
    the column types of schema.py. Run after the record's texts were made valid UTF-8.
    """
    if isinstance(record, dict) and "_unreadable" in record:
        return f"unreadable spool line: {record['_unreadable']}", "unreadable spool line"
    problem = _row_problem(record, _EVENT_CHECKS)
    if problem:
        return problem
    attempts = record.get("_a", [])
    if not isinstance(attempts, list):
        return "_a: expected a list of attempts", "_a: not a list"
    for attempt in attempts:
        problem = _row_problem(attempt, _ATTEMPT_CHECKS)
        if problem:
            return "attempt " + problem[0], "attempt " + problem[1]
    return None


# ----------------------------------------------------------------------------- inserting


def is_data_error(exc: BaseException) -> bool:
    """True when ``exc`` means the rows cannot be stored (retrying cannot help).

    Client-side encoding errors of the driver (a value of the wrong type or range) and
    ClickHouse's parse/type/range errors. Connection failures, timeouts and schema
    errors (a missing column: repaired at reconnection) are not.
    """
    # AttributeError: the driver calls .encode() on what it expects to be text.
    if isinstance(
        exc, (UnicodeError, TypeError, AttributeError, struct.error, OverflowError, decimal.InvalidOperation)
    ):
        return True
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code in _DATA_ERROR_CODES:
        return True
    if type(exc).__name__ == "DataError":  # clickhouse_connect.driver.exceptions.DataError
        return True
    if isinstance(exc, ValueError) and type(exc).__module__.split(".")[0] != "clickhouse_connect":
        return True
    return False


def insert_isolating(
    rows: Sequence[Any],
    token: str,
    insert: Callable[[Sequence[Any], str], None],
) -> list[tuple[Any, str, str]]:
    """Insert ``rows``; rows refused for their data come back as ``(row, reason, cause)``.

    One ``insert(rows, token)`` when all is well. On a data error the rows are split
    in halves (tokens ``token/0``, ``token/1``: the same split every time, so a retry
    after a lost connection is deduplicated) until each refused row is alone. Any
    other error propagates: the caller retries the whole batch later.
    """
    if not rows:
        return []
    try:
        insert(rows, token)
        return []
    except Exception as exc:
        if not is_data_error(exc):
            raise
        if len(rows) == 1:
            cause = f"refused by the store: {type(exc).__name__}"
            return [(rows[0], f"{cause}: {str(exc)[:300]}", cause)]
    half = len(rows) // 2
    return insert_isolating(rows[:half], token + "/0", insert) + insert_isolating(rows[half:], token + "/1", insert)


@dataclass(frozen=True)
class Delivery:
    """What :func:`insert_batch` did."""

    inserts: int  # successful INSERT statements
    quarantined: int  # rows moved to the quarantine (events and attempts)
    not_inserted: frozenset[int]  # ids (``id()``) of the records whose ai_events row did not land


def insert_json(
    client: Any, database: str, table: str, names: Sequence[str], body: bytes | bytearray, token: str
) -> bool:
    """One ``INSERT ... FORMAT JSONEachRow`` of ``body`` under deduplication ``token``;
    False when there was nothing to send.

    JSON lines the store parses, rather than typed columns built in Python and serialized
    by the driver: the writer thread keeps the GIL (which the calls need) for a few ms
    less per chunk (bench/RESULTS.md, "Inserting JSON lines")."""
    if not body:
        return False
    client.raw_insert(
        f"`{database}`.`{table}`",
        list(names),  # a column missing from the table fails the insert (never skipped)
        body,
        settings={"insert_deduplication_token": token, **_JSON_INSERT_SETTINGS},
        fmt="JSONEachRow",
    )
    return True


def insert_lines(
    client: Any,
    database: str,
    lines: Sequence[bytes],
    token: str,
    quarantine: Quarantine,
    now: float,
    *,
    checked: bool,
    origin: str,
    offset: int | None = None,
) -> Delivery:
    """Insert a chunk of spool lines (segment ``origin``, from byte ``offset``, ``None``
    when unknown); the records that cannot be stored go to the quarantine.

    The usual case in one pass: both bodies built line by line (no chunk of records kept
    alive, see :func:`~.records.lines_json`), two inserts. ``checked``: every record is
    checked with :func:`record_problem` first (lines of other processes' files; lines
    this process encoded need not be). A line that is not a record, a record the check refuses, or a
    body the store refuses for its data: the chunk is decoded and goes through
    :func:`insert_batch`, under the same tokens (what already landed is deduplicated).
    """
    bodies = lines_json(lines, check=(lambda rec: record_problem(rec) is None) if checked else None)
    if bodies is not None:
        sent = 0
        try:
            sent += insert_json(client, database, EVENTS_TABLE, EVENT_COLUMN_NAMES, bodies[0], token + ":e")
            sent += insert_json(client, database, ATTEMPTS_TABLE, ATTEMPT_COLUMN_NAMES, bodies[1], token + ":a")
            return Delivery(inserts=sent, quarantined=0, not_inserted=frozenset())
        except Exception as exc:
            if not is_data_error(exc):
                raise
            logger.debug("JSON insert of %s refused (%s); record by record instead", origin, exc)
    records = records_of_lines(lines, origin, offset)
    return insert_batch(client, database, records, token, quarantine, now, screen=None if checked else set())


def insert_batch(
    client: Any,
    database: str,
    records: Sequence[Any],
    token: str,
    quarantine: Quarantine,
    now: float,
    *,
    screen: set[int] | None = None,
) -> Delivery:
    """Insert a batch of spool records; the ones that cannot be stored go to the quarantine.

    Records whose ``id()`` is in ``screen`` (all when ``None``) are checked with
    :func:`record_problem` first; the others (built in this process from typed
    events) skip the check, and are still isolated if the driver refuses them.

    ``ai_events`` rows first, then the ``ai_attempts`` rows of the events that landed,
    each with :func:`insert_isolating` (tokens ``<token>...:e`` / ``:a``). Each insert is
    sent as JSON lines the store parses; one the store refuses for its data is sent
    again as typed columns (same token), whose errors name the rows. Raises when the
    store is unreachable (the caller retries the whole batch with the same tokens, so
    what landed is deduplicated) or when the quarantine file cannot be written (nothing
    is acknowledged, nothing lost).
    """
    good: list[Any] = []
    rejected: list[Rejected] = []
    not_inserted: set[int] = set()
    for rec in records:
        problem = record_problem(rec) if screen is None or id(rec) in screen else None
        if problem is None:
            good.append(rec)
        else:
            not_inserted.add(id(rec))
            rejected.append(
                Rejected(EVENTS_TABLE, problem[0], rec if isinstance(rec, dict) else {"_value": rec}, problem[1])
            )
    inserts = [0]

    def inserter(
        table: str,
        names: Sequence[str],
        suffix: str,
        as_json: Callable[[Sequence[Any]], bytes | bytearray],
        as_columns: Callable[[Sequence[Any]], list[list[Any]]],
    ) -> Callable[[Sequence[Any], str], None]:
        def run(rows: Sequence[Any], tok: str) -> None:
            settings = {"insert_deduplication_token": tok + suffix}
            try:
                if insert_json(client, database, table, names, as_json(rows), tok + suffix):
                    inserts[0] += 1
                return
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                # Refused as a whole (one block: nothing landed). The typed path says
                # which rows, and insert_isolating splits down to them; same token.
                logger.debug("JSON insert into %s refused (%s); typed insert instead", table, exc)
            data = as_columns(rows)
            if not data or not data[0]:
                return
            client.insert(
                table, data, column_names=list(names), database=database, column_oriented=True, settings=settings
            )
            inserts[0] += 1

        return run

    events = inserter(EVENTS_TABLE, EVENT_COLUMN_NAMES, ":e", events_json, event_columns)
    for rec, why, cause in insert_isolating(good, token, events):
        not_inserted.add(id(rec))
        rejected.append(Rejected(EVENTS_TABLE, why, rec, cause))
    landed = [r for r in good if id(r) not in not_inserted]
    # Attempts of the events that landed: a refused record costs only its own rows.
    attempts = inserter(ATTEMPTS_TABLE, ATTEMPT_COLUMN_NAMES, ":a", attempts_json, attempt_columns)
    for rec, why, cause in insert_isolating(landed, token, attempts):
        rejected.append(Rejected(ATTEMPTS_TABLE, why, rec, cause))
    if rejected:
        rows = quarantine.put(rejected, now=now)
        names = [c.name for c in REJECTED_COLUMNS]
        cols = [
            [datetime.fromtimestamp(r[n], timezone.utc) if n == "rejected_at" else r[n] for r in rows] for n in names
        ]
        try:  # the quarantine file is the record; the table is a convenience
            client.insert(
                REJECTED_TABLE,
                cols,
                column_names=names,
                database=database,
                column_oriented=True,
                settings={"insert_deduplication_token": token + ":r"},
            )
            inserts[0] += 1
        except Exception as exc:
            logger.debug("could not insert into %s (the quarantine file has the rows): %s", REJECTED_TABLE, exc)
    return Delivery(inserts=inserts[0], quarantined=len(rejected), not_inserted=frozenset(not_inserted))


# ----------------------------------------------------------------------------- the file


class Quarantine:
    """The quarantine file of a spool folder; logs each cause once."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / QUARANTINE_FILE
        self._lock = threading.Lock()
        self._causes: set[str] = set()

    def put(self, rejected: Sequence[Rejected], now: float | None = None) -> list[dict[str, Any]]:
        """Append ``rejected`` to the file; returns the rows for ``ai_events_rejected``.

        Raises ``OSError`` when the file cannot be written (the caller then keeps
        the records spooled rather than lose them).
        """
        if not rejected:
            return []
        at = time.time() if now is None else now
        rows: list[dict[str, Any]] = []
        lines: list[bytes] = []
        for r in rejected:
            # ASCII JSON: whatever the record holds, the line is valid and one line.
            text = json.dumps(dict(r.record), ensure_ascii=True, default=repr, separators=(",", ":"))
            row = {
                "rejected_at": at,
                "source_table": r.table,
                "event_id": r.event_id,
                "reason": r.reason,
                "record": text,
                "library_version": __version__,
            }
            rows.append(row)
            lines.append((json.dumps(row, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii"))
        with self._lock:
            fd = open_private_file(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                data = b"".join(lines)
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
            new_causes = []
            for r in rejected:
                key = f"{r.table}: {r.cause}"
                if key not in self._causes:
                    self._causes.add(key)
                    new_causes.append((key, r))
        for key, r in new_causes:
            logger.warning(
                "telemetry record rejected (%s), event %s; moved to %s with the reason "
                "(further records with this cause are counted in stats().quarantined, not logged)",
                key,
                r.event_id,
                self.path,
            )
        return rows
