"""The Redis layout (ids, groups, key names) is pure: these tests need no Redis."""

from __future__ import annotations

import json

import pytest

from csctracker_ai_core.exceptions import ConfigurationError
from csctracker_ai_core.pool.keys import KnownLimits
from csctracker_ai_core.pool.lease import Slot
from csctracker_ai_core.pool.redis_layout import SCHEMA, index_layout
from csctracker_ai_core.pool.selection import Group
from csctracker_ai_core.pool.state import KeyInfo, PoolLayout, Scope

FLASH, PRO = "gemini-2.5-flash", "gemini-2.5-pro"
# Order on purpose: a paid key first, a project shared by a free and a paid key (its
# limits follow its first key's tier), a second free project.
KEYS = (
    KeyInfo("fpP", "paid", "pp"),
    KeyInfo("fpA", "free", "p1"),
    KeyInfo("fpB", "free", "p1"),
    KeyInfo("fpC", "free", "p2"),
)
LIMITS = {(FLASH, "free"): KnownLimits(rpm=3, rpd=12), (PRO, "paid"): KnownLimits(rpm=2)}


def layout(keys=KEYS, caps=None, limits=None):
    return PoolLayout(keys=keys, caps=caps or {FLASH: 2, PRO: 1}, known_limits=LIMITS if limits is None else limits)


def test_slot_ids_are_key_by_model_in_layout_order():
    ids = index_layout(layout())
    assert ids.n_models == 2 and ids.models == (FLASH, PRO)
    assert [(s.key_fingerprint, s.model) for s in ids.slots] == [
        ("fpP", FLASH),
        ("fpP", PRO),
        ("fpA", FLASH),
        ("fpA", PRO),
        ("fpB", FLASH),
        ("fpB", PRO),
        ("fpC", FLASH),
        ("fpC", PRO),
    ]
    assert ids.sid[Slot("fpB", "free", "p1", PRO)] == 2 * 2 + 1
    assert ids.key_sids(ids.key_index["fpC"]) == [6, 7]
    assert ids.caps == (2, 1)


def test_projects_groups_and_limits():
    ids = index_layout(layout())
    # projects numbered by first key: pp=0, p1=1, p2=2; pm = p * M + m
    assert ids.pm_of[("p1", PRO)] == 3 and ids.pm_of[("p2", FLASH)] == 4
    assert list(ids.pm_of_sid) == [0, 1, 2, 3, 2, 3, 4, 5]
    # free flash is limited (rpm and rpd); paid pro only by rpm; p1's pro is free-tier: none
    assert ids.limited_pm == {2, 4, 1}
    assert ids.rpd_pm == {2, 4}
    # groups: tiers in TIERS order (free before paid) whatever the key order
    assert ids.group_of == {("free", FLASH): "0", ("free", PRO): "1", ("paid", FLASH): "2", ("paid", PRO): "3"}
    plan = [Group("free", FLASH), Group("gold", FLASH), Group("paid", PRO)]
    assert ids.plan_args(plan) == ["2", "0", "3"]


def test_scopes_become_script_targets():
    ids = index_layout(layout())
    assert ids.target(Scope.project_model("p2", PRO)) == ("p", 5)
    assert ids.target(Scope.slot("fpA", PRO)) == ("s", 3)


def test_payload_is_what_configure_stores():
    ids = index_layout(layout())
    payload = json.loads(ids.payload)
    assert payload["nkeys"] == 4
    # each slot row: sid, group, position in its tier, pm, cap, key, limited
    assert payload["slots"][4] == [4, 0, 1, 2, 2, 2, 1]
    assert payload["slots"][1] == [1, 3, 0, 1, 1, 0, 1]
    assert dict(payload["pms"])[2] == "2,4"
    assert sorted(payload["limits"]) == [[1, "2 -1 -1"], [2, "3 12 -1"], [4, "3 12 -1"]]
    assert json.loads(payload["layout"])["schema"] == SCHEMA
    assert "4 keys (3 free, 1 paid) in 3 projects" in ids.summary


def test_namespace_is_a_digest_of_the_layout_unless_given():
    a, b = index_layout(layout()), index_layout(layout())
    assert a.namespace == b.namespace == a.digest[:16] and a.prefix == f"csc-ai:{{{a.namespace}}}:"
    assert index_layout(layout(caps={FLASH: 3, PRO: 1})).namespace != a.namespace
    assert index_layout(layout(limits={})).namespace != a.namespace
    assert index_layout(layout(keys=KEYS[::-1])).namespace != a.namespace
    named = index_layout(layout(), "app-one")
    assert named.prefix == "csc-ai:{app-one}:" and named.digest == a.digest


def test_nothing_but_fingerprints_is_in_the_payload():
    ids = index_layout(layout(keys=(KeyInfo("fp-of-key", "free", "proj"),)))
    assert "AIza" not in ids.payload and "fp-of-key" in ids.payload


@pytest.mark.parametrize("bad", ["", "a{b", "a}", "two words", "line\nbreak"])
def test_bad_namespaces_are_refused(bad):
    with pytest.raises(ConfigurationError, match="namespace"):
        index_layout(layout(), bad)
