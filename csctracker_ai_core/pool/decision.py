"""What a failed (or successful) attempt means, and what the pool does about it.

``classify_failure`` (in ``pool/classify.py``) turns an exception into a
:class:`Failure`; the rotator turns a failure into a :class:`Decision` and applies it
to its state. The processor only reads the decision: retry (after ``backoff_s``) or
end the call with :meth:`Decision.final_error`.

Everything a failure kind means is one row of :data:`KIND_POLICIES`: whether it is a
quota (429) kind, what it is about (its default :class:`FailureScope`: what the pool
takes out, and nothing more), whether retrying it spends the call's retry budget, and
which error ends a call on it with what advice. Adding a kind: a member of
:class:`FailureKind`, its row here, and the rule in ``classify.py`` that recognises it.
What the pool does for each scope is in ``pool/rotator.py`` (``ApiKeyRotator._apply``)
and in the README ("Escopos de falha").
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..exceptions import GeminiRequestError, GeminiServiceException, InvalidResponseError

__all__ = [
    "FailureKind",
    "FailureScope",
    "KindPolicy",
    "KIND_POLICIES",
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

    @property
    def policy(self) -> KindPolicy:
        """What this kind means (its row of :data:`KIND_POLICIES`)."""
        return KIND_POLICIES[self]

    @property
    def is_quota(self) -> bool:
        """A 429 quota kind: the pool suspends the quota's scope; counted as rate-limited."""
        return KIND_POLICIES[self].quota


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


_RETRY_LATER = "Gemini kept failing; try again in a few minutes."


@dataclass(frozen=True)
class KindPolicy:
    """What a :class:`FailureKind` means for the pool and for the call."""

    scope: FailureScope  # what it is about, unless the classifier says otherwise
    quota: bool = False  # a quota (429) kind: suspends its scope, counted as rate-limited
    spends_retry: bool = False  # retrying after it spends the call's max_retries
    ends_as: type[GeminiServiceException] = GeminiServiceException  # the error that ends a call on it
    advice: str = "retrying will not help; see the last error."  # said by that error


_S = FailureScope
_QUOTA = KindPolicy(_S.PROJECT_MODEL, quota=True)

#: One row per kind. Quota and key failures do not spend the retry budget: each one
#: takes a slot out of the pool, so they end by themselves (with QuotaExhaustedError).
KIND_POLICIES: Mapping[FailureKind, KindPolicy] = {
    FailureKind.OK: KindPolicy(_S.ATTEMPT),
    FailureKind.QUOTA_PER_MINUTE: _QUOTA,
    FailureKind.QUOTA_PER_DAY: _QUOTA,
    FailureKind.QUOTA_NO_ACCESS: _QUOTA,
    FailureKind.QUOTA_UNKNOWN: _QUOTA,
    FailureKind.KEY_INVALID: KindPolicy(
        _S.KEY,
        advice=(
            "Gemini refused every key that could serve this call (invalid, leaked or blocked); "
            "check them with `csc-ai keys` and replace them."
        ),
    ),
    FailureKind.PERMISSION_DENIED: KindPolicy(
        _S.KEY_MODEL,
        advice=(
            "these keys have no access to the models this call may use; use another "
            "model or keys of a project with access."
        ),
    ),
    FailureKind.MODEL_NOT_FOUND: KindPolicy(
        _S.MODEL,
        advice=(
            "no configured model that matches this call exists for these keys; fix "
            "GOOGLE_MODEL_LIMITS or model_variant."
        ),
    ),
    FailureKind.TIER_UNAVAILABLE: KindPolicy(
        _S.PROJECT_TIER,
        advice=(
            "the free tier is not available to these projects (region); enable billing "
            "and list their keys as paid, or add paid keys."
        ),
    ),
    FailureKind.LOCATION_UNSUPPORTED: KindPolicy(
        _S.REQUEST,
        ends_as=GeminiRequestError,
        advice=(
            "Gemini does not serve the place this process calls from (every key "
            "goes out from here); call from a supported region."
        ),
    ),
    FailureKind.MODEL_REFUSED: KindPolicy(
        _S.MODEL_REQUEST,
        ends_as=GeminiRequestError,
        advice=(
            "Every model this call may use refuses it; change the call (thinking "
            "level, input size, JSON mode) or configure a model that takes it."
        ),
    ),
    FailureKind.TRANSIENT: KindPolicy(_S.ATTEMPT, spends_retry=True, advice=_RETRY_LATER),
    FailureKind.BAD_REQUEST: KindPolicy(
        _S.REQUEST, ends_as=GeminiRequestError, advice=("Retrying will not help; fix the request (model, file, size).")
    ),
    FailureKind.INVALID_OUTPUT: KindPolicy(
        _S.ATTEMPT, spends_retry=True, ends_as=InvalidResponseError, advice=_RETRY_LATER
    ),
    FailureKind.UNKNOWN: KindPolicy(_S.ATTEMPT, spends_retry=True),
}

#: The scope a failure kind has unless the classifier says otherwise (a 404 on a model
#: that has already served elsewhere is narrowed to its project by the rotator).
DEFAULT_SCOPE: Mapping[FailureKind, FailureScope] = {k: p.scope for k, p in KIND_POLICIES.items()}


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
    limit: int | None = None
    seen: int | None = None


@dataclass(frozen=True)
class Failure:
    """A classified failure. Built by ``pool.classify.classify_failure``."""

    kind: FailureKind
    http_status: int = 0  # 0 when there was no HTTP answer
    status: str = ""  # Gemini's status, e.g. RESOURCE_EXHAUSTED
    message: str = ""  # short, key-free summary
    quota_id: str = ""  # QuotaFailure.violations[0].quotaId
    quota_value: int | None = None  # QuotaFailure quotaValue, when numeric
    retry_delay_s: float | None = None  # RetryInfo.retryDelay
    reason: str = ""  # ErrorInfo.reason, e.g. API_KEY_INVALID
    per_project: bool = True  # the quota is shared by every key of the project
    error_type: str = ""  # class name of the exception
    scope: FailureScope | None = None  # None: DEFAULT_SCOPE[kind]
    refusal: Refusal | None = None  # for MODEL_REFUSED: what the model refused

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
    failure: Failure | None = None
    backoff_s: float = 0.0  # wait before the next attempt (0: go at once)
    pool_change: PoolChange = PoolChange.NONE  # see ApiKeyRotator._apply
    suspended_until: float | None = None  # Unix time, when pool_change suspended something
    spends_retry: bool = False  # this retry spends one of the call's max_retries
    budget_spent: bool = False  # the call's retry budget was spent: this decision ends the call

    @property
    def ends_call(self) -> bool:
        """Stop here: the caller gets :meth:`final_error`."""
        return self.action is Action.RAISE

    def within_budget(self, retries_left: int) -> Decision:
        """This decision for a call that may still retry ``retries_left`` times.

        A retry of a kind that spends the budget is marked ``spends_retry``; with no
        retry left it becomes the call's end (``budget_spent``).
        """
        failure = self.failure
        if self.action is not Action.RETRY or failure is None or not failure.kind.policy.spends_retry:
            return self
        if retries_left <= 0:
            return replace(self, action=Action.RAISE, budget_spent=True)
        return replace(self, spends_retry=True)

    def final_error(self, error: BaseException, *, attempts: int, event_id: str | None) -> GeminiServiceException:
        """The error that ends a call on this decision; ``error`` is the attempt's own."""
        failure = self.failure
        kind = failure.kind if failure is not None else FailureKind.UNKNOWN
        policy = kind.policy
        if policy.ends_as is InvalidResponseError:
            if isinstance(error, InvalidResponseError) and type(error) is not InvalidResponseError:
                # A precise reply problem (truncated, blocked) ends the call as itself.
                final = copy.copy(error)
                final.args = (f"{error} ({attempts} request(s))",)
                final.last_error, final.attempts, final.event_id = error, attempts, event_id
                return final
            return InvalidResponseError(
                f"Gemini's reply could not be used after {attempts} attempt(s): {error}",
                last_error=error,
                attempts=attempts,
                event_id=event_id,
            )
        if policy.ends_as is GeminiRequestError and failure is not None:
            return GeminiRequestError(
                f"Gemini refused the request (HTTP {failure.http_status} {failure.status}): "
                f"{failure.message}. {policy.advice}",
                status_code=failure.http_status,
                status=failure.status,
                last_error=error,
                attempts=attempts,
                event_id=event_id,
            )
        reason = failure.message if failure is not None and failure.message else type(error).__name__
        server_error = failure is not None and failure.http_status >= 500
        advice = _RETRY_LATER if server_error else policy.advice
        return GeminiServiceException(
            f"the call failed after {attempts} attempt(s); last: {reason}. {advice}",
            last_error=error,
            attempts=attempts,
            event_id=event_id,
        )

    @property
    def label(self) -> PoolChange | Action:
        """What ``ai_attempts.decision`` records: the pool change if any, else the action."""
        return self.pool_change if self.pool_change else self.action
