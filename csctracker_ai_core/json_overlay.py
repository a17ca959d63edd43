"""A shipped JSON table overlaid with a user's file, cached per (file, modification time).

The price table (pricing.py) and the model catalog (catalog.py) both work this way: the
package ships a JSON file, the user may name another that overrides and adds entries,
an edited user file takes effect on the next use without a restart (an unchanged one
costs one ``stat``), and a file that breaks while the process runs (a bad edit, a
half-written save) does not stop calls: the last good version stays in use.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import forking
from .exceptions import ConfigurationError

__all__ = ["read_object", "read_user_file", "OverlayCache"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def read_object(what: str, source: str | Path, text: str) -> Mapping[str, Any]:
    """``text`` as a JSON object; ``what`` (e.g. ``"price file"``) names it in the error."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{what} {source} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{what} {source} must hold a JSON object.")
    return data


def read_user_file(what: str, path: str | Path, setting: str) -> tuple[Path, Mapping[str, Any]]:
    """The user's file at ``path`` as a JSON object; an unreadable one names ``setting``."""
    user_path = Path(path).expanduser()
    try:
        text = user_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"{what} {user_path} cannot be read ({exc.strerror or exc}); fix the path or unset {setting}."
        ) from None
    return user_path, read_object(what, user_path, text)


class OverlayCache(Generic[T]):
    """``load(path)`` cached per (path, modification time); only the current version is kept.

    A file that cannot be loaded raises :class:`ConfigurationError` the first time; once
    a version of it loaded, a later broken version is logged and the last good one kept.
    """

    def __init__(self, what: str, load: Callable[[str | Path | None], T]) -> None:
        self._what = what
        self._load = load
        self._lock = threading.Lock()
        self._cache: dict[tuple[str | None, int | None], T] = {}
        forking.register(self, locks=lambda c: (c._lock,), in_child=OverlayCache._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def get(self, path: str | Path | None) -> T:
        """The table for ``path`` (``None``: the shipped one alone)."""
        mtime: int | None = None
        if path:
            try:
                mtime = Path(path).expanduser().stat().st_mtime_ns
            except OSError:
                mtime = -1  # load() raises the readable error
        key = (str(path) if path else None, mtime)
        value = self._cache.get(key)
        if value is not None:
            return value
        with self._lock:
            value = self._cache.get(key)
            if value is not None:
                return value
            try:
                value = self._load(path)
            except ConfigurationError:
                previous = next((v for (src, _), v in self._cache.items() if src == key[0]), None)
                if previous is None:  # never read successfully: a configuration error
                    raise
                logger.exception("%s %s is unreadable; still using its previous version", self._what, path)
                return previous
            self._cache.clear()
            self._cache[key] = value
            return value
