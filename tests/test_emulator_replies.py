"""The emulator's replies, and its per-model parameter checks as the catalog says, through the real SDK.

Facts and their sources are listed in ``csctracker_ai_core/testing/emulator_replies.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from csctracker_ai_core.testing import GeminiEmulator, ReplyRule


@pytest.fixture
def emu(make_gemini_emulator) -> GeminiEmulator:
    return make_gemini_emulator(
        keys=["k1"],
        replies=(
            ReplyRule("história", text="Era uma vez " * 100),
            ReplyRule("proibido", finish_reason="SAFETY"),
            ReplyRule("bloqueado", block_reason="PROHIBITED_CONTENT"),
        ),
    )


def ask(emu: GeminiEmulator, model: str, text: str = "Qual a capital da França?", **config: Any):
    c = genai.Client(api_key="k1", http_options=types.HttpOptions(base_url=emu.base_url))
    return c.models.generate_content(model=model, contents=text, config=types.GenerateContentConfig(**config))


@pytest.mark.parametrize(
    "model, config, message",
    [
        (
            "gemini-3.1-pro-preview",
            {"thinking_config": types.ThinkingConfig(thinking_level="MINIMAL")},
            "Thinking level MINIMAL is not supported for this model.",
        ),
        (
            "gemini-3-pro-preview",
            {"thinking_config": types.ThinkingConfig(thinking_level="MEDIUM")},
            "Thinking level MEDIUM is not supported for this model.",
        ),
        (
            "gemini-3.8-flash",
            {"thinking_config": types.ThinkingConfig(thinking_level="MINIMAL")},
            "Thinking level MINIMAL is not supported for this model.",
        ),
        (
            "gemini-2.5-pro",
            {"thinking_config": types.ThinkingConfig(thinking_budget=0)},
            "The model does not support setting thinking_budget to 0.",
        ),
        (
            "gemini-3.1-pro-preview",
            {"thinking_config": types.ThinkingConfig(thinking_budget=0)},
            "The model does not support setting thinking_budget to 0.",
        ),
        (
            "gemma-3-27b-it",
            {"response_mime_type": "application/json"},
            "Json mode is not enabled for models/gemma-3-27b-it",
        ),
    ],
)
def test_parameters_a_model_refuses_answer_400(emu, model, config, message):
    with pytest.raises(errors.ClientError) as info:
        ask(emu, model, **config)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert info.value.details["error"]["message"] == message


def test_parameters_a_model_takes_are_served(emu):
    assert ask(emu, "gemini-3.1-pro-preview", thinking_config=types.ThinkingConfig(thinking_level="MEDIUM")).text
    assert ask(emu, "gemini-3-flash-preview", thinking_config=types.ThinkingConfig(thinking_level="MINIMAL")).text
    assert ask(emu, "gemini-2.5-flash", thinking_config=types.ThinkingConfig(thinking_budget=0)).text
    assert ask(emu, "gemma-3-27b-it").text


def test_thinking_that_eats_the_output_budget_leaves_no_text(emu):
    """[google/adk-python#1357]: content with only a role, usage with only thoughts."""
    reply = ask(emu, "gemini-3-flash-preview", max_output_tokens=100)  # default HIGH: 256 thinking tokens
    candidate = reply.candidates[0]
    assert candidate.finish_reason == types.FinishReason.MAX_TOKENS
    assert candidate.content.role == "model" and not candidate.content.parts
    usage = reply.usage_metadata
    assert usage.thoughts_token_count == 100 and usage.candidates_token_count is None
    assert reply.text is None


def test_text_that_does_not_fit_is_cut(emu):
    reply = ask(
        emu,
        "gemini-3-flash-preview",
        "uma história",
        max_output_tokens=80,
        thinking_config=types.ThinkingConfig(thinking_level="MINIMAL"),
    )
    assert reply.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert reply.text == ("Era uma vez " * 100)[: (80 - 16) * 4]
    assert reply.usage_metadata.candidates_token_count + reply.usage_metadata.thoughts_token_count == 80


def test_safety_stop_and_blocked_prompt(emu):
    stopped = ask(emu, "gemini-3-flash-preview", "algo proibido")
    assert stopped.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert stopped.candidates[0].content is None and stopped.text is None
    blocked = ask(emu, "gemini-3-flash-preview", "algo bloqueado")
    assert not blocked.candidates
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    assert emu.count(status=200) == 2


def test_stream_of_a_stopped_reply_is_one_chunk_saying_so(emu):
    c = genai.Client(api_key="k1", http_options=types.HttpOptions(base_url=emu.base_url))
    chunks = list(c.models.generate_content_stream(model="gemini-3-flash-preview", contents="algo proibido"))
    assert len(chunks) == 1 and chunks[0].candidates[0].finish_reason == types.FinishReason.SAFETY


def test_gemini_3_thinks_at_its_default_level_when_not_told(emu):
    assert ask(emu, "gemini-3-flash-preview").usage_metadata.thoughts_token_count == 256  # HIGH
    assert ask(emu, "gemini-3.6-flash").usage_metadata.thoughts_token_count == 128  # medium by default
    assert ask(emu, "gemini-2.5-flash").usage_metadata.thoughts_token_count is None
