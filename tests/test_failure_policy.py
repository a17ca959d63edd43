"""One failure policy: what each kind means is one table, and the pool's Decision says
whether the call's retry budget is spent and which error ends the call."""

import pytest

from csctracker_ai_core import IaProcessor
from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.exceptions import GeminiRequestError, GeminiServiceException, InvalidResponseError
from csctracker_ai_core.pool import redis_primary
from csctracker_ai_core.pool.decision import KIND_POLICIES, Action, Decision, Failure, FailureKind, PoolChange

FREE = ["AIzaFREE-one-0000000000000000000000", "AIzaFREE-two-0000000000000000000000"]
QUOTA_KINDS = {"quota_minute", "quota_day", "quota_zero", "quota"}


def test_every_kind_has_one_policy_row():
    assert set(KIND_POLICIES) == set(FailureKind)
    # the default scope of a failure is its kind's row
    assert all(Failure(k).scope is KIND_POLICIES[k].scope for k in FailureKind)


def test_quota_kinds_are_defined_once_and_read_by_every_backend():
    assert {k.value for k in FailureKind if k.is_quota} == QUOTA_KINDS
    # the Redis release script's outcome codes derive from the same fact
    assert {k.value for k, code in redis_primary._OUTCOME.items() if code == "rl"} == QUOTA_KINDS
    assert redis_primary._OUTCOME[FailureKind.OK] == "ok"
    assert set(redis_primary._OUTCOME) == set(FailureKind) | {None}  # None: a lease taken back unused
    assert redis_primary._OUTCOME[None] == "v"


def _d(kind, action=Action.RETRY, **kw):
    return Decision(action, Failure(kind, **kw))


@pytest.mark.parametrize(
    "decision, retries_left, action, spends, spent",
    [
        (_d(FailureKind.TRANSIENT), 2, Action.RETRY, True, False),
        (_d(FailureKind.TRANSIENT), 0, Action.RAISE, False, True),
        (_d(FailureKind.INVALID_OUTPUT), 1, Action.RETRY, True, False),
        (_d(FailureKind.INVALID_OUTPUT), 0, Action.RAISE, False, True),
        (_d(FailureKind.UNKNOWN, http_status=502), 0, Action.RAISE, False, True),
        # quota and key failures take a slot out of the pool: they never spend the budget
        (_d(FailureKind.QUOTA_PER_MINUTE), 0, Action.RETRY, False, False),
        (_d(FailureKind.KEY_INVALID), 0, Action.RETRY, False, False),
        (_d(FailureKind.MODEL_NOT_FOUND), 0, Action.RETRY, False, False),
        # already the end, or a success: unchanged
        (_d(FailureKind.BAD_REQUEST, Action.RAISE), 5, Action.RAISE, False, False),
        (Decision(Action.DONE), 0, Action.DONE, False, False),
    ],
)
def test_the_retry_budget(decision, retries_left, action, spends, spent):
    got = decision.within_budget(retries_left)
    assert (got.action, got.spends_retry, got.budget_spent) == (action, spends, spent)
    assert got.ends_call is (action is Action.RAISE)


@pytest.mark.parametrize(
    "failure, error_type, says",
    [
        (Failure(FailureKind.INVALID_OUTPUT), InvalidResponseError, "could not be used after 3 attempt(s)"),
        (
            Failure(FailureKind.BAD_REQUEST, http_status=400, status="INVALID_ARGUMENT", message="bad mime"),
            GeminiRequestError,
            "HTTP 400 INVALID_ARGUMENT): bad mime. Retrying will not help",
        ),
        (
            Failure(FailureKind.MODEL_REFUSED, http_status=400, status="INVALID_ARGUMENT"),
            GeminiRequestError,
            "Every model this call may use refuses it",
        ),
        (
            Failure(FailureKind.LOCATION_UNSUPPORTED, http_status=400, status="FAILED_PRECONDITION"),
            GeminiRequestError,
            "supported region",
        ),
        (Failure(FailureKind.KEY_INVALID, http_status=403), GeminiServiceException, "replace them"),
        (Failure(FailureKind.PERMISSION_DENIED, http_status=403), GeminiServiceException, "no access"),
        (Failure(FailureKind.TIER_UNAVAILABLE, http_status=400), GeminiServiceException, "enable billing"),
        (Failure(FailureKind.MODEL_NOT_FOUND, http_status=404), GeminiServiceException, "GOOGLE_MODEL_LIMITS"),
        (Failure(FailureKind.TRANSIENT, http_status=503), GeminiServiceException, "try again in a few minutes"),
        (Failure(FailureKind.UNKNOWN, http_status=501), GeminiServiceException, "try again in a few minutes"),
        (Failure(FailureKind.UNKNOWN, http_status=418), GeminiServiceException, "retrying will not help"),
    ],
)
def test_the_decision_names_the_error_that_ends_the_call(failure, error_type, says):
    cause = RuntimeError("upstream said no")
    error = Decision(Action.RAISE, failure).final_error(cause, attempts=3, event_id="ev-1")
    assert type(error) is error_type and says in str(error)
    assert (error.attempts, error.event_id, error.last_error) == (3, "ev-1", cause)


def test_a_spent_budget_ends_the_call_over_the_wire(make_gemini_emulator):
    """503 on every request, max_retries=1: two requests, the second decision ends it."""
    emu = make_gemini_emulator()
    emu.add_keys(FREE, tier="free")
    emu.inject("503", count=50)
    events = []

    class Sink:
        location = "memory"

        def record(self, event):
            events.append(event)

        def close(self, timeout_s=None):
            pass

    clock = FakeClock()
    with IaProcessor(
        google_free_keys=FREE, base_url=emu.base_url, telemetry_sink=Sink(), max_retries=1, clock=clock
    ) as p:
        with pytest.raises(GeminiServiceException, match="after 2 attempt") as info:
            p.analisar_com_gemini(input_text="x", prompt="y", event_id="ev-503")
    assert emu.total_requests == 2 and info.value.attempts == 2
    assert len(clock.slept) == 1 and clock.slept[0] > 0  # one backoff, between the two attempts
    assert [(a.outcome, a.decision) for a in events[-1].attempt_events] == [
        (FailureKind.TRANSIENT, Action.RETRY),
        (FailureKind.TRANSIENT, Action.RAISE),
    ]
    assert events[-1].outcome == "error" and events[-1].error_type == "GeminiServiceException"


def test_pool_change_is_the_recorded_decision_when_there_is_one():
    assert Decision(Action.RETRY, pool_change=PoolChange.SUSPEND).label is PoolChange.SUSPEND
    assert Decision(Action.RETRY).label is Action.RETRY
