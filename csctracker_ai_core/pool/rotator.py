"""``ApiKeyRotator``: which key x model serves the next request, and what an outcome means.

The rotator is the short loop around pure parts: ``selection`` builds the plan (tiers x
models for a call's filters, cached), the state grants a slot in one atomic step,
``classify`` reads a failure, ``cooldown`` turns it into a deadline, and the state
applies it. Waiting, when nothing can serve, is computed: sleep until the earliest
suspension ends, or wait on the state's condition for a lease to come back; never a
polling loop.

    rotator = ApiKeyRotator(free_keys, paid_keys)
    lease = rotator.acquire(family="flash")
    with lease:                      # gives the slot back whatever happens
        reply = call(lease.api_key, lease.slot.model)
        decision = rotator.release(lease, usage_input_tokens=reply.prompt_tokens)

Log lines (logger ``csctracker_ai_core.pool.rotator``): DEBUG per acquire, INFO per
suspension and cooldown, WARNING per disabled key or slot. Keys appear as
fingerprints only, in logs, errors and reprs.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from .. import catalog, forking, redaction
from ..catalog import utc_date
from ..clock import SYSTEM_CLOCK, Clock
from ..exceptions import ConfigurationError, GeminiRequestError, InvalidInputError, QuotaExhaustedError
from ..fingerprint import key_fingerprint
from .classify import classify_failure, invalid_output_failure
from .constants import DEFAULT_MAX_WAIT_S, NO_ACCESS_PARK_S
from .cooldown import breaker_until, quota_suspension_until, transient_backoff_s
from .decision import Action, Decision, Failure, FailureKind, FailureScope, PoolChange
from .keys import (
    TIERS,
    KeysInput,
    KeySpec,
    build_key_specs,
    expand_wildcard_limits,
    parse_known_limits,
    parse_model_limits,
)
from .lease import Lease, Slot
from .refusals import CallNeeds, ModelRefusals
from .selection import Filters, Group, ModelOrderInput, build_plan, resolve_model_order
from .state import AcquireResult, InMemoryPoolState, KeyInfo, PoolLayout, PoolState, Scope
from .status import PoolStatus

__all__ = ["ApiKeyRotator"]

_log = logging.getLogger(__name__)

_DONE = Decision(Action.DONE)
_NO_NEEDS = CallNeeds()
_MAX_CACHED_PLANS = 256


_PARKED = frozenset({FailureScope.KEY_MODEL, FailureScope.MODEL, FailureScope.PROJECT_MODEL, FailureScope.PROJECT_TIER})


def _describe_park(slot: Slot, scope: FailureScope) -> str:
    if scope is FailureScope.KEY_MODEL:
        return str(slot)
    if scope is FailureScope.MODEL:
        return f"{slot.model} on every project"
    if scope is FailureScope.PROJECT_MODEL:
        return f"{slot.model} on project {slot.project}"
    return f"the {slot.tier} keys of project {slot.project}"


def _format_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _quota_reason(failure: Failure, repeats: int) -> str:
    qid = f" ({failure.quota_id})" if failure.quota_id else ""
    kind = failure.kind
    if kind is FailureKind.QUOTA_PER_MINUTE:
        return f"429 per-minute quota{qid}"
    if kind is FailureKind.QUOTA_PER_DAY:
        return f"429 per-day quota{qid}, resets at Pacific midnight"
    if kind is FailureKind.QUOTA_NO_ACCESS:
        return f"429 limit 0: no access to this model on this tier{qid}"
    return f"429 unclassified quota, repeat #{repeats}"


class ApiKeyRotator:
    """A thread-safe pool of Gemini key x model slots: free keys first, paid as fallback.

    Args:
        free_keys, paid_keys: key lists (list, or a string separated by commas);
            ``project:KEY`` groups a key in a Google Cloud project (see ``pool.keys``).
        model_limits: models and in-flight cap per key x model; JSON or
            ``model=n,model2=m`` text, or a mapping. ``None``: ``GOOGLE_MODEL_LIMITS``,
            else the catalog's current defaults.
        projects: ``{project: [keys]}``, another way to group keys by project.
        known_limits: ``{model: {tier: {"rpm", "rpd", "tpm"}}}`` counted locally per
            project x model so that no request is sent into a known 429.
        model_order: a sequence (both tiers) or ``{tier: sequence}`` overriding the
            default order (free: most capable first; paid: cheapest first).
        clock: time source (``FakeClock`` in tests).
        state: a :class:`PoolState` (default: in memory). The rotator configures it.
        max_wait_s: default longest wait in ``acquire`` before ``QuotaExhaustedError``.
        rng: randomness for jitter (anything with ``uniform(a, b)``).
    """

    def __init__(
        self,
        free_keys: KeysInput = None,
        paid_keys: KeysInput = None,
        model_limits: str | Mapping[str, Any] | None = None,
        *,
        projects: Mapping[str, KeysInput] | None = None,
        known_limits: str | Mapping[str, Any] | None = None,
        model_order: ModelOrderInput = None,
        clock: Clock = SYSTEM_CLOCK,
        state: PoolState | None = None,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        rng: Any | None = None,
    ) -> None:
        specs = build_key_specs(free_keys, paid_keys, projects)
        caps = parse_model_limits(model_limits, today=utc_date(clock.time()))
        known = expand_wildcard_limits(parse_known_limits(known_limits), caps)
        stray = sorted({m for m, _ in known if m not in caps})
        if stray:
            raise ConfigurationError(f"known_limits names models not in GOOGLE_MODEL_LIMITS: {stray}")
        if max_wait_s < 0:
            raise ConfigurationError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        self._specs: dict[str, KeySpec] = {s.fingerprint: s for s in specs}
        self._api_keys: dict[str, str] = {s.fingerprint: s.api_key for s in specs}
        # Hidden by value in every text the library lets out, for as long as this pool lives.
        redaction.register_keys(self._api_keys.values(), owner=self)
        self._caps = caps
        self._order = resolve_model_order(list(caps), model_order)
        self._tiers = tuple(t for t in TIERS if any(s.tier == t for s in specs))
        self._clock = clock
        self.max_wait_s = float(max_wait_s)
        self._rng = rng if rng is not None else random.Random()
        self._state: PoolState = state if state is not None else InMemoryPoolState()
        self._state.configure(
            PoolLayout(
                keys=tuple(KeyInfo(s.fingerprint, s.tier, s.project) for s in specs),
                caps=dict(caps),
                known_limits=known,
            )
        )
        self._plans: dict[Filters, tuple[Group, ...]] = {}
        # The UTC day the cached plans were built for, as [start, end) in Unix seconds:
        # two comparisons per call instead of a date built from the clock.
        self._plans_span = (0.0, 0.0)
        self._retired: frozenset[str] = frozenset()
        self._lock = threading.Lock()  # guards the streak counters
        forking.register(self, locks=lambda r: (r._lock,), in_child=ApiKeyRotator._after_fork_in_child)
        self._transient: dict[tuple[str, str], int] = {}  # (key fp, model) -> consecutive
        self._quota_repeats: dict[tuple[str, str], int] = {}  # (project, model) -> consecutive
        self._refusals = ModelRefusals()
        # Models that have served at least once here: a 404 on one of them concerns the
        # project that got it ("no longer available to new users"), not the model.
        self._served_models: set[str] = set()
        self._projects = tuple(dict.fromkeys(s.project for s in specs))
        _log.info(
            "key pool ready: %d free and %d paid keys in %d projects, models %s",
            sum(1 for s in specs if s.tier == "free"),
            sum(1 for s in specs if s.tier == "paid"),
            len({s.project for s in specs}),
            ", ".join(f"{m}={c}" for m, c in caps.items()),
        )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        free = sum(1 for s in self._specs.values() if s.tier == "free")
        return (
            f"ApiKeyRotator(free={free} keys, paid={len(self._specs) - free} keys, "
            f"models={list(self._caps)}, state={self._state!r})"
        )

    # -- introspection --

    @property
    def models(self) -> dict[str, int]:
        """Configured models and their per-slot caps."""
        return dict(self._caps)

    @property
    def model_order(self) -> dict[str, tuple[str, ...]]:
        """``{tier: models in the order they are tried}``."""
        return dict(self._order)

    @property
    def state(self) -> PoolState:
        return self._state

    def plan(self, filters: Filters) -> tuple[Group, ...]:
        """The tier x model groups a call with ``filters`` tries, best first (cached).

        Models the catalog says are shut down today are left out (one WARNING each,
        naming the successor); plans are rebuilt when the UTC day changes.
        """
        now = self._clock.time()
        start, end = self._plans_span
        if not start <= now < end:
            today = utc_date(now)
            self._retired = catalog.WATCH.retired(self._caps, today)
            self._plans = {}
            start = datetime(today.year, today.month, today.day, tzinfo=timezone.utc).timestamp()
            self._plans_span = (start, start + 86400.0)  # Unix time has no leap seconds
        plan = self._plans.get(filters)
        if plan is None:
            plan = tuple(g for g in build_plan(self._order, self._tiers, filters) if g.model not in self._retired)
            # Filters come from callers (model_variant is free text): keep the cache
            # bounded in a long-running service.
            if len(self._plans) >= _MAX_CACHED_PLANS:
                self._plans.clear()
            self._plans[filters] = plan
        return plan

    @property
    def refusals(self) -> dict[str, list[str]]:
        """What each model is known to refuse (learnt from its 400s in this process)."""
        return self._refusals.snapshot()

    def _usable_plan(
        self, plan: tuple[Group, ...], needs: CallNeeds, tokens: int
    ) -> tuple[tuple[Group, ...], dict[str, str]]:
        """``plan`` without the models known to refuse this call, and why each one left."""
        if not self._refusals:
            return plan, {}
        refused: dict[str, str] = {}
        for model in dict.fromkeys(g.model for g in plan):
            why = self._refusals.refuses(model, needs, tokens)
            if why is not None:
                refused[model] = why
        if not refused:
            return plan, {}
        return tuple(g for g in plan if g.model not in refused), refused

    # -- acquire --

    def acquire(
        self,
        model_variant: str | None = None,
        exact_match: bool = False,
        family: str | None = None,
        forced_free: bool = False,
        forced_paid: bool = False,
        estimated_input_tokens: int = 0,
        avoid: AbstractSet[Slot] = frozenset(),
        max_wait_s: float | None = None,
        needs: CallNeeds | None = None,
    ) -> Lease:
        """Lease the best slot that can serve a call, waiting for one if needed.

        ``needs`` (thinking level, JSON mode) and ``estimated_input_tokens`` leave out
        the models known to refuse such a call (see ``pool/refusals.py``).

        Raises:
            GeminiRequestError: every model that matches the filters is known to
                refuse this call (nothing is sent).
            QuotaExhaustedError: no slot can serve within ``max_wait_s`` (default
                ``self.max_wait_s``); ``retry_at`` says when one is expected, ``None``
                when none ever will (every matching key disabled).
            InvalidInputError: no configured model matches the filters, or
                ``forced_free`` and ``forced_paid`` together.
        """
        forking.check()
        filters = Filters(model_variant, exact_match, family, forced_free, forced_paid)
        plan = self.plan(filters)
        if not plan:
            # Nothing configured matches: waiting cannot help, and a caller that retries
            # QuotaExhaustedError later would retry a typo forever.
            retired = f" ({', '.join(sorted(self._retired))} shut down)" if self._retired else ""
            raise InvalidInputError(
                f"no configured key x model can serve this call ({filters.describe()}): "
                f"configured models are {list(self._caps)}{retired} on {'/'.join(self._tiers)} keys. "
                "Change model_variant/family/forced_* or add the model to GOOGLE_MODEL_LIMITS."
            )
        wait = self.max_wait_s if max_wait_s is None else max(0.0, float(max_wait_s))
        tokens = max(0, int(estimated_input_tokens or 0))
        needs = needs or _NO_NEEDS
        plan, refused = self._usable_plan(plan, needs, tokens)
        if not plan:
            raise GeminiRequestError(
                "every model this call may use is known to refuse it ("
                + "; ".join(f"{m}: {why}" for m, why in refused.items())
                + f"), so nothing was sent. Change the call ({needs.describe()}, about {tokens} input "
                "tokens) or configure a model that takes it.",
                status_code=400,
                status="INVALID_ARGUMENT",
            )
        clock = self._clock
        state = self._state
        now = clock.time()
        deadline = now + wait
        while True:
            result = state.try_acquire(plan, now, tokens, avoid)
            grant = result.grant
            if grant is not None:
                slot = grant.slot
                if _log.isEnabledFor(logging.DEBUG):
                    _log.debug("acquired %s (lease %s)", slot, grant.lease_id)
                return Lease(
                    slot=slot,
                    api_key=self._api_keys[slot.key_fingerprint],
                    lease_id=grant.lease_id,
                    acquired_at=grant.acquired_at,
                    reserved_tokens=grant.reserved_tokens,
                    _owner=self,
                    filters=filters,
                    needs=needs,
                )
            retry_at = result.retry_at
            if retry_at is None and not result.busy:
                raise self._exhausted(filters, result, wait, now)
            if now >= deadline or (not result.busy and retry_at is not None and retry_at > deadline):
                raise self._exhausted(filters, result, wait, now)
            until = deadline if retry_at is None else min(retry_at, deadline)
            if result.busy:
                # A lease coming back may free a slot before ``until``.
                self._wait_for_release(result.version, until - now)
            else:
                # Nothing is in flight on these slots: only time can help.
                clock.sleep(until - now)
            now = clock.time()

    def _wait_for_release(self, version: int, timeout: float) -> None:
        clock = self._clock
        start = clock.time()
        if not self._state.wait_for_change(version, timeout):
            # Timed out: make sure the clock has moved by ``timeout`` (a FakeClock does
            # not move by itself; on the system clock this is a no-op).
            elapsed = clock.time() - start
            if elapsed < timeout:
                clock.sleep(timeout - elapsed)

    def _exhausted(self, filters: Filters, result: AcquireResult, wait: float, now: float) -> QuotaExhaustedError:
        if result.retry_at is None and not result.busy:
            why = result.reason or "every key x model slot that could serve it is disabled"
            return QuotaExhaustedError(
                f"No Gemini key x model slot will ever serve this call ({filters.describe()}): {why}. "
                "Check the keys (csc-ai keys) and GOOGLE_MODEL_LIMITS, or relax the filters.",
                retry_at=None,
            )
        retry_at = result.retry_at if result.retry_at is not None else now
        if result.busy and (result.retry_at is None or result.retry_at > now):
            retry_at = now  # a call in flight may finish any moment
        detail = f"earliest expected at {_format_utc(retry_at)} (in {max(0.0, retry_at - now):.0f} s)"
        if result.reason:
            detail += f", {result.reason}"
        if result.busy:
            detail += "; other slots are busy with calls in flight"
        _log.info("quota exhausted for %s: %s", filters.describe(), detail)
        return QuotaExhaustedError(
            f"No Gemini key x model slot could serve this call ({filters.describe()}) within "
            f"{wait:g} s: {detail}. Retry at retry_at, add keys from other Google Cloud projects, "
            "allow paid keys, or raise max_wait_s.",
            retry_at=retry_at,
        )

    # -- release --

    def release(
        self,
        lease: Lease,
        usage_input_tokens: int | None = None,
        error: BaseException | None = None,
        invalid_output: bool = False,
        *,
        attempt: int | None = None,
        retryable: bool = True,
        retries_left: int | None = None,
    ) -> Decision:
        """Give a lease back and say what its outcome means.

        Always frees the slot; idempotent (a second call returns the first decision).
        ``error``: the attempt's exception; ``invalid_output``: the reply was unusable
        (``retryable=False``: asking again cannot help, the call ends); neither:
        success. ``attempt`` (1-based, within the call) sizes the transient backoff; by
        default the slot's run of consecutive transient failures does.
        ``retries_left``: the call's remaining retry budget; the decision then says
        whether this retry spends it and ends the call when it is spent (see
        :meth:`Decision.within_budget`). ``None``: no budget (the caller counts).
        """
        with self._lock:  # `with lease:` in one thread may race a release() in another
            if lease.released:
                return lease.decision or _DONE
            lease.released = True
        now = self._clock.time()
        slot = lease.slot
        decision = _DONE
        outcome = FailureKind.OK
        try:
            failure: Failure | None = None
            if error is not None:
                failure = classify_failure(error)
            elif invalid_output:
                failure = invalid_output_failure()
            if failure is None or failure.kind is FailureKind.INVALID_OUTPUT:
                # Gemini answered with this model: it exists here (see the 404 rule in _apply).
                self._served_models.add(slot.model)
            if failure is not None:
                outcome = failure.kind
                # Applied before the slot is freed, so no other thread is handed a
                # slot that is about to be suspended.
                decision = self._apply(slot, failure, now, attempt, lease)
                if invalid_output and not retryable and decision.action is Action.RETRY:
                    decision = replace(decision, action=Action.RAISE)
                if retries_left is not None:
                    decision = decision.within_budget(retries_left)
            elif self._transient or self._quota_repeats:
                with self._lock:
                    self._transient.pop((slot.key_fingerprint, slot.model), None)
                    self._quota_repeats.pop((slot.project, slot.model), None)
        finally:
            lease.decision = decision
            self._state.release(lease.lease_id, now, outcome, usage_input_tokens)
        return decision

    def release_unused(self, lease: Lease) -> None:
        """Give a lease back without having sent anything on it (a budget refused it).

        No outcome is counted and its estimated input tokens are given back; the
        request it took from a known rpm / rpd limit stays counted (conservative).
        """
        with self._lock:
            if lease.released:
                return
            lease.released = True
        lease.decision = _DONE
        self._state.release(lease.lease_id, self._clock.time(), None, 0)

    def _apply(
        self, slot: Slot, failure: Failure, now: float, attempt: int | None, lease: Lease | None = None
    ) -> Decision:
        """Act on exactly the failure's scope; see the README's "Escopos de falha".

        =============  ==================================================  ==============
        scope          what the pool does                                  pool_change
        =============  ==================================================  ==============
        project_model  quota: suspend the project x model (cooldown.py);   suspend /
                       404 on a model that served here: park it 24 h        park_project
        key            disable the key, every model, for the process       disable_key
        key_model      park this key x model 24 h (others keep serving)    park_slot
        model          park the model on every project 24 h at once        park_model
        project_tier   park every key of this tier in this project 24 h    park_tier
        model_request  learn the refusal; next model of the plan           skip_model
        request        nothing; raise at once                              (raise)
        attempt        transient: back off, circuit breaker; bad reply:     cooldown / ""
                       retry
        =============  ==================================================  ==============
        """
        kind = failure.kind
        scope = failure.scope
        state = self._state
        if kind.is_quota:
            repeats = 1
            if kind is FailureKind.QUOTA_UNKNOWN:
                with self._lock:
                    repeats = self._quota_repeats.get((slot.project, slot.model), 0) + 1
                    self._quota_repeats[(slot.project, slot.model)] = repeats
            until = quota_suspension_until(failure, now, repeats=repeats, jitter=self._rng.uniform)
            reason = _quota_reason(failure, repeats)
            effective = state.suspend(Scope.project_model(slot.project, slot.model), until, reason, now)  # type: ignore[arg-type]
            _log.info(
                "suspended %s on project %s until %s (%.0f s): %s",
                slot.model,
                slot.project,
                _format_utc(effective),
                effective - now,
                reason,
            )
            return Decision(Action.RETRY, failure, 0.0, PoolChange.SUSPEND, effective)
        if scope is FailureScope.KEY:
            reason = f"key refused ({failure.http_status} {failure.reason or failure.status}): {failure.message}"
            left = state.disable_key(slot.key_fingerprint, reason)
            _log.warning(
                "disabled key %s for the life of the process: %s (%d keys left)", slot.key_fingerprint, reason, left
            )
            return Decision(Action.RAISE if left == 0 else Action.RETRY, failure, 0.0, PoolChange.DISABLE_KEY)
        if scope is FailureScope.MODEL and slot.model in self._served_models:
            # The model has served here: this 404 concerns the project that got it.
            scope = FailureScope.PROJECT_MODEL
        if scope in _PARKED:
            targets, change, what = self._park_targets(slot, scope)
            reason = f"{what} ({failure.http_status} {failure.status}): {failure.message}"
            until = now + NO_ACCESS_PARK_S
            effective = state.suspend_many(targets, until, reason, now)
            _log.warning("parked %s until %s: %s", _describe_park(slot, scope), _format_utc(effective), reason)
            action = Action.RETRY if self._plan_has_other(lease, slot, scope) else Action.RAISE
            return Decision(action, failure, 0.0, change, effective)
        if scope is FailureScope.MODEL_REQUEST and failure.refusal is not None:
            needs = lease.needs if lease is not None and lease.needs is not None else _NO_NEEDS
            tokens = lease.reserved_tokens if lease is not None else 0
            why = self._refusals.learn(slot.model, failure.refusal, needs, tokens)
            _log.warning("%s refuses calls with %s: %s (%s)", slot.model, needs.describe(), why, failure.message)
            action = Action.RAISE
            if lease is not None and lease.filters is not None:
                usable, _ = self._usable_plan(self.plan(lease.filters), needs, tokens)
                if usable:
                    action = Action.RETRY
            return Decision(action, failure, 0.0, PoolChange.SKIP_MODEL)
        if kind is FailureKind.TRANSIENT or (kind is FailureKind.UNKNOWN and failure.http_status >= 500):
            key = (slot.key_fingerprint, slot.model)
            with self._lock:
                streak = self._transient.get(key, 0) + 1
                self._transient[key] = streak
            backoff = transient_backoff_s(attempt or streak, jitter=self._rng.uniform)
            cool = breaker_until(streak, now)
            if cool is None:
                return Decision(Action.RETRY, failure, backoff)
            with self._lock:
                self._transient.pop(key, None)
            reason = f"circuit breaker: {streak} consecutive transient failures ({failure.error_type})"
            effective = state.suspend(Scope.slot(slot.key_fingerprint, slot.model), cool, reason, now)
            _log.info("cooled down %s until %s: %s", slot, _format_utc(effective), reason)
            return Decision(Action.RETRY, failure, backoff, PoolChange.COOLDOWN, effective)
        if kind is FailureKind.INVALID_OUTPUT:
            return Decision(Action.RETRY, failure, 0.0)
        # The request itself (BAD_REQUEST, LOCATION_UNSUPPORTED) and anything we cannot read.
        return Decision(Action.RAISE, failure)

    def _park_targets(self, slot: Slot, scope: FailureScope) -> tuple[list[Scope], PoolChange, str]:
        """The state scopes a parked failure covers, its ``pool_change`` and its words."""
        if scope is FailureScope.KEY_MODEL:
            return (
                [Scope.slot(slot.key_fingerprint, slot.model)],
                PoolChange.PARK_SLOT,
                "no access to this model with this key",
            )
        if scope is FailureScope.MODEL:
            return [Scope.project_model(p, slot.model) for p in self._projects], PoolChange.PARK_MODEL, "model gone"
        if scope is FailureScope.PROJECT_MODEL:
            return (
                [Scope.project_model(slot.project, slot.model)],
                PoolChange.PARK_PROJECT,
                "model gone for this project",
            )
        # PROJECT_TIER: every key of the slot's tier in its project, every model.
        fps = [s.fingerprint for s in self._specs.values() if s.project == slot.project and s.tier == slot.tier]
        return (
            [Scope.slot(fp, m) for fp in fps for m in self._caps],
            PoolChange.PARK_TIER,
            f"{slot.tier} tier unavailable",
        )

    def _plan_has_other(self, lease: Lease | None, slot: Slot, scope: FailureScope) -> bool:
        """Whether the call's plan still holds a group this parking did not take out.

        Only a plan with nothing left raises at once; a plan with other groups retries
        (they may be busy or suspended, which ``acquire`` then reports).
        """
        if lease is None or lease.filters is None:
            return True
        for g in self.plan(lease.filters):
            if scope is FailureScope.MODEL and g.model == slot.model:
                continue
            if scope is FailureScope.PROJECT_TIER and g.tier == slot.tier and self._tier_in_one_project(slot):
                continue
            if (
                scope in (FailureScope.KEY_MODEL, FailureScope.PROJECT_MODEL)
                and g.model == slot.model
                and g.tier == slot.tier
                and self._alone_in_group(slot, scope)
            ):
                continue
            return True
        return False

    def _tier_in_one_project(self, slot: Slot) -> bool:
        return all(s.project == slot.project for s in self._specs.values() if s.tier == slot.tier)

    def _alone_in_group(self, slot: Slot, scope: FailureScope) -> bool:
        """Whether the parked slot/project holds every key of its tier for that model."""
        for s in self._specs.values():
            if s.tier != slot.tier:
                continue
            if scope is FailureScope.KEY_MODEL and s.fingerprint != slot.key_fingerprint:
                return False
            if scope is FailureScope.PROJECT_MODEL and s.project != slot.project:
                return False
        return True

    # -- status --

    def status(self) -> PoolStatus:
        """A snapshot of every slot (fingerprints only)."""
        return self._state.snapshot(self._clock.time())

    # -- outside a lease (the original library's calls; see ``compat.py``) --

    def slot_for(self, api_key: str, model: str) -> Slot | None:
        """The slot of ``api_key`` x ``model``, or ``None`` when either is not configured."""
        spec = self._specs.get(key_fingerprint(api_key)) if isinstance(api_key, str) else None
        if spec is None or model not in self._caps:
            return None
        return Slot(spec.fingerprint, spec.tier, spec.project, model)

    def report(self, slot: Slot, error: BaseException) -> Decision:
        """Apply what ``error`` means to ``slot`` when no lease is held for it."""
        return self._apply(slot, classify_failure(error), self._clock.time(), None)

    def suspend(self, slot: Slot, seconds: float, reason: str) -> float:
        """``slot`` serves nothing for ``seconds`` (a later suspension already set stays);
        returns when it will serve again."""
        now = self._clock.time()
        return self._state.suspend(Scope.slot(slot.key_fingerprint, slot.model), now + seconds, reason, now)
