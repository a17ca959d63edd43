"""Failure classification, table-tested over Gemini's verbatim error bodies (docs: shared/notes/gemini-wire.md)."""

from __future__ import annotations

import copy

import httpx2
import pytest
from google.genai.errors import ClientError, ServerError

from csctracker_ai_core.exceptions import InvalidResponseError
from csctracker_ai_core.pool.classify import classify_failure, invalid_output_failure, parse_retry_delay, scrub
from csctracker_ai_core.pool.decision import FailureKind

HELP = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [
        {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }
    ],
}


def quota_failure(quota_id: str, value: str = "20", model: str = "gemini-2.5-flash") -> dict:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": model},
                "quotaValue": value,
            }
        ],
    }


def retry_info(delay: str) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


MESSAGE_429 = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: "
    "https://ai.dev/rate-limit. \n* Quota exceeded for metric: generativelanguage.googleapis.com/"
    "generate_content_free_tier_requests, limit: 20, model: gemini-2.5-flash\nPlease retry in 41.754757778s."
)


def body_429(details: list, message: str = MESSAGE_429) -> dict:
    return {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}}


PER_DAY_2026 = body_429([HELP, quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), retry_info("41s")])
PER_DAY_OLD_ORDER = body_429(
    [quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), HELP, retry_info("41s")]
)
PER_MINUTE = body_429(
    [HELP, quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10"), retry_info("41s")]
)
PER_MINUTE_OLD_ORDER = body_429(
    [quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10"), retry_info("0.5s"), HELP]
)
TOKENS_PER_MINUTE = body_429(
    [HELP, quota_failure("GenerateContentInputTokensPerModelPerMinute-FreeTier", "250000"), retry_info("12s")]
)
PAID_TOKENS = body_429(
    [quota_failure("GenerateContentPaidTierInputTokensPerModelPerMinute", "1000000"), retry_info("3s")]
)
LIMIT_ZERO = body_429(
    [
        HELP,
        quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "0", "gemini-2.5-pro"),
        retry_info("37s"),
    ],
    message=MESSAGE_429.replace("limit: 20", "limit: 0"),
)
BARE_429 = {
    "error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}
}
BARE_429_LIMIT_ZERO = {
    "error": {"code": 429, "message": MESSAGE_429.replace("limit: 20", "limit: 0"), "status": "RESOURCE_EXHAUSTED"}
}
BAD_KEY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ],
    }
}
LEAKED = {
    "error": {
        "code": 403,
        "message": "Your API key was reported as leaked. Please use another API key.",
        "status": "PERMISSION_DENIED",
    }
}
BLOCKED = {
    "error": {
        "code": 403,
        "message": "Requests to this API generativelanguage.googleapis.com method are blocked.",
        "status": "PERMISSION_DENIED",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_SERVICE_BLOCKED"}],
    }
}
NOT_FOUND = {
    "error": {
        "code": 404,
        "message": "models/gemini-pro is not found for API version v1beta, or is not supported for generateContent. "
        "Call ListModels to see the list of available models and their supported methods.",
        "status": "NOT_FOUND",
    }
}
INTERNAL = {
    "error": {
        "code": 500,
        "message": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "status": "INTERNAL",
    }
}
OVERLOADED = {
    "error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}
}
HIGH_DEMAND = {
    "error": {
        "code": 503,
        "message": "This model is currently experiencing high demand. Spikes in demand are usually temporary. "
        "Please try again later.",
        "status": "UNAVAILABLE",
    }
}
DEADLINE = {
    "error": {
        "code": 504,
        "message": "Deadline expired before operation could complete.",
        "status": "DEADLINE_EXCEEDED",
    }
}
BAD_SCHEMA = {
    "error": {
        "code": 400,
        "message": "Invalid JSON payload received. Unknown name \"foo\" at 'generation_config': Cannot find field.",
        "status": "INVALID_ARGUMENT",
    }
}
NON_JSON_502 = {"message": "<html><body>502 Bad Gateway</body></html>", "status": "Bad Gateway"}
NON_JSON_429 = {"message": "Too Many Requests", "status": "Too Many Requests"}


def client(code: int, body: dict) -> ClientError:
    return ClientError(code, copy.deepcopy(body))


def server(code: int, body: dict) -> ServerError:
    return ServerError(code, copy.deepcopy(body))


K = FailureKind

CASES = [
    # id, exception, kind, quota_id, quota_value, retry_delay_s, reason
    (
        "per-day 2026 order",
        client(429, PER_DAY_2026),
        K.QUOTA_PER_DAY,
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        20,
        41.0,
        "",
    ),
    (
        "per-day old order",
        client(429, PER_DAY_OLD_ORDER),
        K.QUOTA_PER_DAY,
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        20,
        41.0,
        "",
    ),
    (
        "per-minute",
        client(429, PER_MINUTE),
        K.QUOTA_PER_MINUTE,
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        10,
        41.0,
        "",
    ),
    (
        "per-minute old order, 0.5s",
        client(429, PER_MINUTE_OLD_ORDER),
        K.QUOTA_PER_MINUTE,
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        10,
        0.5,
        "",
    ),
    (
        "input tokens per minute",
        client(429, TOKENS_PER_MINUTE),
        K.QUOTA_PER_MINUTE,
        "GenerateContentInputTokensPerModelPerMinute-FreeTier",
        250000,
        12.0,
        "",
    ),
    (
        "paid tokens per minute",
        client(429, PAID_TOKENS),
        K.QUOTA_PER_MINUTE,
        "GenerateContentPaidTierInputTokensPerModelPerMinute",
        1000000,
        3.0,
        "",
    ),
    (
        "limit 0",
        client(429, LIMIT_ZERO),
        K.QUOTA_NO_ACCESS,
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        0,
        37.0,
        "",
    ),
    ("bare 429", client(429, BARE_429), K.QUOTA_UNKNOWN, "", None, None, ""),
    ("bare 429 with limit: 0 text", client(429, BARE_429_LIMIT_ZERO), K.QUOTA_NO_ACCESS, "", None, None, ""),
    ("non-JSON 429", client(429, NON_JSON_429), K.QUOTA_UNKNOWN, "", None, None, ""),
    ("bad key", client(400, BAD_KEY), K.KEY_INVALID, "", None, None, "API_KEY_INVALID"),
    ("leaked key", client(403, LEAKED), K.KEY_INVALID, "", None, None, ""),
    ("blocked key", client(403, BLOCKED), K.KEY_INVALID, "", None, None, "API_KEY_SERVICE_BLOCKED"),
    (
        "401",
        client(
            401,
            {
                "error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials.",
                    "status": "UNAUTHENTICATED",
                }
            },
        ),
        K.KEY_INVALID,
        "",
        None,
        None,
        "",
    ),
    ("404", client(404, NOT_FOUND), K.MODEL_NOT_FOUND, "", None, None, ""),
    ("500", server(500, INTERNAL), K.TRANSIENT, "", None, None, ""),
    ("503 overloaded", server(503, OVERLOADED), K.TRANSIENT, "", None, None, ""),
    ("503 high demand", server(503, HIGH_DEMAND), K.TRANSIENT, "", None, None, ""),
    ("504", server(504, DEADLINE), K.TRANSIENT, "", None, None, ""),
    ("non-JSON 502", server(502, NON_JSON_502), K.TRANSIENT, "", None, None, ""),
    ("other 400", client(400, BAD_SCHEMA), K.BAD_REQUEST, "", None, None, ""),
    (
        "413",
        client(413, {"message": "Request Entity Too Large", "status": "Request Entity Too Large"}),
        K.BAD_REQUEST,
        "",
        None,
        None,
        "",
    ),
]


@pytest.mark.parametrize(
    "exc, kind, quota_id, quota_value, retry_delay, reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_classify_api_errors(exc, kind, quota_id, quota_value, retry_delay, reason):
    """Each verbatim body maps to its kind and carries the structured fields it holds."""
    failure = classify_failure(exc)
    assert failure.kind is kind
    assert failure.http_status == exc.code
    assert failure.quota_id == quota_id
    assert failure.quota_value == quota_value
    assert failure.retry_delay_s == retry_delay
    assert failure.reason == reason
    assert failure.error_type == type(exc).__name__
    assert len(failure.message) <= 300


def test_streamed_error_body_without_wrapper():
    """A mid-stream error gives the inner object directly (SDK: body_segments[0]['error'])."""
    exc = ClientError(429, copy.deepcopy(PER_MINUTE["error"]))
    failure = classify_failure(exc)
    assert failure.kind is K.QUOTA_PER_MINUTE
    assert failure.retry_delay_s == 41.0


def test_strongest_violation_wins():
    """Per-minute and per-day violations together: per-day decides (it is the longer wait)."""
    body = body_429(
        [
            quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10"),
            quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "250"),
            retry_info("20s"),
        ]
    )
    assert classify_failure(client(429, body)).kind is K.QUOTA_PER_DAY


def test_message_text_is_not_read_when_details_exist():
    """The per-minute quotaId decides even if the text mentions 'per day' or 'limit: 0' elsewhere."""
    body = body_429(
        [quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10")],
        message="Quota per day ... limit: 0 (misleading text)",
    )
    assert classify_failure(client(429, body)).kind is K.QUOTA_PER_MINUTE


TRANSPORT = [
    ("httpx2 read timeout", httpx2.ReadTimeout("timed out")),
    ("httpx2 connect timeout", httpx2.ConnectTimeout("timed out")),
    ("httpx2 connect error", httpx2.ConnectError("connection refused")),
    (
        "httpx2 remote protocol",
        httpx2.RemoteProtocolError("peer closed connection without sending complete message body"),
    ),
    ("builtin TimeoutError", TimeoutError("timed out")),
    ("ConnectionResetError", ConnectionResetError(104, "Connection reset by peer")),
    ("OSError", OSError(101, "Network is unreachable")),
]


@pytest.mark.parametrize("exc", [t[1] for t in TRANSPORT], ids=[t[0] for t in TRANSPORT])
def test_transport_errors_are_transient(exc):
    """Timeouts and dropped connections are transient, with no HTTP status."""
    failure = classify_failure(exc)
    assert failure.kind is K.TRANSIENT
    assert failure.http_status == 0
    assert failure.error_type == type(exc).__name__


def test_wrapped_transport_error_is_transient():
    """An exception raised ``from`` a timeout is read through its cause."""
    try:
        try:
            raise httpx2.ReadTimeout("timed out")
        except httpx2.ReadTimeout as inner:
            raise RuntimeError("call failed") from inner
    except RuntimeError as outer:
        assert classify_failure(outer).kind is K.TRANSIENT


@pytest.mark.parametrize(
    "exc, kind",
    [
        (FileNotFoundError(2, "No such file"), K.UNKNOWN),
        (ValueError("bug"), K.UNKNOWN),
        (KeyboardInterrupt(), K.UNKNOWN),
        (InvalidResponseError("not JSON"), K.INVALID_OUTPUT),
    ],
    ids=["local file error", "ValueError", "KeyboardInterrupt", "InvalidResponseError"],
)
def test_non_api_errors(exc, kind):
    """Local errors are not network blips; an invalid reply is INVALID_OUTPUT."""
    assert classify_failure(exc).kind is kind


def test_invalid_output_marker():
    """The processor's invalid_output path has its own kind and no HTTP status."""
    failure = invalid_output_failure("bad JSON at char 3")
    assert failure.kind is K.INVALID_OUTPUT
    assert failure.http_status == 0
    assert "bad JSON" in failure.message


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("41s", 41.0),
        ("0.5s", 0.5),
        ("41.754757778s", 41.754757778),
        ("0s", 0.0),
        ({"seconds": 3, "nanos": 500_000_000}, 3.5),
        (12, 12.0),
        ("soon", None),
        (None, None),
        ("-3s", None),
    ],
)
def test_parse_retry_delay(raw, expected):
    """RetryInfo durations in their JSON shapes."""
    assert parse_retry_delay(raw) == expected


def test_messages_never_hold_keys():
    """Key-shaped text and key= parameters are scrubbed from failure messages."""
    key = "AIzaSyA1234567890abcdefghijklmnopqrstuv"
    exc = httpx2.ConnectError(f"failed https://x/v1/models?key={key}&alt=sse and {key}")
    failure = classify_failure(exc)
    assert key not in failure.message
    assert "[key]" in failure.message
    assert key not in scrub(f"bad {key}")
