"""How a :class:`~.state.PoolLayout` is laid out on Redis: ids, groups, key names. Pure, no I/O.

The Lua scripts (``redis_scripts.py``) work with short integers, never with names:

* ``sid`` (slot id) ``= k * M + m``: key ``k`` in layout order x model ``m`` in caps
  order (``M`` models), so a slot list in layout order is indexed by sid;
* ``pm`` (project x model) ``= p * M + m``: project ``p`` in order of first key;
* group (tier x model) ``= t * M + m``: tiers in :data:`~.keys.TIERS` order, then any
  other tier sorted; the Lua walk derives the tier of a group as ``g // M``.

A project's known limits follow the tier of its first key. The namespace defaults to
the first 16 hex digits of a SHA-256 of the canonical layout (keys, tiers, projects,
models, caps, known limits), so processes configured alike meet in Redis without
configuration; every key name starts with ``csc-ai:{namespace}:`` (the braces are a
Redis Cluster hash tag). ``docs/REDIS.md`` lists the key names under the prefix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..exceptions import ConfigurationError
from .keys import TIERS
from .lease import Slot
from .selection import Group
from .state import PoolLayout, Scope

__all__ = ["SCHEMA", "RedisLayout", "check_namespace", "index_layout"]

#: Version of the layout stored in Redis; part of the namespace digest.
SCHEMA = "csc-ai-pool/1"


def check_namespace(namespace: str | None) -> None:
    """Refuse a namespace that would break the key names (braces, whitespace, empty)."""
    if namespace is not None and (not namespace or any(c in namespace for c in "{}\n\r ")):
        raise ConfigurationError(f"namespace must be non-empty, without braces or whitespace: {namespace!r}")


@dataclass(frozen=True)
class RedisLayout:
    """Integer ids of one layout, and the payload the ``CONFIGURE`` script stores."""

    n_models: int  # M: sid = k * M + m
    models: tuple[str, ...]
    slots: tuple[Slot, ...]  # by sid
    sid: dict[Slot, int]
    key_index: dict[str, int]  # key fingerprint -> k
    model_index: dict[str, int]  # model -> m
    pm_of: dict[tuple[str, str], int]  # (project, model) -> pm
    pm_of_sid: tuple[int, ...]
    limited_pm: frozenset[int]  # pms with known limits (counted in Redis)
    rpd_pm: frozenset[int]  # pms with a known requests-per-day limit
    group_of: dict[tuple[str, str], str]  # (tier, model) -> group id, as the scripts take it
    caps: tuple[int, ...]  # by m
    digest: str  # SHA-256 of the canonical layout
    payload: str  # JSON for the CONFIGURE script
    summary: str  # human description, for the "another pool" error
    namespace: str
    prefix: str  # csc-ai:{namespace}:

    def key_sids(self, k: int) -> list[int]:
        """Every slot id of key ``k``."""
        return [k * self.n_models + m for m in range(len(self.models))]

    def target(self, scope: Scope) -> tuple[str, int]:
        """A suspension scope as the ``SUSPEND`` script takes it: ``("p", pm)`` or ``("s", sid)``."""
        if scope.project is not None:
            return ("p", self.pm_of[(scope.project, scope.model)])
        assert scope.key_fingerprint is not None  # Scope guarantees one of the two
        return ("s", self.key_index[scope.key_fingerprint] * self.n_models + self.model_index[scope.model])

    def plan_args(self, plan: Sequence[Group]) -> list[str]:
        """A plan as the ``ACQUIRE`` script takes it: count, then group ids (unknown groups dropped)."""
        groups = [self.group_of[(g.tier, g.model)] for g in plan if (g.tier, g.model) in self.group_of]
        return [str(len(groups)), *groups]


def index_layout(layout: PoolLayout, namespace: str | None = None) -> RedisLayout:
    """Integer ids for everything in ``layout``; ``namespace`` defaults to a digest of it."""
    check_namespace(namespace)
    models = list(layout.caps)
    m_of = {m: i for i, m in enumerate(models)}
    present = {k.tier for k in layout.keys}
    tiers = [t for t in TIERS if t in present] + sorted(present - set(TIERS))
    t_of = {t: i for i, t in enumerate(tiers)}
    M = max(1, len(models))
    projects: dict[str, int] = {}
    project_tier: dict[str, str] = {}
    positions: dict[str, int] = {}
    slots: list[Slot] = []
    rows: list[list[int]] = []
    pm_sids: dict[int, list[int]] = {}
    for k, info in enumerate(layout.keys):
        pos = positions.get(info.tier, 0)
        positions[info.tier] = pos + 1
        if info.project not in projects:
            projects[info.project] = len(projects)
            project_tier[info.project] = info.tier  # the pm's limits follow its first key
        p = projects[info.project]
        for model, cap in layout.caps.items():
            m = m_of[model]
            sid = k * M + m
            pm = p * M + m
            g = t_of[info.tier] * M + m
            limited = layout.known_limits.get((model, project_tier[info.project])) is not None
            slots.append(Slot(info.fingerprint, info.tier, info.project, model))
            rows.append([sid, g, pos, pm, int(cap), k, 1 if limited else 0])
            pm_sids.setdefault(pm, []).append(sid)
    # slots are listed key by key, model by model: sid == k * M + m, so the list index is
    # the sid only when every key has every model, which the layout ensures.
    assert all(r[0] == i for i, r in enumerate(rows))
    limits: list[tuple[int, str]] = []
    for project, p in projects.items():
        for model, m in m_of.items():
            kl = layout.known_limits.get((model, project_tier[project]))
            if kl is not None:
                spec = " ".join(str(-1 if v is None else int(v)) for v in (kl.rpm, kl.rpd, kl.tpm))
                limits.append((p * M + m, spec))
    canon = {
        "schema": SCHEMA,
        "keys": [[k.fingerprint, k.tier, k.project] for k in layout.keys],
        "caps": [[m, int(c)] for m, c in layout.caps.items()],
        "limits": sorted([m, t, kl.rpm, kl.rpd, kl.tpm] for (m, t), kl in layout.known_limits.items()),
    }
    text = json.dumps(canon, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    summary = (
        f"{len(layout.keys)} keys ({', '.join(f'{positions[t]} {t}' for t in tiers)}) in "
        f"{len(projects)} projects, models {', '.join(f'{m}={c}' for m, c in layout.caps.items())}, "
        f"{len(layout.known_limits)} known limits"
    )
    payload = json.dumps(
        {
            "slots": rows,
            "pms": [[pm, ",".join(map(str, sids))] for pm, sids in pm_sids.items()],
            "limits": limits,
            "summary": summary,
            "layout": text,
            "nkeys": len(layout.keys),
        },
        separators=(",", ":"),
    )
    ns = namespace or digest[:16]
    return RedisLayout(
        n_models=M,
        models=tuple(models),
        slots=tuple(slots),
        sid={s: i for i, s in enumerate(slots)},
        key_index={k.fingerprint: i for i, k in enumerate(layout.keys)},
        model_index=m_of,
        pm_of={(project, model): p * M + m_of[model] for project, p in projects.items() for model in models},
        pm_of_sid=tuple(r[3] for r in rows),
        limited_pm=frozenset(pm for pm, _ in limits),
        rpd_pm=frozenset(pm for pm, spec in limits if spec.split()[1] != "-1"),
        group_of={(t, m): str(t_of[t] * M + m_of[m]) for t in tiers for m in models},
        caps=tuple(int(layout.caps[m]) for m in models),
        digest=digest,
        payload=payload,
        summary=summary,
        namespace=ns,
        prefix=f"csc-ai:{{{ns}}}:",
    )
