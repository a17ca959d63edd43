"""Exception -> :class:`~csctracker_ai_core.pool.decision.Failure`, from Gemini's structured error body.

The google-genai SDK raises ``google.genai.errors.APIError`` (``ClientError`` for 4xx,
``ServerError`` for 5xx) whose ``details`` is the whole parsed body,
``{"error": {"code", "message", "status", "details": [...]}}`` (a streamed error gives
the inner object directly; a non-JSON body gives ``{"message": text, "status": reason}``).
The ``details`` list carries typed entries, in no fixed order:

* ``google.rpc.QuotaFailure``: ``violations[].quotaId`` tells per-minute from per-day
  (``...PerMinute...`` / ``...PerDay...``), ``quotaValue`` ``"0"`` means no access;
* ``google.rpc.RetryInfo``: ``retryDelay`` such as ``"41s"`` or ``"0.5s"``;
* ``google.rpc.ErrorInfo``: ``reason`` such as ``API_KEY_INVALID``.

Classification reads those fields first; the message text is read only where the body
has nothing structured to say: ``limit: 0`` in a 429 without details, a key named in a
400/403 without ErrorInfo (leaked, expired, unregistered caller), and 400s, whose only
structure is the status (INVALID_ARGUMENT / FAILED_PRECONDITION): the free tier or the
caller's location, or a parameter one model does not take (thinking level or budget,
input over the model's limit, JSON mode). Each pattern comes from a public body (the
table in ``tests/test_pool_classify.py`` holds them verbatim with their sources). Timeouts and dropped connections arrive as the HTTP
library's own exceptions (httpx2 in SDK 3.x) or builtin ``TimeoutError`` /
``ConnectionError`` / ``OSError``.

Everything here is pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .. import redaction
from .constants import MESSAGE_MAX_CHARS
from .decision import Failure, FailureKind, Refusal

__all__ = ["classify_failure", "invalid_output_failure", "parse_retry_delay", "scrub"]

_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"

# ErrorInfo reasons that mean "this key will not work again in this process".
_KEY_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "CONSUMER_SUSPENDED",
        "CONSUMER_INVALID",
        "SERVICE_DISABLED",
        "BILLING_DISABLED",
    }
)
_TRANSIENT_CODES = frozenset({408, 409, 499, 500, 502, 503, 504})

_LIMIT_ZERO = re.compile(r"\blimit:\s*0\b")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*s\s*$")

# Filesystem errors are OSErrors too, but they come from our side (a file to upload
# that is missing), not from the network: retrying cannot help.
_LOCAL_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _http_transient_types() -> tuple[type, ...]:
    found: list[type] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        for name in ("TimeoutException", "NetworkError", "RemoteProtocolError"):
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                found.append(cls)
    return tuple(found)


_HTTP_TRANSIENT = _http_transient_types()


def scrub(text: Any, limit: int = MESSAGE_MAX_CHARS) -> str:
    """``text`` on one short line, with every configured key hidden (see :mod:`..redaction`)."""
    return redaction.scrub(text, limit)


def parse_retry_delay(value: Any) -> float | None:
    """Seconds from a RetryInfo ``retryDelay`` (``"41s"``, ``"0.5s"``, or ``{"seconds", "nanos"}``).

    ``None`` when absent or unreadable; never negative.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(0.0, float(value))
    if isinstance(value, str):
        m = _DURATION.match(value)
        return max(0.0, float(m.group(1))) if m else None
    if isinstance(value, Mapping):
        try:
            return max(0.0, float(value.get("seconds", 0) or 0) + float(value.get("nanos", 0) or 0) / 1e9)
        except (TypeError, ValueError):
            return None
    return None


def invalid_output_failure(detail: str = "") -> Failure:
    """The failure the processor reports with ``release(..., invalid_output=True)``."""
    return Failure(
        kind=FailureKind.INVALID_OUTPUT,
        message=scrub(detail or "the reply could not be used (e.g. invalid JSON)"),
        per_project=False,
        error_type="InvalidOutput",
    )


def _body(details: Any) -> Mapping[str, Any]:
    """The error object: ``details['error']`` when wrapped, else ``details`` itself."""
    if isinstance(details, Mapping):
        inner = details.get("error")
        return inner if isinstance(inner, Mapping) else details
    return {}


def _typed(items: Iterable[Any], type_url: str) -> list[Mapping[str, Any]]:
    return [d for d in items if isinstance(d, Mapping) and d.get("@type") == type_url]


def _quota_value(raw: Any) -> int | None:
    try:
        return int(str(raw).strip())
    except (TypeError, ValueError):
        return None


def _retry_after_header(exc: BaseException) -> float | None:
    """RetryInfo's fallback: a ``Retry-After`` header in seconds on the HTTP response."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        raw = headers.get("retry-after")
    except Exception:  # a foreign response object: the header is only a hint
        return None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _classify_quota(
    code: int, status: str, message: str, items: list[Any], exc: BaseException, error_type: str
) -> Failure:
    retry = None
    for info in _typed(items, _RETRY_INFO):
        retry = parse_retry_delay(info.get("retryDelay"))
        if retry is not None:
            break
    if retry is None:
        retry = _retry_after_header(exc)

    violations: list[Mapping[str, Any]] = []
    for qf in _typed(items, _QUOTA_FAILURE):
        violations.extend(v for v in qf.get("violations") or () if isinstance(v, Mapping))

    kind = FailureKind.QUOTA_UNKNOWN
    chosen: Mapping[str, Any] | None = None
    # Several violations: the strongest wins (no access > per day > per minute), since
    # acting on the weaker one would send a request the stronger one refuses.
    rank = {FailureKind.QUOTA_NO_ACCESS: 3, FailureKind.QUOTA_PER_DAY: 2, FailureKind.QUOTA_PER_MINUTE: 1}
    for v in violations:
        qid = str(v.get("quotaId") or "")
        if _quota_value(v.get("quotaValue")) == 0:
            k = FailureKind.QUOTA_NO_ACCESS
        elif "PerDay" in qid:
            k = FailureKind.QUOTA_PER_DAY
        elif "PerMinute" in qid:
            k = FailureKind.QUOTA_PER_MINUTE
        else:
            k = FailureKind.QUOTA_UNKNOWN
        if chosen is None or rank.get(k, 0) > rank.get(kind, 0):
            kind, chosen = k, v

    if not violations and _LIMIT_ZERO.search(message):
        # No structured body (e.g. an old or proxied reply): "limit: 0" is the one
        # phrase worth reading, because acting on it saves a day of wasted requests.
        kind = FailureKind.QUOTA_NO_ACCESS

    return Failure(
        kind=kind,
        http_status=code,
        status=status,
        message=scrub(message),
        quota_id=str(chosen.get("quotaId") or "") if chosen else "",
        quota_value=_quota_value(chosen.get("quotaValue")) if chosen else None,
        retry_delay_s=retry,
        per_project=True,
        error_type=error_type,
    )


# Messages read as a last resort, when no ErrorInfo reason says it: each pattern is a
# public body (sources in tests/test_pool_classify.py).
_KEY_MESSAGES = re.compile(
    r"API key not valid|API key expired|reported as leaked|unregistered callers"
    r"|has not been used in project|API has not been enabled|has been suspended",
    re.IGNORECASE,
)
_FREE_TIER = re.compile(r"free tier is not available|enable billing", re.IGNORECASE)
_LOCATION = re.compile(r"location is not supported", re.IGNORECASE)
_INPUT_TOKENS = re.compile(
    r"input token count(?: \((\d+)\))? exceeds the maximum number of tokens allowed(?: \((\d+)\))?",
    re.IGNORECASE,
)
_THINKING = re.compile(
    r"thinking[ _](?:level|budget)\b.*?(?:not supported|invalid|cannot)"
    r"|(?:does not support|not supported).*?thinking|only works in thinking mode",
    re.IGNORECASE,
)
_THINKING_VALUE = re.compile(
    r"thinking level (\w+)|thinking budget \((-?\d+)\)|thinking_budget to (-?\d+)|Budget (-?\d+) is invalid",
    re.IGNORECASE,
)
_JSON_MODE = re.compile(r"json mode is not (?:enabled|supported)|response_?mime_?type.*not supported", re.IGNORECASE)
_PER_MODEL = re.compile(
    r"(?:not supported|not enabled|not available) (?:for|by|on) (?:this model|models/)"
    r"|(?:this|the) model does not support",
    re.IGNORECASE,
)


def _model_refusal(message: str) -> Refusal | None:
    """What one model refused, when a 400 says it is about this model; ``None`` otherwise."""
    m = _INPUT_TOKENS.search(message)
    if m:
        seen, limit = (int(g) if g else None for g in m.groups())
        return Refusal("input_tokens", limit=limit, seen=seen)
    if _THINKING.search(message):
        v = _THINKING_VALUE.search(message)
        value = next((g for g in v.groups() if g), "") if v else ""
        return Refusal("thinking", value=value.upper())
    if _JSON_MODE.search(message):
        return Refusal("json_mode")
    if _PER_MODEL.search(message):
        return Refusal("other", value=scrub(message, 120))
    return None


def _classify_api_error(exc: BaseException) -> Failure:
    details = getattr(exc, "details", None)
    body = _body(details)
    try:
        code = int(getattr(exc, "code", 0) or body.get("code") or 0)
    except (TypeError, ValueError):
        code = 0
    status = str(getattr(exc, "status", None) or body.get("status") or "")
    message = str(getattr(exc, "message", None) or body.get("message") or "")
    items = body.get("details")
    items = list(items) if isinstance(items, list) else []
    error_type = type(exc).__name__

    if code == 429 or status == "RESOURCE_EXHAUSTED":
        return _classify_quota(code or 429, status, message, items, exc, error_type)

    reasons = [str(e.get("reason") or "") for e in _typed(items, _ERROR_INFO)]
    reason = next((r for r in reasons if r), "")

    def make(kind: FailureKind, refusal: Refusal | None = None) -> Failure:
        return Failure(
            kind=kind,
            http_status=code,
            status=status,
            message=scrub(message),
            reason=reason,
            per_project=False,
            error_type=error_type,
            refusal=refusal,
        )

    # The key: a key-level ErrorInfo reason, 401, or (no reason given) a message that
    # names the key. A 403 without any of them says nothing about the key.
    if reason in _KEY_REASONS or code == 401 or (code in (400, 403) and _KEY_MESSAGES.search(message)):
        return make(FailureKind.KEY_INVALID)
    if code == 403:
        return make(FailureKind.PERMISSION_DENIED)
    if code == 404:
        return make(FailureKind.MODEL_NOT_FOUND)
    if code == 400 or status in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):
        if _LOCATION.search(message):
            return make(FailureKind.LOCATION_UNSUPPORTED)
        if status == "FAILED_PRECONDITION" and _FREE_TIER.search(message):
            return make(FailureKind.TIER_UNAVAILABLE)
        refusal = _model_refusal(message)
        if refusal is not None:
            return make(FailureKind.MODEL_REFUSED, refusal)
        return make(FailureKind.BAD_REQUEST)
    if code in _TRANSIENT_CODES:
        return make(FailureKind.TRANSIENT)
    if 400 <= code < 500:
        return make(FailureKind.BAD_REQUEST)
    # 501 and other 5xx: not known to be passing, but not the caller's fault either.
    return make(FailureKind.UNKNOWN)


def _is_api_error(exc: BaseException) -> bool:
    # Duck-typed on the SDK's attributes so that classification never imports the SDK
    # and also accepts look-alike errors (e.g. from the emulator's own client).
    return isinstance(getattr(exc, "code", None), int) and hasattr(exc, "details")


def _is_transport_error(exc: BaseException) -> bool:
    if _HTTP_TRANSIENT and isinstance(exc, _HTTP_TRANSIENT):
        return True
    if isinstance(exc, _LOCAL_OS_ERRORS):
        return False
    return isinstance(exc, (TimeoutError, ConnectionError, OSError))


def classify_failure(exc: BaseException) -> Failure:
    """Classify what an attempt's exception means for the pool.

    =========================================  =====================  ==============
    exception                                  kind                   scope
    =========================================  =====================  ==============
    429, QuotaFailure quotaValue "0"           QUOTA_NO_ACCESS        project_model
    429, quotaId ``...PerDay...``              QUOTA_PER_DAY          project_model
    429, quotaId ``...PerMinute...``           QUOTA_PER_MINUTE       project_model
    429, nothing readable                      QUOTA_UNKNOWN          project_model
    key-level ErrorInfo reason (API_KEY_*,     KEY_INVALID            key
    SERVICE_DISABLED, CONSUMER_SUSPENDED...),
    401, 400/403 naming the key (leaked,
    expired, unregistered caller)
    other 403 (HTML 403 included)              PERMISSION_DENIED      key_model
    404                                        MODEL_NOT_FOUND        model
    400 "location is not supported"            LOCATION_UNSUPPORTED   request
    400 FAILED_PRECONDITION free tier/billing  TIER_UNAVAILABLE       project_tier
    400 thinking level/budget, input token     MODEL_REFUSED          model_request
    count over the maximum, JSON mode, "not
    supported for this model"
    other 400, other 4xx                       BAD_REQUEST            request
    408, 409, 499, 500, 502, 503, 504          TRANSIENT              attempt
    timeouts, connection errors, OSError       TRANSIENT              attempt
    InvalidResponseError                       INVALID_OUTPUT         attempt
    anything else (501...)                     UNKNOWN                attempt
    =========================================  =====================  ==============
    """
    if _is_api_error(exc):
        return _classify_api_error(exc)
    # Late import: exceptions.py is tiny, but keeps this module importable standalone.
    from ..exceptions import InvalidResponseError

    if isinstance(exc, InvalidResponseError):
        return invalid_output_failure(str(exc))
    for candidate in (exc, exc.__cause__):
        if candidate is not None and _is_transport_error(candidate):
            return Failure(
                kind=FailureKind.TRANSIENT,
                message=scrub(str(candidate) or type(candidate).__name__),
                per_project=False,
                error_type=type(candidate).__name__,
            )
    return Failure(
        kind=FailureKind.UNKNOWN,
        message=scrub(str(exc) or type(exc).__name__),
        per_project=False,
        error_type=type(exc).__name__,
    )
