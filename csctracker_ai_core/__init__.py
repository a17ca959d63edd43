"""csctracker-ai-core: Google Gemini on a pool of API keys, free first and paid as
fallback, riding out quotas, with every call recorded in ClickHouse.

    from csctracker_ai_core import IaProcessor

    with IaProcessor(google_free_keys=["k1", "k2"], google_paid_keys=["k3"]) as ia:
        resultado, tokens, event_id = ia.analisar_com_gemini(
            input_text="Qual a capital da França?", prompt="Responda de forma concisa.",
            task="pergunta_geral")
"""

from ._version import __version__
from .budgets import Budget, BudgetAlert, BudgetLine
from .clock import Clock, FakeClock, SystemClock
from .exceptions import (
    AiCoreError,
    BlockedResponseError,
    BudgetExceededError,
    ConfigurationError,
    GeminiRequestError,
    GeminiServiceException,
    InvalidInputError,
    InvalidResponseError,
    QuotaExhaustedError,
    RedisUnavailableError,
    ReportError,
    TelemetryError,
    TruncatedResponseError,
)
from .fingerprint import key_fingerprint
from .pool.rotator import ApiKeyRotator
from .pool.status import PoolStatus
from .processor import IaProcessor
from .reports.telemetry_report import Telemetry
from .telemetry.clickhouse_db import ClickHouseDb
from .tokens import TokenUsage

__all__ = [
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
    "BudgetExceededError",
    "TelemetryError",
    "RedisUnavailableError",
    "ReportError",
    "Budget",
    "BudgetAlert",
    "BudgetLine",
    "Clock",
    "SystemClock",
    "FakeClock",
    "key_fingerprint",
]
