"""How close this process is to its limits of descriptors and tasks (Linux).

Read by the writer before it reopens the embedded store after a fork: chDB leaves
descriptors and threads behind at each reopening (see :func:`.policy.reopen_verdict`).
Each reader answers ``(used, limit)``, ``None`` for a limit it cannot know.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

__all__ = ["descriptors", "tasks", "describe"]


def descriptors() -> tuple[int, int | None]:
    """Descriptors this process has open, and its hard limit (None: unknown or
    unlimited). The hard one: chDB raises the soft limit to it each time its engine starts."""
    try:
        open_fds = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc (not Linux): no count, so never a reason to stop
        return 0, None
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return open_fds, (None if hard == resource.RLIM_INFINITY else int(hard))


def tasks(root: Path = Path("/")) -> tuple[int, int | None]:
    """Tasks counted against the tightest task limit this process knows: its cgroup's
    ``pids.max`` (``pids.current``: the whole cgroup's tasks), else ``RLIMIT_NPROC``
    against this process's own threads (the user's other processes are not counted)."""
    cgroup = _cgroup_pids(root)
    if cgroup is not None:
        return cgroup
    try:
        own = len(os.listdir(root / "proc/self/task"))
    except OSError:
        return 0, None
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    return own, (None if soft == resource.RLIM_INFINITY else int(soft))


def _cgroup_pids(root: Path) -> tuple[int, int] | None:
    """``(pids.current, pids.max)`` of this process's cgroup (v1 or v2), or None when
    it has no task limit or none can be read."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one hierarchy, at /sys/fs/cgroup
            folder = root / "sys/fs/cgroup" / path.lstrip("/")
        elif "pids" in controllers.split(","):
            folder = root / "sys/fs/cgroup/pids" / path.lstrip("/")
        else:
            continue
        try:
            limit = (folder / "pids.max").read_text().strip()
            current = int((folder / "pids.current").read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit():
            return current, int(limit)
    return None


def describe(load: tuple[int, int | None]) -> str:
    """``"used of limit"`` for a log line."""
    used, limit = load
    return f"{used} of {limit}" if limit is not None else f"{used} (no limit)"
