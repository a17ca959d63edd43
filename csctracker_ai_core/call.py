"""One call of ``analisar_com_gemini``: what it accumulates, and the events it leaves.

The processor drives the loop (acquire a slot, send, release it); a :class:`Call` owns
everything the call gathers on the way (its attempts, its retry budget, the slots to
avoid, its last failure) and is the only place that turns them into events. What a
failure means and how it ends the call is the pool's answer
(:class:`~csctracker_ai_core.pool.decision.Decision`), never decided here.

Where to extend the call path:

* **per-attempt usage and cost**: :meth:`Call.attempt_done` receives every attempt's
  outcome; add the field to ``AttemptEvent`` and its column to
  ``telemetry/schema.py``, and fill it in :meth:`Call._attempt_event`.
* **truncation, structured output** (reading the reply): :attr:`Call.options` is what
  is sent (``gemini/request.py``); the processor's ``_send`` reads the reply into a
  :class:`Served`, a reply that cannot be used is a ``ReplyProblem`` there, and
  :meth:`Call.retry_truncated` is the one retry after MAX_TOKENS. What the caller gets
  is ``Served.result``; what is recorded about it is filled in
  :meth:`Call.success_event`.
* **budgets** (reserve before sending, settle after): the processor calls
  :meth:`Call.attempt_done` after each attempt and :meth:`Call.success_event` /
  :meth:`Call.failure_event` exactly once at the end; keep reservations on the call
  (a field here) and settle them where those are called.
* **hooks** (observers of attempts and events): the processor's ``_emit`` is the one
  place events leave; attempts are in :attr:`Call.attempts` when the call ends.
"""

from __future__ import annotations

import copy
import logging
import operator
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .clock import Clock
from .exceptions import GeminiServiceException
from .gemini.request import RequestOptions, truncation_retry
from .pool.classify import scrub
from .pool.decision import Decision, FailureKind
from .pool.lease import Lease, Slot
from .pricing import COST_SCALE, PriceTable, billed_tier, cost_on_key, price_usage
from .redaction import redact_exception
from .telemetry.events import AttemptEvent, CallEvent, CallOutcome, build_event
from .tokens import TokenUsage
from .validation import PreparedCall

__all__ = ["Call", "Served"]

logger = logging.getLogger(__name__)

_ZERO_COST = COST_SCALE * 0
# Event fields that are sums over the call's attempts (with the sum's zero).
_SUMMED = tuple(
    (f"tokens_{kind}", 0) for kind in ("input", "image", "audio", "video", "output", "reasoning", "cached", "total")
) + (("cost_usd", _ZERO_COST), ("list_cost_usd", _ZERO_COST))
_SUMMED_NAMES = tuple(name for name, _ in _SUMMED)
_summed_values = operator.attrgetter(*_SUMMED_NAMES)


def _sums(attempts: list[AttemptEvent]) -> dict[str, Any]:
    """The event's fields that are sums over its attempts: ``sum()`` of each, as one left
    fold (one pass, no generator per field: this runs on every recorded call)."""
    totals = [start for _, start in _SUMMED]
    for a in attempts:
        totals = [t + v for t, v in zip(totals, _summed_values(a), strict=True)]
    return dict(zip(_SUMMED_NAMES, totals, strict=True))


# The version (4) and variant (RFC 4122) bits of a UUID, as in uuid.UUID(int=..., version=4).
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_event_id() -> str:
    """A random (version 4) UUID for a call's event, in its canonical text form.

    From ``random``, not ``uuid.uuid4()``: its ``os.urandom`` is a system call, which lets
    another thread take the GIL on every call. Ids need to be unique, not secret; the
    generator is seeded from the OS and reseeded in every forked child (``random``
    does that itself). Formatted here rather than through a ``uuid.UUID`` object: a
    third of the cost (0.8 against 2.2 us)."""
    h = "%032x" % ((random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True)
class Served:
    """A successful attempt: what the caller gets and what telemetry keeps."""

    result: Any
    text: str
    usage: TokenUsage
    response: Any
    duration_s: float
    served_tier: str = ""  # x-gemini-service-tier of the reply (read once, see gemini/response.py)
    finish_reason: str = ""


class Call:
    """The state of one call, from validation to its event.

    ``recording=False`` (telemetry off): attempts are counted, no event is built.
    """

    __slots__ = (
        "request",
        "event_id",
        "started_wall",
        "started",
        "retries_left",
        "recording",
        "attempts",
        "attempt_count",
        "avoid",
        "last_lease",
        "last_error",
        "options",
        "truncation_retried",
    )

    def __init__(
        self, request: PreparedCall, event_id: str, *, clock: Clock, max_retries: int, recording: bool
    ) -> None:
        self.request = request
        self.event_id = event_id
        self.started_wall = clock.time()
        self.started = time.perf_counter()
        self.retries_left = max_retries  # transient retries still allowed (see Decision.spends_retry)
        self.recording = recording
        self.attempts: list[AttemptEvent] = []
        self.attempt_count = 0
        self.avoid: set[Slot] = set()  # slots that failed this call: the pool skips them if it can
        self.last_lease: Lease | None = None
        self.last_error: BaseException | None = None
        self.options: RequestOptions | None = None  # what is sent (set by the processor)
        self.truncation_retried = False

    # -- attempts -------------------------------------------------------------------

    def attempt_done(
        self,
        lease: Lease,
        started_wall: float,
        duration_s: float,
        decision: Decision,
        error: BaseException | None = None,
        *,
        response: Any = None,
        usage: TokenUsage | None = None,
        prices: PriceTable | None = None,
        served_as: str = "",
        reason: str = "",
    ) -> None:
        """Count one upstream request and what the pool decided about it.

        ``served_as`` / ``reason``: the reply's served tier and finish reason, read once by
        the caller from ``response``."""
        self.attempt_count += 1
        self.last_lease = lease
        if error is not None:
            # What the caller may keep: no key the SDK's error echoes, no HTTP response.
            self.last_error = redact_exception(error)
            if not decision.ends_call:
                self.avoid.add(lease.slot)
            if decision.spends_retry:
                self.retries_left -= 1
        if self.recording:
            ledger = self._ledger(lease, started_wall, response, usage, prices, served_as, reason)
            self.attempts.append(self._attempt_event(lease, started_wall, duration_s, decision, error, ledger))

    def _ledger(
        self,
        lease: Lease,
        started_wall: float,
        response: Any,
        usage: TokenUsage | None,
        prices: PriceTable | None,
        served_as: str,
        reason: str,
    ) -> dict[str, Any]:
        """What Gemini reported for one request and what it cost (zeros, usage_known=False, without a reply)."""
        slot = lease.slot
        known = response is not None and getattr(response, "usage_metadata", None) is not None
        used = usage if usage is not None and known else TokenUsage()
        try:
            # One definition of cost: the tier Gemini served (else the one asked), the
            # price in force when this request started.
            list_cost = price_usage(
                slot.model,
                billed_tier(self.request.service_tier, served_as),
                used,
                datetime.fromtimestamp(started_wall, tz=timezone.utc),
                prices=prices,
            )
        except Exception:
            # The ledger must never fail a call: the tokens are kept, `csc-ai reprice` prices them later.
            logger.exception("could not price attempt %d of %s; recorded at cost 0", self.attempt_count, self.event_id)
            list_cost = _ZERO_COST
        return dict(
            service_tier=self.request.service_tier,
            served_tier=served_as,
            usage_known=known,
            tokens_input=used.input,
            tokens_output=used.output,
            tokens_reasoning=used.reasoning,
            tokens_cached=used.cached,
            tokens_image=used.image,
            tokens_audio=used.audio,
            tokens_video=used.video,
            tokens_total=used.total,
            cost_usd=cost_on_key(slot.tier, list_cost),
            list_cost_usd=list_cost,
            finish_reason=reason,
        )

    def _attempt_event(
        self,
        lease: Lease,
        started_wall: float,
        duration_s: float,
        decision: Decision,
        error: BaseException | None,
        ledger: dict[str, Any],
    ) -> AttemptEvent:
        slot = lease.slot
        failure = decision.failure
        common: dict[str, Any] = dict(
            ledger,
            event_id=self.event_id,
            attempt=self.attempt_count,
            timestamp=started_wall,
            key_fingerprint=slot.key_fingerprint,
            project=slot.project,
            tier=slot.tier,
            model_name=slot.model,
            duration_ms=duration_s * 1000.0,
            decision=decision.label,
        )
        if failure is None:
            common.update(outcome=FailureKind.OK, http_status=200)
        else:
            common.update(
                outcome=failure.kind,
                http_status=failure.http_status,
                error_type=type(error).__name__ if error is not None else "",
                error_message=failure.message or scrub(error or ""),
                quota_id=failure.quota_id,
                retry_delay_s=failure.retry_delay_s or 0.0,
                suspended_until=decision.suspended_until,
            )
        return build_event(AttemptEvent, common)

    def retry_truncated(self, model: str) -> bool:
        """After a reply cut at MAX_TOKENS on ``model``: take the one change of
        :attr:`options` that can help (think less, allow the model's whole output
        limit), once. ``False``: nothing can, the call ends."""
        if self.truncation_retried or self.options is None:
            return False
        better = truncation_retry(model, self.options)
        if better is None:
            return False
        self.options, self.truncation_retried = better, True
        return True

    # -- how the call ends ----------------------------------------------------------

    def refused_by_pool(self, exc: GeminiServiceException) -> GeminiServiceException:
        """The error that ends this call when the pool has no slot for it.

        ``exc`` is the pool's own (:class:`QuotaExhaustedError` with ``retry_at``, or
        :class:`GeminiRequestError` when every model is known to refuse the call); the
        caller gets a copy that carries this call's id, attempts and last failure. The
        pool's object is left as it was.
        """
        error = copy.copy(exc)
        error.event_id = self.event_id
        error.attempts = self.attempt_count
        if error.last_error is None and self.last_error is not None:
            error.last_error = self.last_error
            error.__cause__ = self.last_error
        return error

    def ended_by(self, decision: Decision, error: BaseException) -> GeminiServiceException:
        """The error that ends this call on ``decision`` (the pool says which)."""
        error = redact_exception(error) or error
        final = decision.final_error(error, attempts=self.attempt_count, event_id=self.event_id)
        final.__cause__ = error
        return final

    def internal_error(self, exc: BaseException) -> GeminiServiceException:
        """A bug of ours or of a dependency, as one of our errors."""
        return GeminiServiceException(
            f"internal error after {self.attempt_count} request(s): {type(exc).__name__}: "
            f"{scrub(exc)}. This is a bug in csctracker-ai-core or a dependency; please report it.",
            last_error=redact_exception(exc),
            attempts=self.attempt_count,
            event_id=self.event_id,
        )

    # -- events ---------------------------------------------------------------------

    def _base(self, lease: Lease | None) -> dict[str, Any]:
        request = self.request
        slot = lease.slot if lease is not None else None
        done = self.attempts
        return dict(
            # The ledger: the event's tokens and cost are the sums over its attempts;
            # the attempts that did not produce the result are the waste.
            **_sums(done),
            cost_wasted_usd=sum((a.cost_usd for a in done if a.outcome != FailureKind.OK), _ZERO_COST),
            event_id=self.event_id,
            timestamp=self.started_wall,
            task=request.task,
            model_name=slot.model if slot else "",
            tier=slot.tier if slot else "",
            service_tier=request.service_tier,
            key_fingerprint=slot.key_fingerprint if slot else "",
            project=slot.project if slot else "",
            attempts=self.attempt_count,
            total_duration_ms=(time.perf_counter() - self.started) * 1000.0,
            payload=request.text,
            image_sha256=request.image_sha256,
            image_bytes=request.image_size,
            image_mime=request.mime_type,
            image_base64=request.image_base64,
            return_json=request.return_json,
            metadata=request.metadata,
            attempt_events=tuple(self.attempts),
        )

    def success_event(self, served: Served, prices: PriceTable) -> CallEvent:
        """The ``ai_events`` row of a served call (tokens and cost: sums over the attempts)."""
        lease = self.last_lease
        assert lease is not None  # served: at least one attempt was made
        response = served.response
        values = self._base(lease)
        values.update(
            outcome=CallOutcome.OK,
            served_tier=served.served_tier,
            time_spent=served.duration_s,
            result=served.text,
            finish_reason=served.finish_reason,
            response_id=response.response_id or "",
            model_version=response.model_version or "",
        )
        return build_event(CallEvent, values)

    def reduced_success_event(self, served: Served) -> CallEvent:
        """What is certain about a served call when the full event cannot be built."""
        values = self._base(self.last_lease)
        values.update(
            outcome=CallOutcome.OK,
            time_spent=served.duration_s,
            result=served.text,
            error_message="event built without reply metadata (see logs)",
        )
        return build_event(CallEvent, values)

    def failure_event(self, error: BaseException) -> CallEvent:
        """The ``ai_events`` row of a call that ends with ``error``."""
        last = self.attempts[-1] if self.attempts else None
        values = self._base(self.last_lease)
        values.update(
            outcome=CallOutcome.ERROR,
            error_type=type(error).__name__,
            error_message=scrub(error, limit=1000),
            quota_id=last.quota_id if last else "",
        )
        return build_event(CallEvent, values)
