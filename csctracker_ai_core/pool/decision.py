"""What a failed (or successful) attempt means, and what the pool does about it.

``classify_failure`` (in ``pool/classify.py``) turns an exception into a
:class:`Failure`; the rotator turns a failure into a :class:`Decision` and applies it
to its state. The processor only reads the decision: retry (after ``backoff_s``) or
raise.

Every failure has a :class:`FailureScope`: what it tells us about, hence what the pool
takes out (and nothing more). The table of what each scope does is in
``pool/rotator.py`` (``ApiKeyRotator._apply``) and in the README ("Escopos de falha").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

__all__ = [
    "FailureKind",
    "FailureScope",
    "Refusal",
    "Failure",
    "Action",
    "PoolChange",
    "Decision",
    "DEFAULT_SCOPE",
]


class FailureKind(str, enum.Enum):
    """Classes of failure; the values are the ``outcome`` strings of ``ai_attempts``."""

    OK = "ok"
    QUOTA_PER_MINUTE = "quota_minute"  # requests or input tokens per minute
    QUOTA_PER_DAY = "quota_day"  # requests per day (resets at Pacific midnight)
    QUOTA_NO_ACCESS = "quota_zero"  # limit 0: the tier has no access to the model
    QUOTA_UNKNOWN = "quota"  # a 429 we cannot classify
    KEY_INVALID = "auth"  # 400 API_KEY_INVALID, 401, 403 with a key-level reason (leaked, blocked...)
    PERMISSION_DENIED = "denied"  # 403 without a key-level reason: this key cannot use this model
    MODEL_NOT_FOUND = "not_found"  # 404 for the model (unknown, retired, "no longer available")
    TIER_UNAVAILABLE = "tier_unavailable"  # 400 FAILED_PRECONDITION: free tier not available (region)
    LOCATION_UNSUPPORTED = "location"  # 400 FAILED_PRECONDITION: "User location is not supported"
    MODEL_REFUSED = "model_refused"  # 400 about a parameter or size this model does not take
    TRANSIENT = "transient"  # 500, 503, 504, timeouts, dropped connections
    BAD_REQUEST = "bad_request"  # other 400s: the request itself is wrong
    INVALID_OUTPUT = "invalid_output"  # answered, but unusable (e.g. bad JSON)
    UNKNOWN = "error"  # anything else


class FailureScope(str, enum.Enum):
    """What a failure is about: the smallest part of the pool it says cannot serve."""

    REQUEST = "request"  # the request itself: no slot can fix it (raise at once)
    MODEL_REQUEST = "model_request"  # this model refuses this request: try the next model
    MODEL = "model"  # the model, for every key (404): parked everywhere at once
    PROJECT_MODEL = "project_model"  # one project x model (quotas are per project)
    KEY_MODEL = "key_model"  # one key x model (403 without a key-level reason)
    PROJECT_TIER = "project_tier"  # the keys of one tier in one project (free tier unavailable)
    KEY = "key"  # the key, for every model (invalid, expired, leaked, service disabled)
    ATTEMPT = "attempt"  # nothing in the pool: only this attempt failed (5xx, timeouts, bad reply)


#: The scope a failure kind has unless the classifier says otherwise (a 404 on a model
#: that has already served elsewhere is narrowed to its project by the rotator).
DEFAULT_SCOPE: dict["FailureKind", FailureScope] = {
    FailureKind.OK: FailureScope.ATTEMPT,
    FailureKind.QUOTA_PER_MINUTE: FailureScope.PROJECT_MODEL,
    FailureKind.QUOTA_PER_DAY: FailureScope.PROJECT_MODEL,
    FailureKind.QUOTA_NO_ACCESS: FailureScope.PROJECT_MODEL,
    FailureKind.QUOTA_UNKNOWN: FailureScope.PROJECT_MODEL,
    FailureKind.KEY_INVALID: FailureScope.KEY,
    FailureKind.PERMISSION_DENIED: FailureScope.KEY_MODEL,
    FailureKind.MODEL_NOT_FOUND: FailureScope.MODEL,
    FailureKind.TIER_UNAVAILABLE: FailureScope.PROJECT_TIER,
    FailureKind.LOCATION_UNSUPPORTED: FailureScope.REQUEST,
    FailureKind.MODEL_REFUSED: FailureScope.MODEL_REQUEST,
    FailureKind.TRANSIENT: FailureScope.ATTEMPT,
    FailureKind.BAD_REQUEST: FailureScope.REQUEST,
    FailureKind.INVALID_OUTPUT: FailureScope.ATTEMPT,
    FailureKind.UNKNOWN: FailureScope.ATTEMPT,
}


@dataclass(frozen=True)
class Refusal:
    """What a model refused in a 400 ``MODEL_REFUSED`` (read from the message).

    ``what``: ``"thinking"`` (a thinking level or budget), ``"input_tokens"`` (the input
    is over the model's limit: ``limit``, and ``seen`` tokens were sent), ``"json_mode"``,
    or ``"other"`` (a parameter we cannot name: the same call is not sent again).
    ``value``: the refused setting as Gemini named it (e.g. ``"MINIMAL"``), when it did.
    """

    what: str
    value: str = ""
    limit: Optional[int] = None
    seen: Optional[int] = None


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
    scope: Optional[FailureScope] = None  # None: DEFAULT_SCOPE[kind]
    refusal: Optional[Refusal] = None  # for MODEL_REFUSED: what the model refused

    def __post_init__(self) -> None:
        if self.scope is None:
            object.__setattr__(self, "scope", DEFAULT_SCOPE[self.kind])


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
    PARK_SLOT = "park_slot"  # this key x model has no access (403 without a key-level reason)
    PARK_PROJECT = "park_project"  # this project x model is gone (404 on a model that served here)
    PARK_MODEL = "park_model"  # the model is gone for every project (404)
    PARK_TIER = "park_tier"  # this project's keys of one tier are out (free tier unavailable)
    SKIP_MODEL = "skip_model"  # the model refuses this call: learnt, the call moves to the next model
    COOLDOWN = "cooldown"  # a breaker opened after repeated server errors


@dataclass(frozen=True)
class Decision:
    """The pool's answer to an attempt's outcome."""

    action: Action
    failure: Optional[Failure] = None
    backoff_s: float = 0.0  # wait before the next attempt (0: go at once)
    pool_change: PoolChange = PoolChange.NONE  # see ApiKeyRotator._apply
    suspended_until: Optional[float] = None  # Unix time, when pool_change suspended something

    @property
    def label(self) -> "PoolChange | Action":
        """What ``ai_attempts.decision`` records: the pool change if any, else the action."""
        return self.pool_change if self.pool_change else self.action
