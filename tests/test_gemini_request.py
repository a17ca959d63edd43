"""What goes on the wire for each model, and how replies and usage are read."""

import dataclasses
from types import SimpleNamespace

import pytest
from google.genai import types

from csctracker_ai_core.gemini.request import (
    FAMILY_TEMPERATURE,
    RequestOptions,
    build_config,
    build_contents,
    truncation_retry,
)
from csctracker_ai_core.gemini.response import ReplyProblem, parse_json_reply, read_reply
from csctracker_ai_core.gemini.sdk_models import RequestConfig, RequestContent, RequestPart, scans_for_names
from csctracker_ai_core.gemini.structured import response_schema_from
from csctracker_ai_core.tokens import TokenUsage
from csctracker_ai_core.validation import validate_call


def opts(**kw):
    return RequestOptions(**kw)


@pytest.mark.parametrize(
    "model, level, expected_level, expected_budget",
    [
        ("gemini-3-flash-preview", "high", "HIGH", None),
        ("gemini-3-flash-preview", "minimal", "MINIMAL", None),
        # Pro never gets a level it refuses (the original sent MINIMAL / MEDIUM to Pro):
        # 3 Pro Preview takes low/high, 3.1 Pro low/medium/high; ties go to the lower level.
        ("gemini-3-pro-preview", "minimal", "LOW", None),
        ("gemini-3-pro-preview", "medium", "LOW", None),
        ("gemini-3.1-pro-preview", "minimal", "LOW", None),
        ("gemini-3.1-pro-preview", "medium", "MEDIUM", None),
        # 3.7 / 3.8 Flash reject minimal (BerriAI/litellm-docs#1505).
        ("gemini-3.8-flash", "minimal", "LOW", None),
        ("gemini-2.5-flash", "minimal", None, 0),
        ("gemini-2.5-pro", "minimal", None, 128),
        ("gemini-2.5-flash", "low", None, 1024),
        ("gemini-2.5-flash-lite", "high", None, -1),
        ("gemini-2.5-flash-lite", "low", None, 1024),
    ],
)
def test_thinking_goes_to_each_model_in_a_form_it_takes(model, level, expected_level, expected_budget):
    thinking = build_config(model, opts(thinking_level=level)).thinking_config
    assert thinking is not None
    assert (thinking.thinking_level.value if thinking.thinking_level else None) == expected_level
    assert thinking.thinking_budget == expected_budget


def test_no_thinking_config_when_not_asked_or_model_does_not_think():
    assert build_config("gemini-3-flash-preview", opts()).thinking_config is None
    assert build_config("gemini-2.0-flash", opts(thinking_level="high")).thinking_config is None
    assert build_config("gemma-3-27b-it", opts(thinking_level="high")).thinking_config is None


def test_temperature_by_family_unless_the_caller_sets_it():
    # Google: keep Gemini 3 at its default temperature (lower values may loop).
    assert build_config("gemini-3-flash-preview", opts()).temperature is None
    assert build_config("gemini-3.8-flash", opts()).temperature is None
    assert build_config("gemini-2.5-flash", opts()).temperature == 0.1
    assert build_config("gemini-3.8-flash", opts(temperature=0.7)).temperature == 0.7
    assert build_config("gemini-2.5-flash", opts(temperature=None)).temperature is None
    assert RequestOptions().temperature is FAMILY_TEMPERATURE


def test_max_output_tokens_sent_and_capped_at_the_model_limit():
    assert build_config("gemini-2.5-flash", opts()).max_output_tokens is None
    assert build_config("gemini-2.5-flash", opts(max_output_tokens=500)).max_output_tokens == 500
    assert build_config("gemma-3-27b-it", opts(max_output_tokens=100_000)).max_output_tokens == 8192


def test_json_mode_only_where_the_model_has_it():
    schema = response_schema_from({"type": "object", "properties": {"a": {"type": "integer"}}})
    config = build_config("gemini-2.5-flash", opts(response_schema=schema.json_text))
    assert config.response_mime_type == "application/json"
    assert config.response_json_schema == {"type": "object", "properties": {"a": {"type": "integer"}}}
    gemma = build_config("gemma-3-27b-it", opts(response_schema=schema.json_text))
    assert gemma.response_mime_type == "text/plain" and gemma.response_json_schema is None


def test_service_tier_sent_only_when_not_standard():
    assert build_config("gemini-2.5-flash", opts()).service_tier is None
    flex = build_config("gemini-2.5-flash", opts(return_json=False, service_tier="flex"))
    assert flex.service_tier.value == "flex" and flex.response_mime_type == "text/plain"


def test_configs_are_built_once():
    assert build_config("gemini-2.5-flash", opts()) is build_config("gemini-2.5-flash", opts())


@pytest.mark.parametrize(
    "model, before, after",
    [
        # Thinking at the model's default: think the least the model takes, whole output limit kept.
        ("gemini-3.1-pro-preview", opts(), opts(thinking_level="floor")),
        ("gemini-2.5-pro", opts(thinking_level="high"), opts(thinking_level="floor")),
        # Output capped by the caller: lift the cap to the model's limit as well.
        (
            "gemini-3-flash-preview",
            opts(thinking_level="high", max_output_tokens=100),
            opts(thinking_level="floor", max_output_tokens=65536),
        ),
        # Already at the floor: only the cap can move.
        (
            "gemini-3-flash-preview",
            opts(thinking_level="minimal", max_output_tokens=100),
            opts(thinking_level="minimal", max_output_tokens=65536),
        ),
        ("gemini-2.5-flash", opts(thinking_level="minimal"), None),
        ("gemini-3.8-flash", opts(thinking_level="low"), None),
        ("gemma-3-27b-it", opts(), None),
        ("gemma-3-27b-it", opts(max_output_tokens=8192), None),
        # 3.5 Flash-Lite thinks at minimal by default (its floor): nothing to lower.
        ("gemini-3.5-flash-lite", opts(), None),
    ],
)
def test_truncation_retry_only_with_a_change_that_can_help(model, before, after):
    assert truncation_retry(model, before) == after


def test_text_only_contents_are_one_user_turn_with_one_text_part():
    turn = build_contents(validate_call(prompt="p", input_text="i"))
    assert isinstance(turn, RequestContent) and turn.role == "user"
    assert [part.text for part in turn.parts] == ["p\ni"]
    assert all(isinstance(part, RequestPart) for part in turn.parts)
    # Each call gets its own turn (they are copies of one template).
    other = build_contents(validate_call(prompt="q", input_text="j"))
    assert [part.text for part in turn.parts] == ["p\ni"] and [part.text for part in other.parts] == ["q\nj"]
    assert other.parts is not turn.parts and other.parts[0] is not turn.parts[0]
    assert turn.model_dump() == types.Content(role="user", parts=[types.Part(text="p\ni")]).model_dump()


def test_contents_carry_text_then_image():
    call = validate_call(prompt="describe", file_base64="iVBORw0KGgo=", mime_type="image/png")
    text, part = build_contents(call).parts
    assert text.text == "describe"
    assert isinstance(part, RequestPart) and part.inline_data.mime_type == "image/png"
    assert part.inline_data.data == call.image_bytes


def test_the_lean_models_answer_in_as_pydantic_does():
    # A field name is never "in" a pydantic model (iteration yields (name, value)
    # pairs); the subclasses only skip the scan.
    plain, lean = types.GenerateContentConfig(temperature=0.5), RequestConfig(temperature=0.5)
    for item in ("temperature", "top_p", ("temperature", 0.5), ("temperature", 0.7), 3):
        assert (item in lean) is (item in plain), item
    assert ("temperature", 0.5) in lean


def test_the_installed_sdk_still_scans_its_models_for_a_name():
    # What the lean models save rests on this (google-genai 3.6.1): if a version gives its
    # models a __contains__, the subclasses keep the SDK's, and this says the saving is gone.
    for model in (types.GenerateContentConfig, types.Part, types.Content):
        assert scans_for_names(model), model
    assert all("__contains__" in vars(lean) for lean in (RequestConfig, RequestPart, RequestContent))

    class Answers(types.Content):
        def __contains__(self, item):
            return True

    assert not scans_for_names(Answers)


def _as_the_sdk_documents_it(call, config):
    """The contents and config a user of the SDK would write for the same request."""
    text = call.text
    contents = (
        text if call.image_bytes is None else [types.Part.from_bytes(data=call.image_bytes, mime_type=call.mime_type)]
    )
    if call.image_bytes is not None and text:
        contents.insert(0, text)
    fields = {name: getattr(config, name) for name in config.model_fields_set if name != "automatic_function_calling"}
    return contents, types.GenerateContentConfig(**fields)


WIRE_CASES = [
    ("gemini-2.5-flash", dict(prompt="Responda em JSON.", input_text="Qual a capital?"), opts()),
    ("gemini-3-flash-preview", dict(prompt="p", input_text="i"), opts(thinking_level="high", max_output_tokens=100)),
    ("gemini-2.5-pro", dict(prompt="p", input_text="i"), opts(thinking_level="minimal", temperature=0.7)),
    ("gemini-2.5-flash", dict(prompt="p", input_text="i"), opts(return_json=False, service_tier="flex")),
    (
        "gemini-2.5-flash",
        dict(prompt="p", input_text="i"),
        opts(
            response_schema=response_schema_from({"type": "object", "properties": {"a": {"type": "string"}}}).json_text
        ),
    ),
    ("gemma-3-27b-it", dict(prompt="p", input_text="ç ação 😀"), opts(max_output_tokens=100_000)),
    ("gemini-2.5-flash", dict(prompt="describe", file_base64="iVBORw0KGgo=", mime_type="image/png"), opts()),
    ("gemini-2.5-flash", dict(file_base64="iVBORw0KGgo=", mime_type="image/png"), opts()),
]


@pytest.mark.parametrize("model, call_args, options", WIRE_CASES)
def test_the_lean_request_sends_the_body_the_sdk_sends_for_the_plain_one(model, call_args, options):
    # Over the wire, through the real SDK: what the emulator receives is the same body
    # for the SDK's plain models (a str or [str, Part] and a GenerateContentConfig
    # without automatic function calling) as for ours.
    from google import genai

    from csctracker_ai_core.testing import GeminiEmulator

    call = validate_call(**call_args)
    config = build_config(model, options)
    plain_contents, plain_config = _as_the_sdk_documents_it(call, config)
    assert type(plain_config) is types.GenerateContentConfig
    with GeminiEmulator() as emu:
        client = genai.Client(api_key="AIzaWIRE-lean-models", http_options=types.HttpOptions(base_url=emu.base_url))
        client.models.generate_content(model=model, contents=plain_contents, config=plain_config)
        client.models.generate_content(model=model, contents=build_contents(call), config=config)
        client.models.count_tokens(model=model, contents=plain_contents)
        client.models.count_tokens(model=model, contents=build_contents(call))
        plain, lean, plain_count, lean_count = (r.body for r in emu.requests)
    assert plain is not None and plain["contents"][0]["parts"]
    assert lean == plain
    assert lean_count == plain_count


def test_a_call_does_not_run_the_sdks_function_calling_loop(caplog):
    # google-genai logs "AFC is enabled with max remote calls: 10." at INFO on every
    # generate_content whose config leaves automatic function calling on, and deep-copies
    # the config for its loop; requests here carry no tools.
    from google import genai

    from csctracker_ai_core.testing import GeminiEmulator

    call = validate_call(prompt="p", input_text="i")
    with GeminiEmulator() as emu, caplog.at_level("INFO", logger="google_genai"):
        client = genai.Client(api_key="AIzaWIRE-lean-models", http_options=types.HttpOptions(base_url=emu.base_url))
        client.models.generate_content(model="gemini-2.5-flash", contents="p", config=types.GenerateContentConfig())
        assert any("AFC is enabled" in r.getMessage() for r in caplog.records)  # the SDK's default, seen
        caplog.clear()
        client.models.generate_content(
            model="gemini-2.5-flash", contents=build_contents(call), config=build_config("gemini-2.5-flash", opts())
        )
    assert not [r.getMessage() for r in caplog.records if "AFC" in r.getMessage()]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": [1]}\n```', {"a": [1]}),
        ("[1, 2]", [1, 2]),
        ('```\n{"a": 2}\n```', {"a": 2}),
        ('Aqui está o JSON:\n```json\n{"b": "x"}\n```\nEspero ter ajudado.', {"b": "x"}),
        ('```json\n{"a": 3}', {"a": 3}),  # an opening fence never closed
    ],
)
def test_json_replies_parse_bare_fenced_or_with_text_around_one_block(text, expected):
    assert parse_json_reply(text) == expected


@pytest.mark.parametrize("text", ["Paris, of course", '```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```'])
def test_invalid_json_or_two_blocks_is_a_retryable_problem(text):
    with pytest.raises(ReplyProblem) as info:
        parse_json_reply(text)
    assert info.value.retryable and info.value.kind == "invalid_json"


def _reply(finish="STOP", text="ok", block=None, thought=False):
    parts = ([types.Part(text="hmm", thought=True)] if thought else []) + ([types.Part(text=text)] if text else [])
    return types.GenerateContentResponse(
        candidates=[]
        if block
        else [types.Candidate(content=types.Content(role="model", parts=parts or None), finish_reason=finish)],
        prompt_feedback=types.GenerateContentResponsePromptFeedback(block_reason=block) if block else None,
    )


@pytest.mark.parametrize("finish", ["SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII"])
def test_stopped_replies_are_blocked_and_not_retryable(finish):
    with pytest.raises(ReplyProblem) as info:
        read_reply(_reply(finish, text=""), return_json=False)
    assert (info.value.kind, info.value.retryable, info.value.reason) == ("blocked", False, finish)


def test_prompt_block_reason_is_blocked():
    with pytest.raises(ReplyProblem) as info:
        read_reply(_reply(block="PROHIBITED_CONTENT"), return_json=True)
    assert (info.value.kind, info.value.retryable) == ("blocked", False)
    assert info.value.reason == "blockReason PROHIBITED_CONTENT"


def test_max_tokens_without_text_is_truncated_not_transient():
    with pytest.raises(ReplyProblem) as info:
        read_reply(_reply("MAX_TOKENS", text="", thought=True), return_json=False)
    assert (info.value.kind, info.value.retryable, info.value.partial_text) == ("truncated", False, "")


def test_truncated_text_needs_consent():
    with pytest.raises(ReplyProblem) as info:
        read_reply(_reply("MAX_TOKENS", text="Era uma vez"), return_json=False)
    assert info.value.kind == "truncated" and info.value.partial_text == "Era uma vez"
    reply = read_reply(_reply("MAX_TOKENS", text="Era uma vez"), return_json=False, accept_truncation=True)
    assert (reply.result, reply.truncated) == ("Era uma vez", True)


def test_truncated_json_that_does_not_parse_is_truncated_even_with_consent():
    with pytest.raises(ReplyProblem) as info:
        read_reply(_reply("MAX_TOKENS", text='{"a": [1, 2'), return_json=True, accept_truncation=True)
    assert info.value.kind == "truncated" and info.value.partial_text == '{"a": [1, 2'


def test_thought_only_reply_is_empty_and_retryable():
    with pytest.raises(ReplyProblem) as info:
        read_reply(_reply("STOP", text="", thought=True), return_json=False)
    assert (info.value.kind, info.value.retryable) == ("empty", True)


def test_token_usage_from_metadata_counts_thinking_as_output():
    usage = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=300,
        candidates_token_count=3,
        thoughts_token_count=57,
        total_token_count=360,
        cached_content_token_count=10,
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
    partial = SimpleNamespace(
        prompt_token_count=5,
        candidates_token_count=None,
        thoughts_token_count=None,
        total_token_count=None,
        cached_content_token_count=None,
        prompt_tokens_details=None,
        tool_use_prompt_token_count=None,
    )
    assert TokenUsage.from_usage_metadata(partial) == TokenUsage(input=5, total=5)
