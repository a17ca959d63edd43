"""Keys hidden by value: no configured key, whatever its shape, leaves the library.

The emulator repeats the request's key in its error bodies (``echo_key``), as Google
does in a 403 CONSUMER_SUSPENDED ("Permission denied: Consumer 'api_key:<key>' has
been suspended.", continuedev/continue#10902). Newer Gemini keys start with ``AQ.``
(shared notes, gemini-errors.md), a shape no regex of ours knows.
"""

import gc
import io
import logging
import traceback

import pytest

from csctracker_ai_core import (
    ConfigurationError,
    GeminiServiceException,
    IaProcessor,
    QuotaExhaustedError,
    redaction,
)
from csctracker_ai_core.cli import main
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.pool.rotator import ApiKeyRotator

# Shaped like the newer keys: no "AIza", dots and underscores inside.
AQ_KEY = "AQ.Ab8RN6LkQ_3xVtP9wZ2mYc4dE7fGhJ1kLmNoPq"
MODEL = "gemini-2.5-flash"


def _chain(exc):
    """Every exception reachable from ``exc`` (cause, context, last_error)."""
    seen, todo = [], [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "last_error", None)]
    return seen


def _exception_texts(exc):
    texts = ["".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    for e in _chain(exc):
        texts += [str(e), repr(e), repr(getattr(e, "details", None)), str(getattr(e, "args", ""))]
    return "\n".join(texts)


def _reachable(value, key, depth=0):
    """True when ``key`` is in ``value``'s repr, or in the headers of an HTTP object it is
    or holds (a request's repr shows no headers), up to a few levels down."""
    try:
        if key in repr(value):
            return True
    except Exception:
        pass
    if depth >= 2:
        return False
    headers = getattr(value, "headers", None)
    if headers is not None and any(key in str(v) for v in dict(headers).values()):
        return True
    for name in ("request", "_request", "response"):
        try:
            inner = getattr(value, name, None)
        except Exception:  # httpx: "The .request property has not been set."
            continue
        if _reachable(inner, key, depth + 1):
            return True
    return False


def _where_the_key_is(exc, key):
    """Every place of ``exc``'s chain where ``key`` can be read: an attribute, or a variable
    of a frame of a traceback (what an error tracker such as Sentry sends by default)."""
    places = []
    for e in _chain(exc):
        for name, value in vars(e).items():
            if _reachable(value, key):
                places.append(f"{type(e).__name__}.{name}")
        tb = e.__traceback__
        while tb is not None:
            for name, value in tb.tb_frame.f_locals.items():
                if _reachable(value, key):
                    places.append(f"{type(e).__name__}: {tb.tb_frame.f_code.co_name}() variable {name}")
            tb = tb.tb_next
    return places


# ----------------------------------------------------------------------------- the registry


def test_a_registered_key_of_any_shape_becomes_its_fingerprint():
    rot = ApiKeyRotator([AQ_KEY], model_limits=f"{MODEL}=1")
    text = f"Consumer 'api_key:{AQ_KEY}' has been suspended; again {AQ_KEY}."
    out = redaction.redact(text)
    assert AQ_KEY not in out
    assert out.count(key_fingerprint(AQ_KEY)) == 2
    del rot


def test_registration_ends_with_its_owner():
    gc.collect()  # pools other tests dropped let go of their keys first
    before = redaction.registered_count()
    rot = ApiKeyRotator(["zz-owner-bound-key-000000000001"], model_limits=f"{MODEL}=1")
    assert redaction.registered_count() == before + 1
    assert "zz-owner-bound-key-000000000001" not in redaction.redact("x zz-owner-bound-key-000000000001 y")
    del rot
    gc.collect()
    assert redaction.registered_count() == before
    assert redaction.redact("x zz-owner-bound-key-000000000001 y") == "x zz-owner-bound-key-000000000001 y"


def test_a_key_held_twice_stays_hidden_until_both_let_go():
    a = redaction.register_keys(["shared-key-value-1234567890"])
    b = redaction.register_keys(["shared-key-value-1234567890"])
    redaction.unregister_keys(a)
    assert "shared-key-value-1234567890" not in redaction.redact("shared-key-value-1234567890")
    redaction.unregister_keys(b)
    redaction.unregister_keys(b)  # idempotent
    assert redaction.redact("shared-key-value-1234567890") == "shared-key-value-1234567890"


def test_short_demo_keys_are_hidden_only_as_whole_words():
    handle = redaction.register_keys(["k1"])
    try:
        assert (
            redaction.redact("task1 used k1 (key k1)")
            == f"task1 used {key_fingerprint('k1')} (key {key_fingerprint('k1')})"
        )
    finally:
        redaction.unregister_keys(handle)


def test_unconfigured_google_shaped_keys_and_url_keys_are_masked():
    assert redaction.redact("AIzaSyAbm-_oW12aAAxNc8FEEh-84QT7o-9r1Ak") == "[key]"
    assert redaction.redact("GET /v1/models?alt=sse&key=secret-value&x=1") == "GET /v1/models?alt=sse&key=[key]&x=1"


def test_log_records_of_every_logger_are_redacted(caplog):
    handle = redaction.register_keys([AQ_KEY])
    try:
        with caplog.at_level(logging.DEBUG):
            logging.getLogger("google_genai._api_client").debug("body %s", {"key": AQ_KEY})
            logging.getLogger("httpx").info("HTTP Request: POST http://h/?key=%s", AQ_KEY)
            try:
                raise RuntimeError(f"boom {AQ_KEY}")
            except RuntimeError:
                logging.getLogger("some.app").exception("failed")
        assert AQ_KEY not in caplog.text
        assert key_fingerprint(AQ_KEY) in caplog.text
        assert len(caplog.records) == 3
    finally:
        redaction.unregister_keys(handle)


# ----------------------------------------------------------------------------- over the wire

_STATUSES = {
    400: dict(state="invalid"),
    403: dict(state="leaked"),
    429: dict(no_quota=True),
    500: dict(fault="500"),
}


def _prepare(emu, status):
    how = _STATUSES[status]
    emu.add_key(AQ_KEY, tier="free", **({"state": how["state"]} if "state" in how else {}))
    if how.get("no_quota"):
        emu.no_quota(MODEL, tier="free")
    if "fault" in how:
        emu.inject(how["fault"], count=10)


def _failed_call(base_url, telemetry, task):
    """The exception of one call on AQ_KEY that fails (no retry, no wait)."""
    ia = IaProcessor(
        google_free_keys=[AQ_KEY],
        google_models_limits=f"{MODEL}=1",
        base_url=base_url,
        max_retries=0,
        max_wait_s=0,
        telemetry=telemetry,
    )
    try:
        with pytest.raises(GeminiServiceException) as info:
            ia.analisar_com_gemini(input_text="olá", task=task)
    finally:
        ia.close(timeout_s=120)  # a loaded machine may need more than the default 5 s
    return info.value


@pytest.mark.parametrize("status", sorted(_STATUSES))
def test_an_echoed_key_leaves_no_trace(status, make_gemini_emulator, caplog, tmp_path):
    """Logs at DEBUG (every logger), the exception and its whole chain, telemetry rows
    in chDB: the key is nowhere, its fingerprint is where the key was."""
    emu = make_gemini_emulator(models=[MODEL], echo_key=True)
    _prepare(emu, status)
    caplog.set_level(logging.DEBUG)
    fp = key_fingerprint(AQ_KEY)
    exc = _failed_call(emu.base_url, "embedded", "leak-check")
    assert emu.count(key=AQ_KEY) >= 1
    if status == 429:
        assert isinstance(exc, QuotaExhaustedError)
    assert exc.last_error is not None
    texts = _exception_texts(exc)
    assert AQ_KEY not in texts
    assert fp in texts  # the echo was there, and became the fingerprint
    # Nor in what an error tracker reads: attributes, and the variables of every frame.
    assert _where_the_key_is(exc, AQ_KEY) == []
    # the SDK's error keeps what callers read, minus the key
    last = exc.last_error
    assert getattr(last, "code", None) == status and getattr(last, "response", "absent") is None
    assert AQ_KEY not in caplog.text

    from csctracker_ai_core.telemetry.clickhouse_db import ClickHouseDb

    db = ClickHouseDb(telemetry="embedded")
    client = db.get_ch_client()
    try:
        events = client.query("SELECT * FROM ai_events").result_rows
        attempts = client.query("SELECT * FROM ai_attempts").result_rows
    finally:
        client.close()
        db.close()
    assert events and attempts
    rows = repr(events) + repr(attempts)
    assert AQ_KEY not in rows
    assert fp in rows


def test_a_connection_error_carries_neither_the_request_nor_its_frames(tmp_path):
    """httpx keeps the request (headers: x-goog-api-key) on its errors, and the frames of
    the SDK's request path hold it in their variables: the caller's chain has neither,
    and the frames' text is still there, as a note."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    exc = _failed_call(f"http://127.0.0.1:{port}", "off", "refused")
    last = exc.last_error
    assert type(last).__name__ == "ConnectError" and "refused" in str(last).lower()
    assert _where_the_key_is(exc, AQ_KEY) == []
    assert last.__traceback__ is None
    assert any("_request_once" in note for note in last.__notes__)  # where it was raised
    assert AQ_KEY not in "".join(traceback.format_exception(exc))


class _TransportError(Exception):
    def __init__(self, message, request=None):
        super().__init__(message)
        self.request = request
        self.code = 7
        self.hints = {"retry": ["later"]}


def test_a_foreign_error_is_copied_with_its_plain_attributes_and_without_its_frames():
    handle = redaction.register_keys([AQ_KEY])
    try:

        def deep(secret):
            raise _TransportError(f"failed for {secret}", request=object())

        try:
            deep(AQ_KEY)
        except _TransportError as exc:
            original = exc
        clone = redaction.redact_exception(original)
    finally:
        redaction.unregister_keys(handle)
    assert type(clone) is _TransportError and clone is not original
    assert AQ_KEY not in str(clone) and key_fingerprint(AQ_KEY) in str(clone)
    assert (clone.code, clone.hints, clone.request) == (7, {"retry": ["later"]}, None)
    assert clone.__traceback__ is None
    assert any("in deep" in note and AQ_KEY not in note for note in clone.__notes__)
    assert original.__traceback__ is not None and original.request is not None  # the original is left as it was


def test_this_librarys_errors_are_kept_as_they_are_when_they_hold_no_key():
    try:
        raise QuotaExhaustedError("no slot for gemini-x", attempts=2)
    except QuotaExhaustedError as exc:
        original = exc
    assert redaction.redact_exception(original) is original
    assert original.__traceback__ is not None


def test_cli_output_hides_an_echoed_key(make_gemini_emulator, monkeypatch):
    emu = make_gemini_emulator(models=[MODEL], echo_key=True)
    emu.add_key(AQ_KEY, tier="free", state="leaked")
    monkeypatch.setenv("GOOGLE_FREE_KEYS", AQ_KEY)
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [
            "-vv",
            "ask",
            "--base-url",
            emu.base_url,
            "--model-limits",
            f"{MODEL}=1",
            "--telemetry",
            "off",
            "--text",
            "olá",
        ],
        stdout=out,
        stderr=err,
    )
    assert code == 1
    text = out.getvalue() + err.getvalue()
    assert AQ_KEY not in text
    assert key_fingerprint(AQ_KEY) in text


# ----------------------------------------------------------------------------- keys never in URLs


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/?key=AQ.secret",
        "https://user:pass@gemini.example",
        "https://gemini.example/#frag",
        "ftp://gemini.example",
        "not a url",
    ],
)
def test_a_base_url_that_would_carry_a_secret_is_refused(url):
    with pytest.raises(ConfigurationError, match="base_url"):
        IaProcessor(google_free_keys=[AQ_KEY], base_url=url, telemetry="off")


def test_the_sdk_environment_endpoint_is_checked_too(monkeypatch):
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9/?key=AQ.secret")
    with pytest.raises(ConfigurationError, match="GOOGLE_GEMINI_BASE_URL"):
        IaProcessor(google_free_keys=[AQ_KEY], telemetry="off")


def test_telemetry_records_hide_keys_in_every_text_column():
    from csctracker_ai_core.telemetry.events import CallEvent, CallOutcome
    from csctracker_ai_core.telemetry.records import event_to_record

    handle = redaction.register_keys([AQ_KEY])
    try:
        event = CallEvent(
            event_id="e1",
            timestamp=1_800_000_000.0,
            task=f"t {AQ_KEY}",
            outcome=CallOutcome.OK,
            payload=f"my key is {AQ_KEY}",
            result=f"you said {AQ_KEY}",
            error_message=f"Consumer 'api_key:{AQ_KEY}'",
            metadata={"k": AQ_KEY},
        )
        record = event_to_record(event)
    finally:
        redaction.unregister_keys(handle)
    text = repr(record)
    assert AQ_KEY not in text
    assert text.count(key_fingerprint(AQ_KEY)) == 5


@pytest.mark.parametrize("field", ["task", "payload", "result", "error_message", "metadata", "attempt"])
def test_a_key_in_any_text_of_an_event_never_reaches_the_spool_line(field):
    import dataclasses

    from test_telemetry_support import make_event

    from csctracker_ai_core.telemetry.records import encode_event

    handle = redaction.register_keys([AQ_KEY])
    try:
        event = make_event(1, ok=False)
        secret = f"see {AQ_KEY} here"
        if field == "metadata":
            event = dataclasses.replace(event, metadata={"note": secret})
        elif field == "attempt":
            first = dataclasses.replace(event.attempt_events[0], error_message=secret)
            event = dataclasses.replace(event, attempt_events=(first, *event.attempt_events[1:]))
        else:
            event = dataclasses.replace(event, **{field: secret})
        line, _ = encode_event(event)
    finally:
        redaction.unregister_keys(handle)
    assert AQ_KEY.encode() not in line
    assert key_fingerprint(AQ_KEY).encode() in line


def test_owners_collected_inside_a_registration_do_not_deadlock():
    """A finalizer may run inside any allocation, also while this thread registers keys:
    it must not wait for the registry's lock (a non-reentrant lock would hang here)."""
    import threading

    class Owner:
        def __init__(self):
            self.me = self  # a cycle: only the cyclic collector frees it, at any allocation

    def churn():
        for i in range(300):
            redaction.register_keys([f"churn-key-{i:04d}-0000000000000"], owner=Owner())

    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)  # collect at nearly every allocation
    try:
        worker = threading.Thread(target=churn, daemon=True)
        worker.start()
        worker.join(120)
        assert not worker.is_alive(), "registration deadlocked with a finalizer"
    finally:
        gc.set_threshold(*old)
    gc.collect()
    redaction.registered_count()  # lets go of the ended registrations
    assert redaction.redact("churn-key-0001-0000000000000") == "churn-key-0001-0000000000000"
