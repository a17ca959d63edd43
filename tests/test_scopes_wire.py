"""Failure scopes over the wire: IaProcessor, the real google-genai SDK, the emulator's real bodies.

Each test is a case of issue 10 that cost money or availability before: the pool now
takes out exactly what the failure is about, and a per-model refusal is paid once.
Request counts are read from the emulator (what Gemini would have billed or refused).
"""

from __future__ import annotations

import pytest

from csctracker_ai_core import GeminiServiceException, IaProcessor
from csctracker_ai_core.exceptions import GeminiRequestError
from csctracker_ai_core.fingerprint import key_fingerprint

PRO = "gemini-3.1-pro-preview"  # first-ranked on free keys (most capable first)
FLASH = "gemini-3-flash-preview"
LIMITS = f"{PRO}=1,{FLASH}=1"
FREE = [f"AIzaFREE-{i}-000000000000000000000000000" for i in range(3)]
PAID = ["AIzaPAID-0-000000000000000000000000000"]


class ListSink:
    location = "memory"

    def __init__(self):
        self.events = []

    def record(self, event):
        self.events.append(event)

    def close(self, timeout_s=None):
        pass


@pytest.fixture
def emu(make_gemini_emulator):
    emu = make_gemini_emulator()
    for i, key in enumerate(FREE):
        emu.add_key(key, project=f"free-{i}", tier="free")
    emu.add_key(PAID[0], project="billing", tier="paid")
    return emu


def processor(emu, free=FREE, paid=PAID):
    # "project:KEY" tells the pool which keys share a project, as the emulator knows them.
    free = [f"free-{FREE.index(k)}:{k}" for k in free]
    paid = [f"billing:{k}" for k in paid]
    return IaProcessor(
        google_free_keys=free,
        google_paid_keys=paid,
        google_models_limits=LIMITS,
        base_url=emu.base_url,
        telemetry_sink=ListSink(),
        max_wait_s=0,
    )


def disabled(p):
    return [s for s in p.rotator.status().slots if s.disabled]


def paid_requests(emu):
    return emu.count(key=PAID[0])


def test_a_403_for_one_model_disables_nothing_else(emu):
    """Before: the key was disabled for every model, and its traffic went to paid keys."""
    emu.deny_model(PRO, key=FREE[0])
    with processor(emu) as p:
        for _ in range(6):
            p.analisar_com_gemini(prompt="Qual a capital da França?")
        assert disabled(p) == []
        assert emu.count(status=403) == 1
        assert emu.count(model=PRO, status=200) == 6  # the other keys keep serving PRO
        # The denied key keeps serving the other model (round robin over the free keys).
        for _ in range(3):
            p.analisar_com_gemini(prompt="oi", model_variant=FLASH, exact_match=True)
        assert emu.count(key=FREE[0], model=FLASH, status=200) == 1
        assert paid_requests(emu) == 0


def test_free_tier_unavailable_moves_the_same_call_to_paid_keys(emu):
    """Before: the 400 FAILED_PRECONDITION raised after one free request."""
    emu.block_free_tier("free-0")
    with processor(emu, free=FREE[:1]) as p:
        result, _, event_id = p.analisar_com_gemini(prompt="Qual a capital da França?")
        assert result == {"resposta": "Paris"}
        assert [a.tier for a in p.telemetry.events[-1].attempt_events] == ["free", "paid"]
        assert emu.count(key=FREE[0], status=400) == 1
        # The next calls go straight to the paid key: the free key is parked for every model.
        p.analisar_com_gemini(prompt="de novo")
        assert emu.count(key=FREE[0]) == 1
        assert paid_requests(emu) == 2


def test_free_tier_unavailable_in_one_project_keeps_other_projects_free(emu):
    emu.block_free_tier("free-0")
    with processor(emu) as p:
        for _ in range(6):
            p.analisar_com_gemini(prompt="oi")
        assert emu.count(key=FREE[0]) == 1
        assert paid_requests(emu) == 0


def test_a_per_model_400_moves_the_call_to_the_next_model_and_is_paid_once(emu):
    """Before: "Thinking level ... is not supported for this model" ended the whole call."""
    emu.set_model_rule(PRO, thinking_levels=("HIGH",))  # a refusal no static table predicted
    with processor(emu) as p:
        result, _, _ = p.analisar_com_gemini(prompt="Qual a capital da França?", thinking_level="low")
        assert result == {"resposta": "Paris"}
        assert emu.count(model=PRO, status=400) == 1
        assert emu.count(model=FLASH, status=200) == 1
        for _ in range(3):
            p.analisar_com_gemini(prompt="de novo", thinking_level="low")
        assert emu.count(model=PRO) == 1  # 0 requests to the refusing model after the first
        # A call PRO takes still goes to PRO.
        p.analisar_com_gemini(prompt="e agora", thinking_level="high")
        assert emu.count(model=PRO, status=200) == 1
        assert disabled(p) == [] and paid_requests(emu) == 0


def test_an_input_over_one_models_limit_goes_to_a_model_that_takes_it(emu):
    emu.set_model_rule(PRO, max_input_tokens=1000)
    with processor(emu) as p:
        long_text = "palavra " * 2000  # about 4000 tokens
        p.analisar_com_gemini(prompt="resuma", input_text=long_text)
        p.analisar_com_gemini(prompt="resuma", input_text=long_text)
        assert emu.count(model=PRO, status=400) == 1
        assert emu.count(model=FLASH, status=200) == 2
        p.analisar_com_gemini(prompt="curto")
        assert emu.count(model=PRO, status=200) == 1


def test_when_every_model_refuses_the_call_fails_typed_and_the_next_sends_nothing(emu):
    for model in (PRO, FLASH):
        emu.set_model_rule(model, json_mode=False)
    with processor(emu) as p:
        with pytest.raises(GeminiRequestError, match="Json mode is not enabled"):
            p.analisar_com_gemini(prompt="oi")
        assert emu.count(status=400) == 2  # one per model, then the call ends
        with pytest.raises(GeminiRequestError, match="known to refuse"):
            p.analisar_com_gemini(prompt="oi")
        assert emu.total_requests == 2
        assert p.telemetry.events[-1].outcome == "error"
        text, _, _ = p.analisar_com_gemini(prompt="oi", return_json=False)
        assert text.startswith("Resposta simulada")


def test_a_retired_model_is_learnt_once_for_all_keys(emu):
    """Before: one wasted request per key."""
    emu.retire_model(PRO)
    with processor(emu) as p:
        for _ in range(6):
            p.analisar_com_gemini(prompt="oi")
        assert emu.count(model=PRO) == 1
        assert emu.count(model=PRO, status=404) == 1
        assert emu.count(model=FLASH, status=200) == 6
        parked = {s.key_fingerprint for s in p.rotator.status().slots if s.model == PRO and s.suspended_until}
        assert parked == {key_fingerprint(k) for k in FREE + PAID}


def test_user_location_unsupported_raises_at_once_and_parks_nothing(emu):
    """Decided: every key leaves from this host, so no other slot can fix it; reported as
    intermittent (poenl/gemini-api#4), so nothing is parked either."""
    emu.location_unsupported = True
    with processor(emu) as p:
        with pytest.raises(GeminiRequestError, match="User location is not supported"):
            p.analisar_com_gemini(prompt="oi")
        assert emu.total_requests == 1
        emu.location_unsupported = False
        p.analisar_com_gemini(prompt="oi")
        assert disabled(p) == [] and not any(s.suspended_until for s in p.rotator.status().slots)


@pytest.mark.parametrize("refusal", ["403", "400 thinking", "400 JSON mode"])
def test_mixed_pool_first_model_refusing(emu, refusal):
    """First-ranked model answers per-model 403 or 400: 0 keys disabled, 0 paid calls while a
    free model can serve, at most one wasted request per (model, refusal) -- a 403 concerns
    one key x model, so each free key pays it once."""
    kwargs = {}
    if refusal == "403":
        emu.deny_model(PRO)
    elif refusal == "400 thinking":
        emu.set_model_rule(PRO, thinking_levels=("HIGH",))
        kwargs["thinking_level"] = "low"
    else:
        emu.set_model_rule(PRO, json_mode=False)
    with processor(emu) as p:
        for _ in range(12):
            p.analisar_com_gemini(prompt="Qual a capital da França?", **kwargs)
        assert disabled(p) == []
        assert paid_requests(emu) == 0
        wasted = emu.count(model=PRO)
        assert wasted == (len(FREE) if refusal == "403" else 1)
        assert emu.count(model=FLASH, status=200) == 12


def test_a_403_on_the_only_model_for_every_key_ends_with_a_clear_error(emu):
    emu.deny_model(PRO)
    with IaProcessor(
        google_free_keys=FREE[:1],
        google_models_limits=f"{PRO}=1",
        base_url=emu.base_url,
        telemetry_sink=ListSink(),
        max_wait_s=0,
    ) as p:
        with pytest.raises(GeminiServiceException, match="no access"):
            p.analisar_com_gemini(prompt="oi")
        assert emu.total_requests == 1


def test_a_404_after_the_model_served_here_concerns_one_project_only(emu):
    """ "no longer available to new users": existing projects may still be served
    (shared/notes/gemini-errors.md). Once the model has served here, a 404 parks it on the
    project that got it, not everywhere."""
    from csctracker_ai_core.testing.emulator_errors import retired_model_body

    with processor(emu) as p:
        p.analisar_com_gemini(prompt="oi")  # PRO serves on free-0
        emu.add_error(404, retired_model_body(PRO), model=PRO, project="free-1")
        for _ in range(6):
            p.analisar_com_gemini(prompt="oi")
        assert emu.count(model=PRO, status=404) == 1
        parked = {s.key_fingerprint for s in p.rotator.status().slots if s.model == PRO and s.suspended_until}
        assert parked == {key_fingerprint(FREE[1])}
        assert emu.count(key=FREE[0], model=PRO, status=200) >= 3 and paid_requests(emu) == 0
