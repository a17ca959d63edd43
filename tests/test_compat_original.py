"""Code written against the original csctracker-ai-core 26.37.1 runs unchanged.

The original's lower-level calls, in the order its own ``IaProcessor`` made them
(reserve, call Gemini, free the slot, then ``processar_exception`` on failure), run
over the wire against the emulator through the real SDK.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import pytest
from google import genai
from google.genai import errors, types

from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.service.ApiKeyRotator import APIKeyRotator
from csctracker_ai_core.service.ClickHouseDb import ClickHouseDb
from csctracker_ai_core.service.IaProcessor import GeminiServiceException, IaProcessor
from csctracker_ai_core.service.Telemetry import DateUtils, Telemetry

FREE = ["compat-free-key-000000000001", "compat-free-key-000000000002"]
PAID = ["compat-paid-key-000000000001"]
LIMITS = "gemini-2.5-pro=1,gemini-2.5-flash=1"

QUOTA_429 = {
    "error": {
        "code": 429,
        "status": "RESOURCE_EXHAUSTED",
        "message": "quota",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaValue": "5"}],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"},
        ],
    }
}


def original_style_call(rotator, db, base_url, prompt, task):
    """The original IaProcessor.analisar_com_gemini loop, as user code would copy it."""
    max_tentativas = rotator.get_total_capacity() + 2
    outcomes = []
    for _ in range(max_tentativas):
        key, model_name, tier = rotator.select_and_reserve_best_slot(model_variant=None)
        if not key:
            outcomes.append("no-slot")
            continue
        try:
            client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url))
            before = datetime.now()
            response = client.models.generate_content(
                model=model_name,
                contents=[prompt],
                config=types.GenerateContentConfig(temperature=0.1, response_mime_type="text/plain"),
            )
            time_spent = (datetime.now() - before).total_seconds()
            usage = response.usage_metadata
            db.log_event_telemetry(
                str(uuid.uuid4()),
                {"input": usage.prompt_token_count, "output": usage.candidates_token_count},
                prompt,
                response.text,
                f"{model_name}-{tier}",
                task,
                time_spent,
                "standard",
            )
            rotator.liberar_slot_model(key, model_name)
            outcomes.append(("ok", key, model_name, tier))
            return response.text, outcomes
        except Exception as e:
            rotator.liberar_slot_model(key, model_name)
            outcomes.append(
                ("quota" if rotator.processar_exception(key, model_name, e) else "error", key, model_name, tier)
            )
    raise GeminiServiceException("all attempts failed")


def test_original_style_code_runs_against_the_emulator(make_gemini_emulator):
    emu = make_gemini_emulator(models=["gemini-2.5-pro", "gemini-2.5-flash"])
    emu.add_keys(FREE, tier="free")
    emu.add_keys(PAID, tier="paid")
    emu.no_quota("gemini-2.5-pro", tier="free")  # Pro answers "limit: 0" on free keys (2026)
    rotator = APIKeyRotator(logging.getLogger("app"), LIMITS, ",".join(FREE), ",".join(PAID))
    assert rotator.get_total_capacity() == 3 * 2
    db = ClickHouseDb()
    assert db.init_db() is True

    text, outcomes = original_style_call(rotator, db, emu.base_url, "Qual a capital da França?", "compat")
    assert text == "Paris"
    # Free keys first, the best model first; Pro's 429 (limit 0) takes Pro out for
    # that key's project and the next slot serves: flash on a free key.
    assert outcomes[0][0] == "quota" and outcomes[0][2] == "gemini-2.5-pro" and outcomes[0][3] == "free"
    assert outcomes[-1][0] == "ok" and outcomes[-1][2] == "gemini-2.5-flash" and outcomes[-1][3] == "free"
    # A second call does not pay Pro's 429 again on that project.
    first_key = outcomes[0][1]
    original_style_call(rotator, db, emu.base_url, "Qual a capital da França?", "compat")
    assert emu.count(key=first_key, model="gemini-2.5-pro", status=429) == 1
    # Every slot reserved was given back.
    assert all(s.in_flight == 0 for s in rotator.status().slots)
    db.close()

    reader = ClickHouseDb()
    try:
        rows = Telemetry(reader).get_telemetry_data("group", "today")
    finally:
        reader.close()
    assert [(r["task"], r["total_events"]) for r in rows] == [("compat", 2)]
    start, end = DateUtils.get_period_dates("today")
    assert start <= datetime.now(start.tzinfo) < end


def test_no_free_slot_is_none_none_none():
    rotator = APIKeyRotator(None, "gemini-2.5-flash=1", FREE[0], None)
    key, model, tier = rotator.select_and_reserve_best_slot()
    assert (model, tier) == ("gemini-2.5-flash", "free") and key == FREE[0]
    assert rotator.select_and_reserve_best_slot() == (None, None, None)  # the one slot is busy
    assert rotator.select_and_reserve_best_slot(model_variant="pro") == (None, None, None)  # no such model
    rotator.liberar_slot_model(key, model)
    rotator.liberar_slot_model(key, model)  # a second release is harmless
    assert rotator.select_and_reserve_best_slot(variant_family="flash")[0] == FREE[0]


def test_positional_arguments_keep_the_original_order():
    # The original: (model_variant, variant_family, forced_paid, forced_free, exact_match).
    rotator = APIKeyRotator(None, LIMITS, FREE[0], PAID[0])
    key, model, tier = rotator.select_and_reserve_best_slot(None, "flash", True)
    assert (key, model, tier) == (PAID[0], "gemini-2.5-flash", "paid")
    key, model, tier = rotator.select_and_reserve_best_slot("gemini-2.5-pro", None, False, True, True)
    assert (key, model, tier) == (FREE[0], "gemini-2.5-pro", "free")


def test_keys_and_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("GOOGLE_FREE_KEYS", ",".join(FREE))
    monkeypatch.setenv("GOOGLE_MODEL_LIMITS", "gemini-2.5-flash=2")
    rotator = APIKeyRotator(logging.getLogger())
    assert rotator.get_total_capacity() == 2
    assert rotator.models == {"gemini-2.5-flash": 2}  # the new API, through the same object


def test_processar_exception_says_whether_to_switch_slots():
    clock = FakeClock(1_790_000_000.0)
    rotator = APIKeyRotator(None, "gemini-2.5-flash=1", FREE[0], None, clock=clock)
    key, model, _ = rotator.select_and_reserve_best_slot()
    rotator.liberar_slot_model(key, model)  # the original frees first...
    assert rotator.processar_exception(key, model, errors.ClientError(429, QUOTA_429)) is True  # ...then reports
    assert rotator.select_and_reserve_best_slot() == (None, None, None)  # suspended for its project
    clock.advance(120)  # past RetryInfo (30 s) and its jitter
    key, model, _ = rotator.select_and_reserve_best_slot()
    # Reported before the release, too (our earlier compat order).
    assert (
        rotator.processar_exception(
            key,
            model,
            errors.ServerError(
                500, {"error": {"code": 500, "status": "INTERNAL", "message": "An internal error has occurred."}}
            ),
        )
        is False
    )
    rotator.liberar_slot_model(key, model)
    assert rotator.select_and_reserve_best_slot()[0] == key
    assert rotator.processar_exception("not-a-configured-key", model, RuntimeError("x")) is False


def test_suspender_modelo_and_remove_key():
    clock = FakeClock(1_790_000_000.0)
    rotator = APIKeyRotator(None, LIMITS, ",".join(FREE), None, clock=clock)
    for key in FREE:
        rotator.suspender_modelo(key, "gemini-2.5-pro", 60)
    key, model, _ = rotator.select_and_reserve_best_slot(variant_family="pro")
    assert key is None
    clock.advance(61)
    key, model, _ = rotator.select_and_reserve_best_slot(variant_family="pro")
    assert model == "gemini-2.5-pro"
    rotator.liberar_slot_model(key, model)
    rotator.suspender_modelo("unknown-key", "gemini-2.5-pro", 60)  # ignored, as the original
    with pytest.raises(ValueError, match="segundos"):
        rotator.suspender_modelo(FREE[0], "gemini-2.5-pro", "sessenta")

    assert rotator.get_total_capacity() == 4
    assert rotator.remove_key(FREE[0]) is True
    assert rotator.remove_key(FREE[0]) is False
    assert rotator.remove_key("never-configured") is False
    assert rotator.get_total_capacity() == 2
    for _ in range(3):
        key, model, _ = rotator.select_and_reserve_best_slot()
        assert key in (None, FREE[1])
        if key:
            rotator.liberar_slot_model(key, model)


def test_processor_exposes_the_original_attributes(make_gemini_emulator):
    emu = make_gemini_emulator(models=["gemini-2.5-flash"])
    with IaProcessor(google_free_keys=FREE, google_models_limits="gemini-2.5-flash=1", base_url=emu.base_url) as ia:
        rot = ia.api_key_rotator
        assert rot.get_total_capacity() == 2
        key, model, tier = rot.select_and_reserve_best_slot()
        assert key in FREE and tier == "free"
        rot.liberar_slot_model(key, model)
        assert ia.estimate_tokens_rough("abcd" * 10) == 10
        assert ia.estimate_tokens_rough("") == 0
        ia.click_house.log_event_telemetry(
            "compat-ev",
            {"input": 3, "output": 4},
            "p",
            "r",
            "gemini-2.5-flash-free",
            "via-click-house",
            0.5,
            "standard",
        )
        assert ia.click_house.init_db() is True
    reader = ClickHouseDb()
    client = reader.get_ch_client()
    try:
        rows = client.query(
            "SELECT task, model_name, tier, tokens_input FROM ai_events WHERE event_id = 'compat-ev'"
        ).result_rows
    finally:
        client.close()
        reader.close()
    assert rows == [("via-click-house", "gemini-2.5-flash", "free", 3)]
    assert key_fingerprint(FREE[0]) not in repr(rot) and FREE[0] not in repr(rot)


def test_original_style_rotator_drives_a_processor(make_gemini_emulator):
    emu = make_gemini_emulator(models=["gemini-2.5-flash"])
    rotator = APIKeyRotator(logging.getLogger(), "gemini-2.5-flash=1", FREE[0], None)
    with IaProcessor(rotator=rotator, base_url=emu.base_url, telemetry="off") as ia:
        resultado, _, _ = ia.analisar_com_gemini(input_text="Qual a capital da França?", return_json=False)
        assert resultado == "Paris"
        assert ia.api_key_rotator is rotator


def test_a_reservation_never_waits():
    clock = FakeClock(1_790_000_000.0)
    rotator = APIKeyRotator(None, "gemini-2.5-flash=1", FREE[0], None, clock=clock)
    rotator.select_and_reserve_best_slot()
    assert rotator.select_and_reserve_best_slot() == (None, None, None)
    assert clock.time() == 1_790_000_000.0  # a FakeClock moves only when someone sleeps
