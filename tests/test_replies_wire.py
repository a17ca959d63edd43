"""Replies that are not a plain success, through the real SDK on the emulator.

Each case is a fact of the real API (``/work/shared/notes/gemini-errors.md``, "200 replies
that are not usable"; sources in ``testing/emulator_replies.py``) that the original
library (and our 0.1.0) handled wrong: MAX_TOKENS retried as transient (up to 4 billed
requests) or returned cut without a word, safety stops retried on other keys,
temperature 0.1 sent to Gemini 3, MINIMAL sent to Pro, no structured output.
"""

import dataclasses
import logging
from datetime import date

import pytest
from pydantic import BaseModel

from csctracker_ai_core import (
    BlockedResponseError,
    FakeClock,
    IaProcessor,
    InvalidInputError,
    InvalidResponseError,
    TruncatedResponseError,
)
from csctracker_ai_core import catalog as cat
from csctracker_ai_core.testing import ReplyRule

FREE = ["AIzaFREE-one-0000000000000000000000", "AIzaFREE-two-0000000000000000000000"]
PAID = ["AIzaPAID-one-0000000000000000000000"]
G3 = "gemini-3-flash-preview"
PRO = "gemini-3.1-pro-preview"


def processor(emu, models, **kw):
    return IaProcessor(
        google_free_keys=FREE,
        google_paid_keys=PAID,
        google_models_limits=models,
        base_url=emu.base_url,
        telemetry="off",
        **kw,
    )


@pytest.fixture
def emu(make_gemini_emulator):
    emu = make_gemini_emulator()
    emu.add_keys(FREE, tier="free")
    emu.add_keys(PAID, tier="paid")
    return emu


def script(emu, *rules):
    emu.config = dataclasses.replace(emu.config, replies=rules)


def generate_requests(emu):
    return [r for r in emu.requests if r.method == "generateContent"]


# -- MAX_TOKENS ------------------------------------------------------------------------


def test_max_tokens_with_only_thinking_is_retried_once_with_less_thinking(emu):
    """HIGH thinking (256 tokens here) eats a 200-token cap: the reply has no text. One
    retry, thinking at the floor and the whole output limit, is served."""
    with processor(emu, {G3: 1}) as ia:
        result, tokens, _ = ia.analisar_com_gemini(
            prompt="conte uma história", return_json=False, thinking_level="high", max_output_tokens=200
        )
    first, second = generate_requests(emu)
    assert first.body["generationConfig"]["maxOutputTokens"] == 200
    assert first.body["generationConfig"]["thinkingConfig"]["thinking_level"] == "HIGH"
    assert second.body["generationConfig"]["thinkingConfig"]["thinking_level"] == "MINIMAL"
    assert second.body["generationConfig"]["maxOutputTokens"] == 65536
    assert result.startswith("Resposta simulada") and tokens.reasoning == 16


def test_max_tokens_costs_at_most_two_requests(emu):
    """A model that stops at MAX_TOKENS whatever it is sent: 2 requests, then a typed error
    (old main: 1 + max_retries = 4 billed requests, then a generic error)."""
    script(emu, ReplyRule("loop", text="", finish_reason="MAX_TOKENS", thoughts=900))
    with processor(emu, {G3: 1}) as ia, pytest.raises(TruncatedResponseError) as info:
        ia.analisar_com_gemini(prompt="loop forever", return_json=True)
    assert emu.count(status=200) == 2
    assert info.value.attempts == 2 and info.value.partial_text == "" and info.value.finish_reason == "MAX_TOKENS"
    assert isinstance(info.value, InvalidResponseError)  # still caught by the older except clauses


def test_max_tokens_without_any_change_that_helps_is_one_request(emu):
    script(emu, ReplyRule("loop", text="", finish_reason="MAX_TOKENS", thoughts=900))
    with processor(emu, {"gemini-2.5-flash": 1}) as ia, pytest.raises(TruncatedResponseError):
        # Budget 0 already (thinking off) and no output cap: asking again cannot help.
        ia.analisar_com_gemini(prompt="loop", thinking_level="minimal")
    assert emu.count(status=200) == 1


def test_truncated_text_is_never_returned_without_consent(emu):
    long = "palavra " * 400  # 800 tokens in the emulator's count
    script(emu, ReplyRule("resuma", text=long))
    with processor(emu, {G3: 1}) as ia:
        # Cut at 100 tokens: the one retry lifts the cap (MINIMAL is already the floor).
        whole, _, _ = ia.analisar_com_gemini(
            prompt="resuma", return_json=False, thinking_level="minimal", max_output_tokens=100
        )
        assert whole == long and emu.count(status=200) == 2
        assert generate_requests(emu)[-1].body["generationConfig"]["maxOutputTokens"] == 65536
        emu.reset_counters()
        cut, _, _ = ia.analisar_com_gemini(
            prompt="resuma", return_json=False, thinking_level="minimal", max_output_tokens=100, accept_truncation=True
        )
    assert cut == long[: (100 - 16) * 4] and emu.count(status=200) == 1


def test_cut_text_raises_with_the_partial_text(emu):
    long = "palavra " * 400
    script(emu, ReplyRule("resuma", text=long, finish_reason="MAX_TOKENS"))
    with processor(emu, {G3: 1}) as ia, pytest.raises(TruncatedResponseError) as info:
        # Thinking already at the floor and no cap to lift: no retry can help.
        ia.analisar_com_gemini(prompt="resuma", return_json=False, thinking_level="minimal")
    assert info.value.partial_text == long and emu.count(status=200) == 1
    assert "accept_truncation=True" in str(info.value)


def test_processor_and_environment_output_cap(emu, monkeypatch):
    monkeypatch.setenv("CSCTRACKER_AI_MAX_OUTPUT_TOKENS", "3000")
    with processor(emu, {G3: 1}) as ia:
        ia.analisar_com_gemini(prompt="x")
        assert emu.last_request.body["generationConfig"]["maxOutputTokens"] == 3000
        ia.analisar_com_gemini(prompt="x", max_output_tokens=500)
        assert emu.last_request.body["generationConfig"]["maxOutputTokens"] == 500
    with processor(emu, {G3: 1}, max_output_tokens=1234) as ia:
        ia.analisar_com_gemini(prompt="x")
        assert emu.last_request.body["generationConfig"]["maxOutputTokens"] == 1234
    with pytest.raises(InvalidInputError):
        with processor(emu, {G3: 1}) as ia:
            ia.analisar_com_gemini(prompt="x", max_output_tokens=0)


# -- safety ------------------------------------------------------------------------------


@pytest.mark.parametrize("finish", ["SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII"])
def test_stopped_reply_is_one_request_and_a_typed_error(emu, finish):
    script(emu, ReplyRule("proibido", finish_reason=finish))
    with processor(emu, {G3: 1, "gemini-2.5-flash": 1}) as ia, pytest.raises(BlockedResponseError) as info:
        ia.analisar_com_gemini(prompt="algo proibido")
    assert emu.count() == 1  # not retried on another key, model or tier
    assert info.value.reason == finish and finish in str(info.value) and info.value.attempts == 1


def test_blocked_prompt_is_one_request_and_a_typed_error(emu):
    script(emu, ReplyRule("proibido", block_reason="PROHIBITED_CONTENT"))
    with processor(emu, {G3: 1}) as ia, pytest.raises(BlockedResponseError) as info:
        ia.analisar_com_gemini(prompt="algo proibido", return_json=False)
    assert emu.count() == 1
    assert info.value.reason == "blockReason PROHIBITED_CONTENT"


# -- sampling and thinking -----------------------------------------------------------------


def test_temperature_is_left_to_gemini_3_and_kept_at_0_1_before(emu):
    with processor(emu, {G3: 1, "gemini-2.5-flash": 1}) as ia:
        ia.analisar_com_gemini(prompt="x", model_variant=G3, exact_match=True)
        assert "temperature" not in emu.last_request.body["generationConfig"]
        ia.analisar_com_gemini(prompt="x", model_variant="gemini-2.5-flash", exact_match=True)
        assert emu.last_request.body["generationConfig"]["temperature"] == 0.1
    with processor(emu, {G3: 1}, temperature=0.4) as ia:
        ia.analisar_com_gemini(prompt="x")
        assert emu.last_request.body["generationConfig"]["temperature"] == 0.4


@pytest.mark.parametrize(
    "model, wish, sent",
    [
        (PRO, "minimal", "LOW"),
        ("gemini-3-pro-preview", "medium", "LOW"),
        ("gemini-3.8-flash", "minimal", "LOW"),
        (PRO, "medium", "MEDIUM"),
    ],
)
def test_thinking_level_is_mapped_to_one_the_model_takes(emu, model, wish, sent, monkeypatch):
    monkeypatch.setattr(cat, "WATCH", cat.ShutdownWatch())  # judged by the clock below
    clock = FakeClock(1_770_000_000)  # 2026-02-02: 3 Pro Preview still served
    with processor(emu, {model: 1}, clock=clock) as ia:
        ia.analisar_com_gemini(prompt="x", thinking_level=wish)
    assert emu.count(status=400) == 0 and emu.count(status=200) == 1
    assert emu.last_request.body["generationConfig"]["thinkingConfig"]["thinking_level"] == sent


# -- structured output ------------------------------------------------------------------------


class Cidade(BaseModel):
    nome: str
    populacao: int


SCHEMA = {
    "type": "object",
    "properties": {"nome": {"type": "string"}, "populacao": {"type": "integer"}},
    "required": ["nome", "populacao"],
}


def test_schema_dict_is_sent_and_checked(emu):
    script(emu, ReplyRule("cidade", json={"nome": "Recife", "populacao": 1488920}))
    with processor(emu, {G3: 1}) as ia:
        result, _, _ = ia.analisar_com_gemini(prompt="uma cidade", response_schema=SCHEMA)
    assert result == {"nome": "Recife", "populacao": 1488920}
    assert emu.last_request.body["generationConfig"]["responseJsonSchema"] == SCHEMA


def test_pydantic_class_comes_back_as_an_instance(emu):
    script(emu, ReplyRule("cidade", json={"nome": "Recife", "populacao": 1488920}))
    with processor(emu, {G3: 1}) as ia:
        result, _, _ = ia.analisar_com_gemini(prompt="uma cidade", response_schema=Cidade)
    assert result == Cidade(nome="Recife", populacao=1488920)
    sent = emu.last_request.body["generationConfig"]["responseJsonSchema"]
    assert sent["required"] == ["nome", "populacao"] and sent["properties"]["populacao"]["type"] == "integer"


@pytest.mark.parametrize("schema", [SCHEMA, Cidade])
def test_reply_breaking_the_schema_is_a_failed_attempt(emu, schema):
    script(emu, ReplyRule("cidade", json={"nome": "Recife"}))
    with processor(emu, {G3: 1}, max_retries=1) as ia, pytest.raises(InvalidResponseError) as info:
        ia.analisar_com_gemini(prompt="uma cidade", response_schema=schema)
    assert emu.count(status=200) == 2  # one retry, as for invalid JSON
    assert "populacao" in str(info.value)
    assert not isinstance(info.value, (TruncatedResponseError, BlockedResponseError))


def test_bad_schema_argument_sends_nothing(emu):
    with processor(emu, {G3: 1}) as ia:
        with pytest.raises(InvalidInputError):
            ia.analisar_com_gemini(prompt="x", response_schema="object")
        with pytest.raises(InvalidInputError):
            ia.analisar_com_gemini(prompt="x", response_schema=SCHEMA, return_json=False)
    assert emu.count() == 0


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"nome": "Natal", "populacao": 751300}\n```',
        'Claro! Segue:\n```json\n{"nome": "Natal", "populacao": 751300}\n```\nAbraço.',
    ],
)
def test_fenced_json_is_parsed(emu, text):
    script(emu, ReplyRule("cidade", text=text, raw=True))
    with processor(emu, {G3: 1}) as ia:
        result, _, _ = ia.analisar_com_gemini(prompt="uma cidade", response_schema=Cidade)
    assert result == Cidade(nome="Natal", populacao=751300) and emu.count() == 1


def test_model_without_json_mode_is_asked_in_text_and_its_json_parsed(emu):
    """Gemma answers 400 "JSON mode is not enabled" to responseMimeType JSON [vercel/ai#8080]."""
    script(emu, ReplyRule("cidade", text='Aqui:\n```json\n{"nome": "Natal", "populacao": 751300}\n```'))
    with processor(emu, {"gemma-3-27b-it": 1}) as ia:
        result, _, _ = ia.analisar_com_gemini(prompt="uma cidade", response_schema=SCHEMA)
    assert result == {"nome": "Natal", "populacao": 751300}
    assert emu.count(status=400) == 0
    assert emu.last_request.body["generationConfig"]["responseMimeType"] == "text/plain"


# -- the lineup -------------------------------------------------------------------------------


def test_shut_down_model_is_skipped_with_one_warning(emu, monkeypatch, caplog):
    monkeypatch.setattr(cat, "WATCH", cat.ShutdownWatch())
    import calendar

    clock = FakeClock(calendar.timegm(date(2026, 12, 2).timetuple()))
    with (
        caplog.at_level(logging.WARNING),
        processor(emu, {"gemini-2.5-pro": 1, "gemini-3.8-flash": 1}, clock=clock) as ia,
    ):
        for _ in range(3):
            ia.analisar_com_gemini(prompt="x")
    assert emu.count(model="gemini-2.5-pro") == 0 and emu.count(model="gemini-3.8-flash", status=200) == 3
    warnings = [r.getMessage() for r in caplog.records if "shut down" in r.getMessage()]
    assert len(warnings) == 1 and "gemini-3.8-flash" in warnings[0] and "gemini-2.5-pro" in warnings[0]
