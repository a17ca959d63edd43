"""The emulator's error cases: real Gemini error bodies, and the rules that produce them.

Pure data and functions (no sockets, no state); :mod:`.emulator` keeps the state and
asks :func:`check_request` what to answer before quotas are counted. Every body is a
public fact, named with its source; the library's classifier is table-tested against
the same bodies verbatim (``tests/test_pool_scopes.py``), and a test ties the two.

What the emulator can be told to answer (all of it also from a JSON config file):

* per-model parameter checks (:class:`ModelRule`): the thinking levels a model takes
  (e.g. 3.1 Pro refuses MINIMAL), the thinking budgets (2.5 Pro: 128..32768, never 0;
  2.5 Flash: 0..24576; 2.5 Flash-Lite: 0 or 512..24576), the input token limit, JSON
  mode. :func:`default_model_rule` gives what the model catalog says (each fact with
  its source); an explicit rule (``set_model_rule``) replaces it, which is how a test
  makes the emulator refuse what the catalog does not know yet;
* retired models (404 "no longer available", for every key at once);
* projects whose free tier is not available in their region (400 FAILED_PRECONDITION
  for their free keys; their paid keys serve), and an unsupported caller location
  (400 FAILED_PRECONDITION for every key);
* scripted errors (:class:`ErrorRule`): any status and body, for one model, one key,
  one project and/or one tier, ``count`` times or for ever; e.g. a 403 for one model
  and one key: ``ErrorRule(403, permission_denied_body(), model=..., key_fingerprint=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..catalog import model_info
from .emulator_wire import ParsedRequest, error_body, invalid_key_body

__all__ = [
    "ErrorRule",
    "ModelRule",
    "default_model_rule",
    "check_request",
    "permission_denied_body",
    "service_disabled_body",
    "expired_key_body",
    "free_tier_unavailable_body",
    "location_unsupported_body",
    "thinking_level_body",
    "thinking_budget_zero_body",
    "thinking_budget_invalid_body",
    "input_too_long_body",
    "json_mode_body",
    "retired_model_body",
]


# --- bodies (each a public fact; sources in the docstrings) ---------------------------


def permission_denied_body(message: str = "The caller does not have permission") -> dict[str, Any]:
    """403 PERMISSION_DENIED with no ErrorInfo: a key without access to one model.

    Public threads report preview Pro models answering 403 to keys that keep working on
    other models (shared/notes/gemini-errors.md); "The caller does not have permission"
    is Google APIs' canonical PERMISSION_DENIED wording (google.rpc.Code).
    """
    return error_body(403, "PERMISSION_DENIED", message)


def service_disabled_body(project_number: str = "123456789012") -> dict[str, Any]:
    """403 SERVICE_DISABLED: the Generative Language API is off in the key's project."""
    message = (
        f"Generative Language API has not been used in project {project_number} before or it is disabled. "
        "Enable it by visiting https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/"
        f"overview?project={project_number} then retry. If you enabled this API recently, wait a few minutes "
        "for the action to propagate to our systems and retry."
    )
    return error_body(
        403,
        "PERMISSION_DENIED",
        message,
        [
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Google developers console API activation",
                        "url": f"https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project={project_number}",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SERVICE_DISABLED",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com", "consumer": f"projects/{project_number}"},
            },
        ],
    )


def expired_key_body() -> dict[str, Any]:
    """400 "API key expired. Please renew the API key." with reason API_KEY_INVALID [continuedev/continue#11336]."""
    return invalid_key_body("API key expired. Please renew the API key.")


def free_tier_unavailable_body() -> dict[str, Any]:
    """400 FAILED_PRECONDITION for a free key in a region without the free tier [ai.google.dev troubleshooting]."""
    return error_body(
        400,
        "FAILED_PRECONDITION",
        "Gemini API free tier is not available in your country. Please enable billing on your project in Google AI Studio.",
    )


def location_unsupported_body() -> dict[str, Any]:
    """400 FAILED_PRECONDITION for a caller in an unsupported region [poenl/gemini-api#4]."""
    return error_body(400, "FAILED_PRECONDITION", "User location is not supported for the API use.")


def thinking_level_body(level: str) -> dict[str, Any]:
    """400 for a level the model does not take [vellum-ai/vellum-assistant PR 32687; heyhuynhgiabuu/proxypal#170]."""
    return error_body(400, "INVALID_ARGUMENT", f"Thinking level {level.upper()} is not supported for this model.")


def thinking_budget_zero_body() -> dict[str, Any]:
    """400 for thinking_budget 0 on a model that cannot stop thinking [GewoonJaap/gemini-cli-openai#23]."""
    return error_body(400, "INVALID_ARGUMENT", "The model does not support setting thinking_budget to 0.")


def thinking_budget_invalid_body(budget: int) -> dict[str, Any]:
    """400 for a budget out of the model's range [RooCodeInc/Roo-Code#4399]."""
    return error_body(400, "INVALID_ARGUMENT", f"The thinking budget ({budget}) is invalid.")


def input_too_long_body(tokens: int, limit: int) -> dict[str, Any]:
    """400 for an input over the model's limit [google-gemini/gemini-cli#27197]."""
    return error_body(
        400,
        "INVALID_ARGUMENT",
        f"The input token count ({tokens}) exceeds the maximum number of tokens allowed ({limit}).",
    )


def json_mode_body(model: str) -> dict[str, Any]:
    """400 for JSON mode on a model without it [google-gemini/deprecated-generative-ai-python#137]."""
    return error_body(400, "INVALID_ARGUMENT", f"Json mode is not enabled for models/{model}")


def retired_model_body(model: str) -> dict[str, Any]:
    """404 for a retired model: "This model models/X is no longer available to new users."
    [sohzm/cheating-daddy#444, 2026-07; code and status as for other missing models]."""
    return error_body(404, "NOT_FOUND", f"This model models/{model} is no longer available to new users.")


# --- rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRule:
    """Answer ``status`` with ``body`` to requests matching every filter given.

    ``count=None``: for ever; else the next ``count`` matching requests. Filters:
    ``model``, ``key_fingerprint`` (the emulator's ``add_error`` takes the raw key),
    ``project`` and ``tier`` of the key.
    """

    status: int
    body: Mapping[str, Any]
    model: str | None = None
    key_fingerprint: str | None = None
    project: str | None = None
    tier: str | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise ValueError("count must be >= 1 (or None: for ever)")

    def matches(self, model: str, fingerprint: str, project: str, tier: str) -> bool:
        """True when this rule applies to a request of ``model`` from that key."""
        return (
            (self.model is None or self.model == model)
            and (self.key_fingerprint is None or self.key_fingerprint == fingerprint)
            and (self.project is None or self.project == project)
            and (self.tier is None or self.tier == tier)
        )


@dataclass(frozen=True)
class ModelRule:
    """What one model accepts; a request outside it gets the model's real 400.

    ``thinking_levels``: levels taken (``None``: any); ``thinking_budget``: ``(min, max)``
    of a positive budget (``None``: any); ``budget_zero``: whether 0 (thinking off) is
    taken; ``max_input_tokens``: the input limit; ``json_mode``: JSON replies.
    """

    thinking_levels: tuple[str, ...] | None = None
    thinking_budget: tuple[int, int] | None = None
    budget_zero: bool = True
    max_input_tokens: int = 1_048_576
    json_mode: bool = True

    def __post_init__(self) -> None:
        if self.thinking_levels is not None:
            object.__setattr__(self, "thinking_levels", tuple(str(v).upper() for v in self.thinking_levels))
        if self.thinking_budget is not None:
            low, high = self.thinking_budget
            object.__setattr__(self, "thinking_budget", (int(low), int(high)))


def default_model_rule(model: str) -> ModelRule:
    """What ``model`` accepts, as the model catalog says (``data/model_catalog.json``,
    each fact with its public source): thinking levels, budget range and whether 0
    turns thinking off, input limit, JSON mode. Gemini 3 models also refuse budget 0
    ("Budget 0 is invalid. This model only works in thinking mode." on
    gemini-3.1-pro-preview [docker/docker-agent#2051]; gemini-3.5-flash-lite
    [googleapis/python-genai#2936]).
    """
    info = model_info(model)
    thinking = info.thinking
    levels = tuple(level.upper() for level in thinking.levels) if thinking.style == "level" else None
    budget = None
    if thinking.style == "budget" and thinking.budget_max:
        budget = (max(1, thinking.budget_min), thinking.budget_max)
    return ModelRule(
        thinking_levels=levels,
        thinking_budget=budget,
        budget_zero=thinking.style == "none" or (thinking.style == "budget" and thinking.can_disable),
        max_input_tokens=info.input_token_limit,
        json_mode=info.json_mode,
    )


def check_request(model: str, parsed: ParsedRequest, rule: ModelRule) -> tuple[int, dict[str, Any]] | None:
    """The 400 ``model`` answers to ``parsed`` under ``rule``, or ``None`` when it takes it.

    Checked in the order Gemini validates (as far as public bodies show): thinking,
    JSON mode, then input size.
    """
    level = (parsed.thinking_level or "").upper()
    if level and rule.thinking_levels is not None and level not in rule.thinking_levels:
        return 400, thinking_level_body(level)
    budget = parsed.thinking_budget
    if budget is not None and budget != -1:
        if budget == 0:
            if not rule.budget_zero:
                return 400, thinking_budget_zero_body()
        elif rule.thinking_budget is not None:
            low, high = rule.thinking_budget
            if not low <= budget <= high:
                return 400, thinking_budget_invalid_body(budget)
    if parsed.json_mode and not rule.json_mode:
        return 400, json_mode_body(model)
    if parsed.prompt_tokens > rule.max_input_tokens:
        return 400, input_too_long_body(parsed.prompt_tokens, rule.max_input_tokens)
    return None
