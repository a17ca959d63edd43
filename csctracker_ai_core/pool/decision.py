"""What a failed (or successful) attempt means, and what the pool does about it.

``classify_failure`` (in ``pool/classify.py``) turns an exception into a
:class:`Failure`; the rotator turns a failure into a :class:`Decision` and applies it
to its state. The processor only reads the decision: retry (after ``backoff_s``) or
raise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

__all__ = ["FailureKind", "Failure", "Action", "PoolChange", "Decision"]


class FailureKind(str, enum.Enum):
    """Classes of failure; the values are the ``outcome`` strings of ``ai_attempts``."""

    OK = "ok"
    QUOTA_PER_MINUTE = "quota_minute"  # requests or input tokens per minute
    QUOTA_PER_DAY = "quota_day"  # requests per day (resets at Pacific midnight)
    QUOTA_NO_ACCESS = "quota_zero"  # limit 0: the tier has no access to the model
    QUOTA_UNKNOWN = "quota"  # a 429 we cannot classify
    KEY_INVALID = "auth"  # 400 API_KEY_INVALID, 401, 403 PERMISSION_DENIED
    MODEL_NOT_FOUND = "not_found"  # 404 for the model
    TRANSIENT = "transient"  # 500, 503, 504, timeouts, dropped connections
    BAD_REQUEST = "bad_request"  # other 400s: the request itself is wrong
    INVALID_OUTPUT = "invalid_output"  # answered, but unusable (e.g. bad JSON)
    UNKNOWN = "error"  # anything else


@dataclass(frozen=True)
class Failure:
    """A classified failure. Built by ``pool.classify.classify_failure``."""

    kind: FailureKind
    http_status: int = 0  # 0 when there was no HTTP answer
    status: str = ""  # Gemini's status, e.g. RESOURCE_EXHAUSTED
    message: str = ""  # short, key-free summary
    quota_id: str = ""  # QuotaFailure.violations[0].quotaId
    quota_value: Optional[int] = None  # QuotaFailure quotaValue, when numeric
    retry_delay_s: Optional[float] = None  # RetryInfo.retryDelay
    reason: str = ""  # ErrorInfo.reason, e.g. API_KEY_INVALID
    per_project: bool = True  # the quota is shared by every key of the project
    error_type: str = ""  # class name of the exception


class Action(str, enum.Enum):
    """What the processor does next."""

    DONE = "served"  # success: return the answer
    RETRY = "retry"  # try again (on another slot when possible) after backoff_s
    RAISE = "raise"  # stop: the failure cannot be fixed by retrying


class PoolChange(str, enum.Enum):
    """What the pool changed in its state after an attempt."""

    NONE = ""
    SUSPEND = "suspend"  # the slot (or the project's model) waits until suspended_until
    DISABLE_KEY = "disable_key"  # the key is refused for good (invalid, leaked, blocked)
    DISABLE_MODEL = "disable_model"  # the model does not exist for this key
    COOLDOWN = "cooldown"  # a breaker opened after repeated server errors


@dataclass(frozen=True)
class Decision:
    """The pool's answer to an attempt's outcome."""

    action: Action
    failure: Optional[Failure] = None
    backoff_s: float = 0.0  # wait before the next attempt (0: go at once)
    pool_change: PoolChange = PoolChange.NONE
    suspended_until: Optional[float] = None  # Unix time, when pool_change suspended something

    @property
    def label(self) -> "PoolChange | Action":
        """What ``ai_attempts.decision`` records: the pool change if any, else the action."""
        return self.pool_change if self.pool_change else self.action
