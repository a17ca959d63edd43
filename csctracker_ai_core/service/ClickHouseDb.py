from csctracker_ai_core.telemetry.clickhouse_db import ClickHouseDb  # noqa: F401
