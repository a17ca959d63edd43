"""Gemini REST wire format for the emulator: request reading, token estimates, bodies.

Pure functions only (no sockets, no state), so the server in :mod:`.emulator` stays a
thin layer and every body shape can be checked on its own. Error bodies copy the
shapes the real API returns (see ``/work/shared/notes/gemini-wire.md``) because the
library's classifier is written against those shapes, not against our own.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ParsedRequest",
    "parse_request",
    "text_tokens",
    "error_body",
    "invalid_key_body",
    "leaked_key_body",
    "blocked_key_body",
    "missing_key_body",
    "model_not_found_body",
    "internal_body",
    "overloaded_body",
    "deadline_body",
    "bad_request_body",
    "new_response_id",
    "OVERLOADED_2026",
    "OVERLOADED_LEGACY",
]

# Tokens Gemini bills for one inline image (and, in this emulator, for any other
# inline file): the real figure for an image up to 384x384 px.
INLINE_PART_TOKENS = 258

OVERLOADED_2026 = (
    "This model is currently experiencing high demand. Spikes in demand are usually temporary. Please try again later."
)
OVERLOADED_LEGACY = "The model is overloaded. Please try again later."


def _get(obj: Mapping[str, Any], camel: str, default: Any = None) -> Any:
    """Read a field by its camelCase or snake_case name, as proto3 JSON parsers do."""
    if camel in obj:
        return obj[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(snake, default)


def text_tokens(text: str) -> int:
    """Estimate tokens of ``text`` the way the emulator bills it: ceil(chars / 4), min 1."""
    return max(1, math.ceil(len(text) / 4))


def _modality(mime_type: str) -> str:
    major = mime_type.split("/", 1)[0].lower()
    if major in ("image", "video", "audio"):
        return major.upper()
    return "DOCUMENT"


@dataclass(frozen=True)
class ParsedRequest:
    """What the emulator needs from a generateContent / countTokens body."""

    prompt_text: str
    """All text parts of ``contents`` and ``systemInstruction``, newline-joined."""
    inline_modalities: tuple[str, ...]
    """One modality (IMAGE, VIDEO, AUDIO, DOCUMENT) per inline data part."""
    json_mode: bool
    thinking_level: str | None
    thinking_budget: int | None
    service_tier: str
    response_schema: Mapping[str, Any] | None
    max_output_tokens: int | None = None
    temperature: float | None = None

    def prompt_token_details(self) -> list[dict[str, Any]]:
        """``promptTokensDetails``: tokens by modality, TEXT first."""
        counts: dict[str, int] = {"TEXT": text_tokens(self.prompt_text)}
        for modality in self.inline_modalities:
            counts[modality] = counts.get(modality, 0) + INLINE_PART_TOKENS
        return [{"modality": m, "tokenCount": n} for m, n in counts.items()]

    @property
    def prompt_tokens(self) -> int:
        """``promptTokenCount``: text estimate plus 258 per inline part."""
        return text_tokens(self.prompt_text) + INLINE_PART_TOKENS * len(self.inline_modalities)


class RequestError(ValueError):
    """The body cannot be read as a Gemini request (answered 400 INVALID_ARGUMENT)."""


def _parts_of(content: Any) -> Sequence[Any]:
    if not isinstance(content, Mapping):
        raise RequestError("Invalid JSON payload received. Content must be an object.")
    parts = content.get("parts") or []
    if not isinstance(parts, list):
        raise RequestError("Invalid JSON payload received. 'parts' must be a list.")
    return parts


def parse_request(body: Any) -> ParsedRequest:
    """Read a generateContent (or countTokens) body, camelCase or snake_case.

    Raises :class:`RequestError` for shapes the real API rejects with a 400.
    """
    if not isinstance(body, Mapping):
        raise RequestError("Invalid JSON payload received. Expected an object.")
    # countTokens may wrap a full request in generateContentRequest.
    inner = _get(body, "generateContentRequest")
    if isinstance(inner, Mapping):
        body = inner
    contents = body.get("contents") or []
    if isinstance(contents, Mapping):
        contents = [contents]
    if not isinstance(contents, list):
        raise RequestError("Invalid JSON payload received. 'contents' must be a list.")
    all_contents = list(contents)
    system = _get(body, "systemInstruction")
    if system:
        all_contents.insert(0, system)
    if not contents:
        raise RequestError("* GenerateContentRequest.contents: contents is not specified\n")

    texts: list[str] = []
    modalities: list[str] = []
    for content in all_contents:
        for part in _parts_of(content):
            if not isinstance(part, Mapping):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            inline = _get(part, "inlineData")
            if isinstance(inline, Mapping):
                data = inline.get("data", "")
                try:
                    # proto3 JSON takes bytes in standard or URL-safe base64, and the SDK
                    # sends the URL-safe form.
                    if isinstance(data, str) and ("-" in data or "_" in data):
                        data = data.replace("-", "+").replace("_", "/")
                    base64.b64decode(data, validate=True)
                except (ValueError, TypeError):
                    raise RequestError(
                        "Invalid value at 'contents[0].parts[1].inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                    ) from None
                modalities.append(_modality(str(_get(inline, "mimeType", "image/jpeg"))))
            file_data = _get(part, "fileData")
            if isinstance(file_data, Mapping):
                modalities.append(_modality(str(_get(file_data, "mimeType", "image/jpeg"))))

    config = _get(body, "generationConfig") or {}
    thinking = _get(config, "thinkingConfig") or {}
    budget = _get(thinking, "thinkingBudget")
    level = _get(thinking, "thinkingLevel")
    mime = str(_get(config, "responseMimeType") or "text/plain").lower()
    tier = _get(body, "serviceTier") or "standard"
    return ParsedRequest(
        prompt_text="\n".join(texts),
        inline_modalities=tuple(modalities),
        json_mode=mime == "application/json",
        thinking_level=str(level) if level else None,
        thinking_budget=int(budget) if budget is not None else None,
        service_tier=str(tier).lower(),
        response_schema=_get(config, "responseSchema") or _get(config, "responseJsonSchema"),
        max_output_tokens=int(_get(config, "maxOutputTokens")) if _get(config, "maxOutputTokens") else None,
        temperature=float(_get(config, "temperature")) if _get(config, "temperature") is not None else None,
    )


def new_response_id() -> str:
    """A random id shaped like the real ``responseId`` (22 URL-safe characters)."""
    return secrets.token_urlsafe(16)[:22]


# --- error bodies -----------------------------------------------------------------


def error_body(code: int, status: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    """``{"error": {code, message, status[, details]}}`` as Google APIs send it."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _error_info(reason: str, **metadata: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com", **metadata},
    }


def invalid_key_body(message: str = "API key not valid. Please pass a valid API key.") -> dict[str, Any]:
    """400 API_KEY_INVALID, verbatim (an expired key gets the same body with its own message)."""
    return error_body(
        400,
        "INVALID_ARGUMENT",
        message,
        [
            _error_info("API_KEY_INVALID"),
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
        ],
    )


def leaked_key_body() -> dict[str, Any]:
    """403 for a key Google found published."""
    return error_body(403, "PERMISSION_DENIED", "Your API key was reported as leaked. Please use another API key.")


def blocked_key_body(reason: str) -> dict[str, Any]:
    """403 with ErrorInfo ``API_KEY_SERVICE_BLOCKED`` or ``CONSUMER_SUSPENDED``."""
    if reason == "CONSUMER_SUSPENDED":
        message = "Permission denied: Consumer 'api_key:redacted' has been suspended."
        extra = {"consumer": "projects/redacted"}
    else:
        message = (
            "Requests to this API generativelanguage.googleapis.com method "
            "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked."
        )
        extra = {"methodName": "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"}
    return error_body(403, "PERMISSION_DENIED", message, [_error_info(reason, **extra)])


def missing_key_body() -> dict[str, Any]:
    """403 for a request without any key."""
    return error_body(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )


def model_not_found_body(model: str, api_version: str, method: str) -> dict[str, Any]:
    """404 for a model the emulator does not serve, verbatim wording."""
    return error_body(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version {api_version}, or is not supported for "
        f"{method}. Call ListModels to see the list of available models and their supported methods.",
    )


def internal_body() -> dict[str, Any]:
    """500 INTERNAL, verbatim."""
    return error_body(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    )


def overloaded_body(message: str = OVERLOADED_2026) -> dict[str, Any]:
    """503 UNAVAILABLE; 2026 wording by default, :data:`OVERLOADED_LEGACY` for the older one."""
    return error_body(503, "UNAVAILABLE", message)


def deadline_body() -> dict[str, Any]:
    """504 DEADLINE_EXCEEDED, verbatim."""
    return error_body(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.")


def bad_request_body(message: str) -> dict[str, Any]:
    """400 INVALID_ARGUMENT for a body the emulator cannot read."""
    return error_body(400, "INVALID_ARGUMENT", message)


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes, UTF-8 (non-ASCII kept, as Google sends it)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
