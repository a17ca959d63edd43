"""validate_call: every bad input is refused with a typed error that says what to do."""

import base64

import pytest

from csctracker_ai_core.exceptions import AiCoreError, InvalidInputError
from csctracker_ai_core.validation import MAX_REQUEST_BYTES, validate_call

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PNG_B64 = base64.b64encode(PNG).decode()


def test_text_call_joins_prompt_and_input():
    call = validate_call(input_text="Qual a capital da França?", prompt="Responda de forma concisa.")
    assert call.text == "Responda de forma concisa.\nQual a capital da França?"
    assert call.image_bytes is None and call.mime_type == ""
    assert call.estimated_input_tokens == -(-len(call.text) // 4)


def test_image_is_decoded_once_and_fingerprinted():
    call = validate_call(prompt="describe", file_base64=PNG_B64, mime_type="IMAGE/PNG")
    assert call.image_bytes == PNG
    assert call.mime_type == "image/png"
    assert len(call.image_sha256) == 64
    assert call.estimated_input_tokens == 2 + 258  # ceil(8 chars / 4) + one image


def test_line_wrapped_base64_and_data_url_are_accepted():
    wrapped = "\n".join(PNG_B64[i : i + 20] for i in range(0, len(PNG_B64), 20))
    assert validate_call(prompt="x", file_base64=wrapped).image_bytes == PNG
    call = validate_call(prompt="x", file_base64="data:image/webp;base64," + PNG_B64)
    assert call.mime_type == "image/webp" and call.image_bytes == PNG


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(prompt="x", file_base64="not base64!!"), "not valid base64"),
        (dict(prompt="x", file_base64="QUJD="), "not valid base64"),  # stray padding
        (dict(prompt="x", file_base64="QUJ"), "not valid base64"),  # truncated
        (dict(prompt="x", file_base64="  \n"), "empty"),
        (dict(prompt="x", family="ultraa"), "family 'ultraa' is unknown"),
        (dict(prompt="x", file_base64=12345), "base64 string"),
        (dict(prompt="x", file_base64="data:image/png," + PNG_B64), "data URL"),
        (dict(prompt="x", file_base64=PNG_B64, mime_type="image/bmp"), "mime_type 'image/bmp'"),
        (dict(prompt="", input_text=""), "nothing to ask"),
        (dict(prompt="   ", input_text=None), "nothing to ask"),
        (dict(prompt=42), "prompt must be a string"),
        (dict(prompt="x", input_text=b"bytes"), "input_text must be a string"),
        (dict(prompt="x", task=["a"]), "task must be a string"),
        (dict(prompt="x", task="t" * 300), "keep it under"),
        (dict(prompt="x", event_id="  "), "event_id is blank"),
        (dict(prompt="x", return_json="yes"), "return_json must be True or False"),
        (dict(prompt="x", forced_free=True, forced_paid=True), "both True"),
        (dict(prompt="x", thinking_level="extreme"), "thinking_level 'extreme'"),
        (dict(prompt="x", service_tier="gold"), "service_tier 'gold'"),
        (dict(prompt="x", metadata={"a": 1}), "metadata must map strings"),
        (dict(prompt="x", metadata=["a"]), "metadata must be a mapping"),
    ],
)
def test_bad_input_is_refused_with_a_clear_typed_error(kwargs, words):
    with pytest.raises(InvalidInputError) as info:
        validate_call(**kwargs)
    assert words in str(info.value)
    assert isinstance(info.value, AiCoreError)


def test_payload_over_gemini_inline_limit_is_refused():
    big = base64.b64encode(b"\x00" * (MAX_REQUEST_BYTES * 3 // 4 + 10)).decode()
    with pytest.raises(InvalidInputError, match="Files API"):
        validate_call(prompt="x", file_base64=big, mime_type="image/png")


def test_image_without_text_is_a_valid_request():
    call = validate_call(file_base64=PNG_B64, mime_type="image/png")
    assert call.text == "" and call.image_bytes == PNG


def test_thinking_and_tier_are_normalised():
    call = validate_call(prompt="x", thinking_level="HIGH", service_tier="Flex")
    assert (call.thinking_level, call.service_tier) == ("high", "flex")


def test_empty_file_is_no_file_as_in_the_original():
    call = validate_call(prompt="x", file_base64="")
    assert call.image_bytes is None and call.mime_type == ""
