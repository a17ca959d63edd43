"""IaProcessor end to end: the real google-genai SDK against the Gemini emulator."""

import base64
import logging
import uuid

import pytest

from csctracker_ai_core import (
    AiCoreError,
    ConfigurationError,
    GeminiServiceException,
    IaProcessor,
    InvalidInputError,
    InvalidResponseError,
    TokenUsage,
)
from csctracker_ai_core.fingerprint import key_fingerprint

FREE = ["AIzaFREE-one-0000000000000000000000", "AIzaFREE-two-0000000000000000000000"]
PAID = ["AIzaPAID-one-0000000000000000000000"]
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()


class ListSink:
    """A telemetry sink that keeps events in memory (narrow seam for event content checks)."""

    location = "memory"

    def __init__(self):
        self.events = []
        self.closed = False

    def record(self, event):
        self.events.append(event)

    def close(self, timeout_s=None):
        self.closed = True


class BrokenSink(ListSink):
    def record(self, event):
        raise RuntimeError("disk on fire")


@pytest.fixture
def emu(make_gemini_emulator):
    emu = make_gemini_emulator()
    emu.add_keys(FREE, tier="free")
    emu.add_keys(PAID, tier="paid")
    return emu


@pytest.fixture
def sink():
    return ListSink()


@pytest.fixture
def processor(emu, sink):
    with IaProcessor(google_free_keys=FREE, google_paid_keys=PAID, base_url=emu.base_url, telemetry_sink=sink) as p:
        yield p


def test_readme_example_runs_verbatim_on_the_emulator(emu):
    """The README's example; only the Gemini endpoint and the telemetry place differ."""
    from csctracker_ai_core.service.IaProcessor import IaProcessor as CompatProcessor

    processor = CompatProcessor(
        host=None,  # embedded ClickHouse in this test's data folder
        google_free_keys=["chave1", "chave2"],
        google_paid_keys=["chave_paga1"],
        base_url=emu.base_url,
    )
    try:
        resultado, tokens, event_id = processor.analisar_com_gemini(
            input_text="Qual a capital da França?",
            prompt="Responda de forma concisa.",
            task="pergunta_geral",
        )
    finally:
        processor.close()
    assert resultado == {"resposta": "Paris"}
    assert isinstance(tokens, TokenUsage)
    assert tokens.input > 0 and tokens.output > 0 and tokens.total >= tokens.input + tokens.output
    assert uuid.UUID(event_id).version == 4
    # Free keys first: the paid key was never used.
    assert emu.count(key="chave_paga1") == 0
    assert emu.count(status=200) == 1


def test_text_mode_returns_the_reply_text(processor, emu):
    resultado, tokens, _ = processor.analisar_com_gemini(
        input_text="Qual a capital da França?", prompt="Responda.", return_json=False
    )
    assert resultado == "Paris"
    body = emu.last_request.body
    assert body["generationConfig"]["responseMimeType"] == "text/plain"


def test_image_goes_inline_and_its_tokens_are_counted(processor, emu, sink):
    resultado, tokens, event_id = processor.analisar_com_gemini(
        prompt="Descreva a imagem.", file_base64=PNG_B64, mime_type="image/png", task="img"
    )
    assert isinstance(resultado, dict)
    assert tokens.image == 258
    parts = emu.last_request.body["contents"][0]["parts"]
    inline = [p for p in parts if "inlineData" in p or "inline_data" in p][0]
    blob = inline.get("inlineData") or inline.get("inline_data")
    assert base64.urlsafe_b64decode(blob["data"]) == base64.b64decode(PNG_B64)
    event = sink.events[-1]
    assert event.event_id == event_id and event.tokens_image == 258
    assert event.image_mime == "image/png" and event.image_bytes == len(base64.b64decode(PNG_B64))


def test_event_id_given_is_kept_and_event_is_complete(processor, sink):
    _, tokens, event_id = processor.analisar_com_gemini(
        input_text="oi", prompt="responda", task="t1", event_id="meu-evento-1", metadata={"cliente": "42"}
    )
    assert event_id == "meu-evento-1"
    (event,) = sink.events
    assert (event.event_id, event.task, event.outcome, event.attempts) == ("meu-evento-1", "t1", "ok", 1)
    assert event.tier == "free" and event.key_fingerprint == key_fingerprint(FREE[0])
    assert event.tokens_input == tokens.input and event.tokens_output == tokens.output
    assert event.model == f"{event.model_name}-free"
    assert event.metadata == {"cliente": "42"}
    assert event.response_id and event.model_version and event.finish_reason == "STOP"
    assert event.cost_usd == 0  # free key
    assert len(event.attempt_events) == 1 and event.attempt_events[0].outcome == "ok"


@pytest.mark.parametrize(
    "variant, field, expected",
    [("gemini-3-flash-preview", "thinking_level", "HIGH"), ("gemini-2.5-flash", "thinking_budget", -1)],
)
def test_thinking_level_reaches_each_model_in_its_form(emu, sink, variant, field, expected):
    with IaProcessor(
        google_free_keys=FREE, google_models_limits={variant: 1}, base_url=emu.base_url, telemetry_sink=sink
    ) as p:
        _, tokens, _ = p.analisar_com_gemini(
            input_text="x", prompt="y", model_variant=variant, exact_match=True, thinking_level="high"
        )
    thinking = emu.last_request.body["generationConfig"]["thinkingConfig"]
    assert emu.last_request.model == variant
    assert thinking[field] == expected or thinking.get(field.replace("_l", "L").replace("_b", "B")) == expected
    assert tokens.reasoning > 0 and tokens.output > tokens.reasoning


def test_service_tier_is_sent_and_served_tier_recorded(processor, emu, sink):
    processor.analisar_com_gemini(input_text="x", prompt="y", service_tier="flex")
    assert emu.last_request.body["serviceTier"] == "flex"
    assert sink.events[-1].served_tier == "flex"
    processor.analisar_com_gemini(input_text="x", prompt="y")
    assert "serviceTier" not in emu.last_request.body


def test_invalid_json_reply_is_retried_then_succeeds(processor, emu, sink):
    emu.inject("invalid_json", count=1)
    resultado, _, _ = processor.analisar_com_gemini(input_text="Qual a capital da França?", prompt="?")
    assert resultado == {"resposta": "Paris"}
    assert emu.count(status=200) == 2
    event = sink.events[-1]
    assert event.attempts == 2
    assert [a.outcome for a in event.attempt_events] == ["invalid_output", "ok"]


def test_reply_never_valid_json_raises_typed_error_after_bounded_retries(emu, sink):
    emu.inject("invalid_json", count=50)
    with IaProcessor(google_free_keys=FREE, base_url=emu.base_url, telemetry_sink=sink, max_retries=2) as p:
        with pytest.raises(InvalidResponseError) as info:
            p.analisar_com_gemini(input_text="x", prompt="y", event_id="ev-bad-json")
    assert info.value.attempts == 3 and emu.total_requests == 3
    assert info.value.event_id == "ev-bad-json"
    assert isinstance(info.value, GeminiServiceException)
    assert sink.events[-1].outcome == "error" and sink.events[-1].attempts == 3


def test_transient_503_is_retried_on_another_slot(processor, emu, sink):
    emu.inject("503", count=1)
    resultado, _, _ = processor.analisar_com_gemini(input_text="Qual a capital da França?", prompt="?")
    assert resultado == {"resposta": "Paris"}
    assert emu.count(status=503) == 1 and emu.count(status=200) == 1
    first, second = sink.events[-1].attempt_events
    assert first.outcome == "transient" and first.http_status == 503
    assert (first.key_fingerprint, first.model_name) != (second.key_fingerprint, second.model_name)


def test_dropped_connection_is_retried(processor, emu):
    emu.inject("drop", count=1)
    resultado, _, _ = processor.analisar_com_gemini(input_text="Qual a capital da França?", prompt="?")
    assert resultado == {"resposta": "Paris"}
    assert emu.count(status=0) == 1


BAD_CALLS = [
    dict(prompt="x", file_base64="###"),
    dict(prompt="x", file_base64=PNG_B64, mime_type="application/x-msdownload"),
    dict(prompt="", input_text=""),
    dict(prompt=123),
    dict(prompt="x", task=object()),
    dict(prompt="x", forced_free=True, forced_paid=True),
    dict(prompt="x", service_tier="ultra"),
    dict(prompt="x", file_base64="A" * 20_000_000, mime_type="image/png"),
]


@pytest.mark.parametrize("kwargs", BAD_CALLS)
def test_bad_input_sends_nothing_and_records_nothing(processor, emu, sink, kwargs):
    with pytest.raises(InvalidInputError):
        processor.analisar_com_gemini(**kwargs)
    assert emu.total_requests == 0
    assert sink.events == []


def test_no_keys_at_all_is_a_configuration_error(emu):
    with pytest.raises(ConfigurationError) as info:
        IaProcessor(base_url=emu.base_url, telemetry="off")
    assert "GOOGLE_FREE_KEYS" in str(info.value)
    assert emu.total_requests == 0


def test_keys_from_environment_as_comma_separated_strings(emu, sink, monkeypatch):
    monkeypatch.setenv("GOOGLE_FREE_KEYS", f" {FREE[0]} , {FREE[1]} ")
    monkeypatch.setenv("GOOGLE_PAID_KEYS", PAID[0])
    with IaProcessor(base_url=emu.base_url, telemetry_sink=sink) as p:
        p.analisar_com_gemini(input_text="x", prompt="y")
    assert emu.count(key=FREE[0]) + emu.count(key=FREE[1]) == 1


def test_sdk_base_url_environment_variable_keeps_working(emu, sink, monkeypatch):
    """With no base_url of ours, the SDK's own GOOGLE_GEMINI_BASE_URL decides."""
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.base_url)
    with IaProcessor(google_free_keys=FREE, telemetry_sink=sink) as p:
        resultado, _, _ = p.analisar_com_gemini(input_text="Qual a capital da França?", prompt="?")
    assert resultado == {"resposta": "Paris"} and emu.total_requests == 1


def test_telemetry_failure_never_fails_the_call(emu):
    with IaProcessor(google_free_keys=FREE, base_url=emu.base_url, telemetry_sink=BrokenSink()) as p:
        resultado, _, _ = p.analisar_com_gemini(input_text="Qual a capital da França?", prompt="?")
    assert resultado == {"resposta": "Paris"}


def test_closed_processor_refuses_calls_and_close_is_idempotent(emu, sink):
    p = IaProcessor(google_free_keys=FREE, base_url=emu.base_url, telemetry_sink=sink)
    p.close()
    p.close()
    assert sink.closed
    with pytest.raises(AiCoreError):
        p.analisar_com_gemini(input_text="x", prompt="y")
    assert emu.total_requests == 0


def test_one_sdk_client_per_key_is_reused(processor, emu):
    """Seen from the wire: each key's requests all come over one kept-alive connection
    (a client made per call would open a new one each time), one per key."""
    for _ in range(6):
        processor.analisar_com_gemini(input_text="x", prompt="y")
    connections = {}
    for request in emu.requests:
        connections.setdefault(request.key_fingerprint, set()).add(request.connection)
    assert set(connections) == {key_fingerprint(k) for k in FREE}
    assert emu.count(key=FREE[0]) >= 2 and emu.count(key=FREE[1]) >= 2
    assert all(len(c) == 1 for c in connections.values()), connections
    assert len(set.union(*connections.values())) == len(FREE)  # a client per key, not one shared


def test_no_key_in_logs_errors_or_reprs(emu, sink, caplog):
    """An invalid key is used once and dropped; its text appears nowhere."""
    bad = "AIzaSECRET-invalid-key-000000000000"
    emu.add_key(bad, state="invalid")
    caplog.set_level(logging.DEBUG)
    with IaProcessor(google_free_keys=[bad], google_paid_keys=PAID, base_url=emu.base_url, telemetry_sink=sink) as p:
        p.analisar_com_gemini(input_text="x", prompt="y")
        p.analisar_com_gemini(input_text="x", prompt="y")
        texts = [repr(p), repr(p.rotator), str(p.rotator.status())]
    assert emu.count(key=bad) == 1  # one request, then never again
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(e) for e in sink.events] + [repr(a) for e in sink.events for a in e.attempt_events]
    for secret in [bad, *PAID]:
        for piece in (secret, secret[:10], secret[-10:]):
            assert not any(piece in t for t in texts), piece
    assert any(key_fingerprint(bad) in t for t in texts)


def test_readme_example_event_lands_in_embedded_clickhouse(emu, _isolated_environment):
    """The call's event (and its attempt) are in chDB once the processor is closed."""
    from csctracker_ai_core.service.ClickHouseDb import ClickHouseDb

    with IaProcessor(google_free_keys=FREE, google_paid_keys=PAID, base_url=emu.base_url) as p:
        assert str(_isolated_environment) in p.telemetry_location
        _, tokens, event_id = p.analisar_com_gemini(
            input_text="Qual a capital da França?", prompt="Responda de forma concisa.", task="pergunta_geral"
        )
    db = ClickHouseDb()
    client = db.get_ch_client()
    try:
        rows = client.query(
            "SELECT task, model, tier, tokens_input, tokens_output, outcome, key_fingerprint "
            "FROM ai_events FINAL WHERE event_id = {id:String}",
            parameters={"id": event_id},
        ).result_rows
        attempts = client.query(
            "SELECT count() FROM ai_attempts WHERE event_id = {id:String}", parameters={"id": event_id}
        ).result_rows
    finally:
        client.close()
        db.close()
    assert len(rows) == 1
    task, model, tier, t_in, t_out, outcome, fp = rows[0]
    assert (task, tier, outcome) == ("pergunta_geral", "free", "ok")
    assert model.endswith("-free") and (t_in, t_out) == (tokens.input, tokens.output)
    assert fp == key_fingerprint(FREE[0])
    assert attempts == [(1,)]


def test_telemetry_is_delivered_at_interpreter_exit_without_close(emu, _isolated_environment):
    """A script that never calls close(): its event is in the store after it exits."""
    import subprocess
    import sys
    import textwrap

    from csctracker_ai_core.service.ClickHouseDb import ClickHouseDb

    script = textwrap.dedent(f"""
        from csctracker_ai_core import IaProcessor
        p = IaProcessor(google_free_keys={FREE!r}, base_url={emu.base_url!r})
        _, _, event_id = p.analisar_com_gemini(input_text="x", prompt="y", task="at-exit")
        print(event_id)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.strip().splitlines()[-1]
    db = ClickHouseDb()
    client = db.get_ch_client()
    try:
        rows = client.query(
            "SELECT task FROM ai_events WHERE event_id = {id:String}", parameters={"id": event_id}
        ).result_rows
    finally:
        client.close()
        db.close()
    assert rows == [("at-exit",)]


def test_a_price_file_broken_mid_run_never_fails_a_served_call(emu, sink, tmp_path, monkeypatch):
    import json
    import os

    from csctracker_ai_core import pricing

    prices = tmp_path / "prices.json"

    default_file = os.path.join(os.path.dirname(pricing.__file__), "data", "model_prices.json")
    prices.write_text(open(default_file).read())
    monkeypatch.setenv("CSCTRACKER_AI_PRICES_FILE", str(prices))
    with IaProcessor(google_free_keys=FREE, base_url=emu.base_url, telemetry_sink=sink) as p:
        p.analisar_com_gemini(input_text="x", prompt="y")
        prices.write_text("{ not json")
        os.utime(prices, ns=(1, 1))  # a new mtime, so the table is reloaded
        resultado, _, event_id = p.analisar_com_gemini(input_text="Qual a capital da França?", prompt="?")
    assert resultado == {"resposta": "Paris"}
    assert [e.outcome for e in sink.events] == ["ok", "ok"] and sink.events[-1].event_id == event_id
    assert json.loads(open(default_file).read())  # the shipped file itself is untouched


def test_a_broken_price_file_at_start_is_a_configuration_error(emu, tmp_path, monkeypatch):
    bad = tmp_path / "prices.json"
    bad.write_text("[1, 2")
    monkeypatch.setenv("CSCTRACKER_AI_PRICES_FILE", str(bad))
    with pytest.raises(ConfigurationError):
        IaProcessor(google_free_keys=FREE, base_url=emu.base_url, telemetry="off")


def test_an_unexpected_internal_error_is_recorded_and_typed(processor, emu, sink, monkeypatch, caplog):
    from csctracker_ai_core import tokens as tokens_module

    def broken(usage):
        raise KeyError("surprise")

    monkeypatch.setattr(tokens_module.TokenUsage, "from_usage_metadata", staticmethod(broken))
    with pytest.raises(GeminiServiceException) as info:
        processor.analisar_com_gemini(input_text="x", prompt="y", event_id="ev-internal")
    assert "internal error" in str(info.value) and isinstance(info.value.__cause__, KeyError)
    # Logged with the copy: a handler reading exc_info gets no frames (whose variables
    # may hold the key), and the text still says where it was raised.
    (logged,) = [r for r in caplog.records if r.getMessage() == "unexpected error in call ev-internal"]
    assert logged.exc_info[1] is info.value.last_error and logged.exc_info[2] is None
    assert any("in broken" in note for note in logged.exc_info[1].__notes__)
    assert sink.events[-1].event_id == "ev-internal" and sink.events[-1].outcome == "error"
    assert processor.rotator.status().in_flight == 0  # the lease went back


@pytest.mark.parametrize("kwargs", [dict(temperature="hot"), dict(temperature=3.5), dict(max_wait_s=-5)])
def test_bad_settings_are_configuration_errors(emu, kwargs):
    with pytest.raises(ConfigurationError):
        IaProcessor(google_free_keys=FREE, base_url=emu.base_url, telemetry="off", **kwargs)


def test_a_model_filter_that_matches_nothing_is_an_input_error_and_sends_nothing(processor, emu, sink):
    with pytest.raises(InvalidInputError, match="configured models are"):
        processor.analisar_com_gemini(input_text="x", prompt="y", model_variant="gemini-9-ultra")
    assert emu.total_requests == 0


def test_every_key_refused_says_to_replace_keys(emu, sink):
    emu.add_key("AIzaBAD-0000000000000000000000000", state="leaked")
    with IaProcessor(
        google_free_keys=["AIzaBAD-0000000000000000000000000"], base_url=emu.base_url, telemetry_sink=sink
    ) as p:
        with pytest.raises(GeminiServiceException, match="replace them"):
            p.analisar_com_gemini(input_text="x", prompt="y")
    assert emu.total_requests == 1


def test_a_numeric_setting_that_is_not_a_number_names_its_variable(emu, monkeypatch):
    monkeypatch.setenv("CSCTRACKER_AI_TIMEOUT_S", "soon")
    with pytest.raises(ConfigurationError, match="CSCTRACKER_AI_TIMEOUT_S='soon' is not a number"):
        IaProcessor(google_free_keys=FREE, base_url=emu.base_url, telemetry="off")


def test_event_ids_are_version_4_uuids_unique_and_differ_in_a_forked_child():
    """Ids come from ``random`` (no system call on the call path, see call.new_event_id): they
    must still be valid UUID4s, unique, and a forked child must not repeat its parent's."""
    import os
    import uuid

    from csctracker_ai_core.call import new_event_id

    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {4}
    assert {uuid.UUID(i).variant for i in ids} == {uuid.RFC_4122}
    assert all(str(uuid.UUID(i)) == i for i in ids)  # the canonical lower-case 8-4-4-4-12 form
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(write, "\n".join(new_event_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        child = fh.read().split("\n")
    os.waitpid(pid, 0)
    parent = [new_event_id() for _ in range(100)]
    assert len(child) == 100 and not set(child) & set(parent)


def test_the_event_sums_are_sum_of_each_field_over_the_attempts_to_the_decimal():
    """call._sums folds the attempts once instead of a sum() per field: same values, and the
    same Decimal exponents (the record keeps the decimal text)."""
    import dataclasses
    from decimal import Decimal

    from test_telemetry_support import make_event

    from csctracker_ai_core.call import _SUMMED, _sums

    base = make_event(1, ok=False).attempt_events[0]
    attempts = [
        dataclasses.replace(base, tokens_input=7, cost_usd=Decimal("0.000123"), list_cost_usd=Decimal("1.5")),
        dataclasses.replace(base, tokens_input=0, tokens_total=3, cost_usd=Decimal("0E-12")),
        dataclasses.replace(base, tokens_output=11, list_cost_usd=Decimal("0.000000000001")),
    ]
    for n in range(len(attempts) + 1):
        expected = {name: sum((getattr(a, name) for a in attempts[:n]), start) for name, start in _SUMMED}
        got = _sums(attempts[:n])
        assert got == expected
        assert {k: str(v) for k, v in got.items()} == {k: str(v) for k, v in expected.items()}
