"""Shared test setup: no test writes outside its temporary folder or reads real keys."""

import pytest

from csctracker_ai_core.settings import ENVIRONMENT_VARIABLES

# Read by the SDK itself when no key is given; we always give one, but a test must
# never find a real key lying around.
_SDK_KEY_VARIABLES = ("GOOGLE_API_KEY", "GEMINI_API_KEY")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    """Every test gets its own data folder (chDB store, spool) and a clean environment."""
    for name in (*ENVIRONMENT_VARIABLES, *_SDK_KEY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path_factory.mktemp("csc-data")
    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_DATA_HOME", str(data / "xdg"))
    yield data


# The real redis-server fixtures (tests/redis_server.py), for every test module that asks.
from redis_server import redis_server, redis_url  # noqa: E402,F401
