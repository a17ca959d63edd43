"""The public names, and the original library's import paths, stay where users find them."""

import csctracker_ai_core


def test_public_names_are_pinned():
    assert sorted(csctracker_ai_core.__all__) == sorted(
        [
            "__version__",
            "IaProcessor",
            "ApiKeyRotator",
            "PoolStatus",
            "ClickHouseDb",
            "Telemetry",
            "TokenUsage",
            "AiCoreError",
            "ConfigurationError",
            "InvalidInputError",
            "GeminiServiceException",
            "QuotaExhaustedError",
            "GeminiRequestError",
            "InvalidResponseError",
            "TruncatedResponseError",
            "BlockedResponseError",
            "TelemetryError",
            "RedisUnavailableError",
            "ReportError",
            "Clock",
            "SystemClock",
            "FakeClock",
            "key_fingerprint",
            "Budget",
            "BudgetAlert",
            "BudgetLine",
            "BudgetExceededError",
        ]
    )
    for name in csctracker_ai_core.__all__:
        assert getattr(csctracker_ai_core, name) is not None


def test_original_import_paths_resolve_to_the_same_objects():
    from csctracker_ai_core.service.ApiKeyRotator import APIKeyRotator, ApiKeyRotator
    from csctracker_ai_core.service.ClickHouseDb import ClickHouseDb
    from csctracker_ai_core.service.IaProcessor import GeminiServiceException, IaProcessor
    from csctracker_ai_core.service.Telemetry import DateUtils, Telemetry

    assert IaProcessor is csctracker_ai_core.IaProcessor
    assert GeminiServiceException is csctracker_ai_core.GeminiServiceException
    assert ApiKeyRotator is csctracker_ai_core.ApiKeyRotator
    from csctracker_ai_core import compat

    assert APIKeyRotator is compat.APIKeyRotator  # the original's signature, over ApiKeyRotator
    assert ClickHouseDb is csctracker_ai_core.ClickHouseDb
    assert Telemetry is csctracker_ai_core.Telemetry
    assert callable(DateUtils.get_period_dates)


def test_every_library_error_derives_from_one_base():
    from csctracker_ai_core import exceptions

    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.AiCoreError)


def test_compatibility_shims_stay_one_liners():
    from pathlib import Path

    shims = Path(csctracker_ai_core.__file__).parent / "service"
    for shim in shims.glob("[A-Z]*.py"):
        code = [line for line in shim.read_text().splitlines() if line.strip()]
        assert len(code) == 1, shim.name
