"""Parsing the pool's configuration: key lists, projects, ``GOOGLE_MODEL_LIMITS``, known limits.

Key lists
    A list of strings, or one string separated by commas, semicolons or newlines.
    Whitespace around entries is ignored, empty entries are skipped, duplicates are
    dropped (first one kept). An entry ``project:KEY`` puts the key in that Google
    Cloud project (Google keys never contain ``:``; the project is everything before
    the *last* colon, so domain-scoped ids such as ``example.com:proj`` work).
    ``projects={"proj-a": [key1, key2]}`` (values: list or comma string) does the same
    for keys listed in ``free_keys`` / ``paid_keys``. A key without a project is its
    own project (named by its fingerprint). Quotas are per project: a per-project 429
    suspends every key of that project for that model.

GOOGLE_MODEL_LIMITS
    JSON ``{"gemini-2.5-flash": 2}`` or ``gemini-2.5-flash=2,gemini-2.5-pro=1``: the
    models the pool uses and how many requests may be in flight on each key x model.
    Unset or empty: the catalog's defaults (``catalog.default_model_limits``: the newest
    current flash and flash-lite models). Unlike the original library an
    unreadable value raises :class:`ConfigurationError` instead of silently falling
    back to the defaults.

Known limits
    ``{"gemini-2.5-flash": {"free": {"rpm": 10, "rpd": 250, "tpm": 250000}}}``
    (per model, per tier; a model mapped straight to ``{"rpm": ...}`` applies to both
    tiers; JSON text accepted). Counted per project x model by ``limits.py``.

Errors never contain a key: keys are named by fingerprint or by position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ..catalog import default_model_limits
from ..exceptions import ConfigurationError
from ..fingerprint import key_fingerprint

__all__ = [
    "FREE",
    "PAID",
    "TIERS",
    "KeySpec",
    "KnownLimits",
    "KeysInput",
    "parse_key_list",
    "build_key_specs",
    "parse_model_limits",
    "parse_known_limits",
]

FREE = "free"
PAID = "paid"
TIERS = (FREE, PAID)

KeysInput = str | Iterable[str] | None

_SEPARATORS = re.compile(r"[,;\n\r]+")


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One configured key. ``api_key`` is kept out of ``repr``."""

    api_key: str = field(repr=False)
    fingerprint: str
    tier: str
    project: str


@dataclass(frozen=True, slots=True)
class KnownLimits:
    """Limits Google applies per project x model on a tier; ``None`` = not enforced locally."""

    rpm: int | None = None  # requests per minute
    rpd: int | None = None  # requests per day (Pacific day)
    tpm: int | None = None  # input tokens per minute

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.rpd is None and self.tpm is None


def _entries(value: KeysInput, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        raw = _SEPARATORS.split(value)
    else:
        try:
            raw = list(value)
        except TypeError:
            raise ConfigurationError(f"{what} must be a list of keys or a comma-separated string") from None
    out = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, str):
            raise ConfigurationError(f"{what}: entry #{i} is a {type(item).__name__}, not a string")
        item = item.strip()
        if item:
            out.append(item)
    return out


def parse_key_list(value: KeysInput, what: str = "keys") -> list[tuple[str | None, str]]:
    """``[(project or None, key), ...]`` from a key list, deduplicated in order.

    >>> parse_key_list(" a , proj:b ,a")
    [(None, 'a'), ('proj', 'b')]
    """
    seen: dict[str, str | None] = {}
    for i, entry in enumerate(_entries(value, what), 1):
        project: str | None = None
        key = entry
        if ":" in entry:
            project, key = (part.strip() for part in entry.rsplit(":", 1))
            if not project:
                raise ConfigurationError(f"{what}: entry #{i} has an empty project before ':'")
        if not key:
            raise ConfigurationError(f"{what}: entry #{i} has a project but no key after ':'")
        if any(ch.isspace() for ch in key):
            raise ConfigurationError(
                f"{what}: entry #{i} contains whitespace inside the key; separate keys with commas"
            )
        if key in seen:
            if project is not None and seen[key] is not None and seen[key] != project:
                raise ConfigurationError(
                    f"{what}: key {key_fingerprint(key)} is listed in two projects ({seen[key]!r} and {project!r})"
                )
            if seen[key] is None:
                seen[key] = project
            continue
        seen[key] = project
    return [(p, k) for k, p in seen.items()]


def _project_map(projects: Mapping[str, KeysInput] | None) -> dict[str, str]:
    if projects is None:
        return {}
    if not isinstance(projects, Mapping):
        raise ConfigurationError("projects must be a mapping {project: [keys]}")
    out: dict[str, str] = {}
    for project, keys in projects.items():
        name = str(project).strip()
        if not name:
            raise ConfigurationError("projects: empty project name")
        for p, key in parse_key_list(keys, f"projects[{name!r}]"):
            if p is not None and p != name:
                raise ConfigurationError(f"projects[{name!r}]: key {key_fingerprint(key)} also says project {p!r}")
            if key in out and out[key] != name:
                raise ConfigurationError(
                    f"projects: key {key_fingerprint(key)} is in two projects ({out[key]!r} and {name!r})"
                )
            out[key] = name
    return out


def build_key_specs(
    free_keys: KeysInput,
    paid_keys: KeysInput,
    projects: Mapping[str, KeysInput] | None = None,
) -> tuple[KeySpec, ...]:
    """Every configured key, free ones first, each with its tier and project.

    Raises :class:`ConfigurationError` when there is no key, when a key is both free
    and paid, or when one project has keys in both tiers (a Google Cloud project is
    either on the free tier or billed).
    """
    mapping = _project_map(projects)
    specs: list[KeySpec] = []
    tier_of: dict[str, str] = {}
    project_tier: dict[str, str] = {}
    for tier, value in ((FREE, free_keys), (PAID, paid_keys)):
        for inline, key in parse_key_list(value, f"{tier}_keys"):
            fp = key_fingerprint(key)
            if key in tier_of:
                raise ConfigurationError(
                    f"key {fp} is listed both as free and as paid; a key's tier is its project's billing: list it once"
                )
            mapped = mapping.get(key)
            if inline is not None and mapped is not None and inline != mapped:
                raise ConfigurationError(f"key {fp}: {tier}_keys says project {inline!r}, projects says {mapped!r}")
            project = inline or mapped or fp
            if project_tier.setdefault(project, tier) != tier:
                raise ConfigurationError(
                    f"project {project!r} has both free and paid keys; a Google Cloud project is "
                    "either on the free tier or billed: fix the lists"
                )
            tier_of[key] = tier
            specs.append(KeySpec(api_key=key, fingerprint=fp, tier=tier, project=project))
    stray = [k for k in mapping if k not in tier_of]
    if stray:
        fps = ", ".join(key_fingerprint(k) for k in stray[:5])
        raise ConfigurationError(f"projects names keys that are in neither free_keys nor paid_keys: {fps}")
    if not specs:
        raise ConfigurationError(
            "no Gemini API key configured: pass google_free_keys=[...] and/or google_paid_keys=[...] "
            "(free_keys / paid_keys on ApiKeyRotator), or set GOOGLE_FREE_KEYS / GOOGLE_PAID_KEYS "
            "(comma-separated)."
        )
    return tuple(specs)


def _normalise_model(name: Any, what: str) -> str:
    model = str(name).strip()
    if model.startswith("models/"):
        model = model[len("models/") :]
    if not model or any(ch.isspace() for ch in model):
        raise ConfigurationError(f"{what}: {name!r} is not a model name")
    return model


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ConfigurationError(f"{what}: expected a positive integer, got {value!r}")
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{what}: expected a positive integer, got {value!r}") from None
    if isinstance(value, float) and value != number:
        raise ConfigurationError(f"{what}: expected a positive integer, got {value!r}")
    if number < 1:
        raise ConfigurationError(f"{what}: expected a positive integer, got {value!r} (remove the model to drop it)")
    return number


def parse_model_limits(
    value: str | Mapping[str, Any] | None = None,
    *,
    today: date | None = None,
) -> dict[str, int]:
    """``{model: concurrency cap per key}`` from ``value`` (``GOOGLE_MODEL_LIMITS``'s text), else defaults.

    The defaults are chosen from the models current in the catalog on ``today`` (UTC;
    default: the system date).

    >>> parse_model_limits("gemini-2.5-flash=2, gemini-2.5-pro=1")
    {'gemini-2.5-flash': 2, 'gemini-2.5-pro': 1}
    """
    what = "GOOGLE_MODEL_LIMITS"
    if value is None or (isinstance(value, str) and not value.strip()):
        return default_model_limits(today)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(
                    f"{what} is not valid JSON ({exc.msg} at character {exc.pos}); expected "
                    '{"gemini-2.5-flash": 1} or gemini-2.5-flash=1,gemini-2.5-pro=1'
                ) from None
            if not isinstance(parsed, dict):
                raise ConfigurationError(f"{what}: the JSON must be an object {{model: limit}}")
            value = parsed
        else:
            pairs: dict[str, Any] = {}
            for part in _SEPARATORS.split(text):
                part = part.strip()
                if not part:
                    continue
                if "=" not in part:
                    raise ConfigurationError(
                        f"{what}: {part!r} is not model=limit (expected e.g. gemini-2.5-flash=1,gemini-2.5-pro=1)"
                    )
                name, _, raw = part.partition("=")
                pairs[name] = raw
            value = pairs
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{what} must be a mapping, JSON text or model=limit pairs")
    limits: dict[str, int] = {}
    for name, raw in value.items():
        model = _normalise_model(name, what)
        limits[model] = _positive_int(raw, f"{what}[{model}]")
    if not limits:
        raise ConfigurationError(f"{what} names no model; leave it unset for the defaults")
    return limits


def _known(value: Any, what: str) -> KnownLimits:
    if isinstance(value, KnownLimits):
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{what}: expected {{'rpm': n, 'rpd': n, 'tpm': n}}")
    unknown = set(value) - {"rpm", "rpd", "tpm"}
    if unknown:
        raise ConfigurationError(f"{what}: unknown limit(s) {sorted(unknown)}; use rpm, rpd, tpm")
    return KnownLimits(**{k: (None if value[k] is None else _positive_int(value[k], f"{what}.{k}")) for k in value})


def expand_wildcard_limits(
    known: Mapping[tuple[str, str], KnownLimits], models: Iterable[str]
) -> dict[tuple[str, str], KnownLimits]:
    """Give the ``"*"`` entries of ``known`` to every model in ``models``.

    An entry naming a model exactly wins over ``"*"`` for that model and tier.
    """
    out = {k: v for k, v in known.items() if k[0] != "*"}
    for (model, tier), limits in known.items():
        if model == "*":
            for name in models:
                out.setdefault((name, tier), limits)
    return out


def parse_known_limits(value: str | Mapping[str, Any] | None) -> dict[tuple[str, str], KnownLimits]:
    """``{(model, tier): KnownLimits}`` from the known-limits configuration (see module doc)."""
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"known_limits is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, Mapping):
        raise ConfigurationError("known_limits must be a mapping {model: {tier: {rpm, rpd, tpm}}}")
    out: dict[tuple[str, str], KnownLimits] = {}
    for name, spec in value.items():
        model = _normalise_model(name, "known_limits")
        if isinstance(spec, Mapping) and spec and set(spec) <= set(TIERS):
            for tier, limits in spec.items():
                kl = _known(limits, f"known_limits[{model}][{tier}]")
                if not kl.empty:
                    out[(model, tier)] = kl
        else:
            kl = _known(spec, f"known_limits[{model}]")
            if not kl.empty:
                for tier in TIERS:
                    out[(model, tier)] = kl
    return out
