"""Reading numeric settings from the environment, with one error message for all of them."""

from __future__ import annotations

from typing import Mapping, Optional

from .exceptions import ConfigurationError

__all__ = ["env_number"]


def env_number(env: Mapping[str, str], name: str, default: Optional[float]) -> Optional[float]:
    """``float(env[name])``, or ``default`` when the variable is unset or blank.

    Raises :class:`ConfigurationError` naming the variable when it is not a number.
    """
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number; set it to e.g. 30.") from None
