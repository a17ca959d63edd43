"""Checks on every argument of a call, before anything is sent.

``validate_call`` is pure: it either returns a :class:`PreparedCall` (with the image
already decoded, so the call path never decodes twice) or raises
:class:`~csctracker_ai_core.exceptions.InvalidInputError` saying what is wrong and how
to fix it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog import THINKING_LEVELS
from .exceptions import ConfigurationError, InvalidInputError
from .gemini.structured import ResponseSchema, response_schema_from
from .tokens import IMAGE_TOKENS, estimate_text_tokens

__all__ = [
    "PreparedCall",
    "validate_call",
    "SUPPORTED_MIME_TYPES",
    "MAX_REQUEST_BYTES",
    "THINKING_LEVELS",
    "SERVICE_TIERS",
    "FAMILIES",
    "MIN_TIMEOUT_S",
    "MAX_SECONDS",
    "METADATA_MAX_ENTRIES",
    "METADATA_MAX_KEY_CHARS",
    "METADATA_MAX_VALUE_CHARS",
    "METADATA_MAX_TOTAL_CHARS",
    "seconds_setting",
    "count_setting",
    "check_base_url",
]

# Gemini rejects an inline request over 20 MB; larger files must go through the Files
# API. Decimal megabytes, to stay on the safe side of whichever unit Google means.
MAX_REQUEST_BYTES = 20_000_000

# Inline-data types Gemini documents for generateContent.
SUPPORTED_MIME_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/heic",
        "image/heif",
        "application/pdf",
        "text/plain",
        "audio/wav",
        "audio/mp3",
        "audio/mpeg",
        "audio/aiff",
        "audio/aac",
        "audio/ogg",
        "audio/flac",
        "video/mp4",
        "video/mpeg",
        "video/mov",
        "video/quicktime",
        "video/avi",
        "video/x-flv",
        "video/mpg",
        "video/webm",
        "video/wmv",
        "video/3gpp",
    }
)

FAMILIES = ("pro", "flash", "lite", "flash-lite", "ultra")
SERVICE_TIERS = ("standard", "flex", "priority")

_MAX_LABEL = 256

# The SDK takes its timeout in whole milliseconds and reads 0 as "no timeout": a
# shorter one would silently turn the timeout off.
MIN_TIMEOUT_S = 0.001
# Longer than any sensible wait or timeout, and short enough for every sleep and
# socket call (a huge float overflows them).
MAX_SECONDS = 7 * 24 * 3600.0

# Metadata is stored with every event: keep it to labels, not documents.
METADATA_MAX_ENTRIES = 64
METADATA_MAX_KEY_CHARS = 128
METADATA_MAX_VALUE_CHARS = 4096
METADATA_MAX_TOTAL_CHARS = 16384


@dataclass(frozen=True)
class PreparedCall:
    """A validated call, ready to be sent."""

    text: str  # what goes in the text part: prompt and input joined
    return_json: bool
    task: str
    event_id: str | None
    image_bytes: bytes | None = field(default=None, repr=False)
    image_base64: str = field(default="", repr=False)
    mime_type: str = ""
    image_sha256: str = ""
    model_variant: str | None = None
    exact_match: bool = False
    family: str | None = None
    forced_free: bool = False
    forced_paid: bool = False
    thinking_level: str | None = None
    service_tier: str = "standard"
    metadata: Mapping[str, str] = field(default_factory=dict)
    estimated_input_tokens: int = 0
    max_output_tokens: int | None = None
    response_schema: ResponseSchema | None = None
    accept_truncation: bool = False

    @property
    def image_size(self) -> int:
        return len(self.image_bytes) if self.image_bytes is not None else 0


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{name}={value!r}: expected a number of seconds, not {type(value).__name__}"
            + (f"; pass float({value!r})" if isinstance(value, str) else "")
            + "."
        )
    number = float(value)
    if not math.isfinite(number):
        raise ConfigurationError(f"{name}={value!r}: use a finite number of seconds (at most {MAX_SECONDS:g}).")
    return number


def seconds_setting(name: str, value: Any, *, minimum: float = 0.0) -> float:
    """``value`` as seconds between ``minimum`` and :data:`MAX_SECONDS`, else
    :class:`ConfigurationError` naming the setting (strings, NaN and infinity included)."""
    number = _real(name, value)
    if number < minimum or number > MAX_SECONDS:
        low = "0" if minimum == 0 else f"{minimum:g}"
        hint = " (the SDK counts whole milliseconds and takes 0 as no timeout)" if minimum == MIN_TIMEOUT_S else ""
        raise ConfigurationError(f"{name}={value!r}: use {low} to {MAX_SECONDS:g} seconds{hint}.")
    return number


def count_setting(name: str, value: Any) -> int:
    """``value`` as a whole number >= 0 (an integral float from the environment is fine)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"{name}={value!r}: use a whole number, 0 or more"
            + (f"; pass int({value!r})" if isinstance(value, str) else "")
            + "."
        )
    return value


def check_base_url(url: str, source: str) -> str:
    """Refuse a Gemini endpoint that would carry a secret: a query string (``?key=``)
    or user information; the HTTP library logs the URL at INFO.

    Keys travel in the ``x-goog-api-key`` header, never in a URL.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"{source} must be a URL string, not {type(url).__name__}.")
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise ConfigurationError(f"{source} is not a URL ({exc}).") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{source} must be an http:// or https:// URL with a host.")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigurationError(
            f"{source} must not carry a query string, fragment or user:password@ (a key in "
            "a URL ends up in logs): give the endpoint only, e.g. https://host:port; the "
            "library sends each key in the x-goog-api-key header."
        )
    return url.strip()


def _optional_str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(
            f"{name} must be a string or None, not {type(value).__name__}: pass str({name}) if you meant its text."
        )
    return value


def _label(name: str, value: Any) -> str | None:
    text = _optional_str(name, value)
    if text is not None and len(text) > _MAX_LABEL:
        raise InvalidInputError(f"{name} is {len(text)} characters long; keep it under {_MAX_LABEL}.")
    return text


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, not {type(value).__name__}.")
    return value


def max_output_tokens_value(name: str, value: Any) -> int | None:
    """``value`` as a positive whole number of tokens, or ``None``; else :class:`InvalidInputError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name}={value!r}: pass a whole number of tokens, 1 or more, or None.")
    return value


def _decode_image(file_base64: Any, mime_type: str) -> tuple[bytes, str, str]:
    """Strictly decode ``file_base64``; a ``data:<mime>;base64,`` prefix sets the type."""
    if isinstance(file_base64, (bytes, bytearray)):
        try:
            file_base64 = bytes(file_base64).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInputError(
                "file_base64 must be base64 text; got raw bytes that are not ASCII. "
                "Encode the file with base64.b64encode(data).decode()."
            ) from None
    if not isinstance(file_base64, str):
        raise InvalidInputError(f"file_base64 must be a base64 string, not {type(file_base64).__name__}.")
    text = file_base64.strip()
    if text.startswith("data:"):
        header, sep, rest = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidInputError("file_base64 starts like a data URL but is not 'data:<mime>;base64,<data>'.")
        mime_type = header[5:-7].strip().lower() or mime_type
        text = rest
    # Line-wrapped base64 (MIME, 76 columns) is common; any other stray character is not.
    compact = "".join(text.split())
    if not compact:
        raise InvalidInputError("file_base64 is empty: pass the file's base64 text, or None.")
    try:
        data = base64.b64decode(compact, validate=True)
        # b64decode forgives stray padding ("QUJD=") and non-zero trailing bits; a
        # payload that does not re-encode to itself was damaged on its way here.
        if base64.b64encode(data).decode("ascii") != compact:
            raise ValueError("it does not re-encode to the same text (bad padding or length)")
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(
            f"file_base64 is not valid base64 ({exc}). Encode the file with base64.b64encode(data).decode()."
        ) from None
    return data, compact, mime_type


def _encodable(name: str, text: str) -> None:
    """Text sent upstream must be valid UTF-8: a lone surrogate cannot be encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{name} holds a lone surrogate {text[exc.start]!r} at position {exc.start}, which is "
            "not valid Unicode (it comes from bytes decoded with errors='surrogateescape', e.g. "
            "os.fsdecode of a file name). Decode the source with errors='replace', or fix it."
        ) from None


def _metadata(metadata: Any) -> dict[str, str]:
    meta: dict[str, str] = {}
    if metadata is None:
        return meta
    if not isinstance(metadata, Mapping):
        raise InvalidInputError("metadata must be a mapping of strings to strings, or None.")
    if len(metadata) > METADATA_MAX_ENTRIES:
        raise InvalidInputError(
            f"metadata has {len(metadata)} entries; keep it to {METADATA_MAX_ENTRIES} (labels, not documents)."
        )
    total = 0
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidInputError(f"metadata must map strings to strings; {k!r}: {type(v).__name__} is not.")
        if len(k) > METADATA_MAX_KEY_CHARS or len(v) > METADATA_MAX_VALUE_CHARS:
            raise InvalidInputError(
                f"metadata entry {k[:40]!r} is too long: keys up to {METADATA_MAX_KEY_CHARS} and values "
                f"up to {METADATA_MAX_VALUE_CHARS} characters."
            )
        total += len(k) + len(v)
        meta[k] = v
    if total > METADATA_MAX_TOTAL_CHARS:
        raise InvalidInputError(
            f"metadata holds {total} characters; keep keys and values under {METADATA_MAX_TOTAL_CHARS} in all."
        )
    return meta


def validate_call(
    *,
    input_text: Any = "",
    prompt: Any = "",
    file_base64: Any = None,
    task: Any = None,
    return_json: Any = True,
    event_id: Any = None,
    mime_type: Any = "image/jpeg",
    model_variant: Any = None,
    exact_match: Any = False,
    family: Any = None,
    forced_free: Any = False,
    forced_paid: Any = False,
    thinking_level: Any = None,
    service_tier: Any = "standard",
    metadata: Any = None,
    max_output_tokens: Any = None,
    response_schema: Any = None,
    accept_truncation: Any = False,
) -> PreparedCall:
    """Check every argument of ``analisar_com_gemini`` and prepare the request parts."""
    input_text = _optional_str("input_text", input_text) or ""
    prompt = _optional_str("prompt", prompt) or ""
    task = _label("task", task)
    event_id = _label("event_id", event_id)
    if event_id is not None and not event_id.strip():
        raise InvalidInputError("event_id is blank: pass None to get a new UUID, or a non-empty id.")
    model_variant = _label("model_variant", model_variant)
    family = _label("family", family)
    if family is not None:
        family = family.strip().lower()
        if family not in FAMILIES:
            raise InvalidInputError(
                f"family {family!r} is unknown: use one of {', '.join(FAMILIES)}, or model_variant= "
                "for a part of a model name."
            )
    return_json = _flag("return_json", return_json)
    accept_truncation = _flag("accept_truncation", accept_truncation)
    max_tokens = max_output_tokens_value("max_output_tokens", max_output_tokens)
    schema = response_schema_from(response_schema)
    if schema is not None and not return_json:
        raise InvalidInputError("response_schema needs return_json=True (a schema describes a JSON reply).")
    exact_match = _flag("exact_match", exact_match)
    forced_free = _flag("forced_free", forced_free)
    forced_paid = _flag("forced_paid", forced_paid)
    if forced_free and forced_paid:
        raise InvalidInputError("forced_free and forced_paid are both True: a call runs on one tier; set at most one.")
    mime = _optional_str("mime_type", mime_type)
    mime = (mime or "image/jpeg").strip().lower()

    level = _optional_str("thinking_level", thinking_level)
    if level is not None:
        level = level.strip().lower()
        if level not in THINKING_LEVELS:
            raise InvalidInputError(
                f"thinking_level {thinking_level!r} is unknown: use one of {', '.join(THINKING_LEVELS)} or None."
            )
    tier = _optional_str("service_tier", service_tier)
    tier = (tier or "standard").strip().lower()
    if tier not in SERVICE_TIERS:
        raise InvalidInputError(f"service_tier {service_tier!r} is unknown: use one of {', '.join(SERVICE_TIERS)}.")
    meta = _metadata(metadata)

    text = f"{prompt}\n{input_text}" if prompt and input_text else (prompt or input_text)
    _encodable("prompt", prompt)
    _encodable("input_text", input_text)

    image_bytes: bytes | None = None
    image_b64 = ""
    digest = ""
    # The original library sent no file for an empty string; callers rely on that.
    if file_base64 is not None and file_base64 not in ("", b""):
        image_bytes, image_b64, mime = _decode_image(file_base64, mime)
        if mime not in SUPPORTED_MIME_TYPES:
            raise InvalidInputError(
                f"mime_type {mime!r} is not one Gemini takes inline: use one of "
                f"{', '.join(sorted(SUPPORTED_MIME_TYPES))}."
            )
        digest = hashlib.sha256(image_bytes).hexdigest()
    if not text.strip() and image_bytes is None:
        raise InvalidInputError("prompt and input_text are both empty and there is no file: nothing to ask Gemini.")
    request_bytes = len(text.encode("utf-8")) + len(image_b64) + 1024
    if request_bytes > MAX_REQUEST_BYTES:
        raise InvalidInputError(
            f"the request would be about {request_bytes / 1e6:.1f} MB; Gemini takes at most "
            f"{MAX_REQUEST_BYTES / 1e6:.0f} MB inline. Shrink the image or send it through the Files API."
        )
    estimated = estimate_text_tokens(text) + (IMAGE_TOKENS if image_bytes is not None else 0)
    return PreparedCall(
        text=text,
        return_json=return_json,
        task=task or "",
        event_id=event_id,
        image_bytes=image_bytes,
        image_base64=image_b64,
        mime_type=mime if image_bytes is not None else "",
        image_sha256=digest,
        model_variant=model_variant,
        exact_match=exact_match,
        family=family,
        forced_free=forced_free,
        forced_paid=forced_paid,
        thinking_level=level,
        service_tier=tier,
        metadata=meta,
        estimated_input_tokens=estimated,
        max_output_tokens=max_tokens,
        response_schema=schema,
        accept_truncation=accept_truncation,
    )
