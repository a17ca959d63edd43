"""Where the library keeps its files: the embedded ClickHouse data and the event spool."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

__all__ = ["data_dir", "embedded_clickhouse_path", "spool_dir"]

DATA_DIR_ENV = "CSCTRACKER_AI_DATA_DIR"


def data_dir(env: Mapping[str, str]) -> Path:
    """The per-user data folder.

    ``CSCTRACKER_AI_DATA_DIR`` wins; else ``$XDG_DATA_HOME/csctracker-ai-core``; else
    ``~/.local/share/csctracker-ai-core``. Not created here. ``env`` is the facade's
    environment mapping (see :mod:`csctracker_ai_core.settings`).
    """
    explicit = env.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "csctracker-ai-core"


def embedded_clickhouse_path(env: Mapping[str, str]) -> Path:
    """Folder of the embedded (chDB) ClickHouse database."""
    return data_dir(env) / "chdb"


def spool_dir(env: Mapping[str, str]) -> Path:
    """Folder of the durable telemetry spool (append-only files of pending events)."""
    return data_dir(env) / "spool"
