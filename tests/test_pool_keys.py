"""Parsing key lists, projects, GOOGLE_MODEL_LIMITS and known limits."""

from __future__ import annotations

import pytest

from csctracker_ai_core.catalog import default_model_limits
from csctracker_ai_core.exceptions import ConfigurationError
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.pool.keys import (
    KnownLimits,
    build_key_specs,
    parse_key_list,
    parse_known_limits,
    parse_model_limits,
)

KEY_A = "AIzaSyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
KEY_B = "AIzaSyBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, []),
        ("", []),
        ("a,b", [(None, "a"), (None, "b")]),
        (" a , b ,, a ", [(None, "a"), (None, "b")]),
        ("a\nb;c", [(None, "a"), (None, "b"), (None, "c")]),
        (["a", " b ", ""], [(None, "a"), (None, "b")]),
        ("p1:a, p2 : b", [("p1", "a"), ("p2", "b")]),
        (["example.com:proj:a"], [("example.com:proj", "a")]),
        ("a, p1:a", [("p1", "a")]),
    ],
)
def test_parse_key_list(value, expected):
    """Lists or comma strings; whitespace and duplicates dropped; project:KEY grouping."""
    assert parse_key_list(value) == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        (":a", "empty project"),
        ("p:", "no key"),
        ("p1:a,p2:a", "two projects"),
        ([1], "not a string"),
        ("a b", "whitespace"),
    ],
)
def test_parse_key_list_errors(value, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        parse_key_list(value)


def test_build_key_specs_projects_and_tiers():
    """Tier per list, project from the inline syntax, the mapping, or the fingerprint."""
    specs = build_key_specs(f"p1:{KEY_A}", [KEY_B, "AIzaC"], projects={"p2": "AIzaC"})
    assert [(s.tier, s.project) for s in specs] == [
        ("free", "p1"),
        ("paid", key_fingerprint(KEY_B)),
        ("paid", "p2"),
    ]
    assert KEY_A not in repr(specs)


@pytest.mark.parametrize(
    "free, paid, projects, fragment",
    [
        (None, None, None, "no Gemini API key"),
        ([KEY_A], [KEY_A], None, "both as free and as paid"),
        ([f"p:{KEY_A}"], [f"p:{KEY_B}"], None, "both free and paid keys"),
        ([f"p1:{KEY_A}"], None, {"p2": [KEY_A]}, "projects says"),
        ([KEY_A], None, {"p": [KEY_B]}, "neither free_keys nor paid_keys"),
    ],
)
def test_build_key_specs_errors_never_show_keys(free, paid, projects, fragment):
    with pytest.raises(ConfigurationError, match=fragment) as info:
        build_key_specs(free, paid, projects)
    assert KEY_A not in str(info.value) and KEY_B not in str(info.value)


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, default_model_limits()),
        ("", default_model_limits()),
        ('{"gemini-2.5-flash": 2, "gemini-2.5-pro": 1}', {"gemini-2.5-flash": 2, "gemini-2.5-pro": 1}),
        ("gemini-2.5-flash=2, gemini-2.5-pro=1", {"gemini-2.5-flash": 2, "gemini-2.5-pro": 1}),
        ("models/gemini-2.5-flash=3", {"gemini-2.5-flash": 3}),
        ({"gemini-2.5-flash": "4"}, {"gemini-2.5-flash": 4}),
    ],
)
def test_parse_model_limits(value, expected):
    """JSON or model=n pairs, as in the original; unset means the defaults."""
    assert parse_model_limits(value) == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        ('{"gemini-2.5-flash": 2', "not valid JSON"),
        ("[1, 2]", "not model=limit"),
        ('{"gemini-2.5-flash": 0}', "positive integer"),
        ('{"gemini-2.5-flash": 1.5}', "positive integer"),
        ("gemini-2.5-flash", "not model=limit"),
        ("gemini-2.5-flash=x", "positive integer"),
        ("{}", "names no model"),
    ],
)
def test_parse_model_limits_errors(value, fragment):
    """Unlike the original, a bad value is an error, not a silent fallback."""
    with pytest.raises(ConfigurationError, match=fragment):
        parse_model_limits(value)


def test_parse_known_limits():
    """Per tier, or one spec for both tiers; JSON accepted."""
    out = parse_known_limits(
        {
            "gemini-2.5-flash": {"free": {"rpm": 10, "rpd": 250, "tpm": 250000}, "paid": KnownLimits(rpm=1000)},
            "gemini-2.5-pro": {"rpd": 100},
        }
    )
    assert out[("gemini-2.5-flash", "free")] == KnownLimits(10, 250, 250000)
    assert out[("gemini-2.5-flash", "paid")] == KnownLimits(rpm=1000)
    assert out[("gemini-2.5-pro", "free")] == out[("gemini-2.5-pro", "paid")] == KnownLimits(rpd=100)
    assert parse_known_limits('{"m": {"free": {"rpm": 2}}}') == {("m", "free"): KnownLimits(rpm=2)}
    with pytest.raises(ConfigurationError, match="unknown limit"):
        parse_known_limits({"m": {"rph": 2}})


def test_known_limits_wildcard_covers_every_configured_model_and_exact_entries_win():
    from csctracker_ai_core.pool.keys import expand_wildcard_limits, parse_known_limits

    known = parse_known_limits({"*": {"free": {"rpm": 2}}, "gemini-2.5-flash": {"free": {"rpm": 9}}})
    expanded = expand_wildcard_limits(known, ["gemini-3-flash-preview", "gemini-2.5-flash"])
    assert set(expanded) == {("gemini-3-flash-preview", "free"), ("gemini-2.5-flash", "free")}
    assert expanded[("gemini-3-flash-preview", "free")].rpm == 2
    assert expanded[("gemini-2.5-flash", "free")].rpm == 9
