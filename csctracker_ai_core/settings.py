"""Every setting of the library, read once: from arguments, then ONE environment mapping.

The facades (:class:`~csctracker_ai_core.processor.IaProcessor`, the CLI, and the
original library's public classes ``ClickHouseDb`` and ``Telemetry``) build a frozen
:class:`Settings` when they are constructed and pass its parts down. No module below
them reads the process environment: this module is the only one that looks at
``os.environ``, and only when a facade was given no ``env=`` mapping
(``tests/test_settings.py`` enforces both).

An explicit argument always wins over its variable. A blank variable counts as unset.
Adding a setting: a field here, its variable in :data:`ENVIRONMENT_VARIABLES`, its
reading in :meth:`Settings.load`; the facade passes the field down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .budgets.rules import BUDGETS_ENV, Budget, parse_budgets
from .catalog import use_catalog_file
from .exceptions import ConfigurationError
from .paths import data_dir
from .pool.keys import parse_model_limits
from .telemetry.settings import ClickHouseSettings, resolve_clickhouse_settings
from .validation import MIN_TIMEOUT_S, check_base_url, count_setting, seconds_setting

__all__ = [
    "DEFAULT_BASE_URL",
    "ENVIRONMENT_VARIABLES",
    "RedisSettings",
    "Settings",
    "env_number",
    "process_environment",
]

Keys = str | Sequence[str] | None

#: Gemini's public endpoint. Always passed to the SDK explicitly, so the SDK's own
#: ``GOOGLE_GEMINI_BASE_URL`` lookup of ``os.environ`` never bypasses ``env=``.
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_RETRIES = 3
REDIS_POLICIES = ("fallback", "fail")

#: Every variable the library reads, and what it sets. The one list: tests clear these
#: and check that nothing else is read.
ENVIRONMENT_VARIABLES: Mapping[str, str] = {
    "GOOGLE_FREE_KEYS": "free-tier API keys (comma-separated, 'project:KEY' allowed)",
    "GOOGLE_PAID_KEYS": "paid-tier API keys",
    "GOOGLE_MODEL_LIMITS": "model=concurrency per key, or JSON",
    "GOOGLE_GEMINI_BASE_URL": "the SDK's endpoint variable, honoured when CSCTRACKER_AI_BASE_URL is unset",
    "CSCTRACKER_AI_BASE_URL": "Gemini endpoint",
    "CSCTRACKER_AI_TIMEOUT_S": "seconds per upstream request",
    "CSCTRACKER_AI_MAX_WAIT_S": "seconds a call may wait for a free slot",
    "CSCTRACKER_AI_MAX_RETRIES": "retries after transient failures",
    "CSCTRACKER_AI_PRICES_FILE": "price file overlaid on the shipped prices",
    "CSCTRACKER_AI_CATALOG_FILE": "model catalog file overlaid on the shipped catalog",
    "CSCTRACKER_AI_MAX_OUTPUT_TOKENS": "output cap (thinking included) per request",
    "CSCTRACKER_AI_DATA_DIR": "folder of the embedded store and the spool",
    "XDG_DATA_HOME": "base of the default data folder",
    "CSCTRACKER_AI_REDIS_URL": "share the pool's state on Redis",
    "CSCTRACKER_AI_REDIS_NAMESPACE": "prefix of the pool's Redis keys",
    "CSCTRACKER_AI_REDIS_LEASE_TTL_S": "seconds a lease lives without renewal",
    "CSCTRACKER_AI_REDIS_POLICY": "fallback or fail, when Redis is down",
    "CSCTRACKER_AI_BUDGETS": "spending caps, a JSON list of rules (see docs/BUDGETS.md)",
    "CSCTRACKER_AI_TELEMETRY": "server, embedded or off",
    "CSCTRACKER_AI_TELEMETRY_BEST_EFFORT": "1: a store that cannot be opened drops events (counted) instead of raising",
    "CSCTRACKER_AI_SPOOL_MAX_BYTES": "cap of the telemetry spool in bytes (default 1 GiB)",
    "CSCTRACKER_AI_TELEMETRY_DELIVERY": "thread (this process inserts) or external (it spools; csc-ai deliver inserts)",
    "CSCTRACKER_AI_CLICKHOUSE_DSN": "ClickHouse DSN",
    "CLICKHOUSE_HOST": "ClickHouse server host (the original's)",
    "CLICKHOUSE_PORT": "ClickHouse server port",
    "CLICKHOUSE_USER": "ClickHouse user",
    "CLICKHOUSE_PASSWORD": "ClickHouse password",
    "CLICKHOUSE_DB": "ClickHouse database",
    "CLICKHOUSE_SECURE": "https to the ClickHouse server (1/true/yes)",
}


def process_environment(env: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """``env``, or the process environment when ``None``: the facades' one lookup."""
    return os.environ if env is None else env


def env_text(env: Mapping[str, str], name: str) -> str | None:
    """``env[name]`` stripped, or ``None`` when unset or blank."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def env_number(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    """``float(env[name])``, or ``default`` when the variable is unset or blank.

    Raises :class:`ConfigurationError` naming the variable when it is not a number.
    """
    raw = env_text(env, name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={env[name]!r} is not a number; set it to e.g. 30.") from None


@dataclass(frozen=True)
class RedisSettings:
    """Where the pool's shared state lives. ``url`` may hold a password: not in ``repr``."""

    url: str = field(repr=False)
    namespace: str | None = None
    lease_ttl_s: float | None = None  # None: the state's default
    policy: str = "fallback"


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one :class:`~csctracker_ai_core.processor.IaProcessor`.

    Build with :meth:`load`. Keys are kept as given (parsed by the pool) and hidden
    from ``repr``.
    """

    free_keys: Keys = field(default=None, repr=False)
    paid_keys: Keys = field(default=None, repr=False)
    model_limits: Mapping[str, int] = field(default_factory=lambda: parse_model_limits(None))
    base_url: str = DEFAULT_BASE_URL
    request_timeout_s: float = DEFAULT_TIMEOUT_S
    max_wait_s: float | None = None  # None: the pool's default
    max_retries: int = DEFAULT_MAX_RETRIES
    prices_file: Path | None = None  # None: the shipped prices only
    catalog_file: Path | None = None  # None: the shipped model catalog only
    max_output_tokens: int | None = None  # None: each model's output limit
    data_dir: Path = field(default_factory=lambda: data_dir({}))
    redis: RedisSettings | None = None  # None: the pool stays in memory
    telemetry: ClickHouseSettings = field(default_factory=lambda: resolve_clickhouse_settings(telemetry="off", env={}))
    budgets: tuple[Budget, ...] = ()  # spending caps, validated

    @classmethod
    def load(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        google_models_limits: str | Mapping[str, Any] | None = None,
        google_free_keys: Keys = None,
        google_paid_keys: Keys = None,
        base_url: str | None = None,
        request_timeout_s: float | None = None,
        max_wait_s: float | None = None,
        max_retries: int | None = None,
        telemetry: str | None = None,
        clickhouse_dsn: str | None = None,
        database: str | None = None,
        redis_url: str | None = None,
        prices_file: str | Path | None = None,
        catalog_file: str | Path | None = None,
        max_output_tokens: int | None = None,
        budgets: Any = None,
        spool_max_bytes: int | None = None,
        telemetry_best_effort: bool | None = None,
        telemetry_delivery: str | None = None,
    ) -> Settings:
        """Arguments first, then ``env`` (``None``: ``os.environ``), then defaults.

        Raises :class:`ConfigurationError` naming the argument or variable at fault.
        """
        env = process_environment(env)
        # Rules first: a bad budget is a configuration error before anything is opened.
        rules = parse_budgets(budgets if budgets is not None else env_text(env, BUDGETS_ENV))
        timeout = seconds_setting(
            "request_timeout_s",
            request_timeout_s
            if request_timeout_s is not None
            else env_number(env, "CSCTRACKER_AI_TIMEOUT_S", DEFAULT_TIMEOUT_S),
            minimum=MIN_TIMEOUT_S,
        )
        retries = count_setting(
            "max_retries",
            max_retries
            if max_retries is not None
            else env_number(env, "CSCTRACKER_AI_MAX_RETRIES", DEFAULT_MAX_RETRIES),
        )
        wait = max_wait_s if max_wait_s is not None else env_number(env, "CSCTRACKER_AI_MAX_WAIT_S", None)
        if wait is not None:
            wait = seconds_setting("max_wait_s", wait)
        endpoint = next(
            (
                check_base_url(url, name)
                for name, url in (
                    ("base_url", base_url),
                    ("CSCTRACKER_AI_BASE_URL", env_text(env, "CSCTRACKER_AI_BASE_URL")),
                    ("GOOGLE_GEMINI_BASE_URL", env_text(env, "GOOGLE_GEMINI_BASE_URL")),
                )
                if url
            ),
            DEFAULT_BASE_URL,
        )
        limits = google_models_limits if google_models_limits is not None else env.get("GOOGLE_MODEL_LIMITS")
        prices = prices_file if prices_file is not None else env_text(env, "CSCTRACKER_AI_PRICES_FILE")
        catalog_path = catalog_file if catalog_file is not None else env_text(env, "CSCTRACKER_AI_CATALOG_FILE")
        catalog_path = Path(catalog_path).expanduser() if catalog_path else None
        if catalog_path is not None:
            # Process-wide: the facts about Google's models are the same for every caller.
            use_catalog_file(catalog_path)
        max_output = (
            max_output_tokens
            if max_output_tokens is not None
            else env_number(env, "CSCTRACKER_AI_MAX_OUTPUT_TOKENS", None)
        )
        if max_output is not None and (
            isinstance(max_output, bool) or not max_output >= 1 or int(max_output) != max_output
        ):
            raise ConfigurationError(
                f"max_output_tokens={max_output!r}: pass a whole number of tokens, 1 or more "
                "(or leave it unset for each model's limit)."
            )
        return cls(
            free_keys=google_free_keys if google_free_keys is not None else env.get("GOOGLE_FREE_KEYS"),
            paid_keys=google_paid_keys if google_paid_keys is not None else env.get("GOOGLE_PAID_KEYS"),
            model_limits=parse_model_limits(limits),
            base_url=endpoint,
            request_timeout_s=timeout,
            max_wait_s=wait,
            max_retries=retries,
            prices_file=Path(prices).expanduser() if prices else None,
            catalog_file=catalog_path,
            max_output_tokens=int(max_output) if max_output is not None else None,
            data_dir=data_dir(env),
            redis=_redis_settings(redis_url, env),
            telemetry=resolve_clickhouse_settings(
                host,
                port,
                username,
                password,
                database=database,
                dsn=clickhouse_dsn,
                telemetry=telemetry,
                env=env,
                spool_max_bytes=spool_max_bytes,
                best_effort=telemetry_best_effort,
                delivery=telemetry_delivery,
            ),
            budgets=rules,
        )


def _redis_settings(url: str | None, env: Mapping[str, str]) -> RedisSettings | None:
    url = url or env_text(env, "CSCTRACKER_AI_REDIS_URL")
    if not url:
        return None
    policy = (env_text(env, "CSCTRACKER_AI_REDIS_POLICY") or "fallback").lower()
    if policy not in REDIS_POLICIES:
        raise ConfigurationError(f"CSCTRACKER_AI_REDIS_POLICY={policy!r}: use one of {', '.join(REDIS_POLICIES)}.")
    ttl = env_number(env, "CSCTRACKER_AI_REDIS_LEASE_TTL_S", None)
    if ttl is not None and not ttl > 0:
        raise ConfigurationError("CSCTRACKER_AI_REDIS_LEASE_TTL_S must be a positive number of seconds.")
    return RedisSettings(
        url=url,
        namespace=env_text(env, "CSCTRACKER_AI_REDIS_NAMESPACE"),
        lease_ttl_s=ttl,
        policy=policy,
    )


def prices_file_from(env: Mapping[str, str] | None = None) -> Path | None:
    """The user's price file named by ``CSCTRACKER_AI_PRICES_FILE`` in ``env`` (``None``: none)."""
    raw = env_text(process_environment(env), "CSCTRACKER_AI_PRICES_FILE")
    return Path(raw).expanduser() if raw else None
