"""Where the library keeps its files, and how they are kept private.

The embedded ClickHouse data and the event spool hold prompts and replies, so every
folder the library creates is 0700 and every file 0600 (owner only), whatever the
process umask. A folder the library writes into must belong to this user and must
not be writable by group or others: one that is is refused with
:class:`~csctracker_ai_core.exceptions.TelemetryError` rather than used (another
local user could plant or swap files there).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from .exceptions import TelemetryError

__all__ = [
    "data_dir",
    "embedded_clickhouse_path",
    "spool_dir",
    "DIR_MODE",
    "FILE_MODE",
    "private_dir",
    "open_private_file",
    "tighten_tree",
]

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "CSCTRACKER_AI_DATA_DIR"

DIR_MODE = 0o700
FILE_MODE = 0o600
# Never follow a link planted where the library expects its own file.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def data_dir(env: Mapping[str, str]) -> Path:
    """The per-user data folder.

    ``CSCTRACKER_AI_DATA_DIR`` wins; else ``$XDG_DATA_HOME/csctracker-ai-core``; else
    ``~/.local/share/csctracker-ai-core``. Not created here (see :func:`private_dir`).
    ``env`` is the facade's environment mapping (see :mod:`csctracker_ai_core.settings`).
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


def _check_owned_private(path: Path, st: os.stat_result, narrow: bool) -> None:
    """Refuse a folder another user owns or others may write; make ours owner-only if ``narrow``."""
    if not stat.S_ISDIR(st.st_mode):
        raise TelemetryError(f"{path} is not a folder; point CSCTRACKER_AI_DATA_DIR at a folder of your own.")
    euid = os.geteuid()
    if st.st_uid != euid:
        raise TelemetryError(
            f"the telemetry folder {path} belongs to user id {st.st_uid}, not to this process "
            f"(user id {euid}): another user could read or replace its files. Use a folder of your own "
            "(CSCTRACKER_AI_DATA_DIR), or fix it with: chown -R $(id -u) " + str(path)
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise TelemetryError(
            f"the telemetry folder {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}): "
            f"another user could plant or swap files there. Fix it with: chmod 700 {path}"
        )
    if narrow and stat.S_IMODE(st.st_mode) != DIR_MODE:
        # Ours but readable by others (as 0.1.0 left it): prompts live here, tighten it.
        os.chmod(path, DIR_MODE)
        logger.info("telemetry folder %s made private (mode %o -> 700)", path, stat.S_IMODE(st.st_mode))


def private_dir(path: Path, *, narrow: bool = True) -> Path:
    """Create ``path`` (and missing parents) 0700, or check an existing one; returns it.

    Raises :class:`TelemetryError` when it cannot be created, is not a folder, belongs
    to another user or is writable by group or others. Parents that already exist are
    left as they are (they are the user's); parents created here are 0700. An existing
    ``path`` wider than 0700 is narrowed when ``narrow`` (the library's own ``spool/``
    and ``chdb/``); the data folder itself may be one the user chose, so it is only
    checked.
    """
    path = Path(path)
    missing = []
    probe = path
    while True:
        try:
            os.stat(probe)
            break
        except FileNotFoundError:
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        except OSError as exc:  # e.g. a parent is a file
            raise TelemetryError(
                f"cannot create the telemetry folder {path}: {exc}. Set CSCTRACKER_AI_DATA_DIR to a "
                "writable folder of your own, or CSCTRACKER_AI_TELEMETRY=off."
            ) from exc
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            pass  # made by another process meanwhile: checked below like any other
        except OSError as exc:
            raise TelemetryError(
                f"cannot create the telemetry folder {folder}: {exc}. Set CSCTRACKER_AI_DATA_DIR to a "
                "writable folder, or CSCTRACKER_AI_TELEMETRY=off."
            ) from exc
        else:
            os.chmod(folder, DIR_MODE)  # mkdir's mode is filtered by the umask
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TelemetryError(f"cannot use the telemetry folder {path}: {exc}") from exc
    _check_owned_private(path, st, narrow)
    return path


def open_private_file(path: Path, flags: int) -> int:
    """``os.open`` of a library file: never through a symlink, created 0600, close-on-exec.

    A symlink at ``path`` raises :class:`TelemetryError` (someone planted it). An
    existing file of ours with a wider mode is narrowed to 0600.
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, FILE_MODE)
    except OSError as exc:
        if os.path.islink(path):
            raise TelemetryError(
                f"{path} is a symbolic link; the library never writes through one (someone may be trying "
                f"to make it overwrite another file). Remove the link: rm {path}"
            ) from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TelemetryError(f"{path} is not a regular file; remove it and start again.")
        if stat.S_IMODE(st.st_mode) != FILE_MODE and st.st_uid == os.geteuid():
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def tighten_tree(root: Path) -> int:
    """Make every folder under ``root`` 0700 and every file 0600; returns how many changed.

    For files other code creates with the process umask (chDB's data parts). Symbolic
    links are skipped (chmod would follow them). Files vanishing meanwhile (merged
    parts) are ignored.
    """
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name, want in [(d, DIR_MODE) for d in dirnames] + [(f, FILE_MODE) for f in filenames] + [("", DIR_MODE)]:
            p = os.path.join(dirpath, name) if name else dirpath
            try:
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == want:
                    continue
                os.chmod(p, want)
                changed += 1
            except FileNotFoundError:
                continue
    return changed
