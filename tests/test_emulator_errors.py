"""The emulator's error cases through the real SDK: each answers the real body, where the real API would.

Bodies are compared with the verbatim rows of ``test_pool_scopes.BODIES`` (public sources there).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from test_pool_scopes import BODIES

from csctracker_ai_core.testing import ErrorRule, GeminiEmulator, KeyState, ModelRule
from csctracker_ai_core.testing.emulator import EmulatorConfig

FLASH, PRO25, LITE = "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"
G3, PRO3 = "gemini-3-flash-preview", "gemini-3.1-pro-preview"


_CLIENTS: dict = {}


def client(emu: GeminiEmulator, key: str = "k1") -> genai.Client:
    # Kept alive: a genai.Client closes its HTTP client when garbage-collected.
    c = _CLIENTS.get((emu.base_url, key))
    if c is None:
        c = _CLIENTS[(emu.base_url, key)] = genai.Client(
            api_key=key, http_options=types.HttpOptions(base_url=emu.base_url)
        )
    return c


def error_of(
    emu: GeminiEmulator, key: str = "k1", model: str = FLASH, text: str = "oi", **config: Any
) -> errors.APIError:
    with pytest.raises(errors.APIError) as info:
        client(emu, key).models.generate_content(
            model=model, contents=text, config=types.GenerateContentConfig(**config)
        )
    return info.value


def ok(emu: GeminiEmulator, key: str = "k1", model: str = FLASH, **config: Any) -> str:
    return (
        client(emu, key)
        .models.generate_content(model=model, contents="oi", config=types.GenerateContentConfig(**config))
        .text
    )


def body(exc: errors.APIError) -> dict:
    return exc.details


@pytest.mark.parametrize(
    "model, thinking, row",
    [
        (PRO3, types.ThinkingConfig(thinking_level="MINIMAL"), "400 thinking level MINIMAL"),
        # heyhuynhgiabuu/proxypal#170 is about Gemini 3 Pro ("gemini-3-pro-high"): 3.1 Pro
        # takes MEDIUM (langchain-ai/langchainjs#10101), 3 Pro Preview does not.
        ("gemini-3-pro-preview", types.ThinkingConfig(thinking_level="MEDIUM"), "400 thinking level MEDIUM"),
        (PRO25, types.ThinkingConfig(thinking_budget=0), "400 thinking budget 0"),
    ],
    ids=["3.1 pro MINIMAL", "3 pro MEDIUM", "2.5 pro budget 0"],
)
def test_family_thinking_checks_answer_the_real_400(gemini_emulator, model, thinking, row):
    exc = error_of(gemini_emulator, model=model, thinking_config=thinking)
    assert (exc.code, body(exc)) == (400, BODIES[row][1])


@pytest.mark.parametrize(
    "model, thinking",
    [
        (PRO3, types.ThinkingConfig(thinking_level="LOW")),
        (PRO3, types.ThinkingConfig(thinking_level="HIGH")),
        (G3, types.ThinkingConfig(thinking_level="MINIMAL")),
        (G3, types.ThinkingConfig(thinking_level="MEDIUM")),
        (PRO25, types.ThinkingConfig(thinking_budget=128)),
        (FLASH, types.ThinkingConfig(thinking_budget=0)),
        (LITE, types.ThinkingConfig(thinking_budget=0)),
        (FLASH, types.ThinkingConfig(thinking_budget=-1)),
    ],
)
def test_family_thinking_checks_let_accepted_settings_through(gemini_emulator, model, thinking):
    assert ok(gemini_emulator, model=model, thinking_config=thinking)


def test_budget_out_of_range_and_check_models_off(make_gemini_emulator):
    emu = make_gemini_emulator()
    exc = error_of(emu, model=LITE, thinking_config=types.ThinkingConfig(thinking_budget=64))
    assert body(exc)["error"]["message"] == "The thinking budget (64) is invalid."
    emu.check_models = False
    assert ok(emu, model=LITE, thinking_config=types.ThinkingConfig(thinking_budget=64))


def test_model_rule_input_limit_and_json_mode(gemini_emulator):
    emu = gemini_emulator
    emu.set_model_rule(FLASH, max_input_tokens=10, json_mode=False)
    exc = error_of(emu, text="x" * 400)  # 100 tokens in the emulator's count
    assert (
        body(exc)["error"]["message"]
        == "The input token count (100) exceeds the maximum number of tokens allowed (10)."
    )
    exc = error_of(emu, response_mime_type="application/json")
    assert body(exc) == {
        "error": {"code": 400, "message": f"Json mode is not enabled for models/{FLASH}", "status": "INVALID_ARGUMENT"}
    }
    assert ok(emu)
    assert emu.count(model=FLASH, status=400) == 2


def test_retired_model_answers_404_to_every_key(gemini_emulator):
    emu = gemini_emulator
    emu.retire_model(FLASH)
    for key in ("k1", "k2"):
        exc = error_of(emu, key=key)
        assert exc.code == 404
        assert (
            body(exc)["error"]["message"] == "This model models/gemini-2.5-flash is no longer available to new users."
        )
    assert ok(emu, model=G3)


def test_free_tier_block_hits_free_keys_of_that_project_only(gemini_emulator):
    emu = gemini_emulator
    emu.add_key("free-a", project="eu", tier="free")
    emu.add_key("paid-a", project="eu", tier="paid")
    emu.add_key("free-b", project="br", tier="free")
    emu.block_free_tier("eu")
    assert (error_of(emu, key="free-a").code, body(error_of(emu, key="free-a"))) == (
        400,
        BODIES["400 free tier not in country"][1],
    )
    assert ok(emu, key="paid-a") and ok(emu, key="free-b")


def test_location_unsupported_hits_every_key(gemini_emulator):
    emu = gemini_emulator
    emu.location_unsupported = True
    assert body(error_of(emu, key="anything")) == BODIES["400 location not supported"][1]


def test_scripted_errors_per_model_and_key_with_a_count(gemini_emulator):
    emu = gemini_emulator
    emu.deny_model(PRO3, key="k1")
    emu.add_error(503, BODIES["503 high demand (2026)"][1], model=FLASH, count=2)
    assert body(error_of(emu, key="k1", model=PRO3)) == BODIES["403 one model, no reason"][1]
    assert ok(emu, key="k2", model=PRO3)  # another key: served
    assert ok(emu, key="k1", model=G3)  # same key, another model: served
    assert [error_of(emu, key=k).code for k in ("k1", "k2")] == [503, 503]
    assert ok(emu)  # the count is spent
    emu.clear_errors()
    assert ok(emu, key="k1", model=PRO3)


@pytest.mark.parametrize(
    "state, code, row",
    [(KeyState.EXPIRED, 400, "400 key expired"), (KeyState.SERVICE_DISABLED, 403, None)],
)
def test_new_key_states(gemini_emulator, state, code, row):
    emu = gemini_emulator
    emu.add_key("k9", state=state)
    exc = error_of(emu, key="k9")
    assert exc.code == code
    if row:
        assert body(exc) == BODIES[row][1]
    else:
        assert body(exc)["error"]["details"][1]["reason"] == "SERVICE_DISABLED"


def test_error_cases_from_a_config_file(tmp_path, make_gemini_emulator):
    path = tmp_path / "emu.json"
    path.write_text(
        json.dumps(
            {
                "keys": [
                    {"key": "f1", "project": "eu", "tier": "free"},
                    {"key": "p1", "project": "eu", "tier": "paid"},
                ],
                "errors": [{"status": 403, "body": BODIES["403 one model, no reason"][1], "model": PRO3, "key": "p1"}],
                "model_rules": {FLASH: {"max_input_tokens": 5}, PRO25: {"thinking_levels": ["low"]}},
                "retired_models": [LITE],
                "free_tier_unavailable": ["eu"],
            }
        )
    )
    config = EmulatorConfig.from_file(str(path))
    assert config.model_rules[FLASH] == ModelRule(max_input_tokens=5)
    assert config.model_rules[PRO25].thinking_levels == ("LOW",)
    assert isinstance(config.errors[0], ErrorRule) and config.errors[0].key_fingerprint != "p1"
    emu = make_gemini_emulator(config)
    assert error_of(emu, key="f1", model=G3).code == 400  # free tier blocked in "eu"
    assert error_of(emu, key="p1", model=PRO3).code == 403
    assert error_of(emu, key="p1", model=LITE).code == 404
    assert error_of(emu, key="p1", model=FLASH, text="x" * 100).code == 400
    assert ok(emu, key="p1", model=G3)
