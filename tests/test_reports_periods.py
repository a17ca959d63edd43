"""Every report period and group name, as a pure function of a fixed ``now``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from csctracker_ai_core.exceptions import ReportError
from csctracker_ai_core.reports.periods import GROUP_FORMATS, PERIOD_NAMES, group_format, period_bounds
from csctracker_ai_core.reports.telemetry_report import DateUtils

UTC = timezone.utc
# A Sunday in June, mid-day.
NOW = datetime(2025, 6, 15, 12, 30, 45, tzinfo=UTC)


def d(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


EXPECTED = {
    "1m": (NOW - timedelta(minutes=1), NOW),
    "5m": (NOW - timedelta(minutes=5), NOW),
    "10m": (NOW - timedelta(minutes=10), NOW),
    "15m": (NOW - timedelta(minutes=15), NOW),
    "30m": (NOW - timedelta(minutes=30), NOW),
    "1h": (NOW - timedelta(hours=1), NOW),
    "2h": (NOW - timedelta(hours=2), NOW),
    "3h": (NOW - timedelta(hours=3), NOW),
    "6h": (NOW - timedelta(hours=6), NOW),
    "12h": (NOW - timedelta(hours=12), NOW),
    "24h": (NOW - timedelta(hours=24), NOW),
    "today": (d(2025, 6, 15), d(2025, 6, 16)),
    "yesterday": (d(2025, 6, 14), d(2025, 6, 15)),
    "week": (NOW - timedelta(days=7), NOW),
    "thisWeek": (d(2025, 6, 9), d(2025, 6, 16)),  # Monday to next Monday
    "lastWeek": (d(2025, 6, 2), d(2025, 6, 9)),
    "month": (NOW - timedelta(days=30), NOW),
    "thisMonth": (d(2025, 6, 1), d(2025, 7, 1)),
    "lastMonth": (d(2025, 5, 1), d(2025, 6, 1)),
    "quarter": (d(2025, 4, 1), d(2025, 7, 1)),
    "lastQuarter": (d(2025, 1, 1), d(2025, 4, 1)),
    "semester": (d(2025, 1, 1), d(2025, 7, 1)),
    "lastSemester": (d(2024, 7, 1), d(2025, 1, 1)),
    "year": (NOW - timedelta(days=365), NOW),
    "thisYear": (d(2025, 1, 1), d(2026, 1, 1)),
    "lastYear": (d(2024, 1, 1), d(2025, 1, 1)),
    "max": (d(1970, 1, 1), d(2200, 1, 1)),
}


def test_every_documented_period_is_tested():
    assert set(EXPECTED) == set(PERIOD_NAMES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_period(name):
    p = period_bounds(name, NOW)
    assert (p.start, p.end) == EXPECTED[name]
    assert p.start.tzinfo is not None and p.end.tzinfo is not None
    assert p.name == name


# January: the "last" periods cross into the previous year.
JANUARY = datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    "name,start,end",
    [
        ("yesterday", d(2024, 12, 31), d(2025, 1, 1)),
        ("thisWeek", d(2024, 12, 30), d(2025, 1, 6)),
        ("lastWeek", d(2024, 12, 23), d(2024, 12, 30)),
        ("lastMonth", d(2024, 12, 1), d(2025, 1, 1)),
        ("thisMonth", d(2025, 1, 1), d(2025, 2, 1)),
        ("quarter", d(2025, 1, 1), d(2025, 4, 1)),
        ("lastQuarter", d(2024, 10, 1), d(2025, 1, 1)),
        ("semester", d(2025, 1, 1), d(2025, 7, 1)),
        ("lastSemester", d(2024, 7, 1), d(2025, 1, 1)),
        ("lastYear", d(2024, 1, 1), d(2025, 1, 1)),
    ],
)
def test_periods_across_a_year_boundary(name, start, end):
    p = period_bounds(name, JANUARY)
    assert (p.start, p.end) == (start, end)


def test_december_quarters_and_semesters():
    dec = d(2025, 12, 31, 23, 59)
    assert (period_bounds("quarter", dec).start, period_bounds("quarter", dec).end) == (d(2025, 10, 1), d(2026, 1, 1))
    assert period_bounds("semester", dec).end == d(2026, 1, 1)
    assert period_bounds("lastQuarter", dec).start == d(2025, 7, 1)


def test_now_may_be_a_callable_or_naive_utc():
    assert period_bounds("1h", lambda: NOW).end == NOW
    assert period_bounds("1h", NOW.replace(tzinfo=None)).end == NOW


def test_calendar_periods_in_another_time_zone():
    # 02:00 UTC on the 15th is still the 14th in São Paulo (UTC-3)
    now = d(2025, 6, 15, 2, 0)
    p = period_bounds("today", now, "America/Sao_Paulo")
    assert (p.start, p.end) == (d(2025, 6, 14, 3), d(2025, 6, 15, 3))
    assert period_bounds("today", now).start == d(2025, 6, 15)


@pytest.mark.parametrize(
    "text,start,end",
    [
        ("2025-01-01|2025-01-31", d(2025, 1, 1), d(2025, 2, 1)),  # date-only end: the whole day
        ("2025-01-01|2025-01-01", d(2025, 1, 1), d(2025, 1, 2)),
        ("2025-01-01T10:00|2025-01-01T12:30", d(2025, 1, 1, 10), d(2025, 1, 1, 12, 30)),
        ("2025-01-01 10:00:00|2025-01-02", d(2025, 1, 1, 10), d(2025, 1, 3)),
        ("2025-01-01T10:00:00-03:00|2025-01-01T18:00:00Z", d(2025, 1, 1, 13), d(2025, 1, 1, 18)),
        (" 2025-01-01 | 2025-01-02 ", d(2025, 1, 1), d(2025, 1, 3)),
    ],
)
def test_explicit_ranges(text, start, end):
    p = period_bounds(text, NOW)
    assert (p.start, p.end) == (start, end)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "2d",
        "24H",
        "Today",
        "lastweek",
        "semana",
        "2025-13-01|2025-12-31",
        "2025-01-01|",
        "|2025-01-01",
        "2025-02-01|2025-01-01",
        "yesterday|today",
        "1m ago",
    ],
)
def test_bad_periods_raise_report_error(bad):
    with pytest.raises(ReportError):
        period_bounds(bad, NOW)


def test_bad_time_zone_raises_report_error():
    with pytest.raises(ReportError, match="time zone"):
        period_bounds("today", NOW, "Mars/Olympus")


@pytest.mark.parametrize(
    "group,fmt",
    [
        ("year", "%Y"),
        ("month", "%Y-%m"),
        ("day", "%Y-%m-%d"),
        ("hour", "%H"),
        ("datehour", "%Y-%m-%d %H:00"),
        ("minute", "%Y-%m-%d %H:%i"),
        ("group", None),
        ("all", None),
        ("total", None),
        (None, None),
        ("DAY", "%Y-%m-%d"),
    ],
)
def test_groups(group, fmt):
    assert group_format(group) == fmt


@pytest.mark.parametrize("bad", ["days", "week", "dia", "quarter", "%Y"])
def test_bad_groups_raise_report_error(bad):
    with pytest.raises(ReportError, match="unknown group"):
        group_format(bad)


def test_original_groups_are_kept():
    assert {k: GROUP_FORMATS[k] for k in ("year", "month", "day", "hour")} == {
        "year": "%Y",
        "month": "%Y-%m",
        "day": "%Y-%m-%d",
        "hour": "%H",
    }


def test_date_utils_compatibility():
    assert DateUtils.get_period_dates("yesterday", NOW) == (d(2025, 6, 14), d(2025, 6, 15))
    with pytest.raises(ReportError):
        DateUtils.get_period_dates("nonsense", NOW)
