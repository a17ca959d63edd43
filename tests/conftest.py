"""Shared test setup: no test writes outside its temporary folder or reads real keys."""

from datetime import date

import pytest

from csctracker_ai_core import catalog
from csctracker_ai_core.settings import ENVIRONMENT_VARIABLES
from csctracker_ai_core.telemetry.shared import close_idle_embedded

# The day the suite's model lineup was last reviewed (see _lineup_as_written).
LINEUP_DAY = date(2026, 11, 25)

# Read by the SDK itself when no key is given; we always give one, but a test must
# never find a real key lying around.
_SDK_KEY_VARIABLES = ("GOOGLE_API_KEY", "GEMINI_API_KEY")


@pytest.fixture(autouse=True)
def _lineup_as_written(monkeypatch):
    """The model catalog dates shutdowns (gemini-2.5-flash: 2026-12-01). Tests that do not
    test shutdowns judge the lineup as on the day they were written, so the calendar does
    not turn them red; shutdown tests build a ShutdownWatch of their own."""
    monkeypatch.setattr(catalog, "WATCH", catalog.ShutdownWatch(pinned_today=LINEUP_DAY))


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    """Every test gets its own data folder (chDB store, spool) and a clean environment."""
    for name in (*ENVIRONMENT_VARIABLES, *_SDK_KEY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path_factory.mktemp("csc-data")
    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_DATA_HOME", str(data / "xdg"))
    yield data
    # A process runs one chDB path at a time, and the library keeps an idle embedded
    # writer open until another path is asked for (telemetry/shared.py). Tests that open
    # a store directly (clickhouse_connect.get_client) would meet the previous test's:
    # close it here, as the library does before opening another path.
    close_idle_embedded()


# The real redis-server fixtures (tests/redis_server.py), for every test module that asks.
from redis_server import redis_server, redis_url  # noqa: E402,F401
