"""The model catalog: facts per model, names it does not hold, defaults, shutdowns, overrides."""

import json
import logging
from datetime import date

import pytest

from csctracker_ai_core import catalog as cat
from csctracker_ai_core.catalog import (
    ShutdownWatch,
    capability_rank,
    default_model_limits,
    get_catalog,
    load_catalog,
    matches_family,
    model_family,
    thinking_for,
)
from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.exceptions import ConfigurationError
from csctracker_ai_core.pool.rotator import ApiKeyRotator
from csctracker_ai_core.pool.selection import Filters
from csctracker_ai_core.pricing import get_prices

TODAY = date(2026, 11, 25)


def utc(day: date) -> float:
    import calendar

    return float(calendar.timegm(day.timetuple())) + 3600


def test_every_entry_has_sources_and_a_consistent_lifecycle():
    catalog = load_catalog()
    for name, info in catalog.models.items():
        assert info.sources, f"{name} has no source"
        assert info.known and info.alias_of is None
        if info.shutdown and info.released:
            assert info.released < info.shutdown, name
        if info.successor:
            assert info.successor in catalog.models, f"{name}: successor {info.successor} not in the catalog"
        if info.thinking.style == "level":
            assert info.thinking.levels, name


def test_list_prices_come_from_the_price_table_only():
    """The catalog holds no price: what it shows is the price table's entry, for every model."""
    raw = json.loads(cat.SHIPPED_CATALOG_FILE.read_text())
    assert not any("price" in key for entry in raw["models"].values() for key in entry)
    prices = get_prices()
    for name, info in get_catalog().models.items():
        assert info.list_price() == prices.price_of(name)
    assert get_catalog().info("gemini-3.1-pro-preview").list_price().output_price_less_200 > 0


@pytest.mark.parametrize(
    "model, family, style, levels",
    [
        ("gemini-3-pro-preview", "pro", "level", ("low", "high")),
        ("gemini-3.1-pro-preview", "pro", "level", ("low", "medium", "high")),
        ("gemini-3.8-flash", "flash", "level", ("low", "medium", "high")),
        ("gemini-3-flash-preview", "flash", "level", ("minimal", "low", "medium", "high")),
        ("gemini-3.5-flash-lite", "lite", "level", ("minimal", "low", "medium", "high")),
        ("gemini-2.5-pro", "pro", "budget", ()),
        ("gemma-3-27b-it", "gemma", "none", ()),
    ],
)
def test_known_models(model, family, style, levels):
    info = get_catalog().info(model, TODAY)
    assert (info.family, info.thinking.style, info.thinking.levels) == (family, style, levels)


def test_names_the_catalog_does_not_hold():
    catalog = get_catalog()
    # A dated variant borrows the facts of the name it extends.
    variant = catalog.info("models/gemini-2.5-flash-preview-09-2025", TODAY)
    assert (variant.alias_of, variant.thinking.style, variant.known) == ("gemini-2.5-flash", "budget", False)
    assert catalog.info("gemini-2.5-flash-lite", TODAY).alias_of is None  # its own entry, not flash's
    # A new version of a known family: the newest older model of that family.
    future = catalog.info("gemini-4.2-pro", TODAY)
    assert (future.family, future.generation, future.alias_of) == ("pro", 4.2, "gemini-3.1-pro-preview")
    assert future.shutdown is None and not future.known
    # Nothing alike: the shape decides.
    assert catalog.info("gemini-9-ultra", TODAY).thinking.levels == cat.THINKING_LEVELS
    assert catalog.info("gemini-1.5-flash-8b", TODAY).thinking.style == "none"


@pytest.mark.parametrize(
    "alias, target",
    [
        ("gemini-flash-latest", "gemini-3.8-flash"),
        ("gemini-flash-lite-latest", "gemini-3.5-flash-lite"),
        ("gemini-pro-latest", "gemini-3.1-pro-preview"),
    ],
)
def test_aliases_take_the_thinking_settings_of_their_family(alias, target):
    info = get_catalog().info(alias, TODAY)
    assert info.alias_of == target and info.name == alias
    assert info.thinking == get_catalog().info(target, TODAY).thinking
    assert info.shutdown is None  # the alias outlives the model it points at


def test_family_helpers_follow_the_catalog():
    assert model_family("gemini-3.5-flash-lite") == "lite" and model_family("gemma-3-27b-it") == "gemma"
    assert matches_family("gemini-3.8-flash", "flash") and not matches_family("gemini-3.5-flash-lite", "flash")
    assert matches_family("gemini-3.5-flash-lite", "flash-lite")
    assert (
        capability_rank("gemini-3.1-pro-preview")
        > capability_rank("gemini-2.5-pro")
        > capability_rank("gemini-3.8-flash")
        > capability_rank("gemini-3.5-flash-lite")
    )


@pytest.mark.parametrize(
    "model, wish, level, budget",
    [
        ("gemini-3-pro-preview", "minimal", "LOW", None),
        ("gemini-3-pro-preview", "medium", "LOW", None),  # tie between low and high: the lower
        ("gemini-3-pro-preview", "high", "HIGH", None),
        ("gemini-3.7-flash", "minimal", "LOW", None),
        ("gemini-3.6-flash", "floor", "MINIMAL", None),
        ("gemini-2.5-pro", "floor", None, 128),
        ("gemini-2.5-flash-lite", "minimal", None, 0),
        ("gemini-2.5-flash", "medium", None, 8192),
        ("gemini-2.5-pro", "low", None, 1024),
    ],
)
def test_thinking_mapping(model, wish, level, budget):
    choice = thinking_for(get_catalog().info(model, TODAY), wish)
    assert (choice.level, choice.budget) == (level, budget)


def test_defaults_are_current_models_of_the_default_families():
    assert default_model_limits(TODAY) == {"gemini-3.8-flash": 1, "gemini-3.5-flash-lite": 1}
    # The original's defaults are no longer current: one has a successor, one shuts down.
    assert not get_catalog().info("gemini-3-flash-preview", TODAY).is_current(TODAY)
    assert get_catalog().info("gemini-2.5-flash", TODAY).days_to_shutdown(TODAY) == 6
    # Before 3.8 Flash was released, the defaults were what was current then.
    assert default_model_limits(date(2026, 8, 1))["gemini-3.6-flash"] == 1


def test_successor_chain_reaches_a_current_model():
    catalog = get_catalog()
    assert catalog.current_successor("gemini-3-flash-preview", TODAY) == "gemini-3.6-flash"
    assert catalog.current_successor("gemini-3-pro-preview", TODAY) == "gemini-3.1-pro-preview"
    assert catalog.current_successor("gemini-2.0-flash", TODAY) == "gemini-3.5-flash-lite"


def test_shutdown_watch_skips_and_warns_once(caplog):
    watch = ShutdownWatch()
    models = ["gemini-2.5-flash", "gemini-3-pro-preview", "gemini-3.8-flash"]
    with caplog.at_level(logging.WARNING, logger="csctracker_ai_core.catalog"):
        for _ in range(3):
            assert watch.retired(models, TODAY) == {"gemini-3-pro-preview"}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert any(
        "gemini-3-pro-preview was shut down on 2026-03-09" in m and "gemini-3.1-pro-preview" in m for m in messages
    )
    assert any(
        "gemini-2.5-flash shuts down on 2026-12-01 (in 6 day(s))" in m and "gemini-3.5-flash-lite" in m
        for m in messages
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="csctracker_ai_core.catalog"):
        assert watch.retired(models, date(2026, 12, 1)) == {"gemini-3-pro-preview", "gemini-2.5-flash"}
    assert [r.getMessage()[:33] for r in caplog.records] == ["model gemini-2.5-flash was shut d"]


def test_no_warning_far_from_shutdown(caplog):
    with caplog.at_level(logging.WARNING, logger="csctracker_ai_core.catalog"):
        assert ShutdownWatch().retired(["gemini-2.5-flash", "gemini-3.1-flash-lite"], date(2026, 10, 31)) == set()
    assert caplog.records == []


def test_rotator_skips_a_shut_down_model_from_the_day_it_shuts_down(monkeypatch, caplog):
    monkeypatch.setattr(cat, "WATCH", ShutdownWatch())
    clock = FakeClock(utc(date(2026, 11, 30)))
    rotator = ApiKeyRotator(["k1"], None, {"gemini-2.5-flash": 1, "gemini-3.8-flash": 1}, clock=clock)
    assert {g.model for g in rotator.plan(Filters())} == {"gemini-2.5-flash", "gemini-3.8-flash"}
    clock.advance(86400)  # 2026-12-01: the plan is rebuilt for the new day
    with caplog.at_level(logging.WARNING):
        assert {g.model for g in rotator.plan(Filters())} == {"gemini-3.8-flash"}
        rotator.plan(Filters(family="flash"))
    assert sum("was shut down" in r.getMessage() for r in caplog.records) == 1


def test_rotator_plans_change_at_utc_midnight_to_the_second_and_when_the_clock_goes_back(monkeypatch):
    """The cached plans hold for [00:00, 24:00) UTC of their day (two comparisons a call):
    one second before midnight they are kept, at midnight rebuilt, and a clock set back to
    the day before rebuilds them for that day."""
    monkeypatch.setattr(cat, "WATCH", ShutdownWatch())
    clock = FakeClock(utc(date(2026, 11, 30)) - 3600 + 86399.0)  # 2026-11-30 23:59:59 UTC (utc() is 01:00)
    rotator = ApiKeyRotator(["k1"], None, {"gemini-2.5-flash": 1, "gemini-3.8-flash": 1}, clock=clock)
    both = {"gemini-2.5-flash", "gemini-3.8-flash"}
    assert {g.model for g in rotator.plan(Filters())} == both
    clock.advance(0.999)
    assert {g.model for g in rotator.plan(Filters())} == both
    clock.advance(0.001)  # 2026-12-01 00:00:00: gemini-2.5-flash is shut down
    assert {g.model for g in rotator.plan(Filters())} == {"gemini-3.8-flash"}
    clock.set(utc(date(2026, 11, 30)) - 3600 + 86399.0)
    assert {g.model for g in rotator.plan(Filters())} == both


def test_unset_model_limits_use_the_catalog_defaults_for_the_clock_day():
    rotator = ApiKeyRotator(["k1"], None, None, clock=FakeClock(utc(date(2026, 8, 1))))
    assert rotator.models == {"gemini-3.6-flash": 1, "gemini-3.5-flash-lite": 1}


def test_user_file_overrides_entries_and_adds_models(tmp_path):
    user = tmp_path / "catalog.json"
    user.write_text(
        json.dumps(
            {
                "models": {
                    "gemini-2.5-flash": {
                        "family": "flash",
                        "generation": 2.5,
                        "thinking": {"style": "budget"},
                        "input_token_limit": 1000,
                        "output_token_limit": 100,
                        "shutdown": "2027-01-01",
                    },
                    "gemini-4-flash": {
                        "family": "flash",
                        "generation": 4,
                        "thinking": {"style": "level", "levels": ["low", "high"]},
                        "input_token_limit": 2000000,
                        "output_token_limit": 65536,
                        "released": "2026-11-01",
                    },
                },
            }
        )
    )
    catalog = get_catalog(user)
    assert catalog.info("gemini-2.5-flash", TODAY).shutdown == date(2027, 1, 1)
    assert catalog.info("gemini-2.5-flash", TODAY).output_token_limit == 100
    assert catalog.info("gemini-3.8-flash", TODAY).released == date(2026, 9, 2)  # untouched
    assert catalog.default_model_limits(TODAY) == {"gemini-4-flash": 1, "gemini-3.5-flash-lite": 1}
    assert catalog.sources == ("shipped", str(user))


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ({"family": "flash"}, "lacks generation"),
        (
            {
                "family": "flash",
                "generation": 3,
                "thinking": {"style": "level", "levels": ["max"]},
                "input_token_limit": 1,
                "output_token_limit": 1,
            },
            "unknown levels",
        ),
        (
            {
                "family": "flash",
                "generation": 3,
                "thinking": {"style": "none"},
                "input_token_limit": 1,
                "output_token_limit": 1,
                "shutdown": "soon",
            },
            "not a YYYY-MM-DD",
        ),
        (
            {
                "family": "flash",
                "generation": 3,
                "thinking": {"style": "none"},
                "input_token_limit": 1,
                "output_token_limit": 1,
                "price": 3,
            },
            "unknown fields",
        ),
    ],
)
def test_broken_user_file_is_a_configuration_error(tmp_path, entry, fragment):
    user = tmp_path / "catalog.json"
    user.write_text(json.dumps({"models": {"x": entry}}))
    with pytest.raises(ConfigurationError, match=fragment):
        load_catalog(user)
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_catalog(tmp_path / "missing.json")


def test_processor_setting_and_variable_name_the_catalog_file(tmp_path, monkeypatch):
    from csctracker_ai_core.settings import Settings

    user = tmp_path / "catalog.json"
    user.write_text(
        json.dumps(
            {
                "models": {
                    "gemini-9-flash": {
                        "family": "flash",
                        "generation": 9,
                        "thinking": {"style": "level"},
                        "input_token_limit": 10,
                        "output_token_limit": 10,
                        "released": "2026-11-01",
                    }
                }
            }
        )
    )
    monkeypatch.setattr(cat, "_user_file", None)
    settings = Settings.load(env={"CSCTRACKER_AI_CATALOG_FILE": str(user)})
    assert settings.catalog_file == user
    assert get_catalog().info("gemini-9-flash").known  # process-wide from now on
    assert dict(settings.model_limits) == {"gemini-9-flash": 1, "gemini-3.5-flash-lite": 1}
    user.write_text("{")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        Settings.load(catalog_file=user, env={})
    monkeypatch.setattr(cat, "_user_file", None)


def test_a_pinned_watch_judges_every_day_as_its_own():
    watch = ShutdownWatch(pinned_today=date(2026, 11, 25))
    assert watch.retired(["gemini-2.5-flash"], date(2027, 6, 1)) == set()
    assert ShutdownWatch().retired(["gemini-2.5-flash"], date(2027, 6, 1)) == {"gemini-2.5-flash"}


def test_a_catalog_file_broken_while_running_keeps_the_last_good_version(tmp_path, caplog):
    """Calls go on with the last good catalog when an edit breaks the file; configuring
    with the broken file is still an error (json_overlay.OverlayCache, shared with prices)."""
    import os

    from csctracker_ai_core.catalog import use_catalog_file

    user = tmp_path / "catalog.json"
    entry = {"family": "flash", "generation": 9, "thinking": {"style": "level"}, "input_token_limit": 10}
    entry.update(output_token_limit=10, released="2026-11-01")
    user.write_text(json.dumps({"models": {"gemini-9-flash": entry}}))
    assert get_catalog(user).info("gemini-9-flash").known
    user.write_text("{")
    os.utime(user, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    assert get_catalog(user).info("gemini-9-flash").known
    assert "still using its previous version" in caplog.text
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        use_catalog_file(user)
