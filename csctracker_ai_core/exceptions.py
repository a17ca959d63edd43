"""Every error the library raises on purpose.

All of them derive from :class:`AiCoreError`, so one ``except AiCoreError`` catches
everything the library means to tell the caller. Each message says what happened and
what to do about it, and never contains an API key (keys are shown as fingerprints).

    AiCoreError
    ├── ConfigurationError          settings that cannot work (no keys, bad limits, bad URL)
    │   └── ProcessorClosedError    a call on an IaProcessor after close(); nothing was sent
    ├── InvalidInputError           the arguments of a call are wrong; nothing was sent
    ├── GeminiServiceException      every attempt of a call failed (the original's name);
    │   │                           ``__cause__`` / ``last_error`` hold the last failure
    │   ├── QuotaExhaustedError     no key x model slot can serve before the wait limit;
    │   │                           ``retry_at`` says when one will
    │   ├── GeminiRequestError      Gemini refused the request itself (a 400 that is the
    │   │                           caller's fault): retrying cannot help
    │   ├── InvalidResponseError    Gemini answered, but not with what was asked
    │   │   │                       (e.g. invalid JSON, JSON that breaks response_schema)
    │   │   ├── TruncatedResponseError  the reply was cut at the output limit (MAX_TOKENS);
    │   │   │                       ``partial_text`` holds what came back
    │   │   └── BlockedResponseError    a safety filter stopped the prompt or the reply;
    │   │                           ``reason`` says which (SAFETY, blockReason ...)
    │   └── BudgetExceededError     only paid slots could serve and a budget rule would
    │                               pass its limit: nothing was sent
    ├── TelemetryError              the telemetry store cannot be used as configured
    ├── RedisUnavailableError       Redis is unreachable and the pool's policy is "fail"
    └── ReportError                 a report was asked with a bad group or period
"""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "AiCoreError",
    "ConfigurationError",
    "ProcessorClosedError",
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
]


class AiCoreError(Exception):
    """Base class of every error raised on purpose by csctracker-ai-core."""


class ConfigurationError(AiCoreError, ValueError):
    """The library was configured in a way that cannot work; fix the setting named."""


class ProcessorClosedError(ConfigurationError):
    """A call reached an ``IaProcessor`` after ``close()``: it was refused before anything was sent."""


class InvalidInputError(AiCoreError, ValueError):
    """A call's arguments are invalid. Raised before anything is sent upstream."""


class GeminiServiceException(AiCoreError):
    """Every attempt to serve a call failed.

    Kept under the original library's name so ``except GeminiServiceException`` keeps
    working. ``last_error`` is the last underlying failure (also chained as
    ``__cause__``); ``attempts`` is how many upstream requests were made.
    """

    def __init__(
        self,
        message: str,
        *,
        last_error: BaseException | None = None,
        attempts: int = 0,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.last_error = last_error
        self.attempts = attempts
        self.event_id = event_id


class QuotaExhaustedError(GeminiServiceException):
    """No key x model slot can serve the call within the allowed wait.

    ``retry_at`` is the Unix time (seconds) at which the earliest slot is expected to
    be usable again, or ``None`` when no slot will ever serve this call (every key
    disabled, or no model matches the filters).
    """

    def __init__(
        self,
        message: str,
        *,
        retry_at: float | None = None,
        last_error: BaseException | None = None,
        attempts: int = 0,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message, last_error=last_error, attempts=attempts, event_id=event_id)
        self.retry_at = retry_at


class GeminiRequestError(GeminiServiceException):
    """Gemini rejected the request as malformed (HTTP 400 not about the key).

    Retrying the same request cannot succeed; fix the arguments (model, schema,
    mime type, size) and call again. ``status_code`` and ``status`` are Gemini's.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        status: str | None = None,
        last_error: BaseException | None = None,
        attempts: int = 0,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message, last_error=last_error, attempts=attempts, event_id=event_id)
        self.status_code = status_code
        self.status = status


class InvalidResponseError(GeminiServiceException):
    """Gemini answered, but the answer is unusable (invalid JSON, blocked, empty)."""


class TruncatedResponseError(InvalidResponseError):
    """Gemini's reply stopped at the output limit (finishReason ``MAX_TOKENS``).

    ``partial_text`` is what came back before the cut (``""`` when the whole output
    budget went to thinking); ``finish_reason`` is ``"MAX_TOKENS"``. Lower
    ``thinking_level``, raise ``max_output_tokens``, or pass ``accept_truncation=True``
    to receive a cut text reply as a result.
    """

    def __init__(
        self,
        message: str,
        *,
        partial_text: str = "",
        finish_reason: str = "MAX_TOKENS",
        last_error: BaseException | None = None,
        attempts: int = 0,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message, last_error=last_error, attempts=attempts, event_id=event_id)
        self.partial_text = partial_text
        self.finish_reason = finish_reason


class BlockedResponseError(InvalidResponseError):
    """Gemini's safety filters stopped the prompt or the reply; retrying cannot help.

    ``reason`` says which: a finishReason (``SAFETY``, ``RECITATION``,
    ``PROHIBITED_CONTENT``, ``BLOCKLIST``, ``SPII``, ``IMAGE_SAFETY``) or
    ``"blockReason <X>"`` for a prompt blocked before any candidate. Change the prompt
    or the input.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        last_error: BaseException | None = None,
        attempts: int = 0,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message, last_error=last_error, attempts=attempts, event_id=event_id)
        self.reason = reason


class BudgetExceededError(GeminiServiceException):
    """A budget rule refused the paid attempt that was the only way to serve the call.

    Nothing was sent for it. ``rule`` is the rule's name; ``spent``, ``reserved`` and
    ``limit`` are in ``currency`` (``Decimal``); ``resets_at`` is the Unix time at which
    the rule's period ends (``retry_at`` too, for code that handles quota errors).
    ``no_rate`` is true when a BRL rule found no exchange rate for the day.
    """

    def __init__(
        self,
        message: str,
        *,
        rule: str = "",
        spent: Decimal | None = None,
        reserved: Decimal | None = None,
        limit: Decimal | None = None,
        currency: str = "USD",
        resets_at: float | None = None,
        no_rate: bool = False,
        last_error: BaseException | None = None,
        attempts: int = 0,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message, last_error=last_error, attempts=attempts, event_id=event_id)
        self.rule = rule
        self.spent = spent
        self.reserved = reserved
        self.limit = limit
        self.currency = currency
        self.resets_at = resets_at
        self.retry_at = resets_at
        self.no_rate = no_rate


class TelemetryError(AiCoreError):
    """The telemetry store cannot be used as configured (bad DSN, unwritable folder)."""


class RedisUnavailableError(AiCoreError):
    """Redis cannot be reached and the shared pool's policy is ``"fail"``.

    With the default policy (``"fallback"``) the pool keeps serving from local state
    instead; see docs/REDIS.md.
    """


class ReportError(AiCoreError, ValueError):
    """A report was asked with an unknown group or period, or an unreadable date."""
