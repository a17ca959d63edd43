"""Report periods and groupings, as pure functions of a name and ``now``.

A period is a half-open interval ``[start, end)`` of aware datetimes. Calendar periods
(today, thisWeek, lastMonth, ...) are computed in ``tz`` (UTC by default, as the
original library did) and returned in UTC; rolling ones (``15m``, ``24h``, ``week``,
...) end at ``now``.

==============  =================================================================
period          interval
==============  =================================================================
1m ... 24h      the last N minutes / hours (1m 5m 10m 15m 30m 1h 2h 3h 6h 12h 24h)
today           today, midnight to midnight
yesterday       yesterday, midnight to midnight
week            the last 7 days (rolling)
thisWeek        this calendar week, from Monday 00:00
lastWeek        the previous Monday-to-Sunday week
month           the last 30 days (rolling)
thisMonth       this calendar month
lastMonth       the previous calendar month
quarter         this calendar quarter (Jan, Apr, Jul, Oct)
lastQuarter     the previous calendar quarter
semester        this calendar half-year (from Jan 1 or Jul 1)
lastSemester    the previous calendar half-year
year            the last 365 days (rolling)
thisYear        this calendar year
lastYear        the previous calendar year
max             everything
"START|END"     ISO dates or datetimes; a date-only END includes that whole day
==============  =================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from ..exceptions import ReportError

__all__ = [
    "GROUP_FORMATS",
    "PERIOD_NAMES",
    "Period",
    "group_format",
    "period_bounds",
]

UTC = timezone.utc

_ROLLING = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "10m": timedelta(minutes=10),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "2h": timedelta(hours=2),
    "3h": timedelta(hours=3),
    "6h": timedelta(hours=6),
    "12h": timedelta(hours=12),
    "24h": timedelta(hours=24),
    "week": timedelta(days=7),
    "month": timedelta(days=30),
    "year": timedelta(days=365),
}
_CALENDAR = (
    "today",
    "yesterday",
    "thisWeek",
    "lastWeek",
    "thisMonth",
    "lastMonth",
    "quarter",
    "lastQuarter",
    "semester",
    "lastSemester",
    "thisYear",
    "lastYear",
    "max",
)
PERIOD_NAMES: tuple[str, ...] = tuple(_ROLLING) + _CALENDAR

# The original's groups (ClickHouse formatDateTime patterns; "hour" is the hour of the
# day, so it folds days together, as the original did), plus finer ones for charts.
GROUP_FORMATS: dict[str, str] = {
    "year": "%Y",
    "month": "%Y-%m",
    "day": "%Y-%m-%d",
    "hour": "%H",
    "datehour": "%Y-%m-%d %H:00",
    "minute": "%Y-%m-%d %H:%i",
}
# One bucket for the whole period: the original put the literal "group" in ``data``.
_ONE_BUCKET = ("group", "all", "total", "none")

# The original period is the earliest instant ClickHouse DateTime64 stores comfortably.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Period:
    """A resolved report period: ``start <= t < end``, both aware UTC datetimes."""

    name: str
    start: datetime
    end: datetime


def group_format(group: str | None) -> str | None:
    """The formatDateTime pattern of ``group``; ``None`` means one bucket for the period.

    Raises :class:`ReportError` for an unknown name (the original silently made one bucket).
    """
    key = (group or "group").strip()
    if key in GROUP_FORMATS:
        return GROUP_FORMATS[key]
    if key.lower() in GROUP_FORMATS:
        return GROUP_FORMATS[key.lower()]
    if key.lower() in _ONE_BUCKET:
        return None
    raise ReportError(f"unknown group {group!r}: use one of {', '.join(list(GROUP_FORMATS) + ['group'])}.")


def _aware(now: datetime | Callable[[], datetime] | None) -> datetime:
    if now is None:
        value = datetime.now(UTC)
    elif callable(now):
        value = now()
    else:
        value = now
    if value.tzinfo is None:  # naive datetimes are UTC, as everywhere in the library
        value = value.replace(tzinfo=UTC)
    return value


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _month_start(year: int, month: int) -> date:
    # months may be out of 1..12 by one year either way
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return date(year, month, 1)


def _parse_point(text: str, tz: tzinfo, *, is_end: bool, original: str) -> datetime:
    raw = text.strip()
    if not raw:
        raise ReportError(
            f"period {original!r}: empty date; use 'START|END' with ISO dates, e.g. 2025-01-01|2025-01-31."
        )
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            day = date.fromisoformat(raw)
            # a date-only end means "to the end of that day"
            return _midnight(day + timedelta(days=1) if is_end else day, tz)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise ReportError(
            f"period {original!r}: {raw!r} is not an ISO date or datetime (e.g. 2025-01-31 or 2025-01-31T12:00)."
        ) from None
    except OverflowError:
        return _open_side(raw)
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return _open_side(raw)


def _open_side(raw: str) -> datetime:
    # Year 1 or 9999 moved by a day or a time zone leaves what datetime can hold: the
    # period is then open on that side (and clamped to the stored range below).
    return _FAR_FUTURE if int(raw[:4]) >= 5000 else _EPOCH


def period_bounds(
    period: str,
    now: datetime | Callable[[], datetime] | None = None,
    tz: tzinfo | str | None = None,
) -> Period:
    """Resolve a period name (see the module table) at ``now`` into a :class:`Period`.

    ``now`` is an aware datetime or a callable returning one (default: the current
    time); ``tz`` is the zone in which calendar days start (default UTC). Raises
    :class:`ReportError` for an unknown name or unreadable dates.
    """
    if isinstance(tz, str):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ReportError(f"unknown time zone {tz!r}; use an IANA name such as America/Sao_Paulo.") from None
    zone: tzinfo = tz or UTC
    current = _aware(now)
    name = (period or "").strip()
    if "|" in name:
        left, _, right = name.partition("|")
        # Nothing is stored outside "max" (1970..2200): wider bounds mean "everything".
        start = max(_parse_point(left, zone, is_end=False, original=period), _EPOCH)
        end = min(_parse_point(right, zone, is_end=True, original=period), _FAR_FUTURE)
        if end <= start:
            raise ReportError(f"period {period!r} ends before it starts, or lies outside 1970-01-01..2200-01-01.")
        return Period(name, start, end)
    if name in _ROLLING:
        end = current.astimezone(UTC)
        return Period(name, end - _ROLLING[name], end)
    if name == "max":
        return Period(name, _EPOCH, _FAR_FUTURE)

    local = current.astimezone(zone)
    today = local.date()

    def days(first: date, after: date) -> Period:
        return Period(name, _midnight(first, zone), _midnight(after, zone))

    if name == "today":
        return days(today, today + timedelta(days=1))
    if name == "yesterday":
        return days(today - timedelta(days=1), today)
    if name in ("thisWeek", "lastWeek"):
        monday = today - timedelta(days=today.weekday())
        if name == "lastWeek":
            return days(monday - timedelta(days=7), monday)
        return days(monday, monday + timedelta(days=7))
    if name in ("thisMonth", "lastMonth"):
        first = _month_start(today.year, today.month)
        if name == "lastMonth":
            return days(_month_start(today.year, today.month - 1), first)
        return days(first, _month_start(today.year, today.month + 1))
    if name in ("quarter", "lastQuarter", "semester", "lastSemester"):
        size = 3 if "uarter" in name else 6
        first_month = (today.month - 1) // size * size + 1
        first = _month_start(today.year, first_month)
        if name.startswith("last"):
            return days(_month_start(today.year, first_month - size), first)
        return days(first, _month_start(today.year, first_month + size))
    if name in ("thisYear", "lastYear"):
        year = today.year - (1 if name == "lastYear" else 0)
        return days(date(year, 1, 1), date(year + 1, 1, 1))
    raise ReportError(
        f"unknown period {period!r}: use one of {', '.join(PERIOD_NAMES)}, "
        "or 'START|END' with ISO dates (e.g. 2025-01-01|2025-01-31)."
    )
