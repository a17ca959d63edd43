"""Shared test setup: no test writes outside its temporary folder or reads real keys."""

import pytest

_ENV_TO_CLEAR = (
    "GOOGLE_FREE_KEYS", "GOOGLE_PAID_KEYS", "GOOGLE_MODEL_LIMITS", "GOOGLE_API_KEY",
    "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL",
    "CLICKHOUSE_HOST", "CLICKHOUSE_PORT", "CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD", "CLICKHOUSE_DB",
    "CSCTRACKER_AI_BASE_URL", "CSCTRACKER_AI_TELEMETRY", "CSCTRACKER_AI_CLICKHOUSE_DSN",
    "CSCTRACKER_AI_REDIS_URL", "CSCTRACKER_AI_MAX_WAIT_S", "CSCTRACKER_AI_TIMEOUT_S",
    "CSCTRACKER_AI_MAX_RETRIES", "CSCTRACKER_AI_PRICES_FILE",
    "CSCTRACKER_AI_REDIS_NAMESPACE", "CSCTRACKER_AI_REDIS_LEASE_TTL_S", "CSCTRACKER_AI_REDIS_POLICY",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    """Every test gets its own data folder (chDB store, spool) and a clean environment."""
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    data = tmp_path_factory.mktemp("csc-data")
    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_DATA_HOME", str(data / "xdg"))
    yield data
