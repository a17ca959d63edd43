"""A Gemini API emulator: a loopback HTTP server speaking Gemini's REST wire format.

Point the official SDK at it and test code against quotas, bad keys and server faults
without spending keys::

    from google import genai
    from google.genai import types
    from csctracker_ai_core.testing import GeminiEmulator

    with GeminiEmulator(keys=["k1"]) as emu:
        emu.set_quota("gemini-2.5-flash", rpm=2)
        client = genai.Client(api_key="k1", http_options=types.HttpOptions(base_url=emu.base_url))
        client.models.generate_content(model="gemini-2.5-flash", contents="capital da França?")
        assert emu.count(model="gemini-2.5-flash", status=200) == 1

Or from a shell: ``python -m csctracker_ai_core.testing.emulator --config emu.json``
(prints the base URL; see :meth:`EmulatorConfig.from_dict` for the file format).

Only the standard library is used, so the server starts and stops in milliseconds.
Quotas read time from an injectable clock (tests jump a day instead of waiting);
latency and slow replies really sleep, because they exist to exercise timeouts.
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..catalog import get_catalog, model_info
from ..clock import SYSTEM_CLOCK, Clock
from ..fingerprint import key_fingerprint
from . import emulator_errors as errors
from . import emulator_replies as replies
from . import emulator_wire as wire
from .emulator_errors import ErrorRule, ModelRule
from .emulator_quota import QuotaRule, QuotaTracker, quota_exceeded_body

__all__ = [
    "GeminiEmulator",
    "EmulatorConfig",
    "ErrorRule",
    "ModelRule",
    "KeySpec",
    "KeyState",
    "QuotaRule",
    "ReplyRule",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "DEFAULT_MODELS",
    "main",
]

logger = logging.getLogger(__name__)

DEFAULT_MODELS: tuple[str, ...] = tuple(sorted(get_catalog().models))
"""Every model of the shipped catalog (what each one takes is checked as the catalog says)."""

NO_KEY = "-"
"""Fingerprint used in counters for requests that carried no key."""


class KeyState(str, enum.Enum):
    """What the emulator answers for a key."""

    ACTIVE = "active"
    INVALID = "invalid"  # 400 API_KEY_INVALID
    LEAKED = "leaked"  # 403 "reported as leaked"
    SERVICE_BLOCKED = "service_blocked"  # 403 ErrorInfo API_KEY_SERVICE_BLOCKED
    SUSPENDED = "suspended"  # 403 ErrorInfo CONSUMER_SUSPENDED
    EXPIRED = "expired"  # 400 "API key expired", ErrorInfo API_KEY_INVALID
    SERVICE_DISABLED = "service_disabled"  # 403 ErrorInfo SERVICE_DISABLED (API off in the project)


class FaultKind(str, enum.Enum):
    """Faults that :meth:`GeminiEmulator.inject` can make the next requests meet."""

    INTERNAL = "500"
    OVERLOADED = "503"
    DEADLINE = "504"
    SLOW = "slow"  # sleep ``delay_s`` (real time), then answer normally
    HOLD = "hold"  # wait until release_held() (or delay_s as a safety), then answer normally
    DROP = "drop"  # close the connection without any response
    MALFORMED = "malformed"  # 200 with a body that is not JSON
    INVALID_JSON = "invalid_json"  # 200, well-formed, but the reply text is not valid JSON
    STREAM_ERROR = "stream_error"  # streaming: one chunk, then {"error": 503}; else a 503


@dataclass(frozen=True)
class KeySpec:
    """One API key known to the emulator. ``project=None``: the key is its own project."""

    key: str
    project: str | None = None
    tier: str = "free"  # free / paid
    state: KeyState = KeyState.ACTIVE

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", KeyState(self.state))
        if self.tier not in ("free", "paid"):
            raise ValueError(f"tier must be 'free' or 'paid', not {self.tier!r}")

    @property
    def project_id(self) -> str:
        """The project whose quotas this key spends (a key alone is its own project)."""
        return self.project or "key:" + key_fingerprint(self.key)

    def __repr__(self) -> str:  # never show the key itself
        return f"KeySpec({key_fingerprint(self.key)}, project={self.project!r}, tier={self.tier!r}, state={self.state.value!r})"


@dataclass(frozen=True)
class ReplyRule:
    """When the prompt contains ``contains`` (case-insensitive), answer this.

    ``text`` is the text-mode reply; ``json`` the JSON-mode one. If only one is given
    the other is derived (JSON of ``json``; ``{"resposta": text}``). ``model`` limits
    the rule to one model.

    Unusable replies, as Gemini sends them: ``finish_reason`` ``"SAFETY"``,
    ``"RECITATION"``, ``"PROHIBITED_CONTENT"``, ``"BLOCKLIST"`` or ``"SPII"`` (a
    candidate without content), ``"MAX_TOKENS"`` (the text, cut; with ``text=""``
    only thinking tokens), ``"OTHER"``; ``block_reason`` (no candidate,
    ``promptFeedback.blockReason``). ``thoughts`` sets the thinking tokens billed.
    ``raw=True`` sends ``text`` as it is in JSON mode too (models do fence JSON, or
    write a sentence around it).
    """

    contains: str
    text: str | None = None
    json: Any = None
    model: str | None = None
    finish_reason: str | None = None
    block_reason: str | None = None
    thoughts: int | None = None
    raw: bool = False

    def matches(self, prompt: str, model: str) -> bool:
        """True when this rule answers ``prompt`` sent to ``model``."""
        return (self.model is None or self.model == model) and self.contains.lower() in prompt.lower()

    def reply(self, json_mode: bool) -> str:
        """The reply text, valid JSON when ``json_mode`` (an explicit ``text=""`` stays empty)."""
        if self.raw or (self.text == "" and self.json is None):
            return self.text or ""
        if not json_mode:
            return self.text if self.text is not None else json.dumps(self.json, ensure_ascii=False)
        if self.json is not None:
            return json.dumps(self.json, ensure_ascii=False)
        try:
            json.loads(self.text or "")
            return self.text or ""
        except ValueError:
            return json.dumps({"resposta": self.text}, ensure_ascii=False)


BUILTIN_REPLIES: tuple[ReplyRule, ...] = (ReplyRule("capital da França", text="Paris", json={"resposta": "Paris"}),)


@dataclass(frozen=True)
class Fault:
    """``count`` next requests (matching ``model`` / key, when given) meet ``kind``.

    ``key_fingerprint`` filters by key without keeping the key; :meth:`GeminiEmulator.inject`
    takes the raw key and fingerprints it. ``message`` overrides an error body's message
    (e.g. :data:`~.emulator_wire.OVERLOADED_LEGACY`).
    """

    kind: FaultKind
    count: int = 1
    model: str | None = None
    key_fingerprint: str | None = None
    delay_s: float = 1.0
    message: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if self.count < 1:
            raise ValueError("count must be >= 1")

    def matches(self, model: str, fingerprint: str) -> bool:
        """True when this fault applies to a request of ``model`` with key ``fingerprint``."""
        return (self.model is None or self.model == model) and (
            self.key_fingerprint is None or self.key_fingerprint == fingerprint
        )


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator starts with; all of it can be changed at run time too."""

    models: tuple[str, ...] = DEFAULT_MODELS
    """Models served; others answer 404. ``"*"`` serves any name."""
    keys: tuple[KeySpec, ...] = ()
    unknown_keys: str = "accept"
    """``accept`` (as a free key, own project) or ``reject`` (400 API_KEY_INVALID)."""
    quotas: tuple[QuotaRule, ...] = ()
    """Limits by tier x model (rules, dicts, or ``{tier: {model: {rpm, rpd, tpm}}}``); none: unlimited."""
    minute_s: float = 60.0
    """Length of the per-minute windows (shorten it in tests)."""
    latency_s: float = 0.0
    """Added to every request (real sleep)."""
    legacy_error_order: bool = False
    """429 details with QuotaFailure first (pre-2026 bodies) instead of Help first."""
    echo_key: bool = False
    """Error bodies repeat the request's key, as Google does in some of them: a 403
    CONSUMER_SUSPENDED says "Permission denied: Consumer 'api_key:<the key>' has been
    suspended." and names it again in ErrorInfo metadata (continuedev/continue#10902).
    For tests that a key never leaks out of the client."""
    replies: tuple[ReplyRule, ...] = ()
    """Checked in order, before the built-in ones."""
    default_text: str | None = None
    default_json: Any = None
    """Default JSON reply; ``None`` means ``{"resposta": ..., "modelo": <model>}``."""
    echo_prompt: bool = False
    """Reply with the prompt's own text (``{"resposta": <prompt>}`` in JSON mode), before any rule:
    a test can check that each reply reached the process, thread or call that asked."""
    faults: tuple[Fault, ...] = ()
    record_bodies: int = 100
    """How many parsed request bodies to keep for :attr:`GeminiEmulator.requests` (0: none)."""
    # -- error cases (see emulator_errors.py) --
    errors: tuple[ErrorRule, ...] = ()
    """Scripted errors (``ErrorRule``s or dicts; in a file ``key`` is the raw key)."""
    model_rules: Mapping[str, Any] = field(default_factory=dict)
    """``{model: ModelRule or dict}``: what each model accepts (others: their family's rule)."""
    check_models: bool = True
    """Apply each model family's documented parameter checks (thinking levels and budgets)."""
    retired_models: tuple[str, ...] = ()
    """Models answering 404 "no longer available", for every key."""
    free_tier_unavailable: tuple[str, ...] = ()
    """Projects whose free keys get 400 FAILED_PRECONDITION "free tier is not available"."""
    location_unsupported: bool = False
    """Every key gets 400 FAILED_PRECONDITION "User location is not supported"."""
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""

    def __post_init__(self) -> None:
        # Accept lists, plain key strings and dicts, so programmatic use stays short.
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "keys", tuple(_as(KeySpec, k, "key") for k in self.keys))
        quotas: Any = self.quotas
        if isinstance(quotas, Mapping):  # {"free": {"*": {"rpm": 10}}, "paid": {...}}
            quotas = [
                QuotaRule(tier=t, model=m, **limits) for t, by_model in quotas.items() for m, limits in by_model.items()
            ]
        object.__setattr__(self, "quotas", tuple(_as(QuotaRule, q, "model") for q in quotas))
        object.__setattr__(self, "replies", tuple(_as(ReplyRule, r, "contains") for r in self.replies))
        object.__setattr__(self, "faults", tuple(_as(Fault, f, "kind") for f in self.faults))
        object.__setattr__(self, "errors", tuple(_as(ErrorRule, e, "status") for e in self.errors))
        object.__setattr__(
            self, "model_rules", {m: _as(ModelRule, r, "max_input_tokens") for m, r in dict(self.model_rules).items()}
        )
        object.__setattr__(self, "retired_models", tuple(self.retired_models))
        object.__setattr__(self, "free_tier_unavailable", tuple(self.free_tier_unavailable))
        if self.unknown_keys not in ("accept", "reject"):
            raise ValueError("unknown_keys must be 'accept' or 'reject'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmulatorConfig:
        """Build from parsed JSON. Fields as in the dataclass; additionally:

        - ``keys``: strings or ``{"key", "project", "tier", "state"}``;
        - ``quotas``: a list of ``{"tier", "model", "rpm", "rpd", "tpm"}`` or a mapping
          ``{"free": {"*": {"rpm": 10}, "gemini-2.5-pro": {"rpm": 0, "rpd": 0, "tpm": 0}}}``;
        - ``faults``: ``{"kind": "503", "count": 2, "model": ..., "key": <raw key>, "delay_s": ...}``;
        - ``error_order``: ``"2026"`` (default) or ``"legacy"``;
        - ``errors``: ``{"status": 403, "body": {...}, "model", "key": <raw key>, "project", "tier", "count"}``;
        - ``model_rules``: ``{"gemini-x": {"thinking_levels": ["LOW"], "max_input_tokens": 65536, "json_mode": false}}``;
        - ``retired_models``, ``free_tier_unavailable`` (project names), ``location_unsupported``.
        """
        data = dict(data)
        known = {f.name for f in fields(cls)}
        if "error_order" in data:
            data["legacy_error_order"] = data.pop("error_order") == "legacy"
        for name in ("faults", "errors"):  # a file names the raw key; the config keeps its fingerprint
            items = []
            for item in data.get(name, ()):
                item = dict(item)
                if "key" in item:
                    item["key_fingerprint"] = key_fingerprint(item.pop("key"))
                items.append(item)
            data[name] = items
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown emulator config fields: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str) -> EmulatorConfig:
        """Read a JSON config file (see :meth:`from_dict`)."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))


def _as(cls: type, value: Any, first_field: str) -> Any:
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls(**value)
    return cls(**{first_field: value})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it (bodies are kept only up to ``record_bodies``)."""

    key_fingerprint: str
    model: str
    method: str  # generateContent / streamGenerateContent / countTokens
    api_version: str
    status: int  # 0: connection dropped on purpose
    body: dict[str, Any] | None = field(default=None, compare=False)
    at: float = 0.0
    connection: str = field(default="", compare=False)  # the client's address: one per TCP connection


class _Counters:
    """Thread-safe call counters; one lock, tiny critical sections."""

    def __init__(self, keep_bodies: int) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str, int]] = Counter()
        self.in_flight: Counter[tuple[str, str]] = Counter()
        self.max_in_flight: dict[tuple[str, str], int] = {}
        self.requests: deque[RecordedRequest] = deque(maxlen=max(1, keep_bodies))
        self.keep_bodies = keep_bodies

    def enter(self, slot: tuple[str, str]) -> None:
        with self.lock:
            self.in_flight[slot] += 1
            if self.in_flight[slot] > self.max_in_flight.get(slot, 0):
                self.max_in_flight[slot] = self.in_flight[slot]

    def leave(self, slot: tuple[str, str], record: RecordedRequest) -> None:
        with self.lock:
            self.in_flight[slot] -= 1
            self.calls[(record.key_fingerprint, record.model, record.status)] += 1
            if self.keep_bodies > 0:
                self.requests.append(record)

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.requests.clear()
            # Requests still running keep their in-flight count; only the maxima restart.
            self.max_in_flight = {s: n for s, n in self.in_flight.items() if n > 0}


_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")
_KEY_IN_TEXT = re.compile(r"([?&]key=)[^&\s\"]+")


class _Reply:
    """What the handler should write back."""

    def __init__(
        self,
        status: int,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        drop: bool = False,
        events: list[bytes] | None = None,
    ) -> None:
        self.status, self.body, self.raw, self.drop, self.events = status, body, raw, drop, events
        self.headers = headers or {}


class GeminiEmulator:
    """The emulator. Start/stop it, or use it as a context manager.

    ``GeminiEmulator(config=None, *, clock=None, **fields)``: ``fields`` override
    :class:`EmulatorConfig` fields (``keys=["k1", KeySpec("k2", tier="paid")]``,
    ``minute_s=0.5`` ...). ``clock`` (``time() -> unix seconds``) drives quota windows.
    """

    def __init__(self, config: EmulatorConfig | None = None, *, clock: Clock | None = None, **overrides: Any) -> None:
        config = config or EmulatorConfig()
        if overrides:
            config = replace(config, **overrides)
        self.config = config
        self.clock = clock or SYSTEM_CLOCK
        self.latency_s = config.latency_s
        self.echo_key = config.echo_key
        self.models: set[str] = set(config.models)
        self._lock = threading.Lock()
        self._keys: dict[str, KeySpec] = {k.key: k for k in config.keys}
        self._faults: list[list[Any]] = [[f, f.count] for f in config.faults]  # [Fault, remaining]
        self.quotas = QuotaTracker(self.clock, config.minute_s, config.quotas)
        self._counters = _Counters(config.record_bodies)
        self._held = threading.Event()  # set by release_held(): HOLD faults answer
        self._errors: list[list[Any]] = [[e, e.count] for e in config.errors]  # [ErrorRule, remaining or None]
        self._model_rules: dict[str, ModelRule] = dict(config.model_rules)
        self._retired: set[str] = set(config.retired_models)
        self._no_free_tier: set[str] = set(config.free_tier_unavailable)
        self.location_unsupported = config.location_unsupported
        self.check_models = config.check_models
        # The ledger's cases. Gemini says which tier it served in x-gemini-service-tier
        # (priority above its limit is served and billed as standard): asked -> served.
        self.served_tiers: dict[str, str] = {}
        # cachedContentTokenCount to report (implicit caching), capped at the prompt.
        self.cached_tokens = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> GeminiEmulator:
        """Bind (a free port unless configured) and serve in a daemon thread."""
        if self._server is not None:
            return self
        server = _Server((self.config.host, self.config.port), _Handler)
        server.daemon_threads = True  # slow replies must not hold up stop()
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="gemini-emulator", daemon=True
        )
        self._thread.start()
        logger.info("Gemini emulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (requests still sleeping are abandoned)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # A stopped server must look down to every client, including those holding a
        # kept-alive connection (the SDK's pool does): close those too.
        server.close_connections()  # type: ignore[attr-defined]  # added to this server class below
        if self._thread is not None:
            self._thread.join(timeout=5)
        logger.info("Gemini emulator stopped")

    def __enter__(self) -> GeminiEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the emulator must be started)."""
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, for ``HttpOptions(base_url=...)``."""
        return f"http://{self.config.host}:{self.port}"

    def __repr__(self) -> str:
        where = self.base_url if self._server else "stopped"
        return f"GeminiEmulator({where}, keys={len(self._keys)})"

    # --- keys -----------------------------------------------------------------------

    def add_key(
        self, key: str, *, project: str | None = None, tier: str = "free", state: KeyState | str = KeyState.ACTIVE
    ) -> KeySpec:
        """Register (or replace) a key. Keys with the same ``project`` share quotas."""
        spec = KeySpec(key, project, tier, KeyState(state))
        with self._lock:
            self._keys[key] = spec
        return spec

    def add_keys(self, keys: Iterable[str | KeySpec], **kwargs: Any) -> None:
        """Register several keys, with the same ``project`` / ``tier`` / ``state`` unless given as KeySpec."""
        for k in keys:
            if isinstance(k, KeySpec):
                with self._lock:
                    self._keys[k.key] = k
            else:
                self.add_key(k, **kwargs)

    def set_key_state(self, key: str, state: KeyState | str) -> None:
        """Make a key active, invalid, leaked, service_blocked or suspended."""
        spec = self._key_spec(key)
        with self._lock:
            self._keys[key] = replace(spec, state=KeyState(state))

    def _key_spec(self, key: str) -> KeySpec:
        with self._lock:
            spec = self._keys.get(key)
        if spec is not None:
            return spec
        if self.config.unknown_keys == "reject":
            return KeySpec(key, state=KeyState.INVALID)
        return KeySpec(key)

    # --- quotas ---------------------------------------------------------------------

    def set_quota(
        self,
        model: str = "*",
        *,
        tier: str = "free",
        rpm: int | None = None,
        rpd: int | None = None,
        tpm: int | None = None,
    ) -> None:
        """Set the limits of ``model`` (or ``"*"``) on ``tier``; ``None`` = unlimited, 0 = no quota."""
        self.quotas.set_rule(QuotaRule(tier, model, rpm, rpd, tpm))

    def no_quota(self, model: str, *, tier: str = "free") -> None:
        """``model`` has no quota on ``tier``: every call answers 429 ``limit: 0``."""
        self.set_quota(model, tier=tier, rpm=0, rpd=0, tpm=0)

    def clear_quotas(self) -> None:
        """Remove every limit."""
        self.quotas.clear_rules()

    def reset_usage(self) -> None:
        """Forget consumed quota (limits stay)."""
        self.quotas.reset_usage()

    def quota_usage(self, key: str, model: str) -> dict[str, int]:
        """Usage of the project of ``key`` on ``model``: ``{"rpm", "rpd", "tpm"}``."""
        return self.quotas.usage(self._key_spec(key).project_id, model)

    @property
    def minute_s(self) -> float:
        """Length of the per-minute windows, in seconds."""
        return self.quotas.minute_s

    @minute_s.setter
    def minute_s(self, value: float) -> None:
        self.quotas.minute_s = float(value)

    # --- faults ---------------------------------------------------------------------

    def inject(
        self,
        kind: FaultKind | str,
        count: int = 1,
        *,
        model: str | None = None,
        key: str | None = None,
        delay_s: float = 1.0,
        message: str | None = None,
    ) -> Fault:
        """The next ``count`` requests (of ``model`` / ``key`` if given) meet the fault ``kind``."""
        fault = Fault(
            FaultKind(kind), count, model, key_fingerprint(key) if key is not None else None, delay_s, message
        )
        with self._lock:
            self._faults.append([fault, count])
        return fault

    def release_held(self) -> None:
        """Let every request held by a ``hold`` fault answer (and later ones pass at once)."""
        self._held.set()

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> int:
        """How many faulty answers are still queued."""
        with self._lock:
            return sum(n for _, n in self._faults)

    def _take_fault(self, model: str, fingerprint: str) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault: Fault = entry[0]
                remaining: int = entry[1]
                if fault.matches(model, fingerprint):
                    if remaining <= 1:
                        self._faults.remove(entry)
                    else:
                        entry[1] = remaining - 1
                    return fault
        return None

    # --- error cases (bodies and rules in emulator_errors.py) ---------------------------

    def add_error(
        self,
        status: int,
        body: Mapping[str, Any],
        *,
        model: str | None = None,
        key: str | None = None,
        project: str | None = None,
        tier: str | None = None,
        count: int | None = None,
    ) -> ErrorRule:
        """Answer ``status`` / ``body`` to matching requests (``count`` times, or for ever)."""
        rule = ErrorRule(status, body, model, key_fingerprint(key) if key is not None else None, project, tier, count)
        with self._lock:
            self._errors.append([rule, count])
        return rule

    def deny_model(
        self, model: str, *, key: str | None = None, project: str | None = None, count: int | None = None
    ) -> ErrorRule:
        """403 PERMISSION_DENIED (no key-level reason) for ``model``, for one key/project or all."""
        return self.add_error(403, errors.permission_denied_body(), model=model, key=key, project=project, count=count)

    def retire_model(self, model: str) -> None:
        """``model`` answers 404 "no longer available" to every key from now on."""
        with self._lock:
            self._retired.add(model)

    def set_model_rule(self, model: str, rule: ModelRule | None = None, **fields_: Any) -> ModelRule:
        """What ``model`` accepts (a :class:`ModelRule`, or its fields): other requests get its real 400."""
        rule = rule if rule is not None else ModelRule(**fields_)
        with self._lock:
            self._model_rules[model] = rule
        return rule

    def model_rule(self, model: str) -> ModelRule:
        """The rule in force for ``model`` (explicit, else its family's when ``check_models``)."""
        rule = self._model_rules.get(model)
        if rule is not None:
            return rule
        return errors.default_model_rule(model) if self.check_models else ModelRule()

    def block_free_tier(self, project: str) -> None:
        """The free keys of ``project`` get 400 "free tier is not available in your country"."""
        with self._lock:
            self._no_free_tier.add(project)

    def clear_errors(self) -> None:
        """Drop scripted errors, retirements, model rules, free-tier blocks and the location block."""
        with self._lock:
            self._errors.clear()
            self._retired.clear()
            self._model_rules.clear()
            self._no_free_tier.clear()
            self.location_unsupported = False

    def _take_error(self, model: str, spec: KeySpec) -> ErrorRule | None:
        fp = key_fingerprint(spec.key)
        with self._lock:
            for entry in self._errors:
                rule: ErrorRule = entry[0]
                remaining: int | None = entry[1]
                if rule.matches(model, fp, spec.project_id, spec.tier):
                    if remaining is not None:
                        if remaining <= 1:
                            self._errors.remove(entry)
                        else:
                            entry[1] = remaining - 1
                    return rule
        return None

    def _error_case(self, model: str, method: str, spec: KeySpec, parsed: wire.ParsedRequest) -> _Reply | None:
        """The error this request meets before any quota is spent, if any."""
        rule = self._take_error(model, spec)
        if rule is not None:
            return _Reply(rule.status, dict(rule.body))
        if spec.tier == "free" and spec.project_id in self._no_free_tier:
            return _Reply(400, errors.free_tier_unavailable_body())
        if self.location_unsupported:
            return _Reply(400, errors.location_unsupported_body())
        if method != "countTokens":
            refused = errors.check_request(model, parsed, self.model_rule(model))
            if refused is not None:
                return _Reply(*refused)
        return None

    # --- counters -------------------------------------------------------------------

    def _fp(self, key: str | None, fingerprint: str | None) -> str | None:
        return key_fingerprint(key) if key is not None else fingerprint

    def calls(self) -> dict[tuple[str, str, int], int]:
        """Snapshot: ``{(key_fingerprint, model, http_status): count}`` (status 0: dropped)."""
        with self._counters.lock:
            return dict(self._counters.calls)

    def count(
        self,
        *,
        key: str | None = None,
        fingerprint: str | None = None,
        model: str | None = None,
        status: int | None = None,
    ) -> int:
        """Number of finished requests matching every filter given."""
        fp = self._fp(key, fingerprint)
        return sum(
            n
            for (f, m, s), n in self.calls().items()
            if (fp is None or f == fp) and (model is None or m == model) and (status is None or s == status)
        )

    @property
    def total_requests(self) -> int:
        """Finished generate/stream/countTokens requests, any status."""
        return self.count()

    @property
    def rate_limited(self) -> int:
        """Requests answered 429."""
        return self.count(status=429)

    def max_in_flight(self, *, key: str | None = None, fingerprint: str | None = None, model: str | None = None) -> int:
        """Most requests in flight at once for one (key, model) pair, max over the pairs matching."""
        fp = self._fp(key, fingerprint)
        with self._counters.lock:
            values = [
                n
                for (f, m), n in self._counters.max_in_flight.items()
                if (fp is None or f == fp) and (model is None or m == model)
            ]
        return max(values, default=0)

    def in_flight(self, *, key: str | None = None, fingerprint: str | None = None, model: str | None = None) -> int:
        """Requests being served right now, summed over the (key, model) pairs matching."""
        fp = self._fp(key, fingerprint)
        with self._counters.lock:
            return sum(
                n
                for (f, m), n in self._counters.in_flight.items()
                if (fp is None or f == fp) and (model is None or m == model)
            )

    @property
    def requests(self) -> list[RecordedRequest]:
        """The last ``record_bodies`` requests, oldest first, with their parsed bodies."""
        with self._counters.lock:
            return list(self._counters.requests)

    @property
    def last_request(self) -> RecordedRequest | None:
        """The most recent finished request, if any was recorded."""
        with self._counters.lock:
            return self._counters.requests[-1] if self._counters.requests else None

    def reset_counters(self) -> None:
        """Zero the counters and recorded requests (quota usage is separate: :meth:`reset_usage`)."""
        self._counters.reset()

    # --- serving --------------------------------------------------------------------

    def _serve(
        self, version: str, model: str, method: str, key: str | None, raw_body: bytes, connection: str = ""
    ) -> _Reply:
        """Answer one API request (called by the handler thread)."""
        fp = key_fingerprint(key) if key else NO_KEY
        slot = (fp, model)
        self._counters.enter(slot)
        reply = _Reply(500, wire.internal_body())
        body: dict[str, Any] | None = None
        try:
            if self.latency_s > 0:
                time.sleep(self.latency_s)
            try:
                body = json.loads(raw_body or b"{}")
            except ValueError:
                body = None
            reply = self._answer(version, model, method, key, body if isinstance(body, dict) else None, raw_body)
            if self.echo_key and key and reply.status >= 400 and isinstance(reply.body, dict):
                reply.body = _with_key_echo(reply.body, key)
        except Exception:  # a bug here must still answer like a server, and be visible
            logger.exception("emulator failed on %s:%s", model, method)
        finally:
            record = RecordedRequest(
                fp,
                model,
                method,
                version,
                0 if reply.drop else reply.status,
                body if isinstance(body, dict) else None,
                self.clock.time(),
                connection,
            )
            self._counters.leave(slot, record)
        return reply

    def _answer(
        self, version: str, model: str, method: str, key: str | None, body: dict[str, Any] | None, raw_body: bytes
    ) -> _Reply:
        if not key:
            return _Reply(403, wire.missing_key_body())
        spec = self._key_spec(key)
        if spec.state is KeyState.INVALID:
            return _Reply(400, wire.invalid_key_body())
        if spec.state is KeyState.LEAKED:
            return _Reply(403, wire.leaked_key_body())
        if spec.state is KeyState.SERVICE_BLOCKED:
            return _Reply(403, wire.blocked_key_body("API_KEY_SERVICE_BLOCKED"))
        if spec.state is KeyState.SUSPENDED:
            return _Reply(403, wire.blocked_key_body("CONSUMER_SUSPENDED"))
        if spec.state is KeyState.EXPIRED:
            return _Reply(400, errors.expired_key_body())
        if spec.state is KeyState.SERVICE_DISABLED:
            return _Reply(403, errors.service_disabled_body())
        if model in self._retired:
            return _Reply(404, errors.retired_model_body(model))
        if model not in self.models and "*" not in self.models:
            return _Reply(404, wire.model_not_found_body(model, version, method))
        if body is None:
            return _Reply(400, wire.bad_request_body("Invalid JSON payload received. Unexpected token."))
        try:
            parsed = wire.parse_request(body)
        except wire.RequestError as exc:
            return _Reply(400, wire.bad_request_body(str(exc)))

        refused = self._error_case(model, method, spec, parsed)
        if refused is not None:
            return refused

        fault = self._take_fault(model, key_fingerprint(key))
        if fault is not None:
            logger.debug("emulator fault %s for %s", fault.kind.value, model)
            if fault.kind is FaultKind.SLOW:
                time.sleep(fault.delay_s)
            elif fault.kind is FaultKind.HOLD:
                self._held.wait(fault.delay_s)
            elif fault.kind is FaultKind.DROP:
                return _Reply(0, drop=True)
            elif fault.kind is FaultKind.INTERNAL:
                return _Reply(500, _with_message(wire.internal_body(), fault.message))
            elif fault.kind is FaultKind.DEADLINE:
                return _Reply(504, _with_message(wire.deadline_body(), fault.message))
            elif fault.kind is FaultKind.OVERLOADED or (
                fault.kind is FaultKind.STREAM_ERROR and method != "streamGenerateContent"
            ):
                return _Reply(503, wire.overloaded_body(fault.message or wire.OVERLOADED_2026))

        if method == "countTokens":
            # countTokens has its own (generous) quota upstream; it never spends generate quota.
            return _Reply(
                200, {"totalTokens": parsed.prompt_tokens, "promptTokensDetails": parsed.prompt_token_details()}
            )

        verdict = self.quotas.admit(spec.project_id, model, spec.tier, parsed.prompt_tokens)
        if not verdict.admitted:
            return _Reply(429, quota_exceeded_body(verdict, self.quotas.minute_s, self.config.legacy_error_order))

        tier = parsed.service_tier if parsed.service_tier in ("flex", "priority") else "standard"
        tier = self.served_tiers.get(tier, tier)
        headers = {"x-gemini-service-tier": tier}
        rule = self._rule(parsed, model)
        text = self._reply_text(parsed, model, rule)
        kind = fault.kind if fault is not None else None
        if kind is FaultKind.INVALID_JSON:
            text = text[: max(1, len(text) // 2)] + "…"  # cut mid-value: never valid JSON
        if kind is FaultKind.MALFORMED:
            raw = b"<html><body>upstream connect error or disconnect/reset before headers</body></html>"
            if method == "streamGenerateContent":
                return _Reply(200, headers=headers, events=[b"data: " + raw + b"\r\n\r\n"])
            return _Reply(200, raw=raw, headers=headers)
        body = replies.reply_body(
            model,
            parsed,
            text,
            finish_reason=rule.finish_reason if rule else None,
            block_reason=rule.block_reason if rule else None,
            thoughts=rule.thoughts if rule else None,
        )
        candidates = body.get("candidates") or [{}]
        if method == "streamGenerateContent" and candidates[0].get("finishReason") != "STOP":
            # Blocked or cut: one chunk that says so, as the last chunk of a stream would.
            return _Reply(200, headers=headers, events=[b"data: " + wire.dumps(body) + b"\r\n\r\n"])
        if method == "streamGenerateContent":
            events = [b"data: " + wire.dumps(c) + b"\r\n\r\n" for c in _stream_chunks(model, parsed, text)]
            if kind is FaultKind.STREAM_ERROR:
                error = wire.overloaded_body(fault.message or wire.OVERLOADED_2026) if fault else {}
                events = events[:1] + [b"data: " + wire.dumps(error) + b"\r\n\r\n"]
            return _Reply(200, headers=headers, events=events)
        self._add_cached(body["usageMetadata"])
        return _Reply(200, body, headers=headers)

    def _add_cached(self, usage: dict[str, Any]) -> None:
        # cachedContentTokenCount as implicit caching reports it: part of the prompt.
        if self.cached_tokens:
            usage["cachedContentTokenCount"] = min(self.cached_tokens, usage["promptTokenCount"])

    def _rule(self, parsed: wire.ParsedRequest, model: str) -> ReplyRule | None:
        for rule in self.config.replies + BUILTIN_REPLIES:
            if rule.matches(parsed.prompt_text, model):
                return rule
        return None

    def _reply_text(self, parsed: wire.ParsedRequest, model: str, rule: ReplyRule | None) -> str:
        if self.config.echo_prompt:
            text = parsed.prompt_text
            return json.dumps({"resposta": text}, ensure_ascii=False) if parsed.json_mode else text
        if rule is not None:
            return rule.reply(parsed.json_mode)
        if parsed.json_mode:
            default = self.config.default_json
            if default is None:
                default = {"resposta": "Resposta simulada pelo emulador Gemini.", "modelo": model}
            return json.dumps(default, ensure_ascii=False)
        return self.config.default_text or f"Resposta simulada pelo emulador Gemini ({model})."

    def _serve_models(self, version: str, model: str | None) -> _Reply:
        """GET models / models/{model}: enough of ListModels for clients that probe it."""

        def describe(name: str) -> dict[str, Any]:
            return {
                "name": f"models/{name}",
                "displayName": name,
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            }

        if model is None:
            return _Reply(200, {"models": [describe(m) for m in sorted(self.models) if m != "*"]})
        if model in self.models or "*" in self.models:
            return _Reply(200, describe(model))
        return _Reply(404, wire.model_not_found_body(model, version, "get"))


def _with_key_echo(body: dict[str, Any], key: str) -> dict[str, Any]:
    """``body`` naming ``key`` as the consumer, in the message and in a detail entry."""
    error = body.get("error")
    if not isinstance(error, dict):
        return body
    consumer = f"api_key:{key}"
    error["message"] = f"{error.get('message', '')} Consumer '{consumer}'.".strip()
    details = error.setdefault("details", [])
    if isinstance(details, list):
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": f"Consumer '{consumer}': {error['message']}",
            }
        )
        for item in details:
            if isinstance(item, dict) and item.get("@type", "").endswith("google.rpc.ErrorInfo"):
                item.setdefault("metadata", {})["containerInfo"] = consumer
    return body


def _with_message(body: dict[str, Any], message: str | None) -> dict[str, Any]:
    if message:
        body["error"]["message"] = message
    return body


def _response(
    model: str,
    parsed: wire.ParsedRequest,
    piece: str,
    thoughts: int,
    chars_so_far: int,
    *,
    final: bool,
    thought_part: bool = True,
    response_id: str | None = None,
) -> dict[str, Any]:
    """One GenerateContentResponse (or stream chunk) with cumulative usage."""
    parts: list[dict[str, Any]] = []
    if thoughts and thought_part:
        parts.append({"text": replies.THOUGHT_TEXT, "thought": True})
    parts.append({"text": piece})
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if final:
        candidate["finishReason"] = "STOP"
    prompt = parsed.prompt_tokens
    out = wire.text_tokens("x" * chars_so_far) if chars_so_far else 0
    usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": out}
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = prompt + out + thoughts
    usage["promptTokensDetails"] = parsed.prompt_token_details()
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id or wire.new_response_id(),
    }


def _stream_chunks(model: str, parsed: wire.ParsedRequest, text: str) -> list[dict[str, Any]]:
    """Split ``text`` in up to 3 chunks; usage is cumulative, the last one has finishReason."""
    n = max(1, min(3, len(text)))
    step = -(-len(text) // n) if text else 1
    pieces = [text[i : i + step] for i in range(0, len(text), step)] or [""]
    response_id = wire.new_response_id()
    thoughts = replies.thoughts_tokens(model_info(model), parsed)
    chunks, done = [], 0
    for i, piece in enumerate(pieces):
        done += len(piece)
        chunks.append(
            _response(
                model,
                parsed,
                piece,
                thoughts,
                done,
                final=i == len(pieces) - 1,
                thought_part=i == 0,
                response_id=response_id,
            )
        )
    return chunks


class _Server(ThreadingHTTPServer):
    """The HTTP server, keeping its open connections so ``stop()`` can close them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            conns, self._connections = list(self._connections), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) or a connection closed by stop() is normal
        # here; socketserver's default prints a traceback to stderr for each.
        logger.debug("request from %s ended with an error", client_address, exc_info=sys.exc_info())


def _request_key(header: str | None, query: str) -> str | None:
    """The key of a request: the x-goog-api-key header, or the older ?key= parameter."""
    if header:
        return header
    values = parse_qs(query).get("key")
    return values[0] if values else None


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, so the SDK's connection pool works as against Google."""

    protocol_version = "HTTP/1.1"

    # Headers and body leave in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (about 40 ms a request on Linux loopback). Google's frontends
    # answer in microseconds of that, so the emulator must too.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.track(self.connection, False)  # type: ignore[attr-defined]
        super().finish()

    def version_string(self) -> str:
        return "scaffolding on HTTPServer2"  # the Server header Google's frontends send

    @property
    def emulator(self) -> GeminiEmulator:
        emulator: GeminiEmulator = self.server.emulator  # type: ignore[attr-defined]
        return emulator

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        match = _PATH.match(url.path)
        if match is None:
            self._send(_Reply(404, wire.error_body(404, "NOT_FOUND", "Requested entity was not found.")))
            return
        version, model, method = match.groups()
        model = model.removeprefix("models/")
        key = _request_key(self.headers.get("x-goog-api-key"), url.query)
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        self._send(self.emulator._serve(version, model, method, key, raw, peer))

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        match = re.match(r"^/(v1|v1beta|v1alpha)/models(?:/([^/:]+))?$", url.path)
        key = _request_key(self.headers.get("x-goog-api-key"), url.query)
        if match is None:
            self._send(_Reply(404, wire.error_body(404, "NOT_FOUND", "Requested entity was not found.")))
        elif not key:
            self._send(_Reply(403, wire.missing_key_body()))
        else:
            self._send(self.emulator._serve_models(match.group(1), match.group(2)))

    def _send(self, reply: _Reply) -> None:
        try:
            if reply.drop:
                # Close without a byte, like a proxy that lost the upstream.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if reply.events is not None:
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for event in reply.events:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                return
            payload = reply.raw if reply.raw is not None else wire.dumps(reply.body)
            self.send_response(reply.status)
            ctype = "text/html" if reply.raw is not None else "application/json; charset=UTF-8"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError, OSError):
            # The client gave up (timeout) while we slept: nothing left to answer.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        # Through logging, with ?key= redacted: request lines may carry a raw key.
        line = format % tuple(_KEY_IN_TEXT.sub(r"\1REDACTED", str(a)) for a in args)
        logger.debug("%s %s", self.address_string(), line)


def _announce(emu: GeminiEmulator) -> None:
    # The command's one line of output: the address callers point the SDK at.
    sys.stdout.write(emu.base_url + "\n")
    sys.stdout.flush()


def serve_until_stopped(config: EmulatorConfig, on_start: Callable[[GeminiEmulator], None]) -> None:
    """Run an emulator with ``config`` until Ctrl-C or SIGTERM; ``on_start`` gets it once up.

    The command line of this module and ``csc-ai emulator`` both serve through here.
    """
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with GeminiEmulator(config) as emu:
            on_start(emu)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def config_with_overrides(path: str | None, port: int | None, host: str | None) -> EmulatorConfig:
    """The config in ``path`` (or the defaults), with ``port`` / ``host`` when given."""
    config = EmulatorConfig.from_file(path) if path else EmulatorConfig()
    if port is not None:
        config = replace(config, port=port)
    if host:
        config = replace(config, host=host)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m csctracker_ai_core.testing.emulator --config FILE [--port N] [--host H]``."""
    parser = argparse.ArgumentParser(
        prog="python -m csctracker_ai_core.testing.emulator",
        description="Run the Gemini API emulator until interrupted.",
    )
    parser.add_argument("--config", help="JSON config file (keys, quotas, replies, faults...)")
    parser.add_argument("--port", type=int, help="port to bind (default: config, else a free one)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args(argv)
    config = config_with_overrides(args.config, args.port, args.host)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_until_stopped(config, _announce)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
