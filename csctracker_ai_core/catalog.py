"""The model catalog: what each Gemini model takes, how long it lives, what replaces it.

Facts live in ``csctracker_ai_core/data/model_catalog.json`` (each with its public
source); users change them without a release by pointing ``CSCTRACKER_AI_CATALOG_FILE``
at a JSON file of the same shape (each model it names replaces that model's entry,
others keep the shipped facts), exactly as prices are overridden. List prices are not
repeated here: :meth:`ModelInfo.list_price` reads them from :mod:`.pricing`.

A name the catalog does not hold is still served:

1. an alias (``gemini-flash-latest``) takes the facts of the newest current model of
   the family it names;
2. a dated or suffixed variant (``gemini-2.5-flash-preview-09-2025``) takes the facts
   of the longest catalog name it extends at a dash;
3. anything else is read by its shape, ``gemini-<version>-<family>``: the facts of the
   newest catalog model of that family and generation or older, else a generic guess
   (thinking level for Gemini 3 and later, budget for 2.5, nothing before).

Thinking levels a model does not take are mapped to the nearest level it takes; on a
tie the lower one wins (it costs less and leaves more of the output budget for the
answer). So on Gemini 3 Pro Preview (low, high) ``minimal`` and ``medium`` become
``low``; on 3.1 Pro, 3.7 and 3.8 Flash (low, medium, high) ``minimal`` becomes
``low``. Gemini 2.5 models take a token budget instead, see :func:`thinking_for`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigurationError
from .json_overlay import OverlayCache, read_object, read_user_file

if TYPE_CHECKING:  # pragma: no cover
    from .pricing import ModelPrice

__all__ = [
    "CATALOG_FILE_ENV",
    "SHIPPED_CATALOG_FILE",
    "THINKING_LEVELS",
    "SHUTDOWN_WARNING_DAYS",
    "Thinking",
    "ThinkingChoice",
    "ModelInfo",
    "Catalog",
    "ShutdownWatch",
    "load_catalog",
    "get_catalog",
    "use_catalog_file",
    "model_info",
    "model_family",
    "capability_rank",
    "matches_family",
    "thinking_style",
    "thinking_for",
    "default_model_limits",
    "utc_date",
]

logger = logging.getLogger(__name__)

CATALOG_FILE_ENV = "CSCTRACKER_AI_CATALOG_FILE"  # read by settings.py, the one reader of the environment
SHIPPED_CATALOG_FILE = Path(__file__).resolve().parent / "data" / "model_catalog.json"
THINKING_LEVELS = ("minimal", "low", "medium", "high")
SHUTDOWN_WARNING_DAYS = 30

# Gemini 2.5 takes a budget rather than a level. Google's guidance: -1 lets the model
# decide (dynamic), which is what "high" asks for; the others are fixed ceilings.
_LEVEL_BUDGETS = {"low": 1024, "medium": 8192, "high": -1}
_FAMILIES = ("pro", "flash", "lite", "ultra", "gemma")
_FAMILY_WEIGHT = {"ultra": 100, "pro": 80, "other": 50, "gemma": 20, "flash": 10, "lite": 5}
_VERSION = re.compile(r"(?:gemini|gemma)-(\d+(?:\.\d+)?)")
_ALIAS_SHAPE = re.compile(r"^gemini-([a-z-]+)-latest$")


def utc_date(ts: float) -> date:
    """The UTC calendar date of Unix time ``ts`` (shutdown dates are UTC days)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).date()


@dataclass(frozen=True)
class Thinking:
    """How a model takes thinking settings.

    ``style``: ``"level"`` (``thinking_level``), ``"budget"`` (``thinking_budget``) or
    ``"none"`` (no thinking config may be sent). ``levels``: accepted levels, lowest
    first. ``default``: the level the model uses when none is sent, when known.
    """

    style: str = "none"
    levels: tuple[str, ...] = ()
    default: str | None = None
    budget_min: int = 0
    budget_max: int = 0
    can_disable: bool = False

    @property
    def floor_budget(self) -> int:
        """The smallest budget the model takes (0 when thinking can be turned off)."""
        return 0 if self.can_disable else self.budget_min


@dataclass(frozen=True)
class ThinkingChoice:
    """What is sent for one thinking wish on one model: a level, a budget, or nothing."""

    level: str | None = None  # upper case, as the API spells it
    budget: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """The catalog's facts about one model name.

    ``known`` is False when the facts were guessed from the name's shape; ``alias_of``
    names the model an alias or a variant borrowed its facts from.
    """

    name: str
    family: str
    generation: float
    thinking: Thinking
    input_token_limit: int
    output_token_limit: int
    json_mode: bool = True
    released: date | None = None
    shutdown: date | None = None
    successor: str | None = None
    sources: tuple[str, ...] = ()
    known: bool = True
    alias_of: str | None = None

    @property
    def keeps_model_temperature(self) -> bool:
        """Gemini 3 and later: Google recommends the model's default temperature (1.0);
        lower values may loop until MAX_TOKENS. Older families keep the library's 0.1."""
        return self.generation >= 3 and self.family != "gemma"

    def is_shut_down(self, today: date) -> bool:
        """True on and after the shutdown day."""
        return self.shutdown is not None and today >= self.shutdown

    def days_to_shutdown(self, today: date) -> int | None:
        """Days left before the shutdown day (0 or less: shut down), ``None`` if none announced."""
        return (self.shutdown - today).days if self.shutdown is not None else None

    def is_current(self, today: date) -> bool:
        """Released, not shut down, and without a recommended replacement."""
        released = self.released is None or self.released <= today
        return released and not self.is_shut_down(today) and self.successor is None

    def list_price(self) -> ModelPrice | None:
        """The model's paid list price, from the price table (the one place prices live)."""
        from .pricing import get_prices

        return get_prices().price_of(self.alias_of or self.name)


def _level_rank(level: str) -> int:
    return THINKING_LEVELS.index(level)


def thinking_for(info: ModelInfo, level: str | None) -> ThinkingChoice:
    """The thinking config for a wish (``minimal`` .. ``high``, ``"floor"``, or ``None``).

    ``None`` sends nothing (the model's default). ``"floor"`` asks for the least thinking
    the model takes (used to retry a reply whose output budget went to thinking).
    Levels are mapped to the nearest one the model accepts (ties: the lower);
    budgets are clamped to the model's range (minimal: the smallest budget).
    """
    t = info.thinking
    if level is None or t.style == "none":
        return ThinkingChoice()
    if t.style == "level":
        levels = t.levels or THINKING_LEVELS
        if level == "floor":
            return ThinkingChoice(level=levels[0].upper())
        if level in levels:
            return ThinkingChoice(level=level.upper())
        wanted = _level_rank(level)
        nearest = min(levels, key=lambda lv: (abs(_level_rank(lv) - wanted), _level_rank(lv)))
        return ThinkingChoice(level=nearest.upper())
    # budget
    if level in ("floor", "minimal"):
        return ThinkingChoice(budget=t.floor_budget)
    budget = _LEVEL_BUDGETS[level]
    if budget >= 0:
        budget = max(t.budget_min, min(budget, t.budget_max)) if t.budget_max else budget
    return ThinkingChoice(budget=budget)


def thinking_can_go_lower(info: ModelInfo, level: str | None) -> bool:
    """Whether asking for ``"floor"`` thinks less than ``level`` (None: the model default)."""
    t = info.thinking
    if t.style == "none":
        return False
    current = thinking_for(info, level)
    floor = thinking_for(info, "floor")
    if level is None:
        # The model's default: lower unless the default is known to be the floor already.
        if t.style == "level":
            return t.default is None or t.default != (t.levels or THINKING_LEVELS)[0]
        return True  # a 2.5 model left alone thinks dynamically
    if t.style == "level":
        return current.level != floor.level
    return current.budget != floor.budget


# -- loading -------------------------------------------------------------------------


def _parse_date(value: Any, where: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigurationError(f"{where} = {value!r} is not a YYYY-MM-DD date.") from None


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{where} = {value!r} must be a whole number >= {minimum}.")
    return value


def _parse_thinking(raw: Any, where: str) -> Thinking:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be an object with a 'style'.")
    style = str(raw.get("style", "none"))
    if style not in ("level", "budget", "none"):
        raise ConfigurationError(f"{where}.style = {style!r}: use level, budget or none.")
    levels = tuple(str(lv).lower() for lv in raw.get("levels", THINKING_LEVELS if style == "level" else ()))
    bad = [lv for lv in levels if lv not in THINKING_LEVELS]
    if bad:
        raise ConfigurationError(f"{where}.levels has unknown levels {bad}; known: {', '.join(THINKING_LEVELS)}.")
    default = raw.get("default")
    if default is not None and str(default).lower() not in THINKING_LEVELS:
        raise ConfigurationError(f"{where}.default = {default!r} is not a thinking level.")
    return Thinking(
        style=style,
        levels=tuple(sorted(set(levels), key=_level_rank)),
        default=str(default).lower() if default is not None else None,
        budget_min=_int(raw.get("budget_min", 0), f"{where}.budget_min"),
        budget_max=_int(raw.get("budget_max", 0), f"{where}.budget_max"),
        can_disable=bool(raw.get("can_disable", False)),
    )


_MODEL_FIELDS = {
    "family",
    "generation",
    "thinking",
    "input_token_limit",
    "output_token_limit",
    "json_mode",
    "released",
    "shutdown",
    "successor",
    "sources",
}


def _parse_model(name: str, raw: Any, source: str) -> ModelInfo:
    where = f"{source}: models.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be an object.")
    unknown = {k for k in raw if k not in _MODEL_FIELDS and not k.startswith("_")}
    if unknown:
        raise ConfigurationError(f"{where} has unknown fields {sorted(unknown)}; known: {sorted(_MODEL_FIELDS)}.")
    missing = [
        k for k in ("family", "generation", "thinking", "input_token_limit", "output_token_limit") if k not in raw
    ]
    if missing:
        raise ConfigurationError(f"{where} lacks {', '.join(missing)}.")
    family = str(raw["family"]).lower()
    try:
        generation = float(raw["generation"])
    except (TypeError, ValueError):
        raise ConfigurationError(f"{where}.generation = {raw['generation']!r} is not a number.") from None
    successor = raw.get("successor")
    return ModelInfo(
        name=name,
        family=family,
        generation=generation,
        thinking=_parse_thinking(raw["thinking"], f"{where}.thinking"),
        input_token_limit=_int(raw["input_token_limit"], f"{where}.input_token_limit", 1),
        output_token_limit=_int(raw["output_token_limit"], f"{where}.output_token_limit", 1),
        json_mode=bool(raw.get("json_mode", True)),
        released=_parse_date(raw.get("released"), f"{where}.released"),
        shutdown=_parse_date(raw.get("shutdown"), f"{where}.shutdown"),
        successor=_normalize(str(successor)) if successor else None,
        sources=tuple(str(s) for s in raw.get("sources", ())),
    )


def _normalize(model: str) -> str:
    name = (model or "").strip().lower()
    return name[len("models/") :] if name.startswith("models/") else name


@dataclass(frozen=True)
class Catalog:
    """A loaded catalog. Build it with :func:`load_catalog` (or :func:`get_catalog`)."""

    models: Mapping[str, ModelInfo]
    aliases: Mapping[str, str] = field(default_factory=dict)  # alias -> family
    default_families: tuple[str, ...] = ("flash", "lite")
    as_of: str = ""
    sources: tuple[str, ...] = ()
    _resolved: dict[tuple[str, date | None], ModelInfo] = field(default_factory=dict, repr=False, compare=False)

    def info(self, model: str, today: date | None = None) -> ModelInfo:
        """The facts for ``model``; never raises (unknown names are read by their shape).

        ``today`` picks what an alias points at (the newest current model of its
        family); it defaults to the current UTC date.
        """
        name = _normalize(model)
        key = (name, today)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        info = self._resolve(name, today or utc_date(datetime.now(timezone.utc).timestamp()))
        if len(self._resolved) > 1024:  # names come from configuration, but stay bounded
            self._resolved.clear()
        self._resolved[key] = info
        return info

    def _resolve(self, name: str, today: date) -> ModelInfo:
        exact = self.models.get(name)
        if exact is not None:
            return exact
        family = self.aliases.get(name)
        if family is None:
            shape = _ALIAS_SHAPE.match(name)
            family = shape.group(1) if shape and shape.group(1) in ("flash", "flash-lite", "pro") else None
            family = "lite" if family == "flash-lite" else family
        if family is not None:
            target = self.newest(family, today)
            if target is not None:
                return replace(target, name=name, alias_of=target.name, shutdown=None, successor=None)
        prefixes = [k for k in self.models if name.startswith(k + "-")]
        if prefixes:
            base = self.models[max(prefixes, key=len)]
            return replace(base, name=name, alias_of=base.name, known=False)
        return self._guess(name)

    def _guess(self, name: str) -> ModelInfo:
        family = _family_by_shape(name)
        version = _VERSION.search(name)
        generation = float(version.group(1)) if version else 0.0
        same = [m for m in self.models.values() if m.family == family and m.generation <= generation]
        if same and version:
            base = max(same, key=lambda m: (m.generation, m.released or date.min))
            return replace(
                base,
                name=name,
                generation=generation,
                alias_of=base.name,
                known=False,
                released=None,
                shutdown=None,
                successor=None,
                sources=(),
            )
        if generation >= 3:
            thinking = Thinking(style="level", levels=THINKING_LEVELS)
        elif generation >= 2.5:
            thinking = Thinking(style="budget", budget_min=0, budget_max=24576, can_disable=True)
        else:
            thinking = Thinking()
        return ModelInfo(
            name=name,
            family=family,
            generation=generation,
            thinking=thinking,
            input_token_limit=1_048_576,
            output_token_limit=65_536,
            known=False,
        )

    def newest(self, family: str, today: date) -> ModelInfo | None:
        """The most recently released current model of ``family``, or ``None``."""
        current = [m for m in self.models.values() if m.family == family and m.is_current(today)]
        return max(current, key=lambda m: (m.released or date.min, m.generation), default=None)

    def current_successor(self, model: str, today: date) -> str | None:
        """Follow ``successor`` links from ``model`` to the first model still current."""
        seen: set[str] = set()
        name = self.info(model, today).successor
        while name and name not in seen:
            seen.add(name)
            info = self.models.get(name)
            if info is None or info.is_current(today):
                return name
            name = info.successor
        return name

    def default_model_limits(self, today: date) -> dict[str, int]:
        """Models a pool uses when none are configured: the newest current model of each
        of ``default_families``, one request in flight per key x model (as the original)."""
        out: dict[str, int] = {}
        for family in self.default_families:
            info = self.newest(family, today)
            if info is not None:
                out[info.name] = 1
        if not out:
            raise ConfigurationError(
                "the model catalog has no current model for the default families "
                f"{list(self.default_families)}; set GOOGLE_MODEL_LIMITS."
            )
        return out


def _family_by_shape(model: str) -> str:
    m = model.lower()
    if m.startswith("gemma"):
        return "gemma"
    if "lite" in m:
        return "lite"
    if "ultra" in m:
        return "ultra"
    if "pro" in m:
        return "pro"
    if "flash" in m:
        return "flash"
    return "other"


def _merge(base: Catalog | None, data: Mapping[str, Any], source: str) -> Catalog:
    models: dict[str, ModelInfo] = dict(base.models) if base else {}
    raw_models = data.get("models", {})
    if not isinstance(raw_models, Mapping):
        raise ConfigurationError(f"{source}: 'models' must be an object keyed by model name.")
    for raw_name, raw in raw_models.items():
        name = _normalize(str(raw_name))
        models[name] = _parse_model(name, raw, source)
    aliases = dict(base.aliases) if base else {}
    raw_aliases = data.get("aliases", {})
    if not isinstance(raw_aliases, Mapping):
        raise ConfigurationError(f"{source}: 'aliases' must map an alias to a family.")
    for alias, family in raw_aliases.items():
        if str(family).lower() not in _FAMILIES:
            raise ConfigurationError(f"{source}: aliases.{alias} = {family!r}: use one of {', '.join(_FAMILIES)}.")
        aliases[_normalize(str(alias))] = str(family).lower()
    families = data.get("default_families", base.default_families if base else ("flash", "lite"))
    if isinstance(families, str) or not all(isinstance(f, str) for f in families):
        raise ConfigurationError(f"{source}: 'default_families' must be a list of family names.")
    for name, info in models.items():
        if info.successor and info.successor == name:
            raise ConfigurationError(f"{source}: models.{name} names itself as its successor.")
    return Catalog(
        models=models,
        aliases=aliases,
        default_families=tuple(f.lower() for f in families),
        as_of=str(data.get("as_of", base.as_of if base else "")),
        sources=(base.sources if base else ()) + (source,),
    )


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The shipped catalog, overlaid with the user's file ``path`` if given.

    The facades read ``CSCTRACKER_AI_CATALOG_FILE`` into ``Settings.catalog_file``. Not
    cached: see :func:`get_catalog`. Raises
    :class:`~csctracker_ai_core.exceptions.ConfigurationError` on an unreadable or
    malformed file.
    """
    shipped = SHIPPED_CATALOG_FILE.read_text(encoding="utf-8")
    catalog = _merge(None, read_object("model catalog", "<shipped model_catalog.json>", shipped), "shipped")
    if path:
        user_path, data = read_user_file("model catalog", path, CATALOG_FILE_ENV)
        catalog = _merge(catalog, data, str(user_path))
    return catalog


_catalogs: OverlayCache[Catalog] = OverlayCache("model catalog", load_catalog)
_user_file: Path | None = None


def use_catalog_file(path: str | Path | None) -> None:
    """Make ``path`` the user's catalog file for this process (``None``: shipped only).

    Checked at once, strictly (a broken file is a :class:`ConfigurationError` now, even
    if an earlier version of it is in use; later edits that break it are logged and the
    last good version kept). The catalog is process-wide: facts about Google's models do
    not depend on the caller.
    """
    global _user_file
    if path is not None:
        load_catalog(path)
    _user_file = Path(path).expanduser() if path is not None else None


def get_catalog(path: str | Path | None = None) -> Catalog:
    """The catalog (``path``, else the file set by :func:`use_catalog_file`), cached per
    (file, modification time): an edited user file takes effect on the next call; an
    unchanged one costs one ``stat``."""
    return _catalogs.get(path if path is not None else _user_file)


# -- the name-level helpers the pool uses ---------------------------------------------


def model_info(model: str, today: date | None = None) -> ModelInfo:
    """``get_catalog().info(model, today)``."""
    return get_catalog().info(model, today)


def model_family(model: str) -> str:
    """``"pro"``, ``"flash"``, ``"lite"`` (flash-lite), ``"gemma"``, ``"ultra"`` or ``"other"``."""
    return model_info(model).family


def capability_rank(model: str) -> tuple[int, float]:
    """A sort key, larger = more capable: family first, then generation.

    Free keys use models most-capable-first ("spend the expensive one for free");
    paid keys cheapest-first, i.e. this order reversed.
    """
    info = model_info(model)
    return (_FAMILY_WEIGHT.get(info.family, _FAMILY_WEIGHT["other"]), info.generation)


def matches_family(model: str, family: str) -> bool:
    """Whether ``model`` belongs to ``family`` (pro, flash, lite / flash-lite, ultra, gemma).

    ``flash`` excludes flash-lite, as in the original library. An unknown family name
    matches as a substring.
    """
    f = family.strip().lower()
    if f == "flash-lite":
        f = "lite"
    if f in _FAMILIES:
        return model_family(model) == f
    return f in model.lower()


def thinking_style(model: str) -> str | None:
    """``"level"``, ``"budget"`` or ``None`` (send no thinking config)."""
    style = model_info(model).thinking.style
    return None if style == "none" else style


def default_model_limits(today: date | None = None) -> dict[str, int]:
    """The pool's models when ``GOOGLE_MODEL_LIMITS`` is unset (see :meth:`Catalog.default_model_limits`)."""
    return get_catalog().default_model_limits(today or utc_date(datetime.now(timezone.utc).timestamp()))


# -- lifecycle warnings ------------------------------------------------------------------


class ShutdownWatch:
    """Which configured models to skip today, and the warnings about them, once each.

    A model past its shutdown day is skipped, with one WARNING naming its successor; a
    model within :data:`SHUTDOWN_WARNING_DAYS` of its shutdown gets one WARNING. "Once"
    is per watch: the module's :data:`WATCH` lives as long as the process.

    ``pinned_today`` makes the watch judge every model as on that day, whatever day it
    is asked about: a test suite pins it so that the lineup's dates do not turn
    yesterday's passing tests red; tests of shutdowns use a watch of their own.
    """

    def __init__(self, pinned_today: date | None = None) -> None:
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()
        self.pinned_today = pinned_today

    def retired(self, models: Iterable[str], today: date, catalog: Catalog | None = None) -> frozenset[str]:
        """The models of ``models`` that are shut down on ``today`` (warning once for each,
        and once for each model close to its shutdown)."""
        cat = catalog if catalog is not None else get_catalog()
        today = self.pinned_today or today
        out = set()
        for model in models:
            info = cat.info(model, today)
            days = info.days_to_shutdown(today)
            if days is None:
                continue
            if days <= 0:
                out.add(model)
                self._warn_once(
                    model,
                    "retired",
                    "model %s was shut down on %s; it is skipped. Replace it with %s in GOOGLE_MODEL_LIMITS.",
                    model,
                    info.shutdown,
                    cat.current_successor(model, today) or "a current model of the catalog",
                )
            elif days <= SHUTDOWN_WARNING_DAYS:
                self._warn_once(
                    model,
                    "soon",
                    "model %s shuts down on %s (in %d day(s)); move to %s before then.",
                    model,
                    info.shutdown,
                    days,
                    cat.current_successor(model, today) or "a current model",
                )
        return frozenset(out)

    def _warn_once(self, model: str, what: str, message: str, *args: Any) -> None:
        with self._lock:
            if (model, what) in self._warned:
                return
            self._warned.add((model, what))
        logger.warning(message, *args)


WATCH = ShutdownWatch()
