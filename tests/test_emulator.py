"""The Gemini emulator, driven through the real google-genai SDK (and raw HTTP where the SDK cannot go)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import pytest
from google import genai
from google.genai import errors, types

from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.testing import (
    OVERLOADED_2026,
    OVERLOADED_LEGACY,
    EmulatorConfig,
    FaultKind,
    GeminiEmulator,
    KeySpec,
    ReplyRule,
)
from csctracker_ai_core.testing.emulator_quota import pacific_day

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
G3 = "gemini-3-flash-preview"
PACIFIC = ZoneInfo("America/Los_Angeles")
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def client(emu: GeminiEmulator, key: str = "k1", **http: Any) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=emu.base_url, **http))


def ask(c: genai.Client, text: str = "Qual a capital da França?", model: str = FLASH, **config: Any):
    return c.models.generate_content(model=model, contents=text, config=types.GenerateContentConfig(**config))


def raw_post(emu: GeminiEmulator, path: str, body: Any, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(
        emu.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def api_error(fn) -> errors.APIError:
    with pytest.raises(errors.APIError) as info:
        fn()
    return info.value


def detail(err: errors.APIError, type_suffix: str) -> dict:
    return next(d for d in err.details["error"]["details"] if d["@type"].endswith(type_suffix))


# --- replies -----------------------------------------------------------------------


def test_json_reply_and_usage(gemini_emulator: GeminiEmulator) -> None:
    c = client(gemini_emulator)
    r = ask(c, response_mime_type="application/json")
    assert json.loads(r.text) == {"resposta": "Paris"}
    u = r.usage_metadata
    assert u.prompt_token_count == -(-len("Qual a capital da França?") // 4)
    assert u.thoughts_token_count is None
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    assert r.model_version == FLASH and r.response_id
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.sdk_http_response.headers["x-gemini-service-tier"] == "standard"

    default = json.loads(ask(c, "outra coisa", model=G3, response_mime_type="application/json").text)
    assert default["modelo"] == G3 and default["resposta"]


def test_text_reply_skips_thought_part_and_counts_thinking(gemini_emulator: GeminiEmulator) -> None:
    c = client(gemini_emulator)
    r = ask(c, model=G3, thinking_config=types.ThinkingConfig(thinking_level="HIGH"))
    assert r.text == "Paris"
    parts = r.candidates[0].content.parts
    assert parts[0].thought is True and parts[-1].text == "Paris"
    u = r.usage_metadata
    assert u.thoughts_token_count > 0
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count + u.thoughts_token_count
    body = gemini_emulator.last_request.body
    assert body["generationConfig"]["thinkingConfig"]["thinking_level"] == "HIGH"

    budget = ask(c, thinking_config=types.ThinkingConfig(thinking_budget=64)).usage_metadata
    assert 0 < budget.thoughts_token_count <= 64
    off = ask(c, thinking_config=types.ThinkingConfig(thinking_budget=0)).usage_metadata
    assert not off.thoughts_token_count


def test_custom_reply_rules_and_defaults(make_gemini_emulator) -> None:
    emu = make_gemini_emulator(
        replies=[ReplyRule("olá", text="Oi!"), {"contains": "lista", "json": [1, 2]}], default_text="padrão"
    )
    c = client(emu)
    assert ask(c, "Olá, tudo bem?").text == "Oi!"
    assert json.loads(ask(c, "uma lista", response_mime_type="application/json").text) == [1, 2]
    assert json.loads(ask(c, "olá", response_mime_type="application/json").text) == {"resposta": "Oi!"}
    assert ask(c, "nada").text == "padrão"


def test_image_tokens_by_modality(gemini_emulator: GeminiEmulator) -> None:
    c = client(gemini_emulator)
    r = c.models.generate_content(
        model=FLASH, contents=[types.Part.from_bytes(data=PNG, mime_type="image/png"), "describe"]
    )
    u = r.usage_metadata
    by_modality = {d.modality.value: d.token_count for d in u.prompt_tokens_details}
    assert by_modality == {"TEXT": 2, "IMAGE": 258}
    assert u.prompt_token_count == 260


def test_snake_case_body_query_key_and_v1beta(gemini_emulator: GeminiEmulator) -> None:
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "capital da França"},
                    {"inline_data": {"mime_type": "image/jpeg", "data": base64.b64encode(PNG).decode()}},
                ],
            }
        ],
        "system_instruction": {"parts": [{"text": "seja breve"}]},
        "generation_config": {"response_mime_type": "application/json", "thinking_config": {"thinking_level": "LOW"}},
        "service_tier": "flex",
    }
    status, headers, raw = raw_post(
        gemini_emulator, "/v1beta/models/gemini-3-flash-preview:generateContent?key=kq", body
    )
    assert status == 200
    reply = json.loads(raw)
    assert headers["x-gemini-service-tier"] == "flex"
    parts = reply["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and json.loads(parts[1]["text"]) == {"resposta": "Paris"}
    usage = reply["usageMetadata"]
    assert usage["thoughtsTokenCount"] > 0
    assert {"modality": "IMAGE", "tokenCount": 258} in usage["promptTokensDetails"]
    assert gemini_emulator.count(key="kq", model=G3, status=200) == 1

    # The SDK on v1beta, with serviceTier sent top-level.
    r = ask(client(gemini_emulator, api_version="v1beta"), service_tier="priority")
    assert r.text == "Paris"
    assert r.sdk_http_response.headers["x-gemini-service-tier"] == "priority"
    assert gemini_emulator.last_request.api_version == "v1beta"
    assert gemini_emulator.last_request.body["serviceTier"] == "priority"


def test_streaming_sse(gemini_emulator: GeminiEmulator) -> None:
    c = client(gemini_emulator)
    chunks = list(
        c.models.generate_content_stream(
            model=G3,
            contents="um texto qualquer",
            config=types.GenerateContentConfig(
                response_mime_type="application/json", thinking_config=types.ThinkingConfig(thinking_level="LOW")
            ),
        )
    )
    assert len(chunks) > 1
    assert json.loads("".join(ch.text for ch in chunks))["modelo"] == G3
    counts = [ch.usage_metadata.candidates_token_count for ch in chunks]
    assert counts == sorted(counts)
    assert [ch.candidates[0].finish_reason for ch in chunks][-1] == types.FinishReason.STOP
    assert all(ch.candidates[0].finish_reason is None for ch in chunks[:-1])
    last = chunks[-1].usage_metadata
    assert last.thoughts_token_count > 0
    assert last.total_token_count == last.prompt_token_count + last.candidates_token_count + last.thoughts_token_count

    status, headers, raw = raw_post(
        gemini_emulator,
        "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        {"contents": [{"parts": [{"text": "oi"}]}]},
        {"x-goog-api-key": "k1"},
    )
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = raw.split(b"\r\n\r\n")
    assert events[-1] == b"" and all(e.startswith(b"data: {") for e in events[:-1])


def test_count_tokens_spends_no_quota(make_gemini_emulator) -> None:
    emu = make_gemini_emulator(quotas=[{"model": "*", "rpm": 1}])
    c = client(emu)
    for _ in range(3):
        assert c.models.count_tokens(model=FLASH, contents="12345678").total_tokens == 2
    assert emu.count(status=200) == 3 and emu.quota_usage("k1", FLASH)["rpm"] == 0


# --- quotas ------------------------------------------------------------------------


def test_per_minute_429_shape_and_reset_after_window(make_gemini_emulator) -> None:
    clock = FakeClock()
    emu = make_gemini_emulator(clock=clock, minute_s=60.0)
    emu.set_quota(FLASH, rpm=2)
    c = client(emu)
    ask(c)
    clock.advance(19)
    ask(c)
    clock.advance(1)
    err = api_error(lambda: ask(c))
    assert isinstance(err, errors.ClientError) and err.code == 429 and err.status == "RESOURCE_EXHAUSTED"
    body = err.details["error"]
    assert [d["@type"].rsplit(".", 1)[1] for d in body["details"]] == ["Help", "QuotaFailure", "RetryInfo"]
    violation = detail(err, "QuotaFailure")["violations"][0]
    assert violation == {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        "quotaDimensions": {"location": "global", "model": FLASH},
        "quotaValue": "2",
    }
    assert detail(err, "RetryInfo")["retryDelay"] == "40s"  # the oldest request leaves the window in 40 s
    assert "limit: 2, model: gemini-2.5-flash\nPlease retry in 40s." in body["message"]
    assert emu.quota_usage("k1", FLASH)["rpm"] == 2  # the refused request spent nothing
    assert emu.rate_limited == 1

    # Streaming meets the same quota, as an HTTP 429 before any chunk.
    err = api_error(lambda: list(c.models.generate_content_stream(model=FLASH, contents="oi")))
    assert err.code == 429

    clock.advance(40)  # first request leaves the window
    ask(c)
    api_error(lambda: ask(c))
    assert ask(c, model=G3).text == "Paris"  # another model has its own quota


def test_shortened_window(make_gemini_emulator) -> None:
    """minute_s shrinks the per-minute window: the retry delay keeps milliseconds."""
    clock = FakeClock()
    emu = make_gemini_emulator(clock=clock, minute_s=0.25, quotas=[{"model": FLASH, "rpm": 1}])
    c = client(emu)
    ask(c)
    clock.advance(0.125)
    err = api_error(lambda: ask(c))
    assert detail(err, "RetryInfo")["retryDelay"] == "0.125s"
    clock.advance(0.125)  # the first request leaves the window
    assert ask(c).text == "Paris"


def test_legacy_detail_order(make_gemini_emulator) -> None:
    emu = make_gemini_emulator(legacy_error_order=True, quotas=[{"rpm": 0}])
    err = api_error(lambda: ask(client(emu)))
    assert [d["@type"].rsplit(".", 1)[1] for d in err.details["error"]["details"]] == [
        "QuotaFailure",
        "Help",
        "RetryInfo",
    ]


def test_per_day_429_resets_at_pacific_midnight(make_gemini_emulator) -> None:
    # 23:59:00 Pacific on a summer day (PDT, UTC-7): already the next day in UTC.
    clock = FakeClock(datetime(2026, 7, 14, 23, 59, tzinfo=PACIFIC).timestamp())
    emu = make_gemini_emulator(clock=clock, quotas=[{"model": "*", "rpd": 1}])
    c = client(emu)
    ask(c)
    err = api_error(lambda: ask(c))
    assert (
        detail(err, "QuotaFailure")["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    )
    retry = detail(err, "RetryInfo")["retryDelay"]
    assert int(retry[:-1]) < 60  # short, although the quota only comes back at midnight
    clock.advance(30)
    api_error(lambda: ask(c))
    clock.advance(31)  # 00:00:01 Pacific
    ask(c)
    assert pacific_day(clock.time()).isoformat() == "2026-07-15"


def test_pacific_day_follows_daylight_saving() -> None:
    winter = datetime(2026, 1, 10, 23, 30, tzinfo=PACIFIC).timestamp()  # PST, 07:30 UTC next day
    assert pacific_day(winter).isoformat() == "2026-01-10"
    assert pacific_day(winter + 1800).isoformat() == "2026-01-11"


def test_tokens_per_minute_429_free_and_paid(make_gemini_emulator) -> None:
    clock = FakeClock()
    emu = make_gemini_emulator(
        clock=clock,
        keys=["free1", KeySpec("paid1", tier="paid")],
        quotas={"free": {"*": {"tpm": 100}}, "paid": {"*": {"tpm": 100}}},
    )
    text = "x" * 300  # 75 tokens
    ask(client(emu, "free1"), text)
    err = api_error(lambda: ask(client(emu, "free1"), text))
    v = detail(err, "QuotaFailure")["violations"][0]
    assert v["quotaId"] == "GenerateContentInputTokensPerModelPerMinute-FreeTier" and v["quotaValue"] == "100"
    paid = client(emu, "paid1")
    ask(paid, text)
    err = api_error(lambda: ask(paid, text))
    assert (
        detail(err, "QuotaFailure")["violations"][0]["quotaId"] == "GenerateContentPaidTierInputTokensPerModelPerMinute"
    )
    clock.advance(60)
    ask(paid, text)


def test_limit_zero_on_free_tier(make_gemini_emulator) -> None:
    emu = make_gemini_emulator(keys=["free1", KeySpec("paid1", tier="paid")])
    emu.no_quota(PRO)
    err = api_error(lambda: ask(client(emu, "free1"), model=PRO))
    assert err.code == 429 and "limit: 0" in err.message
    assert {v["quotaValue"] for v in detail(err, "QuotaFailure")["violations"]} == {"0"}
    assert ask(client(emu, "paid1"), model=PRO).text == "Paris"
    assert ask(client(emu, "free1"), model=FLASH).text == "Paris"


def test_keys_of_one_project_share_quota(make_gemini_emulator) -> None:
    emu = make_gemini_emulator(
        clock=FakeClock(), keys=[{"key": "a1", "project": "proj-a"}, {"key": "a2", "project": "proj-a"}, "b1"]
    )
    emu.set_quota(rpm=1)
    ask(client(emu, "a1"))
    err = api_error(lambda: ask(client(emu, "a2")))
    assert err.code == 429
    ask(client(emu, "b1"))  # its own project
    assert emu.count(key="a2", status=429) == 1 and emu.count(key="a1", status=200) == 1


# --- keys and models ---------------------------------------------------------------


def test_invalid_leaked_and_blocked_keys(make_gemini_emulator) -> None:
    emu = make_gemini_emulator(keys=["good", {"key": "bad", "state": "invalid"}], unknown_keys="reject")
    emu.add_key("leak", state="leaked")
    emu.add_key("blocked", state="service_blocked")
    emu.add_key("gone", state="suspended")
    err = api_error(lambda: ask(client(emu, "bad")))
    assert err.code == 400 and err.status == "INVALID_ARGUMENT" and err.message.startswith("API key not valid")
    assert err.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert api_error(lambda: ask(client(emu, "stranger"))).code == 400
    err = api_error(lambda: ask(client(emu, "leak")))
    assert err.code == 403 and "reported as leaked" in err.message
    for key, reason in (("blocked", "API_KEY_SERVICE_BLOCKED"), ("gone", "CONSUMER_SUSPENDED")):
        err = api_error(lambda key=key: ask(client(emu, key)))
        assert err.code == 403 and err.status == "PERMISSION_DENIED"
        assert err.details["error"]["details"][0]["reason"] == reason
    emu.set_key_state("leak", "active")
    assert ask(client(emu, "leak")).text == "Paris"
    status, _, raw = raw_post(
        emu, "/v1/models/gemini-2.5-flash:generateContent", {"contents": [{"parts": [{"text": "x"}]}]}
    )
    assert status == 403 and json.loads(raw)["error"]["status"] == "PERMISSION_DENIED"


def test_unknown_model_404(gemini_emulator: GeminiEmulator) -> None:
    err = api_error(lambda: ask(client(gemini_emulator, api_version="v1beta"), model="gemini-pro"))
    assert err.code == 404 and err.status == "NOT_FOUND"
    assert err.message.startswith(
        "models/gemini-pro is not found for API version v1beta, or is not supported for generateContent."
    )


# --- faults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, code, status, message",
    [
        (FaultKind.INTERNAL, 500, "INTERNAL", "An internal error has occurred."),
        (FaultKind.OVERLOADED, 503, "UNAVAILABLE", OVERLOADED_2026),
        (FaultKind.DEADLINE, 504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    ],
)
def test_server_error_faults(gemini_emulator: GeminiEmulator, kind, code, status, message) -> None:
    gemini_emulator.inject(kind, count=2)
    c = client(gemini_emulator)
    for _ in range(2):
        err = api_error(lambda: ask(c))
        assert isinstance(err, errors.ServerError) and err.code == code and err.status == status
        assert err.message.startswith(message)
    assert ask(c).text == "Paris"
    assert gemini_emulator.count(status=code) == 2 and gemini_emulator.pending_faults() == 0


def test_fault_filters_and_message_override(gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.inject("503", model=PRO, key="k2", message=OVERLOADED_LEGACY)
    ask(client(gemini_emulator, "k1"), model=PRO)
    ask(client(gemini_emulator, "k2"), model=FLASH)
    err = api_error(lambda: ask(client(gemini_emulator, "k2"), model=PRO))
    assert err.message == OVERLOADED_LEGACY


def test_slow_reply_and_sdk_timeout(gemini_emulator: GeminiEmulator) -> None:
    """A slow reply outlasts a short SDK timeout (a transport timeout, not an API error); then answers."""
    gemini_emulator.inject(FaultKind.SLOW, delay_s=2.0)
    with pytest.raises(httpx2.ReadTimeout):
        ask(client(gemini_emulator, timeout=100))
    gemini_emulator.inject(FaultKind.SLOW, delay_s=0.1)
    assert ask(client(gemini_emulator)).text == "Paris"  # slow, not broken
    assert gemini_emulator.pending_faults() == 0


def test_global_latency(make_gemini_emulator) -> None:
    """latency_s delays every reply: a client with a shorter timeout gives up, a patient one gets it."""
    emu = make_gemini_emulator(latency_s=0.5)
    with pytest.raises(httpx2.ReadTimeout):
        ask(client(emu, timeout=50))
    assert ask(client(emu)).text == "Paris"


def test_dropped_connection(gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.inject(FaultKind.DROP)
    c = client(gemini_emulator)
    with pytest.raises(httpx2.RemoteProtocolError):  # no response at all: a transport error
        ask(c)
    assert ask(c).text == "Paris"
    assert gemini_emulator.count(status=0) == 1


def test_malformed_body_and_invalid_json_text(gemini_emulator: GeminiEmulator) -> None:
    c = client(gemini_emulator)
    gemini_emulator.inject(FaultKind.MALFORMED)
    with pytest.raises(json.JSONDecodeError):  # a 200 whose body is not JSON: the SDK fails to parse it
        ask(c)
    gemini_emulator.inject(FaultKind.INVALID_JSON)
    r = ask(c, response_mime_type="application/json")
    with pytest.raises(ValueError):
        json.loads(r.text)
    assert r.usage_metadata.candidates_token_count > 0


def test_stream_error_mid_stream(gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.inject(FaultKind.STREAM_ERROR)
    seen = []
    c = client(gemini_emulator)  # keep a reference: a collected client closes its connection pool
    with pytest.raises(errors.APIError) as info:
        seen.extend(chunk.text for chunk in c.models.generate_content_stream(model=FLASH, contents="um texto longo"))
    assert len(seen) == 1 and info.value.code == 503


def test_faults_from_config(make_gemini_emulator) -> None:
    emu = make_gemini_emulator(EmulatorConfig.from_dict({"faults": [{"kind": "500", "count": 1, "key": "k9"}]}))
    ask(client(emu, "k1"))
    assert api_error(lambda: ask(client(emu, "k9"))).code == 500


# --- counters ----------------------------------------------------------------------


def test_in_flight_maximum_with_concurrent_requests(gemini_emulator: GeminiEmulator) -> None:
    # Held requests stay in flight until the test lets them go: no race with thread start-up.
    gemini_emulator.inject(FaultKind.HOLD, count=4, delay_s=30.0)
    c = client(gemini_emulator)
    threads = [threading.Thread(target=ask, args=(c,)) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10.0  # a hang guard only; the loop ends as soon as all 4 arrive
    while gemini_emulator.in_flight(key="k1", model=FLASH) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gemini_emulator.in_flight(key="k1", model=FLASH) == 4
    gemini_emulator.release_held()
    for t in threads:
        t.join()
    assert gemini_emulator.max_in_flight(key="k1", model=FLASH) == 4
    assert gemini_emulator.max_in_flight(key="k1", model=PRO) == 0
    assert gemini_emulator.in_flight() == 0
    ask(client(gemini_emulator, "k2"))
    assert gemini_emulator.max_in_flight(key="k2") == 1


def test_counters_fingerprints_bodies_and_reset(make_gemini_emulator) -> None:
    emu = make_gemini_emulator(record_bodies=2)
    c = client(emu, "secret-key")
    for text in ("a", "b", "c"):
        ask(c, text)
    api_error(lambda: ask(c, model="nope"))
    fp = key_fingerprint("secret-key")
    assert emu.calls() == {(fp, FLASH, 200): 3, (fp, "nope", 404): 1}
    assert emu.total_requests == 4 and emu.count(fingerprint=fp, status=200) == 3
    assert [r.status for r in emu.requests] == [200, 404]
    assert emu.requests[0].body["contents"][0]["parts"][0]["text"] == "c"
    assert "secret-key" not in repr(emu.calls()) + repr(emu.requests) + repr(KeySpec("secret-key"))
    emu.reset_counters()
    assert emu.total_requests == 0 and emu.requests == [] and emu.max_in_flight() == 0


# --- configuration and CLI ---------------------------------------------------------

EXAMPLE_CONFIG = {
    "models": [FLASH, PRO],
    "unknown_keys": "reject",
    "keys": ["AIza-free-1", {"key": "AIza-free-2", "project": "p1"}, {"key": "AIza-paid", "tier": "paid"}],
    "quotas": {"free": {"*": {"rpm": 10, "rpd": 250}, PRO: {"rpm": 0, "rpd": 0, "tpm": 0}}},
    "replies": [{"contains": "ping", "text": "pong"}],
    "error_order": "2026",
}


def test_config_file_and_cli(tmp_path) -> None:
    path = tmp_path / "emu.json"
    path.write_text(json.dumps(EXAMPLE_CONFIG))
    config = EmulatorConfig.from_file(str(path))
    assert len(config.keys) == 3 and config.keys[2].tier == "paid" and len(config.quotas) == 2
    with pytest.raises(ValueError):
        EmulatorConfig.from_dict({"nonsense": 1})

    proc = subprocess.Popen(
        [sys.executable, "-m", "csctracker_ai_core.testing.emulator", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        c = genai.Client(api_key="AIza-free-1", http_options=types.HttpOptions(base_url=url))
        assert c.models.generate_content(model=FLASH, contents="ping").text == "pong"
        assert api_error(lambda: c.models.generate_content(model=PRO, contents="ping")).code == 429
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_starts_serves_and_stops() -> None:
    with GeminiEmulator() as emu:
        url = emu.base_url
        assert url.startswith("http://127.0.0.1:")
        kept_alive = client(emu)
        assert ask(kept_alive).text == "Paris"
    stopped = genai.Client(api_key="k1", http_options=types.HttpOptions(base_url=url))
    with pytest.raises(httpx2.ConnectError):  # stopped: nothing listens on its port any more
        ask(stopped)
    # A client whose pooled connection was open when the emulator stopped sees it down too.
    with pytest.raises((httpx2.RemoteProtocolError, httpx2.ConnectError, httpx2.ReadError)):
        ask(kept_alive)
