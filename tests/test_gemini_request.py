"""What goes on the wire for each model, and how replies and usage are read."""

import dataclasses
from types import SimpleNamespace

import pytest
from google.genai import types

from csctracker_ai_core.gemini.request import build_config, build_contents, thinking_budget_for
from csctracker_ai_core.gemini.response import ReplyProblem, parse_json_reply
from csctracker_ai_core.tokens import TokenUsage
from csctracker_ai_core.validation import validate_call


@pytest.mark.parametrize(
    "model, level, expected_level, expected_budget",
    [
        ("gemini-3-flash-preview", "high", "HIGH", None),
        ("gemini-3.1-pro-preview", "minimal", "MINIMAL", None),
        ("gemini-2.5-flash", "minimal", None, 0),
        ("gemini-2.5-pro", "minimal", None, 128),
        ("gemini-2.5-flash", "low", None, 1024),
        ("gemini-2.5-flash-lite", "high", None, -1),
    ],
)
def test_thinking_goes_to_each_model_family_in_its_own_form(model, level, expected_level, expected_budget):
    config = build_config(model, True, level, "standard", 0.1)
    thinking = config.thinking_config
    assert thinking is not None
    assert (thinking.thinking_level.value if thinking.thinking_level else None) == expected_level
    assert thinking.thinking_budget == expected_budget


def test_no_thinking_config_when_not_asked_or_model_too_old():
    assert build_config("gemini-3-flash-preview", True, None, "standard", 0.1).thinking_config is None
    assert build_config("gemini-2.0-flash", True, "high", "standard", 0.1).thinking_config is None


def test_service_tier_sent_only_when_not_standard_and_json_mode():
    assert build_config("gemini-2.5-flash", True, None, "standard", 0.1).service_tier is None
    flex = build_config("gemini-2.5-flash", False, None, "flex", 0.1)
    assert flex.service_tier.value == "flex" and flex.response_mime_type == "text/plain"
    assert build_config("gemini-2.5-flash", True, None, "standard", 0.1).response_mime_type == "application/json"


def test_configs_are_built_once():
    assert build_config("gemini-2.5-flash", True, None, "standard", 0.1) is build_config(
        "gemini-2.5-flash", True, None, "standard", 0.1
    )


def test_text_only_contents_are_a_plain_string():
    assert build_contents(validate_call(prompt="p", input_text="i")) == "p\ni"


def test_contents_carry_text_then_image():
    call = validate_call(prompt="describe", file_base64="iVBORw0KGgo=", mime_type="image/png")
    text, part = build_contents(call)
    assert text == "describe"
    assert isinstance(part, types.Part) and part.inline_data.mime_type == "image/png"


def test_budget_table():
    assert [thinking_budget_for("gemini-2.5-flash", l) for l in ("minimal", "low", "medium", "high")] == [0, 1024, 8192, -1]


@pytest.mark.parametrize(
    "text, expected",
    [('{"a": 1}', {"a": 1}), ('```json\n{"a": [1]}\n```', {"a": [1]}), ("[1, 2]", [1, 2])],
)
def test_json_replies_parse_with_or_without_fence(text, expected):
    assert parse_json_reply(text) == expected


def test_invalid_json_is_a_retryable_problem():
    with pytest.raises(ReplyProblem) as info:
        parse_json_reply("Paris, of course")
    assert info.value.retryable


def test_token_usage_from_metadata_counts_thinking_as_output():
    usage = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=300, candidates_token_count=3, thoughts_token_count=57,
        total_token_count=360, cached_content_token_count=10,
        prompt_tokens_details=[
            types.ModalityTokenCount(modality="TEXT", token_count=42),
            types.ModalityTokenCount(modality="IMAGE", token_count=258),
        ],
    )
    tokens = TokenUsage.from_usage_metadata(usage)
    assert tokens == TokenUsage(input=300, output=60, reasoning=57, image=258, cached=10, total=360)
    assert int(tokens) == 300
    assert str(tokens) == "input=300 (image=258, cached=10) output=60 (reasoning=57) total=360"
    with pytest.raises(dataclasses.FrozenInstanceError):
        tokens.input = 1


def test_token_usage_of_missing_metadata_is_zero():
    assert TokenUsage.from_usage_metadata(None) == TokenUsage()
    partial = SimpleNamespace(prompt_token_count=5, candidates_token_count=None, thoughts_token_count=None,
                              total_token_count=None, cached_content_token_count=None,
                              prompt_tokens_details=None, tool_use_prompt_token_count=None)
    assert TokenUsage.from_usage_metadata(partial) == TokenUsage(input=5, total=5)
