"""Reports over the telemetry store: cost per task and period, views per key / project /
model / tier, latency, time series, and a self-contained HTML page.

    from csctracker_ai_core.reports import Telemetry
    rows = Telemetry().get_telemetry_data("day", "thisMonth")

See docs/REPORTS.md.
"""

from .periods import PERIOD_NAMES, Period, group_format, period_bounds
from .telemetry_report import DateUtils, Telemetry

__all__ = ["DateUtils", "PERIOD_NAMES", "Period", "Telemetry", "group_format", "period_bounds"]
