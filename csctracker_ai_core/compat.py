"""The original library's (csctracker-ai-core 26.37.1) lower-level surface, as thin
adapters over :class:`~csctracker_ai_core.pool.rotator.ApiKeyRotator`.

Code written against the original keeps running unchanged::

    rotator = APIKeyRotator(logger, "gemini-2.5-flash=1", "KEY1,KEY2", "PAID1")
    key, model, tier = rotator.select_and_reserve_best_slot(model_variant="flash")
    if key is None:
        ...                                    # nothing free right now
    try:
        reply = genai.Client(api_key=key).models.generate_content(model=model, ...)
        rotator.liberar_slot_model(key, model)
    except Exception as e:
        rotator.liberar_slot_model(key, model)
        if rotator.processar_exception(key, model, e):
            ...                                # quota or key: another slot will serve

What each call does here, and where it differs from the original:

=============================================  ==============================================
``APIKeyRotator(logger, limits, free, paid)``  the pool; ``logger`` is kept as ``.logger`` but
                                               log lines go to this package's loggers (keys as
                                               fingerprints); ``None`` arguments fall back to
                                               ``GOOGLE_MODEL_LIMITS`` / ``GOOGLE_FREE_KEYS`` /
                                               ``GOOGLE_PAID_KEYS`` as in the original
``select_and_reserve_best_slot(...)``          ``(key, model, "free"|"paid")`` or
                                               ``(None, None, None)``; never waits
``liberar_slot_model(key, model)``             gives the slot back (idempotent per reservation)
``processar_exception(key, model, exc)``       applies the failure with the pool's scopes
                                               (quota per project x model, bad key, model not
                                               found...); ``True`` when the pool took the slot
                                               or key out (another will serve), like the
                                               original's "quota or invalid key"
``suspender_modelo(key, model, seconds)``      that key x model serves nothing for ``seconds``
``get_total_capacity()``                       usable keys x models (at least 1)
``remove_key(key)``                            the key serves nothing more; ``True`` the first
                                               time, ``False`` for an unknown or removed key
=============================================  ==============================================

Every other attribute (``acquire``, ``release``, ``status``...) is the wrapped
:class:`ApiKeyRotator`'s, so one object serves old and new code.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .exceptions import ConfigurationError, InvalidInputError, QuotaExhaustedError
from .fingerprint import key_fingerprint
from .pool.classify import classify_failure
from .pool.decision import FailureKind
from .pool.lease import Lease
from .pool.rotator import ApiKeyRotator
from .settings import Settings
from .validation import seconds_setting

__all__ = ["APIKeyRotator", "ApiKeyRotator", "wrap"]

_log = logging.getLogger(__name__)

# Failures after which the original told its caller "switch key" (429, invalid key);
# ours also take a model the key cannot reach out of the pool.
_SLOT_TAKEN_OUT = frozenset(
    {
        FailureKind.QUOTA_PER_MINUTE,
        FailureKind.QUOTA_PER_DAY,
        FailureKind.QUOTA_NO_ACCESS,
        FailureKind.QUOTA_UNKNOWN,
        FailureKind.KEY_INVALID,
        FailureKind.MODEL_NOT_FOUND,
    }
)

Keys = str | Sequence[str] | None


class APIKeyRotator:
    """The original ``APIKeyRotator(logger, google_models_limits, google_free_keys,
    google_paid_keys)``, over an :class:`ApiKeyRotator` (see the module's table).

    ``rotator=`` wraps an existing pool instead of building one (that is what
    ``IaProcessor.api_key_rotator`` returns); ``env=`` replaces ``os.environ``; other
    keyword arguments go to :class:`ApiKeyRotator` (``projects``, ``known_limits``...).
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        google_models_limits: str | Mapping[str, int] | None = None,
        google_free_keys: Keys = None,
        google_paid_keys: Keys = None,
        *,
        rotator: ApiKeyRotator | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.logger = logger
        if rotator is None:
            settings = Settings.load(
                env=env,
                google_models_limits=google_models_limits,
                google_free_keys=google_free_keys,
                google_paid_keys=google_paid_keys,
                telemetry="off",
            )
            rotator = ApiKeyRotator(settings.free_keys, settings.paid_keys, dict(settings.model_limits), **options)
        self.rotator = rotator
        self._lock = threading.Lock()
        self._reserved: dict[tuple[str, str], list[Lease]] = defaultdict(list)
        self._removed: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found here: the new API of the wrapped pool.
        if name == "rotator":  # during unpickling or a failed __init__
            raise AttributeError(name)
        return getattr(self.rotator, name)

    def __repr__(self) -> str:
        return f"APIKeyRotator({self.rotator!r})"

    # -- reservations --

    def select_and_reserve_best_slot(
        self,
        model_variant: str | None = None,
        variant_family: str | None = None,
        forced_paid: bool = False,
        forced_free: bool = False,
        exact_match: bool = False,
    ) -> tuple[str | None, str | None, str | None]:
        """Reserve the best free slot now: ``(key, model, tier)``, or ``(None, None, None)``
        when none can serve (busy, suspended, or no model matches). Never waits."""
        try:
            lease = self.rotator.acquire(
                model_variant=model_variant,
                exact_match=exact_match,
                family=variant_family,
                forced_free=forced_free,
                forced_paid=forced_paid,
                max_wait_s=0,
            )
        except (QuotaExhaustedError, InvalidInputError) as exc:
            _log.debug("no slot for the original API's reservation: %s", exc)
            return None, None, None
        with self._lock:
            self._reserved[(lease.api_key, lease.slot.model)].append(lease)
        return lease.api_key, lease.slot.model, lease.slot.tier

    def _pop(self, key: str, model: str) -> Lease | None:
        with self._lock:
            leases = self._reserved.get((key, model))
            if not leases:
                return None
            lease = leases.pop()
            if not leases:
                del self._reserved[(key, model)]
            return lease

    def liberar_slot_model(self, key: str, model: str) -> None:
        """Give back a slot reserved by :meth:`select_and_reserve_best_slot`."""
        lease = self._pop(key, model)
        if lease is not None:
            self.rotator.release(lease)

    def processar_exception(self, key: str, model: str, exception: BaseException) -> bool:
        """Apply what ``exception`` means to ``key`` x ``model``; ``True`` when the pool
        took that slot, its project's quota or the key out (another slot will serve)."""
        lease = self._pop(key, model)
        if lease is not None:  # called before liberar_slot_model: release with the error
            decision = self.rotator.release(lease, error=exception)
            failure = decision.failure
        else:
            slot = self.rotator.slot_for(key, model)
            if slot is None:
                return False
            failure = self.rotator.report(slot, exception).failure
        if failure is None:
            failure = classify_failure(exception)
        return failure.kind in _SLOT_TAKEN_OUT

    # -- administration --

    def suspender_modelo(self, key: str, model: str, segundos: float) -> None:
        """``key`` x ``model`` serves nothing for ``segundos`` seconds (a longer
        suspension already in place is kept). Unknown keys or models are ignored."""
        seconds = seconds_setting("segundos", segundos)
        slot = self.rotator.slot_for(key, model)
        if slot is not None:
            self.rotator.suspend(slot, seconds, "suspended by suspender_modelo()")

    def get_total_capacity(self) -> int:
        """Keys still serving x configured models (at least 1), the original's bound
        on the attempts of one call."""
        serving = {s.key_fingerprint for s in self.rotator.status().slots if not s.disabled}
        return max(1, len(serving) * len(self.rotator.models))

    def remove_key(self, key_to_remove: str) -> bool:
        """Take ``key_to_remove`` out for the life of the process; ``True`` if it was in."""
        fp = key_fingerprint(key_to_remove)
        with self._lock:
            if fp in self._removed or not any(s.key_fingerprint == fp for s in self.rotator.status().slots):
                return False
            self._removed.add(fp)
        self.rotator.state.disable_key(fp, "removed by remove_key()")
        return True


def wrap(rotator: Any) -> APIKeyRotator:
    """``rotator`` with the original's methods (an :class:`APIKeyRotator` stays as is)."""
    if isinstance(rotator, APIKeyRotator):
        return rotator
    if not isinstance(rotator, ApiKeyRotator):
        raise ConfigurationError(f"expected an ApiKeyRotator, got {type(rotator).__name__}")
    return APIKeyRotator(rotator=rotator)
