from csctracker_ai_core.reports.telemetry_report import DateUtils, Telemetry  # noqa: F401
