"""Which slot serves: tiers, round-robin, model order, filters, avoid."""

from __future__ import annotations

import pytest

from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.exceptions import ConfigurationError, InvalidInputError, QuotaExhaustedError
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.pool.rotator import ApiKeyRotator
from csctracker_ai_core.pool.selection import (
    Filters,
    build_plan,
    default_model_order,
    resolve_model_order,
)

MODELS = "gemini-2.5-flash=1,gemini-2.5-pro=1,gemini-2.5-flash-lite=1"
FREE = ["AIzaF0", "AIzaF1", "AIzaF2"]
PAID = ["AIzaP0", "AIzaP1"]
FP = {k: key_fingerprint(k) for k in FREE + PAID}


def make(free=FREE, paid=PAID, limits=MODELS, **kw):
    clock = FakeClock()
    return ApiKeyRotator(free, paid, limits, clock=clock, **kw), clock


def test_default_model_order():
    """Free: most capable first; paid: cheapest first."""
    models = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-3-flash-preview"]
    assert default_model_order(models, "free") == (
        "gemini-2.5-pro",
        "gemini-3-flash-preview",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    )
    assert default_model_order(models, "paid") == (
        "gemini-2.5-flash-lite",
        "gemini-2.5-flash",
        "gemini-3-flash-preview",
        "gemini-2.5-pro",
    )


def test_model_order_override():
    """Named models first, in the given order; the rest in the default order; unknown names are errors."""
    models = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"]
    order = resolve_model_order(models, {"free": ["gemini-2.5-flash"]})
    assert order["free"] == ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite")
    assert order["paid"] == ("gemini-2.5-flash-lite", "gemini-2.5-flash", "gemini-2.5-pro")
    assert resolve_model_order(models, ["gemini-2.5-pro"])["paid"][0] == "gemini-2.5-pro"
    with pytest.raises(ConfigurationError, match="not in GOOGLE_MODEL_LIMITS"):
        resolve_model_order(models, ["gemini-9-ultra"])


@pytest.mark.parametrize(
    "filters, expected",
    [
        (
            Filters(),
            [
                ("free", "gemini-2.5-pro"),
                ("free", "gemini-2.5-flash"),
                ("free", "gemini-2.5-flash-lite"),
                ("paid", "gemini-2.5-flash-lite"),
                ("paid", "gemini-2.5-flash"),
                ("paid", "gemini-2.5-pro"),
            ],
        ),
        (
            Filters(model_variant="flash"),
            [
                ("free", "gemini-2.5-flash"),
                ("free", "gemini-2.5-flash-lite"),
                ("paid", "gemini-2.5-flash-lite"),
                ("paid", "gemini-2.5-flash"),
            ],
        ),
        (
            Filters(model_variant="gemini-2.5-flash", exact_match=True),
            [("free", "gemini-2.5-flash"), ("paid", "gemini-2.5-flash")],
        ),
        (
            Filters(model_variant="Models/Gemini-2.5-Flash", exact_match=True),
            [("free", "gemini-2.5-flash"), ("paid", "gemini-2.5-flash")],
        ),
        (Filters(family="flash"), [("free", "gemini-2.5-flash"), ("paid", "gemini-2.5-flash")]),
        (Filters(family="lite", forced_paid=True), [("paid", "gemini-2.5-flash-lite")]),
        (Filters(family="pro", forced_free=True), [("free", "gemini-2.5-pro")]),
        (Filters(model_variant="ultra"), []),
    ],
)
def test_build_plan(filters, expected):
    """Tier, model order and filters make the plan."""
    order = resolve_model_order(["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"])
    assert [(g.tier, g.model) for g in build_plan(order, ("free", "paid"), filters)] == expected


def test_forced_free_and_forced_paid_conflict():
    with pytest.raises(InvalidInputError):
        Filters(forced_free=True, forced_paid=True)


def test_free_before_paid_with_exact_paid_count():
    """Paid slots are used only once every free slot is at its cap: 9 free slots, then exactly 2 paid."""
    rot, _ = make()
    leases = [rot.acquire() for _ in range(11)]
    tiers = [lease.slot.tier for lease in leases]
    assert tiers == ["free"] * 9 + ["paid"] * 2
    # Free leases go pro -> flash -> lite; paid leases cheapest first.
    assert [lease.slot.model for lease in leases[:3]] == ["gemini-2.5-pro"] * 3
    assert [lease.slot.model for lease in leases[9:]] == ["gemini-2.5-flash-lite"] * 2
    for lease in leases:
        rot.release(lease)
    # With free slots back, the next call is free again.
    lease = rot.acquire()
    assert lease.slot.tier == "free"
    rot.release(lease)


def test_round_robin_within_tier():
    """Sequential calls rotate over the keys of the tier."""
    rot, _ = make(limits="gemini-2.5-flash=4")
    seen = []
    for _ in range(7):
        lease = rot.acquire()
        seen.append(lease.slot.key_fingerprint)
        rot.release(lease)
    assert seen == [FP[k] for k in FREE + FREE + FREE[:1]]


def test_round_robin_skips_busy_keys():
    rot, _ = make(limits="gemini-2.5-flash=1")
    a = rot.acquire()
    b = rot.acquire()
    rot.release(a)
    c = rot.acquire()  # F2 is next in turn, F0 is free again but not its turn
    assert [x.slot.key_fingerprint for x in (a, b, c)] == [FP["AIzaF0"], FP["AIzaF1"], FP["AIzaF2"]]
    d = rot.acquire()
    assert d.slot.key_fingerprint == FP["AIzaF0"]


def test_filters_on_the_rotator():
    rot, _ = make()
    assert rot.acquire(model_variant="lite").slot.model == "gemini-2.5-flash-lite"
    assert rot.acquire(family="flash").slot.model == "gemini-2.5-flash"
    assert rot.acquire(forced_paid=True).slot.tier == "paid"
    lease = rot.acquire(model_variant="gemini-2.5-pro", exact_match=True)
    assert (lease.slot.model, lease.slot.tier) == ("gemini-2.5-pro", "free")
    with pytest.raises(InvalidInputError) as info:  # no model matches: waiting cannot help
        rot.acquire(model_variant="ultra")
    assert "ultra" in str(info.value) and "gemini-2.5-pro" in str(info.value)


def test_forced_free_does_not_spill_to_paid():
    """All free slots busy: forced_free raises (or waits) instead of using a paid key."""
    rot, _ = make(limits="gemini-2.5-flash=1")
    held = [rot.acquire(forced_free=True) for _ in FREE]
    assert {lease.slot.tier for lease in held} == {"free"}
    with pytest.raises(QuotaExhaustedError):
        rot.acquire(forced_free=True, max_wait_s=0)
    assert rot.acquire().slot.tier == "paid"


def test_avoid_prefers_another_slot_but_not_a_paid_one():
    """avoid skips the slots already tried when another free slot can serve; it never spends a paid call."""
    rot, _ = make(free=["AIzaF0", "AIzaF1"], limits="gemini-2.5-flash=1")
    first = rot.acquire()
    rot.release(first)
    other = rot.acquire(avoid=frozenset({first.slot}))
    assert other.slot != first.slot and other.slot.tier == "free"
    rot.release(other)
    both = frozenset({first.slot, other.slot})
    again = rot.acquire(avoid=both)
    assert again.slot.tier == "free"  # an avoided free slot beats a paid one
    rot.release(again)
