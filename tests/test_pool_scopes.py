"""Every failure has a scope, and the pool acts on exactly that scope.

First the classification table: one row per real body in shared/notes/gemini-errors.md
(verbatim, with its public source) plus the project's variants, each mapped to its kind,
its scope and, for a per-model 400, what the model refused. Then what the rotator does
with each scope, on both pool backends (memory and Redis).
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import httpx2
import pytest
from google.genai.errors import ClientError, ServerError

from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.exceptions import GeminiRequestError, QuotaExhaustedError
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.pool import constants as C
from csctracker_ai_core.pool.classify import classify_failure
from csctracker_ai_core.pool.decision import Action, FailureKind, FailureScope, Refusal
from csctracker_ai_core.pool.redis_state import RedisPoolState
from csctracker_ai_core.pool.refusals import CallNeeds
from csctracker_ai_core.pool.rotator import ApiKeyRotator
from csctracker_ai_core.pool.state import InMemoryPoolState
from csctracker_ai_core.testing import emulator_errors as emulator_bodies

from redis_server import redis_server, redis_url  # noqa: F401  (fixtures)

K, S = FailureKind, FailureScope

HELP = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [
        {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }
    ],
}
HEAD_429 = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)


def e(code: int, status: str, message: str, details=None) -> dict:
    body = {"code": code, "message": message, "status": status}
    if details is not None:
        body["details"] = details
    return {"error": body}


def violation(metric: str, quota_id: str, model: str, value=None) -> dict:
    v = {"quotaMetric": metric, "quotaId": quota_id, "quotaDimensions": {"location": "global", "model": model}}
    if value is not None:
        v["quotaValue"] = value
    return v


def quota_failure(*violations) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": list(violations)}


def retry(delay: str) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def error_info(reason: str, **metadata) -> dict:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com", **metadata},
    }


FREE_REQ = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
FREE_TOK = "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"

# Verbatim bodies (reconstructed parts say so), by source.
BODIES = {
    # continuedev/continue#11439 (quotaValue reconstructed from "limit: 5")
    "429 per minute, free": (
        429,
        e(
            429,
            "RESOURCE_EXHAUSTED",
            HEAD_429
            + "\n* Quota exceeded for metric: "
            + FREE_REQ
            + ", limit: 5, model: gemini-3-flash\nPlease retry in 10.158753737s.",
            [
                HELP,
                quota_failure(
                    violation(FREE_REQ, "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "gemini-3-flash", "5")
                ),
                retry("10s"),
            ],
        ),
    ),
    # a public dump of gemini-2.5-flash replies (shared/notes/gemini-wire.md)
    "429 per day, free": (
        429,
        e(
            429,
            "RESOURCE_EXHAUSTED",
            HEAD_429,
            [
                HELP,
                quota_failure(
                    violation(FREE_REQ, "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "gemini-2.5-flash", "250")
                ),
                retry("22s"),
            ],
        ),
    ),
    # glidea/one-balance#22
    "429 input tokens per minute": (
        429,
        e(
            429,
            "RESOURCE_EXHAUSTED",
            HEAD_429,
            [
                HELP,
                quota_failure(
                    violation(
                        FREE_TOK, "GenerateContentInputTokensPerModelPerMinute-FreeTier", "gemini-2.5-flash", "250000"
                    )
                ),
                retry("21s"),
            ],
        ),
    ),
    # continuedev/continue#11558 (message only: limit 0 on every quota)
    "429 limit 0": (
        429,
        e(
            429,
            "RESOURCE_EXHAUSTED",
            HEAD_429
            + "\n* Quota exceeded for metric: "
            + FREE_TOK
            + ", limit: 0, model: gemini-2.0-flash\n* Quota exceeded for metric: "
            + FREE_REQ
            + ", limit: 0, model: gemini-2.0-flash",
        ),
    ),
    # google-gemini/gemini-cli#8437: three violations, no quotaValue, only Help besides
    "429 several violations": (
        429,
        e(
            429,
            "RESOURCE_EXHAUSTED",
            HEAD_429,
            [
                quota_failure(
                    violation(FREE_TOK, "GenerateContentInputTokensPerModelPerMinute-FreeTier", "gemini-2.5-pro"),
                    violation(FREE_REQ, "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "gemini-2.5-pro"),
                    violation(FREE_REQ, "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "gemini-2.5-pro"),
                ),
                HELP,
            ],
        ),
    ),
    # googleapis/python-genai#2065 (paid Tier 1)
    "429 no details": (429, e(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")),
    # googleapis/python-genai#1427
    "429 only Help": (429, e(429, "RESOURCE_EXHAUSTED", HEAD_429, [HELP])),
    # shared/notes/gemini-wire.md (verbatim)
    "400 API_KEY_INVALID": (
        400,
        e(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            [
                error_info("API_KEY_INVALID"),
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": "API key not valid. Please pass a valid API key.",
                },
            ],
        ),
    ),
    # continuedev/continue#11336
    "400 key expired": (
        400,
        e(
            400,
            "INVALID_ARGUMENT",
            "API key expired. Please renew the API key.",
            [
                error_info("API_KEY_INVALID"),
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": "API key expired. Please renew the API key.",
                },
            ],
        ),
    ),
    # ai.google.dev troubleshooting page
    "400 free tier not in country": (
        400,
        e(
            400,
            "FAILED_PRECONDITION",
            "Gemini API free tier is not available in your country. Please enable billing on your project in Google AI Studio.",
        ),
    ),
    # poenl/gemini-api#4
    "400 location not supported": (
        400,
        e(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
    ),
    # vellum-ai/vellum-assistant PR 32687 (gemini-3.1-pro-preview)
    "400 thinking level MINIMAL": (
        400,
        e(400, "INVALID_ARGUMENT", "Thinking level MINIMAL is not supported for this model."),
    ),
    # heyhuynhgiabuu/proxypal#170
    "400 thinking level MEDIUM": (
        400,
        e(400, "INVALID_ARGUMENT", "Thinking level MEDIUM is not supported for this model."),
    ),
    # google-gemini/gemini-cli#27197
    "400 input over the model's limit": (
        400,
        e(
            400,
            "INVALID_ARGUMENT",
            "The input token count (81881) exceeds the maximum number of tokens allowed (65536).",
        ),
    ),
    # GewoonJaap/gemini-cli-openai#23 (gemini-2.5-pro)
    "400 thinking budget 0": (
        400,
        e(400, "INVALID_ARGUMENT", "The model does not support setting thinking_budget to 0."),
    ),
    # RooCodeInc/Roo-Code#4399
    "400 thinking budget out of range": (400, e(400, "INVALID_ARGUMENT", "The thinking budget (52428) is invalid.")),
    # google-gemini/deprecated-generative-ai-python#137 (status reconstructed: gRPC InvalidArgument)
    "400 JSON mode": (400, e(400, "INVALID_ARGUMENT", "Json mode is not enabled for models/gemini-pro")),
    # a request no model takes (shared/notes/gemini-wire.md, emulator's unreadable body)
    "400 malformed request": (
        400,
        e(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received. Unknown name \"foo\" at 'generation_config': Cannot find field.",
        ),
    ),
    # continuedev/continue#11541
    "403 leaked": (
        403,
        e(403, "PERMISSION_DENIED", "Your API key was reported as leaked. Please use another API key."),
    ),
    # shared/notes/gemini-errors.md (message and details as listed there)
    "403 SERVICE_DISABLED": (
        403,
        e(
            403,
            "PERMISSION_DENIED",
            "Generative Language API has not been used in project 123456789012 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project=123456789012 then retry.",
            [HELP, error_info("SERVICE_DISABLED", consumer="projects/123456789012")],
        ),
    ),
    # shared/notes/gemini-errors.md
    "403 unregistered caller": (
        403,
        e(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        ),
    ),
    # shared/notes/gemini-wire.md: ErrorInfo reasons
    "403 API_KEY_SERVICE_BLOCKED": (
        403,
        e(
            403,
            "PERMISSION_DENIED",
            "Requests to this API generativelanguage.googleapis.com method google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked.",
            [error_info("API_KEY_SERVICE_BLOCKED")],
        ),
    ),
    "403 CONSUMER_SUSPENDED": (
        403,
        e(
            403,
            "PERMISSION_DENIED",
            "Permission denied: Consumer 'api_key:redacted' has been suspended.",
            [error_info("CONSUMER_SUSPENDED", consumer="projects/redacted")],
        ),
    ),
    # shared/notes/gemini-errors.md: a 403 for one model, no key-level reason (preview Pro threads)
    "403 one model, no reason": (403, e(403, "PERMISSION_DENIED", "The caller does not have permission")),
    # a front end's HTML 403 (SDK: details = {"message": text, "status": reason})
    "403 HTML": (403, {"message": "<html><body><h1>403 Forbidden</h1></body></html>", "status": "Forbidden"}),
    # shared/notes/gemini-wire.md (verbatim)
    "404 not found": (
        404,
        e(
            404,
            "NOT_FOUND",
            "models/gemini-pro is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.",
        ),
    ),
    # sohzm/cheating-daddy#444 (message); status as the notes give for retired models
    "404 no longer available": (
        404,
        e(404, "NOT_FOUND", "This model models/gemini-2.5-flash is no longer available to new users."),
    ),
    # Wei-Shaw/sub2api#2900
    "404 entity not found": (404, e(404, "NOT_FOUND", "Requested entity was not found.")),
    "503 overloaded": (503, e(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")),
    "503 high demand (2026)": (
        503,
        e(
            503,
            "UNAVAILABLE",
            "This model is currently experiencing high demand. Spikes in demand are usually temporary. Please try again later.",
        ),
    ),
    "500 internal": (
        500,
        e(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        ),
    ),
    "504 deadline": (504, e(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.")),
    "499 cancelled": (499, e(499, "CANCELLED", "The operation was cancelled.")),
    "502 HTML from nginx": (
        502,
        {
            "message": "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
            "status": "Bad Gateway",
        },
    ),
}

TABLE = {
    # name: (kind, scope, refusal)
    "429 per minute, free": (K.QUOTA_PER_MINUTE, S.PROJECT_MODEL, None),
    "429 per day, free": (K.QUOTA_PER_DAY, S.PROJECT_MODEL, None),
    "429 input tokens per minute": (K.QUOTA_PER_MINUTE, S.PROJECT_MODEL, None),
    "429 limit 0": (K.QUOTA_NO_ACCESS, S.PROJECT_MODEL, None),
    "429 several violations": (K.QUOTA_PER_DAY, S.PROJECT_MODEL, None),
    "429 no details": (K.QUOTA_UNKNOWN, S.PROJECT_MODEL, None),
    "429 only Help": (K.QUOTA_UNKNOWN, S.PROJECT_MODEL, None),
    "400 API_KEY_INVALID": (K.KEY_INVALID, S.KEY, None),
    "400 key expired": (K.KEY_INVALID, S.KEY, None),
    "400 free tier not in country": (K.TIER_UNAVAILABLE, S.PROJECT_TIER, None),
    "400 location not supported": (K.LOCATION_UNSUPPORTED, S.REQUEST, None),
    "400 thinking level MINIMAL": (K.MODEL_REFUSED, S.MODEL_REQUEST, Refusal("thinking", "MINIMAL")),
    "400 thinking level MEDIUM": (K.MODEL_REFUSED, S.MODEL_REQUEST, Refusal("thinking", "MEDIUM")),
    "400 input over the model's limit": (
        K.MODEL_REFUSED,
        S.MODEL_REQUEST,
        Refusal("input_tokens", limit=65536, seen=81881),
    ),
    "400 thinking budget 0": (K.MODEL_REFUSED, S.MODEL_REQUEST, Refusal("thinking", "0")),
    "400 thinking budget out of range": (K.MODEL_REFUSED, S.MODEL_REQUEST, Refusal("thinking", "52428")),
    "400 JSON mode": (K.MODEL_REFUSED, S.MODEL_REQUEST, Refusal("json_mode")),
    "400 malformed request": (K.BAD_REQUEST, S.REQUEST, None),
    "403 leaked": (K.KEY_INVALID, S.KEY, None),
    "403 SERVICE_DISABLED": (K.KEY_INVALID, S.KEY, None),
    "403 unregistered caller": (K.KEY_INVALID, S.KEY, None),
    "403 API_KEY_SERVICE_BLOCKED": (K.KEY_INVALID, S.KEY, None),
    "403 CONSUMER_SUSPENDED": (K.KEY_INVALID, S.KEY, None),
    "403 one model, no reason": (K.PERMISSION_DENIED, S.KEY_MODEL, None),
    "403 HTML": (K.PERMISSION_DENIED, S.KEY_MODEL, None),
    "404 not found": (K.MODEL_NOT_FOUND, S.MODEL, None),
    "404 no longer available": (K.MODEL_NOT_FOUND, S.MODEL, None),
    "404 entity not found": (K.MODEL_NOT_FOUND, S.MODEL, None),
    "503 overloaded": (K.TRANSIENT, S.ATTEMPT, None),
    "503 high demand (2026)": (K.TRANSIENT, S.ATTEMPT, None),
    "500 internal": (K.TRANSIENT, S.ATTEMPT, None),
    "504 deadline": (K.TRANSIENT, S.ATTEMPT, None),
    "499 cancelled": (K.TRANSIENT, S.ATTEMPT, None),
    "502 HTML from nginx": (K.TRANSIENT, S.ATTEMPT, None),
}


def sdk_error(code: int, body: dict):
    return (ClientError if code < 500 else ServerError)(code, copy.deepcopy(body))


def test_the_table_covers_every_body():
    assert set(TABLE) == set(BODIES)


@pytest.mark.parametrize("name", list(TABLE))
def test_every_real_body_has_its_scope(name):
    code, body = BODIES[name]
    kind, scope, refusal = TABLE[name]
    failure = classify_failure(sdk_error(code, body))
    assert (failure.kind, failure.scope, failure.refusal) == (kind, scope, refusal)
    assert failure.http_status == code


@pytest.mark.parametrize(
    "exc",
    [httpx2.ReadTimeout("timed out"), httpx2.ConnectError("refused"), TimeoutError()],
    ids=["read timeout", "connect error", "TimeoutError"],
)
def test_timeouts_have_no_scope_in_the_pool(exc):
    assert classify_failure(exc).scope is S.ATTEMPT


# The emulator answers with the same bodies: each one it builds equals the verbatim row.
EMULATED = [
    ("400 key expired", emulator_bodies.expired_key_body()),
    ("400 free tier not in country", emulator_bodies.free_tier_unavailable_body()),
    ("400 location not supported", emulator_bodies.location_unsupported_body()),
    ("400 thinking level MINIMAL", emulator_bodies.thinking_level_body("minimal")),
    ("400 thinking level MEDIUM", emulator_bodies.thinking_level_body("MEDIUM")),
    ("400 input over the model's limit", emulator_bodies.input_too_long_body(81881, 65536)),
    ("400 thinking budget 0", emulator_bodies.thinking_budget_zero_body()),
    ("400 thinking budget out of range", emulator_bodies.thinking_budget_invalid_body(52428)),
    ("400 JSON mode", emulator_bodies.json_mode_body("gemini-pro")),
    ("403 one model, no reason", emulator_bodies.permission_denied_body()),
    ("404 no longer available", emulator_bodies.retired_model_body("gemini-2.5-flash")),
]


@pytest.mark.parametrize("name, built", EMULATED, ids=[n for n, _ in EMULATED])
def test_emulator_bodies_are_the_real_ones(name, built):
    assert built == BODIES[name][1]


def test_emulator_service_disabled_body_classifies_as_the_real_one():
    """The emulator's SERVICE_DISABLED body carries the full console text; same reason, same scope."""
    failure = classify_failure(sdk_error(403, emulator_bodies.service_disabled_body()))
    assert (failure.kind, failure.scope, failure.reason) == (K.KEY_INVALID, S.KEY, "SERVICE_DISABLED")


# --- what the pool does with each scope, on both backends --------------------------------

FLASH, PRO, LITE = "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"
T0 = datetime(2026, 7, 1, 19, 0, tzinfo=timezone.utc).timestamp()
P1A, P1B, P2A, PAID = "p1:AIzaP1A", "p1:AIzaP1B", "p2:AIzaP2A", "pp:AIzaPAID"
FP = {k: key_fingerprint(k.split(":")[-1]) for k in (P1A, P1B, P2A, PAID)}


class NoJitter:
    def uniform(self, low, high):
        return low


@pytest.fixture(params=["memory", "redis"])
def make(request):
    made = []

    def build(free=(P1A, P1B, P2A), paid=(PAID,), limits=f"{PRO}=1,{FLASH}=1"):
        if request.param == "memory":
            state = InMemoryPoolState()
        else:
            state = RedisPoolState.from_url(request.getfixturevalue("redis_url"))
            made.append(state)
        clock = FakeClock(T0)
        return ApiKeyRotator(list(free), list(paid), limits, clock=clock, state=state, rng=NoJitter()), clock

    yield build
    for state in made:
        state.close()


def fail(rot, lease, name):
    code, body = BODIES[name]
    return rot.release(lease, error=sdk_error(code, body))


def out(rot):
    """{(fingerprint, model): 'disabled' | 'parked'} for every slot out of service now."""
    res = {}
    for s in rot.status().slots:
        if s.disabled:
            res[(s.key_fingerprint, s.model)] = "disabled"
        elif s.suspended_until is not None:
            res[(s.key_fingerprint, s.model)] = "parked"
    return res


def test_403_for_one_model_parks_that_key_x_model_only(make):
    rot, clock = make()
    lease = rot.acquire(model_variant=PRO, exact_match=True)
    decision = fail(rot, lease, "403 one model, no reason")
    assert decision.action is Action.RETRY and decision.pool_change == "park_slot"
    assert decision.suspended_until == clock.time() + C.NO_ACCESS_PARK_S
    assert out(rot) == {(lease.slot.key_fingerprint, PRO): "parked"}
    # The same key still serves the other model; other keys still serve PRO.
    assert not any(s.disabled for s in rot.status().slots)
    again = rot.acquire(model_variant=PRO, exact_match=True)
    assert again.slot.key_fingerprint != lease.slot.key_fingerprint


def test_404_parks_the_model_on_every_key_at_once(make):
    rot, clock = make()
    decision = fail(rot, rot.acquire(model_variant=PRO, exact_match=True), "404 no longer available")
    assert decision.pool_change == "park_model" and decision.action is Action.RAISE  # nothing else in the plan
    assert out(rot) == {(FP[k], PRO): "parked" for k in (P1A, P1B, P2A, PAID)}
    with pytest.raises(QuotaExhaustedError):
        rot.acquire(model_variant=PRO, exact_match=True, max_wait_s=0)
    assert rot.acquire(model_variant=FLASH, exact_match=True).slot.model == FLASH


def test_404_on_a_model_that_served_here_concerns_its_project_only(make):
    rot, _ = make()
    rot.release(rot.acquire(model_variant=PRO, exact_match=True))  # PRO served on p1
    lease = rot.acquire(model_variant=PRO, exact_match=True)
    assert lease.slot.project == "p1"
    decision = fail(rot, lease, "404 no longer available")
    assert decision.pool_change == "park_project" and decision.action is Action.RETRY
    assert out(rot) == {(FP[P1A], PRO): "parked", (FP[P1B], PRO): "parked"}


def test_free_tier_unavailable_parks_the_free_keys_of_that_project_only(make):
    rot, _ = make()
    lease = rot.acquire()
    assert lease.slot.project == "p1" and lease.slot.tier == "free"
    decision = fail(rot, lease, "400 free tier not in country")
    assert decision.pool_change == "park_tier" and decision.action is Action.RETRY
    assert out(rot) == {(FP[k], m): "parked" for k in (P1A, P1B) for m in (PRO, FLASH)}
    # p2's free key serves next, then (forced) the paid key of the paid project.
    assert rot.acquire().slot.project == "p2"
    assert rot.acquire(forced_paid=True).slot.tier == "paid"


@pytest.mark.parametrize("name", ["400 location not supported", "400 malformed request"])
def test_request_scoped_400s_raise_at_once_and_change_nothing(make, name):
    rot, _ = make()
    decision = fail(rot, rot.acquire(), name)
    assert decision.action is Action.RAISE and decision.pool_change == ""
    assert out(rot) == {}


@pytest.mark.parametrize("name", ["403 leaked", "403 SERVICE_DISABLED", "400 key expired", "403 unregistered caller"])
def test_key_scoped_failures_disable_the_key_for_every_model(make, name):
    rot, _ = make()
    lease = rot.acquire()
    decision = fail(rot, lease, name)
    assert decision.pool_change == "disable_key"
    assert out(rot) == {(lease.slot.key_fingerprint, m): "disabled" for m in (PRO, FLASH)}


def test_per_model_400_is_learnt_and_the_next_call_skips_that_model(make):
    rot, _ = make()
    needs = CallNeeds(thinking_level="minimal")
    lease = rot.acquire(needs=needs)
    assert lease.slot.model == PRO  # free keys: most capable first
    decision = fail(rot, lease, "400 thinking level MINIMAL")
    assert decision.action is Action.RETRY and decision.pool_change == "skip_model"
    assert out(rot) == {}  # no key, slot or project is touched
    # Same needs: PRO is not offered again; other needs still get PRO.
    assert {rot.acquire(needs=needs).slot.model for _ in range(3)} == {FLASH}
    assert rot.acquire(needs=CallNeeds(thinking_level="high")).slot.model == PRO
    assert rot.refusals == {PRO: ["thinking_level=minimal: thinking setting MINIMAL refused"]}


def test_input_limit_refusal_keeps_smaller_inputs_on_the_model(make):
    rot, _ = make()
    lease = rot.acquire(estimated_input_tokens=100_000)
    decision = fail(rot, lease, "400 input over the model's limit")  # 81881 counted > 65536
    assert decision.action is Action.RETRY
    assert rot.acquire(estimated_input_tokens=100_000).slot.model == FLASH
    # The limit is scaled to our estimate: 65536 * 100000 // 81881 = 80038.
    assert rot.acquire(estimated_input_tokens=80_038).slot.model == PRO
    assert rot.acquire(estimated_input_tokens=80_039).slot.model == FLASH


def test_every_model_refusing_raises_before_sending_anything(make):
    rot, _ = make(limits=f"{PRO}=1")
    needs = CallNeeds(json_mode=True)
    decision = fail(rot, rot.acquire(needs=needs), "400 JSON mode")
    assert decision.action is Action.RAISE  # no other model in the plan
    with pytest.raises(GeminiRequestError, match="known to refuse"):
        rot.acquire(needs=needs)
    assert rot.acquire(needs=CallNeeds()).slot.model == PRO


def test_an_unnamed_refusal_blocks_only_calls_with_the_same_needs(make):
    """ "... not supported for this model" without saying what: the same needs skip the model,
    other needs (here: no response schema) still go to it. The wording is a variant of ours
    (the "not supported for this model" shape of the real thinking-level body)."""
    rot, _ = make(limits=f"{PRO}=1,{FLASH}=1")
    with_schema = CallNeeds(json_mode=True, schema=True)
    lease = rot.acquire(needs=with_schema)
    assert lease.slot.model == PRO
    code, body = 400, e(400, "INVALID_ARGUMENT", "Controlled generation is not supported for this model.")
    decision = rot.release(lease, error=sdk_error(code, body))
    assert decision.action is Action.RETRY and decision.failure.refusal.what == "other"
    assert rot.acquire(needs=with_schema).slot.model == FLASH
    assert rot.acquire(needs=CallNeeds(json_mode=True)).slot.model == PRO
