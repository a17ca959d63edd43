"""``IaProcessor``: the facade. Validates a call, asks the pool for a key x model slot,
calls Gemini through the SDK, tells the pool what happened, and hands the event to
telemetry.

The attempt loop is short on purpose: what a failure means, where to go next and which
error ends the call is decided by the pool (``pool/``, see ``pool/decision.py``), what
is sent and how the reply is read by ``gemini/``, what the call accumulates and the
events it leaves by :class:`~csctracker_ai_core.call.Call`, and what is kept by
``telemetry/``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from . import forking, pricing
from .budgets import AttemptScope, BudgetAlert, BudgetGuard, BudgetRefusal, Hold
from .budgets.cost import (
    COUNT_TOKENS_ABOVE_BYTES,
    actual_usd,
    local_input_tokens,
    reserved_output_tokens,
    worst_case_usd,
)
from .call import Call, Served, new_event_id
from .clock import SYSTEM_CLOCK, Clock
from .compat import APIKeyRotator
from .exceptions import (
    AiCoreError,
    BlockedResponseError,
    BudgetExceededError,
    ConfigurationError,
    GeminiServiceException,
    InvalidInputError,
    InvalidResponseError,
    ProcessorClosedError,
    QuotaExhaustedError,
    TruncatedResponseError,
)
from .gemini.client_pool import GeminiClients
from .gemini.request import FAMILY_TEMPERATURE, RequestOptions, build_config, build_contents, options_for
from .gemini.response import ReplyProblem, finish_reason, read_reply, served_tier
from .observability import build_observers, needs_events, notify
from .observability.metrics import PrometheusMetrics
from .pool.classify import scrub
from .pool.decision import Decision
from .pool.lease import Lease, Slot
from .pool.refusals import CallNeeds
from .pool.rotator import ApiKeyRotator
from .pool.selection import Filters
from .settings import Settings
from .telemetry.clickhouse_db import ClickHouseDb
from .telemetry.events import CallEvent
from .telemetry.writer import NullSink, open_telemetry
from .tokens import TokenUsage, estimate_text_tokens
from .validation import PreparedCall, validate_call

__all__ = ["IaProcessor", "GeminiServiceException"]

logger = logging.getLogger(__name__)

Keys = str | Sequence[str] | None
F = TypeVar("F", bound=Callable[..., Any])


def _admitted(method: F) -> F:
    """Count the call in flight, or refuse it with ProcessorClosedError once ``close()`` began.

    ``close()`` waits for the calls counted here, so their events are recorded before it
    delivers telemetry and releases the SDK clients.
    """

    @functools.wraps(method)
    def admitted(self: IaProcessor, *args: Any, **kwargs: Any) -> Any:
        forking.check()  # a uWSGI worker forked without hooks resets before touching _calls
        with self._calls:
            if self._closed:
                raise ProcessorClosedError("this IaProcessor is closed: the call was not sent; create a new one.")
            self._in_flight += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            with self._calls:
                self._in_flight -= 1
                self._calls.notify_all()
                last_out = self._in_flight == 0 and self._is_closed()
            if last_out:  # close() timed out waiting for us: release what it left
                self._clients.close()

    return admitted  # type: ignore[return-value]


class IaProcessor:
    """Gemini on a pool of keys, free first and paid as fallback, with telemetry.

    Positional arguments and their environment fallbacks are the original library's:
    ``host``/``port``/``username``/``password`` (``CLICKHOUSE_HOST``, ``CLICKHOUSE_PORT``,
    ``CLICKHOUSE_USER``, ``CLICKHOUSE_PASSWORD``, ``CLICKHOUSE_DB``),
    ``google_models_limits`` (``GOOGLE_MODEL_LIMITS``), ``google_free_keys``
    (``GOOGLE_FREE_KEYS``) and ``google_paid_keys`` (``GOOGLE_PAID_KEYS``). Keys come as a
    list or a comma-separated string; ``"project:KEY"`` names the Google Cloud project of
    a key (keys of one project share its quota).

    Keyword-only settings (environment fallback in brackets):

    - ``base_url`` [``CSCTRACKER_AI_BASE_URL``, then the SDK's ``GOOGLE_GEMINI_BASE_URL``]:
      Gemini endpoint; Gemini's public one by default.
    - ``request_timeout_s`` [``CSCTRACKER_AI_TIMEOUT_S``, 120]: per upstream request.
    - ``max_wait_s`` [``CSCTRACKER_AI_MAX_WAIT_S``]: how long a call may wait for a free
      slot before :class:`QuotaExhaustedError` (pool default when unset).
    - ``max_retries`` [``CSCTRACKER_AI_MAX_RETRIES``, 3]: retries after transient failures
      (5xx, timeouts, invalid JSON). Quota and key failures move to another slot and
      do not count: each one takes a slot out of the pool, so they end by themselves.
    - ``telemetry`` [``CSCTRACKER_AI_TELEMETRY``]: ``"server"``, ``"embedded"`` or
      ``"off"``; default: server when a host is configured, else embedded (chDB).
    - ``clickhouse_dsn`` [``CSCTRACKER_AI_CLICKHOUSE_DSN``], ``database``.
    - ``redis_url`` [``CSCTRACKER_AI_REDIS_URL``]: share the pool's state across
      processes on Redis.
    - ``budgets`` [``CSCTRACKER_AI_BUDGETS``, JSON]: spending caps, a list of
      :class:`~csctracker_ai_core.Budget` or dicts (``{"limit": "10", "period": "day"}``).
      Before a paid attempt its worst case is reserved against every rule that covers
      it; a rule that would pass its limit keeps the attempt off paid keys (free keys
      still serve) and, when nothing else can serve, the call raises
      :class:`BudgetExceededError` without sending anything. Shared on Redis when
      ``redis_url`` is set. See docs/BUDGETS.md.
    - ``on_budget``: called with a :class:`~csctracker_ai_core.BudgetAlert` when a rule
      reaches 50, 80 or 100% of its limit (once per period per process).
    - ``projects``, ``known_limits``, ``model_order``: see ``ApiKeyRotator``.
    - ``temperature``: by default 0.1 (as the original) for families before Gemini 3
      and the model's own default from Gemini 3 on (Google's guidance: lower values may
      loop until MAX_TOKENS); a number is always sent, ``None`` never.
    - ``max_output_tokens`` [``CSCTRACKER_AI_MAX_OUTPUT_TOKENS``]: output cap (thinking
      included) per request; unset: the model's limit. A call's own keyword wins.
    - ``redact``, ``store_images``: telemetry.
    - ``otel`` (``"auto"``), ``metrics`` (off), ``observers``: OpenTelemetry spans,
      Prometheus metrics and other observers of every finished call; see
      ``docs/OBSERVABILITY.md``.
    - ``spool_max_bytes`` [``CSCTRACKER_AI_SPOOL_MAX_BYTES``]: cap of the telemetry spool
      (1 GiB); past it new events are dropped and counted.
    - ``telemetry_best_effort`` [``CSCTRACKER_AI_TELEMETRY_BEST_EFFORT``]: when the
      telemetry store cannot be used, run on and count events as dropped instead of
      raising :class:`TelemetryError` here.
    - ``telemetry_delivery`` [``CSCTRACKER_AI_TELEMETRY_DELIVERY``]: ``"thread"`` (this
      process's writer thread inserts) or ``"external"`` (this process only spools and
      hands its spool files over; run ``csc-ai deliver`` next to it). See
      ``docs/TELEMETRY.md``.
    - ``clock``, ``rotator``, ``telemetry_sink``: injection points for tests.
    - ``env``: the environment mapping read instead of ``os.environ`` (``env={}`` reads
      nothing). Everything is read once, here, into :attr:`settings`
      (:class:`~csctracker_ai_core.settings.Settings`); see ``ENVIRONMENT_VARIABLES``
      there for every variable.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        google_models_limits: str | Mapping[str, int] | None = None,
        google_free_keys: Keys = None,
        google_paid_keys: Keys = None,
        *,
        base_url: str | None = None,
        request_timeout_s: float | None = None,
        max_wait_s: float | None = None,
        max_retries: int | None = None,
        telemetry: str | None = None,
        clickhouse_dsn: str | None = None,
        database: str | None = None,
        redis_url: str | None = None,
        projects: Mapping[str, Sequence[str]] | None = None,
        known_limits: Any | None = None,
        model_order: Any | None = None,
        temperature: float | None = FAMILY_TEMPERATURE,
        max_output_tokens: int | None = None,
        redact: Any | None = None,
        store_images: bool = False,
        budgets: Sequence[Any] | None = None,
        on_budget: Callable[[BudgetAlert], Any] | None = None,
        spool_max_bytes: int | None = None,
        telemetry_best_effort: bool | None = None,
        telemetry_delivery: str | None = None,
        clock: Clock | None = None,
        rotator: ApiKeyRotator | APIKeyRotator | None = None,
        telemetry_sink: Any | None = None,
        env: Mapping[str, str] | None = None,
        otel: Any = "auto",
        metrics: Any = None,
        observers: Sequence[Any] = (),
    ) -> None:
        forking.check()  # the shared writers and clients are this process's, not a parent's
        self.settings: Settings = Settings.load(
            env=env,
            host=host,
            port=port,
            username=username,
            password=password,
            google_models_limits=google_models_limits,
            google_free_keys=google_free_keys,
            google_paid_keys=google_paid_keys,
            base_url=base_url,
            request_timeout_s=request_timeout_s,
            max_wait_s=max_wait_s,
            max_retries=max_retries,
            telemetry=telemetry,
            clickhouse_dsn=clickhouse_dsn,
            database=database,
            redis_url=redis_url,
            budgets=budgets,
            max_output_tokens=max_output_tokens,
            spool_max_bytes=spool_max_bytes,
            telemetry_best_effort=telemetry_best_effort,
            telemetry_delivery=telemetry_delivery,
        )
        settings = self.settings
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._temperature = temperature
        self._max_retries = settings.max_retries
        self._max_wait_s = settings.max_wait_s
        self._max_output_tokens = settings.max_output_tokens
        if (
            temperature is not None
            and temperature is not FAMILY_TEMPERATURE
            and (
                isinstance(temperature, bool)
                or not isinstance(temperature, (int, float))
                or not 0.0 <= temperature <= 2.0
            )
        ):
            raise ConfigurationError(
                f"temperature={temperature!r}: Gemini takes a number from 0.0 to 2.0, or None for the model's default."
            )

        compat_rotator = None
        if isinstance(rotator, APIKeyRotator):  # the original's class: drive the pool it wraps
            compat_rotator, rotator = rotator, rotator.rotator
        if rotator is None:
            state = None
            if settings.redis is not None:
                try:
                    from .pool.redis_state import RedisPoolState  # optional dependency
                except ImportError as exc:
                    raise ConfigurationError(
                        "redis_url / CSCTRACKER_AI_REDIS_URL is set but redis-py is not installed: "
                        "pip install 'csctracker-ai-core[redis]', or unset it to keep the pool in memory."
                    ) from exc
                redis = settings.redis
                state = RedisPoolState.from_url(
                    redis.url,
                    clock=self._clock,
                    namespace=redis.namespace,
                    lease_ttl_s=redis.lease_ttl_s,
                    policy=redis.policy,
                )
            rotator = ApiKeyRotator(
                settings.free_keys,
                settings.paid_keys,
                settings.model_limits,
                projects=projects,
                known_limits=known_limits,
                model_order=model_order,
                clock=self._clock,
                state=state,
            )
        self.rotator: ApiKeyRotator = rotator
        self._compat_rotator = compat_rotator or APIKeyRotator(rotator=rotator)
        # A broken CSCTRACKER_AI_PRICES_FILE is a configuration error: say so now, not
        # in the middle of the first call.
        self._prices_file = settings.prices_file
        pricing.get_prices(self._prices_file)
        self._clients = GeminiClients(base_url=settings.base_url, timeout_s=settings.request_timeout_s)

        store = None  # where past spend is read from (none with an injected sink)
        if telemetry_sink is None:
            store = settings.telemetry
            telemetry_sink = open_telemetry(settings.telemetry, redact=redact, store_images=store_images)
            self._telemetry_location = settings.telemetry.location
        else:
            self._telemetry_location = str(getattr(telemetry_sink, "location", type(telemetry_sink).__name__))
        self.budgets: BudgetGuard | None = None
        if settings.budgets:
            from .budgets.setup import open_budget_guard

            self.budgets = open_budget_guard(
                settings.budgets,
                clock=self._clock,
                store_settings=store,
                redis_url=settings.redis.url if settings.redis is not None else None,
                redis_namespace=settings.redis.namespace if settings.redis is not None else None,
                on_budget=on_budget,
                hold_ttl_s=settings.request_timeout_s + 30.0,
            )
        self.telemetry = telemetry_sink
        self._click_house = ClickHouseDb(settings=settings.telemetry, sink=telemetry_sink)
        self._observers = build_observers(otel, metrics, observers, redact=redact)
        for observer in self._observers:
            if isinstance(observer, PrometheusMetrics):
                observer.bind(pool_status=self.rotator.status, telemetry_stats=getattr(self.telemetry, "stats", None))
        # With telemetry off and no observer that wants them, nothing reads the events:
        # do not build them.
        self._recording = not isinstance(telemetry_sink, NullSink) or needs_events(self._observers)
        self._closed = False
        self._calls = threading.Condition()  # guards _closed and _in_flight
        self._in_flight = 0
        forking.register(self, locks=lambda p: (p._calls,), in_child=IaProcessor._after_fork_in_child)

    # -- public API ---------------------------------------------------------------

    @property
    def api_key_rotator(self) -> APIKeyRotator:
        """The original library's ``api_key_rotator``: this processor's pool, with the
        original's methods (``select_and_reserve_best_slot``...) and the new ones."""
        return self._compat_rotator

    @property
    def click_house(self) -> ClickHouseDb:
        """The original library's ``click_house``: a :class:`ClickHouseDb` on this
        processor's store, whose ``log_event_telemetry`` goes through its writer."""
        return self._click_house

    def estimate_tokens_rough(self, text: str) -> int:
        """The original's rough token estimate of ``text`` (it only logged it; this
        returns it): about 4 characters a token, as the pool's own estimate."""
        return estimate_text_tokens(text or "")

    @property
    def telemetry_location(self) -> str:
        """Where events go, in words (no password)."""
        return self._telemetry_location

    @_admitted
    def analisar_com_gemini(
        self,
        input_text: str = "",
        prompt: str = "",
        file_base64: str | None = None,
        task: str | None = None,
        return_json: bool = True,
        event_id: str | None = None,
        mime_type: str = "image/jpeg",
        model_variant: str | None = None,
        forced_free: bool = False,
        forced_paid: bool = False,
        thinking_level: str | None = None,
        service_tier: str = "standard",
        *,
        exact_match: bool = False,
        family: str | None = None,
        metadata: Mapping[str, str] | None = None,
        max_output_tokens: int | None = None,
        response_schema: Any | None = None,
        accept_truncation: bool = False,
    ) -> tuple[Any, TokenUsage, str]:
        """Ask Gemini; returns ``(resultado, tokens, event_id)``.

        ``resultado`` is the parsed JSON (dict or list) when ``return_json`` is true,
        else the reply text. ``tokens`` is a :class:`~csctracker_ai_core.tokens.TokenUsage`.
        ``event_id`` is the one given, or a new UUID4; the call is recorded in telemetry
        under it, whether it succeeds or fails.

        ``file_base64``: a file (an image by default) as base64 text, or a
        ``data:<mime>;base64,`` URL; ``mime_type`` says its type. ``model_variant``
        keeps models whose name contains it (``exact_match=True``: equal to it);
        ``family`` keeps ``pro``, ``flash`` or ``lite`` models. ``forced_free`` /
        ``forced_paid`` keep one tier. ``thinking_level`` (minimal, low, medium, high)
        goes to Gemini 3 models as a level and to Gemini 2.5 models as a thinking
        budget; ``None`` leaves the model's default. ``service_tier``: standard, flex
        or priority.

        ``max_output_tokens`` caps this call's output (thinking included; default: the
        processor's setting, else the model's limit). ``response_schema``: a JSON schema
        (dict) or a Pydantic model class; it is sent as Gemini's response schema and the
        reply is checked against it (a Pydantic class comes back as an instance); a reply
        that breaks it counts as a failed attempt, like invalid JSON.
        ``accept_truncation``: a text reply cut at the output limit (finishReason
        MAX_TOKENS) is returned as it is instead of raising
        :class:`TruncatedResponseError`.

        Raises :class:`InvalidInputError` (nothing sent), :class:`QuotaExhaustedError`
        (no slot before the wait limit; see ``retry_at``), :class:`GeminiRequestError`
        (Gemini refused the request itself), :class:`InvalidResponseError` (no usable
        reply) or :class:`GeminiServiceException` (every attempt failed), all
        :class:`AiCoreError`.
        """
        request = validate_call(
            input_text=input_text,
            prompt=prompt,
            file_base64=file_base64,
            task=task,
            return_json=return_json,
            event_id=event_id,
            mime_type=mime_type,
            model_variant=model_variant,
            exact_match=exact_match,
            family=family,
            forced_free=forced_free,
            forced_paid=forced_paid,
            thinking_level=thinking_level,
            service_tier=service_tier,
            metadata=metadata,
            max_output_tokens=max_output_tokens,
            response_schema=response_schema,
            accept_truncation=accept_truncation,
        )
        call = Call(
            request,
            request.event_id or new_event_id(),
            clock=self._clock,
            max_retries=self._max_retries,
            recording=self._recording,
        )
        try:
            return self._run(call)
        except (GeminiServiceException, InvalidInputError):
            raise  # already recorded with its attempts, or bad input (nothing was sent)
        except AiCoreError as exc:
            # Ours but not Gemini's (e.g. Redis down under policy "fail"): still audited.
            self._record_failure(call, exc)
            raise
        except Exception as exc:
            # A bug of ours or of a dependency (not Gemini's answer): the call still
            # leaves its event, and the caller still gets one of our errors.
            error = call.internal_error(exc)
            # The copy, not exc: a log handler that reads exc_info (Sentry's does) would
            # send the variables of exc's frames, which may hold the request's key.
            logger.error("unexpected error in call %s", call.event_id, exc_info=error.last_error)
            self._record_failure(call, error)
        # Raised outside the except block: there, the raw exception (whose text may
        # hold a key) would ride along as __context__.
        raise error from error.last_error

    def close(self, timeout_s: float = 5.0) -> None:
        """Refuse new calls, let calls in flight finish, deliver pending telemetry, release clients.

        New calls raise :class:`ProcessorClosedError` before anything is sent. Calls in
        flight finish normally and their events are delivered by this close; the whole
        close is bounded by ``timeout_s`` (a call still running then keeps its request,
        and its event is spooled for delivery by this process's writer or the next).
        Safe to call from any thread, more than once.
        """
        forking.check()
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._calls:
            if self._closed:
                return
            self._closed = True
            while self._in_flight and time.monotonic() < deadline:
                self._calls.wait(deadline - time.monotonic())
            still_running = self._in_flight
        if still_running:
            logger.warning("IaProcessor.close: %d call(s) still running after %.1fs", still_running, timeout_s)
        try:
            self.telemetry.close(max(0.0, deadline - time.monotonic()))
        finally:
            if not still_running:  # else the last call to finish closes them (never cut a running request)
                self._clients.close()

    def _is_closed(self) -> bool:
        return self._closed

    def _after_fork_in_child(self) -> None:
        # The parent's calls in flight do not exist here (forking.py).
        self._calls = threading.Condition()
        self._in_flight = 0

    def __enter__(self) -> IaProcessor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IaProcessor(rotator={self.rotator!r}, telemetry={self.telemetry_location!r})"

    # -- the attempt loop ---------------------------------------------------------

    def _run(self, call: Call) -> tuple[Any, TokenUsage, str]:
        request = call.request
        needs = CallNeeds(request.thinking_level, request.return_json, request.response_schema is not None)
        call.options = options_for(request, self._temperature, self._max_output_tokens)
        # Slots a budget refused, and whether the call is down to free slots because of it.
        refused: dict[Slot, BudgetRefusal] = {}
        only_free = False
        while True:
            try:
                lease = self.rotator.acquire(
                    model_variant=request.model_variant,
                    exact_match=request.exact_match,
                    family=request.family,
                    forced_free=request.forced_free or only_free,
                    forced_paid=request.forced_paid,
                    estimated_input_tokens=request.estimated_input_tokens,
                    avoid=frozenset(call.avoid.union(refused)) if refused else frozenset(call.avoid),
                    max_wait_s=self._max_wait_s,
                    needs=needs,
                )
            except GeminiServiceException as exc:  # no slot, or every model known to refuse the call
                if refused and isinstance(exc, QuotaExhaustedError):
                    raise self._budget_error(call, refused, exc) from exc
                ended = call.refused_by_pool(exc)
                self._record_failure(call, ended)
                raise ended from ended.__cause__
            hold: Hold | None = None
            if refused and lease.slot in refused:
                # The rotator had nothing else now but a slot a budget already refused.
                self.rotator.release_unused(lease)
                if not only_free and lease.slot.tier != "free" and self._free_can_serve(request):
                    only_free = True  # wait for a free slot as any call would
                    continue
                raise self._budget_error(call, refused, None)
            if self.budgets is not None:
                verdict = self._reserve(request, call.options, lease)
                if isinstance(verdict, BudgetRefusal):
                    self.rotator.release_unused(lease)
                    refused[lease.slot] = verdict
                    continue
                hold = verdict
            outcome = self._attempt(call, lease, hold)
            if isinstance(outcome, Served):
                self._record_success(call, outcome)
                return outcome.result, outcome.usage, call.event_id
            decision, error = outcome
            if isinstance(error, TruncatedResponseError) and call.retry_truncated(lease.slot.model):
                # MAX_TOKENS is not transient: one more request, and only with a change
                # that can help (think less, allow the whole output limit).
                logger.info(
                    "attempt %d on %s stopped at MAX_TOKENS; one retry with thinking %s, output cap %s",
                    call.attempt_count,
                    lease.slot,
                    call.options.thinking_level or "default",
                    call.options.max_output_tokens or "default",
                )
                continue
            if decision.ends_call:
                final = call.ended_by(decision, error)
                self._record_failure(call, final)
                raise final
            if decision.backoff_s > 0:
                self._clock.sleep(decision.backoff_s)

    # -- budgets ------------------------------------------------------------------

    def _free_can_serve(self, call: PreparedCall) -> bool:
        if call.forced_paid:
            return False
        filters = Filters(call.model_variant, call.exact_match, call.family, True, False)
        return bool(self.rotator.plan(filters))

    def _reserve(self, call: PreparedCall, options: RequestOptions, lease: Lease) -> Hold | BudgetRefusal | None:
        """Reserve the attempt's worst case against every rule that covers ``lease``."""
        guard = self.budgets
        assert guard is not None
        slot = lease.slot
        scope = AttemptScope(slot.tier, slot.project, slot.model, call.task, call.metadata)
        rules = guard.covering(scope)
        if not rules:
            return None
        tokens = self._input_tokens(call, lease)
        output = reserved_output_tokens(slot.model, options.max_output_tokens)
        worst = worst_case_usd(slot.model, call.service_tier, tokens, output, pricing.get_prices(self._prices_file))
        return guard.reserve(scope, worst, rules=rules)

    def _input_tokens(self, call: PreparedCall, lease: Lease) -> int:
        """Input tokens of the attempt: a local upper bound, or countTokens when large."""
        files = 1 if call.image_bytes is not None else 0
        # A text of n characters has between n and 4n UTF-8 bytes: encode only when it may be large.
        large = (
            len(call.text) * 4 > COUNT_TOKENS_ABOVE_BYTES and len(call.text.encode("utf-8")) > COUNT_TOKENS_ABOVE_BYTES
        )
        if files or large:
            try:
                client = self._clients.get(lease.api_key)
                counted = client.models.count_tokens(model=lease.slot.model, contents=build_contents(call))
                if counted.total_tokens is not None:
                    return int(counted.total_tokens)
            except Exception as exc:
                logger.info("countTokens failed (%s); the budget reserves a local estimate", scrub(exc))
        return local_input_tokens(call.text, files)

    def _settle(
        self, hold: Hold | None, slot: Slot, service_tier: str, usage: TokenUsage | None, started_wall: float
    ) -> None:
        if hold is None or self.budgets is None:
            return
        try:
            started = datetime.fromtimestamp(started_wall, tz=timezone.utc)
            prices = pricing.get_prices(self._prices_file)
            self.budgets.settle(hold, actual_usd(slot.model, service_tier, usage, prices, started_at=started))
        except Exception:
            # A budget counter we cannot update must not fail a served call.
            logger.exception("could not settle the budget reservation of an attempt on %s", slot)

    def _budget_error(
        self, call: Call, refused: dict[Slot, BudgetRefusal], cause: BaseException | None
    ) -> BudgetExceededError:
        first = next(iter(refused.values()))
        sent = call.attempt_count
        error = BudgetExceededError(
            f"no free slot could serve this call and a budget holds back every paid one: {first.describe()}. "
            f"{'Nothing was sent' if not sent else f'{sent} earlier attempt(s) were sent; none more'}. "
            "Wait for the reset, raise the limit, or add free keys.",
            rule=first.rule.name,
            spent=first.spent,
            reserved=first.reserved,
            limit=first.limit,
            currency=first.rule.currency,
            resets_at=first.resets_at,
            no_rate=first.no_rate,
            last_error=cause,
            attempts=sent,
            event_id=call.event_id,
        )
        if cause is not None:
            error.__cause__ = cause
        self._record_failure(call, error)
        return error

    # -- one attempt ----------------------------------------------------------------

    def _attempt(self, call: Call, lease: Lease, hold: Hold | None = None) -> Served | tuple[Decision, BaseException]:
        """One upstream request on ``lease``. The lease is always released here, and
        the budget reservation ``hold`` always settled."""
        usage: TokenUsage | None = None
        served = call.request.service_tier
        # One start for the ledger's price and the budget's: the price in force then.
        started_wall = self._clock.time()
        try:
            outcome = self._send(call, lease, started_wall)
            if isinstance(outcome, Served):
                usage, served = outcome.usage, outcome.served_tier or call.request.service_tier
            elif isinstance(outcome[1], InvalidResponseError):
                usage = getattr(outcome[1], "usage", None)  # billed all the same
            return outcome
        finally:
            self._settle(hold, lease.slot, served, usage, started_wall)

    def _send(self, call: Call, lease: Lease, started_wall: float) -> Served | tuple[Decision, BaseException]:
        """One upstream request on ``lease``, started at ``started_wall`` (epoch s). The
        lease is always released here."""
        request = call.request
        slot = lease.slot
        number = call.attempt_count + 1
        t0 = time.perf_counter()
        with lease:
            try:
                client = self._clients.get(lease.api_key)
                response = client.models.generate_content(
                    model=slot.model,
                    contents=build_contents(request),
                    config=build_config(slot.model, call.options),
                )
            except Exception as exc:
                duration = time.perf_counter() - t0
                decision = self.rotator.release(lease, error=exc, attempt=number, retries_left=call.retries_left)
                call.attempt_done(lease, started_wall, duration, decision, exc)
                logger.info(
                    "attempt %d on %s failed (%s); pool: %s",
                    number,
                    slot,
                    decision.failure.kind.value if decision.failure else "error",
                    decision.label.value,
                )
                # The copy the call keeps (attempt_done): the raw error's frames and
                # request hold the key, and the caller's raise would carry them along.
                return decision, call.last_error or exc
            duration = time.perf_counter() - t0
            usage = TokenUsage.from_usage_metadata(response.usage_metadata)
            # Read once: the attempt's ledger, the event and the budget all need them.
            served_as, reason = served_tier(response), finish_reason(response)
            try:
                reply = read_reply(
                    response,
                    return_json=request.return_json,
                    schema=request.response_schema,
                    accept_truncation=request.accept_truncation,
                )
            except ReplyProblem as problem:
                # Gemini served the request (quota was spent), but the answer is unusable.
                error = _reply_error(problem, request.return_json, call.event_id)
                error.usage = usage  # type: ignore[attr-defined]  # billed all the same (budgets settle it)
                decision = self.rotator.release(
                    lease,
                    usage_input_tokens=usage.input,
                    invalid_output=True,
                    retryable=problem.retryable,
                    retries_left=call.retries_left,
                )
                # Gemini billed this reply even though we cannot use it: the attempt keeps its tokens.
                call.attempt_done(
                    lease,
                    started_wall,
                    duration,
                    decision,
                    error,
                    response=response,
                    usage=usage,
                    prices=pricing.get_prices(self._prices_file),
                    served_as=served_as,
                    reason=reason,
                )
                return decision, error
            decision = self.rotator.release(lease, usage_input_tokens=usage.input)
            call.attempt_done(
                lease,
                started_wall,
                duration,
                decision,
                response=response,
                usage=usage,
                prices=pricing.get_prices(self._prices_file),
                served_as=served_as,
                reason=reason,
            )
            return Served(reply.result, reply.text, usage, response, duration, served_as, reason)

    # -- events -------------------------------------------------------------------

    def _record_success(self, call: Call, served: Served) -> None:
        if not self._recording:
            return
        try:
            event = call.success_event(served, pricing.get_prices(self._prices_file))
        except Exception:
            # The caller has its answer; a price file or a reply field we cannot read
            # must not take it away. Keep what is certain and say what was not.
            logger.exception("could not build the full event %s; recording a reduced one", call.event_id)
            event = call.reduced_success_event(served)
        self._emit(event)

    def _record_failure(self, call: Call, error: BaseException) -> None:
        if self._recording:
            self._emit(call.failure_event(error))

    def _emit(self, event: CallEvent) -> None:
        # Telemetry must never fail a call; the sink is built not to raise, this is
        # the belt to its braces.
        try:
            self.telemetry.record(event)
        except Exception:
            logger.exception("telemetry refused event %s; the call itself is unaffected", event.event_id)
        if self._observers:
            notify(self._observers, event)


def _reply_error(problem: ReplyProblem, return_json: bool, event_id: str) -> InvalidResponseError:
    """The error of an attempt whose reply cannot be used."""
    if problem.kind == "blocked":
        # Blocked on this key means blocked on every key: one request, no retry.
        return BlockedResponseError(str(problem), reason=problem.reason, event_id=event_id)
    if problem.kind == "truncated":
        return TruncatedResponseError(
            str(problem),
            partial_text=problem.partial_text,
            finish_reason=problem.reason or "MAX_TOKENS",
            event_id=event_id,
        )
    hint = (
        " Ask for JSON explicitly in the prompt, or pass return_json=False."
        if return_json and problem.kind == "invalid_json"
        else ""
    )
    return InvalidResponseError(f"{problem}{hint}", event_id=event_id)
