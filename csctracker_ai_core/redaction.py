"""API keys hidden by value in every text that leaves the library.

Keys are not recognised by their shape (AI Studio keys start with ``AIza``, newer ones
with ``AQ.``, and a proxy may hand out anything): the keys the library was given are
registered here, process-wide, and every exit path replaces each of them by its
fingerprint (:func:`~csctracker_ai_core.fingerprint.key_fingerprint`):

* :func:`redact` / :func:`scrub`: any text (exception messages, telemetry columns,
  CLI output);
* :func:`redact_exception`: an exception and its ``__cause__`` / ``__context__`` chain,
  as copies that keep each one's type, ``args``, and plain attributes (the SDK's
  ``code``, ``status``, ``details``) minus keys, and drop what holds the request: the
  HTTP response, an ``httpx`` error's request, and the traceback, whose frames'
  variables hold the request headers (error trackers such as Sentry send frames'
  variables by default); the frames' text stays, as a note;
* a log-record hook (:func:`logging.setLogRecordFactory`), installed while at least one
  key is registered, that hides keys in every log record of the process: ours, the
  SDK's (``google_genai.*``) and the HTTP libraries' (``httpx``, ``httpcore``,
  ``urllib3``...). A hook rather than a filter on those loggers, because a logger's
  filters do not see the records of its child loggers (``google_genai._api_client``).

Registrations are tied to an owner object (the rotator that holds the keys) and end
when it is garbage collected, so a long-running service that builds and drops
processors does not grow the registry. Text that may carry a key we were never given
(``?key=...`` in a URL, an ``AIza`` key from the environment) is masked by shape too.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
import threading
import traceback
import weakref
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from . import forking
from .exceptions import AiCoreError
from .fingerprint import key_fingerprint

__all__ = [
    "register_keys",
    "unregister_keys",
    "registered_count",
    "redact",
    "scrub",
    "redact_value",
    "redact_exception",
    "RedactedError",
]

# Keys at least this long are hidden wherever they occur; shorter ones (toy keys in
# tests and demos, such as "k1") only as a whole word, so that "task1" keeps its "k1".
_ANYWHERE_MIN_LEN = 16
_PREFIX_LEN = 4
# Keys we were not given but that text may still carry: Google's AIza shape, and the
# value of a ``key=`` query parameter.
_SHAPED = re.compile(r"AIza[0-9A-Za-z_\-]{20,}|(?<=[?&]key=)[^&\s'\"]+")

_lock = threading.Lock()
_counts: Counter[str] = Counter()  # key -> live registrations
_handles: dict[int, tuple[str, ...]] = {}
# Registrations whose owner was collected. A finalizer may run inside any allocation,
# also in a thread that holds _lock: it only appends here (no lock), and the next
# register / unregister / count drains the queue under the lock.
_ended: deque[int] = deque()
_next_handle = itertools.count(1)
# Rebuilt on every change; read without the lock (a tuple swap is atomic).
_compiled: tuple[re.Pattern[str], dict[str, str], tuple[str, ...]] | None = None
_previous_factory: Any | None = None
_hook_installed = False

# A fork while another thread registers keys must not leave the child's registry lock
# held forever: the forking thread holds it across the fork (released on both sides).
forking.register(None, locks=lambda: (_lock,))


def _rebuild() -> None:
    global _compiled
    keys = sorted(_counts, key=len, reverse=True)  # longest first: a key inside another
    if not keys:
        _compiled = None
        return
    parts = []
    for k in keys:
        escaped = re.escape(k)
        parts.append(escaped if len(k) >= _ANYWHERE_MIN_LEN else rf"(?<![0-9A-Za-z]){escaped}(?![0-9A-Za-z])")
    # Keys of one kind share their first characters (AIza, AQ.): scanning a long text
    # for the few distinct prefixes, then running the regex only on a hit, costs one
    # substring search per prefix instead of one per key.
    prefixes = tuple(sorted({k[:_PREFIX_LEN] for k in keys}))
    _compiled = (re.compile("|".join(parts)), {k: key_fingerprint(k) for k in keys}, prefixes)


def register_keys(keys: Iterable[str], owner: Any = None) -> int:
    """Hide ``keys`` from now on; returns a handle for :func:`unregister_keys`.

    With ``owner``, the registration ends by itself when ``owner`` is garbage
    collected. Blank entries are ignored.
    """
    clean = tuple(dict.fromkeys(k.strip() for k in keys if isinstance(k, str) and k.strip()))
    with _lock:
        handle = next(_next_handle)
        _handles[handle] = clean
        _counts.update(clean)
        _drain_ended()
        _rebuild()
        _install_hook()
    if owner is not None:
        weakref.finalize(owner, _ended.append, handle)
    return handle


def unregister_keys(handle: int) -> None:
    """End a registration (idempotent). A key stays hidden while any registration holds it."""
    with _lock:
        _drop(handle)
        _drain_ended()
        _rebuild()
        if not _counts:
            _uninstall_hook()


def _drop(handle: int) -> None:
    keys = _handles.pop(handle, None)
    if keys is None:
        return
    _counts.subtract(keys)
    for k in keys:
        if _counts[k] <= 0:
            del _counts[k]


def _drain_ended() -> None:
    while _ended:
        _drop(_ended.popleft())


def registered_count() -> int:
    """How many distinct keys are hidden right now (ended registrations are let go first)."""
    with _lock:
        if _ended:
            _drain_ended()
            _rebuild()
            if not _counts:
                _uninstall_hook()
        return len(_counts)


def redact(text: Any) -> str:
    """``str(text)`` with every registered key replaced by its fingerprint, and any
    other key-shaped text (``AIza...``, ``?key=...``) by ``[key]``."""
    s = text if isinstance(text, str) else str(text)
    if not s:
        return s
    compiled = _compiled
    if compiled is not None:
        pattern, fingerprints, prefixes = compiled
        for p in prefixes:  # on every telemetry text: a loop is cheaper than any(<generator>)
            if p in s:
                s = pattern.sub(lambda m: fingerprints[m.group(0)], s)
                break
    # "=" first: one character is a memchr, twenty times faster than a four-character
    # scan on a long prompt, and "key=" cannot be there without it.
    if "AIza" in s or ("=" in s and "key=" in s):
        s = _SHAPED.sub("[key]", s)
    return s


def scrub(text: Any, limit: int) -> str:
    """:func:`redact`, on one line, cut to ``limit`` characters (for messages and rows)."""
    s = redact(" ".join(str(text).split()))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def redact_value(value: Any) -> Any:
    """``value`` with keys hidden in every string inside it (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


# ----------------------------------------------------------------------------- exceptions


class RedactedError(Exception):
    """Stands in for an exception whose text held a key and that cannot be copied.

    ``original_type`` names the class of the exception it replaces.
    """

    def __init__(self, original_type: str, message: str) -> None:
        super().__init__(f"{original_type}: {message}")
        self.original_type = original_type


def _text_of(exc: BaseException) -> str:
    return f"{exc!s}\n{exc!r}"


def _copy_api_error(exc: BaseException) -> BaseException | None:
    """A copy of a google-genai ``APIError`` built from the redacted body, no response."""
    try:
        from google.genai import errors
    except ImportError:  # pragma: no cover - the SDK is a core dependency
        return None
    if not isinstance(exc, errors.APIError):
        return None
    details = redact_value(getattr(exc, "details", None))
    try:
        clone = type(exc)(exc.code, details if isinstance(details, dict) else {}, None)
    except Exception:
        return None
    # The body may be non-JSON text: the SDK then keeps it as message/status.
    for attr in ("status", "message"):
        value = getattr(exc, attr, None)
        if isinstance(value, str):
            setattr(clone, attr, redact(value))
    clone.args = tuple(redact_value(a) for a in clone.args)
    return clone


def _holds_key(text: str) -> bool:
    return redact(text) != text


_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any) -> bool:
    """Data with nothing behind it: scalars, and lists, tuples and dicts of them."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


def _copy(exc: BaseException, *, foreign: bool) -> BaseException:
    """A copy of ``exc`` (same type) with redacted ``args``, or a :class:`RedactedError`
    when it cannot be copied.

    One of this library's errors (``foreign=False``) is kept as it is when its text holds
    no key: its texts are scrubbed where it is made and its attributes are ours (a usage
    record, the last error, already redacted). Another library's keeps only its plain
    attributes; any other (an ``httpx`` error's request, with its headers) is set to None.
    """
    if not foreign and not _holds_key(_text_of(exc)):
        return exc  # nothing to hide: keep the very object (isinstance, attributes)
    try:
        clone = copy.copy(exc)
        clone.args = tuple(redact_value(a) for a in exc.args)
        if foreign:
            for name, value in list(vars(clone).items()):
                setattr(clone, name, redact_value(value) if _plain(value) else None)
        if not _holds_key(_text_of(clone)):
            return clone
    except Exception:  # an exception class that cannot be rebuilt from its args
        pass
    return RedactedError(type(exc).__name__, redact(str(exc)))


def _frames_note(exc: BaseException) -> str | None:
    """The text of ``exc``'s own frames, keys hidden (their variables are not kept)."""
    if exc.__traceback__ is None:
        return None
    try:
        frames = "".join(traceback.format_tb(exc.__traceback__))
    except Exception:
        return None
    return "Raised at (the original's frames; their variables, which hold the request, are not kept):\n" + redact(
        frames.rstrip("\n")
    )


def redact_exception(exc: BaseException | None, _seen: dict[int, BaseException] | None = None) -> BaseException | None:
    """``exc`` and its ``__cause__`` / ``__context__`` chain with no key anywhere.

    An SDK ``APIError`` becomes a copy of the same class with ``code``, ``status`` and
    ``details`` redacted and no ``response`` (its request headers carry the key). Another
    library's exception becomes a copy of its class with redacted ``args`` and plain
    attributes (:func:`_copy`), or a :class:`RedactedError` when it cannot be
    copied. Those copies have no traceback: a frame of the request path holds the key in
    its variables, which error trackers send. The frames' text is added as a note
    instead (``__notes__``, printed with the traceback from Python 3.11). This library's
    own errors are kept as they are while their text and chain hold no key.
    """
    if exc is None:
        return None
    seen = {} if _seen is None else _seen
    if id(exc) in seen:
        return seen[id(exc)]
    own = isinstance(exc, AiCoreError)
    clone = _copy_api_error(exc) or _copy(exc, foreign=not own)
    seen[id(exc)] = clone
    cause = redact_exception(exc.__cause__, seen)
    context = redact_exception(exc.__context__, seen)
    if clone is exc:
        if cause is exc.__cause__ and context is exc.__context__:
            return exc
        # Its own text is clean but its chain is not: copy it to cut the raw chain.
        try:
            clone = copy.copy(exc)
        except Exception:
            clone = RedactedError(type(exc).__name__, redact(str(exc)))
        seen[id(exc)] = clone
    clone.__cause__ = cause
    clone.__context__ = context
    clone.__suppress_context__ = exc.__suppress_context__
    if own:
        clone.__traceback__ = exc.__traceback__
    else:
        _note_frames(clone, exc)
    return clone


def _note_frames(clone: BaseException, exc: BaseException) -> None:
    """``exc``'s notes, redacted, and the text of its frames as one more, on ``clone``."""
    original = getattr(exc, "__notes__", None)
    notes = [redact(n) for n in original if isinstance(n, str)] if isinstance(original, list) else []
    frames = _frames_note(exc)
    if frames is not None:
        notes.append(frames)
    # The list add_note() appends to, and the traceback module prints (3.11+).
    attributes = vars(clone)
    if notes:
        attributes["__notes__"] = notes
    else:
        attributes.pop("__notes__", None)


# ----------------------------------------------------------------------------- logging


def _redact_record(record: logging.LogRecord) -> None:
    compiled = _compiled
    if compiled is None:
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it at emit time
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        clean = redact(text)
        if clean != text:
            # Formatters use exc_text when it is set, instead of formatting exc_info.
            record.exc_text = clean
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    previous = _previous_factory or logging.LogRecord
    record = previous(*args, **kwargs)
    _redact_record(record)
    return record


def _install_hook() -> None:
    global _previous_factory, _hook_installed
    if _hook_installed or not _counts:
        return
    current = logging.getLogRecordFactory()
    if current is not _factory:
        _previous_factory = current
        logging.setLogRecordFactory(_factory)
    _hook_installed = True


def _uninstall_hook() -> None:
    global _previous_factory, _hook_installed
    if not _hook_installed:
        return
    # Only undo our own hook; if someone wrapped it since, it stays in their chain,
    # inert while nothing is registered, and counts as installed.
    if logging.getLogRecordFactory() is _factory:
        logging.setLogRecordFactory(_previous_factory or logging.LogRecord)
        _previous_factory = None
        _hook_installed = False
