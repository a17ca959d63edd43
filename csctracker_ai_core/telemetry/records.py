"""A :class:`CallEvent` as a spool line and a spool record, and records as insert bodies or columns.

One *record* per call: the ``ai_events`` row (keys are column names) plus its attempts
under ``"_a"``. Every spool line decodes (:func:`decode_record`, whichever process wrote
it) to that record, so a replayed event and a live one take exactly the same
path to ClickHouse. A line is one of two forms:

* the *event line* (``"_v": 2``), written on the call path by :func:`encode_event`:
  the event's own fields, written by orjson from the frozen dataclass in C (4 us for a
  2 kB call against 20 us for building the record in Python), used when capping,
  key redaction and the image rule would change nothing (every call that carries no key
  and no oversized text). Its record is built when the line is decoded, on the writer
  thread;
* the *record line* (``"_v": 1``): the record itself, for every other event (and every
  line of 0.2.0 and before).

Both go through :func:`_record`, the one definition of the derived columns.

What is stored (see docs/TELEMETRY.md):
* ``payload`` holds ``json.dumps(prompt)`` like the original library, the prompt first
  capped at ``max_text_bytes`` UTF-8 bytes; ``result`` the reply text, capped the same
  way. A capped text ends with :data:`TRUNCATION_MARKER_FORMAT`; ``payload_bytes`` /
  ``result_bytes`` keep the original sizes.
* an image as sha256 / size / mime; its base64 only with ``store_images=True``.
* text is valid UTF-8: a lone surrogate (``os.fsdecode`` gives them for file names that
  are not UTF-8) would make the driver refuse the row, so :func:`encode_record`
  replaces each with U+FFFD and names the fields it fixed in ``sanitized_fields``.
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson

from .._version import __version__
from ..redaction import redact
from .events import AttemptEvent, CallEvent, legacy_model
from .schema import ATTEMPT_COLUMNS, EVENT_COLUMNS, Column, Encoding

__all__ = [
    "DEFAULT_MAX_TEXT_BYTES",
    "TRUNCATION_MARKER_FORMAT",
    "cap_text",
    "event_to_record",
    "encode_event",
    "encode_record",
    "sanitize_record",
    "REPLACEMENT_CHARACTER",
    "decode_record",
    "event_columns",
    "attempt_columns",
    "events_json",
    "attempts_json",
    "record_of_line",
    "records_of_lines",
    "lines_json",
    "YIELD_EVERY",
]

DEFAULT_MAX_TEXT_BYTES = 256 * 1024
TRUNCATION_MARKER_FORMAT = "\n[csctracker-ai-core: truncated, {kept} of {total} bytes kept]"
RECORD_FORMAT_VERSION = 1
EVENT_LINE_VERSION = 2
ERROR_MESSAGE_MAX_BYTES = 16 * 1024
REPLACEMENT_CHARACTER = "\ufffd"

EVENT_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in EVENT_COLUMNS if c.from_record)
ATTEMPT_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in ATTEMPT_COLUMNS if c.from_record)

_UTC = timezone.utc

# Columns whose record value is computed here rather than copied from the event field
# of the same name. Every other column is a field of CallEvent / AttemptEvent, copied
# as is (Encoding.VALUE, Encoding.TIMESTAMP: epoch seconds) or as exact text
# (Encoding.DECIMAL). tests/test_telemetry_schema.py checks that the union is exactly
# the column table.
EVENT_DERIVED = frozenset(
    {
        "payload",
        "result",
        "payload_bytes",
        "result_bytes",
        "error_message",
        "model",
        "image_base64",
        "metadata",
        "operation",
        "provider",
        "library_version",
        "sanitized_fields",
    }
)
ATTEMPT_DERIVED = frozenset({"task", "library_version"})


def _copied(columns: Sequence[Column], derived: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names copied as is, names copied as decimal text) of ``columns``."""
    kept = [c for c in columns if c.from_record and c.name not in derived]
    return (
        tuple(c.name for c in kept if c.encoding is not Encoding.DECIMAL),
        tuple(c.name for c in kept if c.encoding is Encoding.DECIMAL),
    )


EVENT_COPIED, EVENT_DECIMALS = _copied(EVENT_COLUMNS, EVENT_DERIVED)
ATTEMPT_COPIED, ATTEMPT_DECIMALS = _copied(ATTEMPT_COLUMNS, ATTEMPT_DERIVED)
# One C-level call reads every copied field (cheaper than a getattr per column).
_event_values = operator.attrgetter(*EVENT_COPIED)
_attempt_values = operator.attrgetter(*ATTEMPT_COPIED)


def cap_text(text: str, max_bytes: int) -> tuple[str, int]:
    """``(text capped to max_bytes UTF-8 bytes + marker, original byte size)``.

    The cut never splits a character; the marker says how much was kept.
    """
    if text.isascii() and len(text) <= max_bytes:  # one byte a character: no encoding needed
        return text, len(text)
    raw = text.encode("utf-8", "surrogatepass")
    total = len(raw)
    if total <= max_bytes:
        return text, total
    kept = raw[:max_bytes].decode("utf-8", "ignore")
    kept_bytes = len(kept.encode("utf-8", "surrogatepass"))
    return kept + TRUNCATION_MARKER_FORMAT.format(kept=kept_bytes, total=total), total


def _attempt_record(a: AttemptEvent) -> dict[str, Any]:
    # Names and getter come from one tuple, so the lengths match; strict costs ~0.7 us a call.
    rec = dict(zip(ATTEMPT_COPIED, _attempt_values(a), strict=False))
    for name in ATTEMPT_DECIMALS:
        rec[name] = str(getattr(a, name))
    rec["error_message"] = redact(a.error_message)
    return rec


def _record(
    rec: dict[str, Any],
    *,
    prompt: str,
    payload_bytes: int,
    result: str,
    result_bytes: int,
    error_message: str,
    image_base64: str,
    metadata: dict[str, str],
    attempts: list[dict[str, Any]],
    library_version: str,
) -> dict[str, Any]:
    """``rec`` (the copied columns, ``task`` already redacted) completed with the derived
    ones: the one definition, for records built from an event and from an event line."""
    # The original stored json.dumps(prompt): keep that meaning for old queries.
    rec["payload"] = _json_text(prompt)
    rec["payload_bytes"] = payload_bytes
    rec["result"] = result
    rec["result_bytes"] = result_bytes
    rec["error_message"] = error_message
    rec["model"] = legacy_model(rec["model_name"], rec["tier"])
    rec["image_base64"] = image_base64
    rec["metadata"] = metadata
    rec["operation"] = "generate_content"
    rec["provider"] = "gcp.gemini"
    rec["library_version"] = library_version
    rec["sanitized_fields"] = ""  # filled by encode_record when a text is not valid UTF-8
    rec["_v"] = RECORD_FORMAT_VERSION
    task = rec["task"]
    for a in attempts:
        a["task"] = task
        a["library_version"] = library_version
    rec["_a"] = attempts
    return rec


def event_to_record(
    event: CallEvent, *, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES, store_images: bool = False
) -> dict[str, Any]:
    """The spool record of ``event``: capped, image bytes removed unless opted in.

    Keys: every column of ``ai_events`` that is not filled by ClickHouse, ``"_v"`` (the
    record format) and ``"_a"`` (the attempts' records).
    """
    rec = dict(zip(EVENT_COPIED, _event_values(event), strict=False))  # same length: see _attempt_record
    for name in EVENT_DECIMALS:
        rec[name] = str(getattr(event, name))
    # No configured API key is stored, whoever wrote it (a prompt, an echoed error).
    rec["task"] = redact(event.task)
    prompt, payload_bytes = cap_text(redact(event.payload), max_text_bytes)
    result, result_bytes = cap_text(redact(event.result), max_text_bytes)
    return _record(
        rec,
        prompt=prompt,
        payload_bytes=payload_bytes,
        result=result,
        result_bytes=result_bytes,
        error_message=cap_text(redact(event.error_message), ERROR_MESSAGE_MAX_BYTES)[0],
        image_base64=event.image_base64 if store_images else "",
        metadata={redact(str(k)): redact(str(v)) for k, v in event.metadata.items()} if event.metadata else {},
        attempts=[_attempt_record(a) for a in event.attempt_events],
        library_version=__version__,
    )


# ----------------------------------------------------------------------------- event lines

# The event's own JSON inside a fixed wrapper: the writing library's version travels
# with the line (a backlog may be delivered by a newer one).
_EVENT_LINE_HEAD = b'{"_v":%d,"_lib":%s,"e":' % (EVENT_LINE_VERSION, orjson.dumps(__version__))
_EVENT_LINE_TAIL = b"}\n"


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # what the record holds: exact text
    raise TypeError(f"{type(value).__name__} in an event")


def _fits(text: str, max_bytes: int) -> bool:
    """``cap_text(text, max_bytes)`` would keep ``text`` as it is."""
    return len(text) <= max_bytes and (text.isascii() or len(text.encode("utf-8", "surrogatepass")) <= max_bytes)


def _kept_as_is(event: CallEvent, max_text_bytes: int, store_images: bool) -> bool:
    """True when capping, key redaction and the image rule leave every text of ``event``
    as it is: its record is then a function of its fields alone (see :func:`encode_event`)."""
    if event.image_base64 and not store_images:
        return False
    for text, cap in (
        (event.payload, max_text_bytes),
        (event.result, max_text_bytes),
        (event.error_message, ERROR_MESSAGE_MAX_BYTES),
    ):
        if text and (not _fits(text, cap) or redact(text) is not text):
            return False
    if redact(event.task) is not event.task:
        return False
    for k, v in event.metadata.items():
        if type(k) is not str or type(v) is not str or redact(k) is not k or redact(v) is not v:
            return False
    return all(redact(a.error_message) is a.error_message for a in event.attempt_events)


def encode_event(
    event: CallEvent, *, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES, store_images: bool = False
) -> tuple[bytes, bool]:
    """The spool line of ``event`` and whether a text had to be sanitized (see
    :func:`sanitize_record`).

    An event line when nothing of the event has to change (the check costs a scan of each
    text, which redaction costs anyway); else the record line of :func:`event_to_record`.
    Either decodes to the same record (tests/test_telemetry_schema.py)."""
    if _kept_as_is(event, max_text_bytes, store_images):
        try:
            return _EVENT_LINE_HEAD + orjson.dumps(event, default=_decimal_text) + _EVENT_LINE_TAIL, False
        except TypeError:  # a lone surrogate, an integer over 64 bits, a foreign type
            pass
    rec = event_to_record(event, max_text_bytes=max_text_bytes, store_images=store_images)
    line = encode_record(rec)  # sanitizes rec in place when a text is not valid UTF-8
    return line, bool(rec["sanitized_fields"])


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _record_of_event_line(line: dict[str, Any]) -> dict[str, Any]:
    """The record of a decoded event line (raises ``ValueError`` when it is not one)."""
    try:
        e = line["e"]
        rec = {name: e[name] for name in EVENT_COPIED}
        for name in EVENT_DECIMALS:
            rec[name] = e[name]  # written as decimal text (_decimal_text)
        attempts = []
        for a in e["attempt_events"]:
            arec = {name: a[name] for name in ATTEMPT_COPIED}
            for name in ATTEMPT_DECIMALS:
                arec[name] = a[name]
            attempts.append(arec)
        prompt, result = e["payload"], e["result"]
        return _record(
            rec,
            prompt=prompt,
            payload_bytes=_utf8_len(prompt),
            result=result,
            result_bytes=_utf8_len(result),
            error_message=e["error_message"],
            image_base64=e["image_base64"],
            metadata=e["metadata"],
            attempts=attempts,
            library_version=line["_lib"],
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an event line of version {EVENT_LINE_VERSION}: {type(exc).__name__}: {exc}") from None


def _json_text(text: str) -> str:
    """``json.dumps(text, ensure_ascii=False)``, the same text, faster."""
    try:
        return orjson.dumps(text).decode("utf-8")
    except TypeError:  # a lone surrogate: orjson writes only valid UTF-8
        return json.dumps(text, ensure_ascii=False)


def encode_record(record: dict[str, Any]) -> bytes:
    """One spool line: compact JSON (newlines inside strings are escaped) + ``\\n``.

    The line is valid UTF-8: when a text is not (a lone surrogate), ``record`` is
    sanitized in place first (see :func:`sanitize_record`). orjson writes it (13-20x
    the json module on a record, on the call path); what orjson refuses (a lone
    surrogate, an integer over 64 bits) goes through the json module.
    """
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # orjson.JSONEncodeError
        pass
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        sanitize_record(record)
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _valid_text(value: str) -> str | None:
    """``value`` with every lone surrogate replaced by U+FFFD, or ``None`` when already valid."""
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return "".join(REPLACEMENT_CHARACTER if "\ud800" <= ch <= "\udfff" else ch for ch in value)


def _sanitize_value(value: Any) -> tuple[Any, bool]:
    if isinstance(value, str):
        fixed = _valid_text(value)
        return (value, False) if fixed is None else (fixed, True)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        changed = False
        for k, v in value.items():
            k2, ck = _sanitize_value(k)
            v2, cv = _sanitize_value(v)
            out[k2] = v2
            changed = changed or ck or cv
        return (out if changed else value), changed
    if isinstance(value, list):
        items = [_sanitize_value(v) for v in value]
        changed = any(c for _, c in items)
        return ([v for v, _ in items] if changed else value), changed
    return value, False


def sanitize_record(record: dict[str, Any]) -> list[str]:
    """Make every text of ``record`` valid UTF-8, in place; returns the fields fixed.

    Lone surrogates become U+FFFD. The names of the fields fixed (``_a.<field>`` for
    attempts) are added to ``record["sanitized_fields"]`` (comma-separated), so the
    row says its text was altered.
    """
    fixed: list[str] = []
    for name, value in list(record.items()):
        if name == "_a" and isinstance(value, list):
            for attempt in value:
                if isinstance(attempt, dict):
                    for aname, avalue in list(attempt.items()):
                        new, changed = _sanitize_value(avalue)
                        if changed:
                            attempt[aname] = new
                            if f"_a.{aname}" not in fixed:
                                fixed.append(f"_a.{aname}")
            continue
        new, changed = _sanitize_value(value)
        if changed:
            record[name] = new
            fixed.append(name)
    if fixed:
        before = [f for f in str(record.get("sanitized_fields") or "").split(",") if f]
        record["sanitized_fields"] = ",".join(
            before + [f for f in fixed if f not in before and f != "sanitized_fields"]
        )
    return fixed


def decode_record(line: bytes) -> dict[str, Any]:
    """The record of a spool line, either form (raises ``ValueError`` on a torn line).

    Lines of older versions may hold lone surrogates (written with ``surrogatepass``):
    they are sanitized like new ones (see :func:`sanitize_record`).
    """
    try:
        record: dict[str, Any] = orjson.loads(line)
    except orjson.JSONDecodeError:  # a torn line, or one of an older version (surrogates)
        pass
    else:
        if type(record) is dict and record.get("_v") == EVENT_LINE_VERSION:
            return _record_of_event_line(record)
        return record
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        record = json.loads(line.decode("utf-8", "surrogatepass"))
        if isinstance(record, dict):
            sanitize_record(record)
    return record


def _python_default(typ: str, default: str | None) -> Any:
    """The value a record without this column stands for (lines of older versions)."""
    if typ.startswith("Nullable"):
        return None
    if default is None:
        return {} if typ.startswith("Map") else ""
    if default.startswith("'"):
        return default.strip("'")
    if default in ("true", "false"):
        return default == "true"
    if typ.startswith("Decimal"):
        return default
    return float(default) if typ.startswith("Float") else int(default)


_EVENT_DEFAULTS = tuple(_python_default(c.type, c.default) for c in EVENT_COLUMNS if c.from_record)
_ATTEMPT_DEFAULTS = tuple(_python_default(c.type, c.default) for c in ATTEMPT_COLUMNS if c.from_record)


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, _UTC)


def _converters(columns: Sequence[Column], names: Sequence[str]) -> tuple[Callable[[Any], Any] | None, ...]:
    """Per column: what turns a record value into the insert value (``None``: as is)."""
    by_name = {c.name: c for c in columns}
    table: dict[Encoding, Callable[[Any], Any] | None] = {
        Encoding.TIMESTAMP: _dt,
        Encoding.DECIMAL: Decimal,
        Encoding.VALUE: None,
    }
    return tuple(table[by_name[n].encoding] for n in names)


_EVENT_CONVERT = _converters(EVENT_COLUMNS, EVENT_COLUMN_NAMES)
_ATTEMPT_CONVERT = _converters(ATTEMPT_COLUMNS, ATTEMPT_COLUMN_NAMES)


_event_row = operator.itemgetter(*EVENT_COLUMN_NAMES)
_attempt_row = operator.itemgetter(*ATTEMPT_COLUMN_NAMES)


def _columns(
    rows: Sequence[dict[str, Any]],
    names: Sequence[str],
    convert: Sequence[Any],
    defaults: Sequence[Any],
    row_values: Callable[[dict[str, Any]], tuple[Any, ...]],
) -> list[list[Any]]:
    if not rows:
        return [[] for _ in names]
    try:
        # Transposed in C: this runs on the writer thread, which shares the GIL with calls.
        cols = [list(col) for col in zip(*map(row_values, rows), strict=True)]
    except KeyError:  # a line of an older version, without a column added since
        cols = [[row.get(name) for row in rows] for name in names]
    for i, fn in enumerate(convert):
        col = cols[i]
        default = defaults[i]
        if default is not None and None in col:
            col = [default if v is None else v for v in col]
        if fn is not None:
            col = [None if v is None else fn(v) for v in col]
        cols[i] = col
    return cols


def event_columns(records: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Column-wise ``ai_events`` data of ``records`` (names: :data:`EVENT_COLUMN_NAMES`)."""
    return _columns(records, EVENT_COLUMN_NAMES, _EVENT_CONVERT, _EVENT_DEFAULTS, _event_row)


def attempt_columns(records: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Column-wise ``ai_attempts`` data of the attempts of ``records`` (names: :data:`ATTEMPT_COLUMN_NAMES`)."""
    attempts = [a for r in records for a in r.get("_a", ())]
    return _columns(attempts, ATTEMPT_COLUMN_NAMES, _ATTEMPT_CONVERT, _ATTEMPT_DEFAULTS, _attempt_row)


# The writer thread's loops over a chunk's records (up to 10,000) let the calls run every
# YIELD_EVERY records: a call that needs the GIL while another thread holds it waits for
# the holder's next release, and a thread that never releases is asked to only after
# the 5 ms switch interval. ``time.sleep(0)`` releases it. A 2 kB event line costs about
# 25 us here (decoded, its record built, two rows written), so 16 lines are about 0.4 ms
# of work apart: while a 3,000-line chunk was built, a thread waking every 200 us waited
# p50 0.27-0.30 ms for the GIL (1.3-1.4 ms at 64 lines with the bytes() copy that
# lines_json no longer makes), for 3-20% more of the writer's own time
# (bench/bench_writer_gil.py; bench/RESULTS.md, "The writer's share of the GIL").
YIELD_EVERY = 16
_LINE = orjson.OPT_APPEND_NEWLINE


def _yielding(items: Iterable[Any]) -> Iterator[Any]:
    for i, item in enumerate(items, 1):
        if not i % YIELD_EVERY:
            time.sleep(0)
        yield item


def record_of_line(line: bytes, where: str) -> dict[str, Any]:
    """:func:`decode_record`, or for a line that is not a record ``{"_unreadable": why,
    "_line": text}``: kept for the quarantine, never lost nor retried for ever."""
    try:
        return decode_record(line)
    except ValueError as exc:
        return {
            "_unreadable": f"{where}: {exc}"[:300],
            "_line": line[:65536].decode("utf-8", "backslashreplace"),
        }


def records_of_lines(lines: Sequence[bytes], origin: str, offset: int | None) -> list[dict[str, Any]]:
    """:func:`record_of_line` of each line of a chunk of segment ``origin`` that starts at
    byte ``offset`` (``None``: unknown), letting calls run."""
    records = []
    for line in _yielding(lines):
        where = origin if offset is None else f"{origin} byte {offset}"
        records.append(record_of_line(line, where))
        if offset is not None:
            offset += len(line)
    return records


def lines_json(
    lines: Sequence[bytes], *, check: Callable[[dict[str, Any]], bool] | None
) -> tuple[bytearray, bytearray] | None:
    """The ``ai_events`` and ``ai_attempts`` JSONEachRow bodies of a chunk's lines, built
    in one pass that keeps one record alive at a time; ``None`` when a line is not a
    record or ``check`` refuses one (the caller then takes the record by record path).

    One record at a time: a chunk of 10,000 decoded records kept alive until its insert
    outlives two collections and is promoted to the oldest generation, whose full
    passes over the process's heap (the SDK's included) stop every thread for tens
    of ms (measured: 87 ms each)."""
    events = bytearray()
    attempts = bytearray()
    for line in _yielding(lines):
        try:
            rec = decode_record(line)
        except ValueError:
            return None
        if check is not None and not check(rec):
            return None
        events += orjson.dumps(rec, option=_LINE)
        for a in rec.get("_a", ()):
            attempts += orjson.dumps(a, option=_LINE)
    # The buffers as they are: a bytes() copy of a 10,000-line body holds the GIL for
    # milliseconds (a memcpy into fresh pages), and the drivers take a bytearray.
    return events, attempts


# The same rows as JSONEachRow bodies, which the store parses itself. A record's keys
# are its table's column names (tests/test_telemetry_schema.py) and its values parse to
# the typed path's values (epoch seconds, decimal text; tests/test_telemetry_chdb.py
# compares the two); the keys that are not columns (``_v``, ``_a``) are skipped with
# ``input_format_skip_unknown_fields``. orjson raises TypeError on what it cannot write
# (an integer over 64 bits, a lone surrogate): the caller then takes the typed path,
# which finds the refused row.


def events_json(records: Sequence[dict[str, Any]]) -> bytearray:
    """The ``ai_events`` rows of ``records``, one JSON object a line."""
    # Appended to one buffer: each line's bytes are freed at once and their memory
    # reused. Joining a list of them kept every line alive until the end, and the fresh
    # pages cost about 3x the encoding (21-26 against 7 us a 2 kB record, measured).
    body = bytearray()
    for r in _yielding(records):
        body += orjson.dumps(r, option=_LINE)
    return body  # no bytes() copy (see lines_json)


def attempts_json(records: Sequence[dict[str, Any]]) -> bytearray:
    """The ``ai_attempts`` rows of the attempts of ``records``, one JSON object a line."""
    body = bytearray()
    for r in _yielding(records):
        for a in r.get("_a", ()):
            body += orjson.dumps(a, option=_LINE)
    return body
