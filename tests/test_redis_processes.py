"""Several processes, one pool on Redis, the Gemini emulator as upstream.

The emulator runs in the test process; each worker is a separate Python process
(this file run as a script) with its own ``IaProcessor(redis_url=...)``. Caps,
limits, 429s, dead processes and a Redis restart are judged from the emulator's
counters, which see every process's requests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

FLASH = "gemini-2.5-flash-lite"  # no shutdown date: worker processes judge the lineup by the real calendar
HERE = Path(__file__).resolve().parent


# --- the worker (this file run as a script) ---------------------------------------------


def _worker(cfg: dict) -> None:
    """Make ``calls`` calls on each of ``threads`` threads; print one JSON line of results."""
    from csctracker_ai_core.processor import IaProcessor

    proc = IaProcessor(
        google_models_limits=cfg["limits"],
        google_free_keys=cfg["free"],
        google_paid_keys=cfg["paid"],
        base_url=cfg["base_url"],
        telemetry="off",
        redis_url=cfg["redis_url"],
        known_limits=cfg.get("known"),
        max_wait_s=cfg.get("max_wait_s", 30),
        request_timeout_s=cfg.get("timeout_s", 30),
    )
    ok, errors = [0], []
    lock = threading.Lock()
    print(json.dumps({"started": os.getpid()}), flush=True)

    def run():
        for i in range(cfg["calls"]):
            try:
                proc.analisar_com_gemini(input_text=f"oi {i}", prompt="responda", return_json=False)
                with lock:
                    ok[0] += 1
            except Exception as exc:  # reported to the test
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
            if cfg.get("pause_s"):
                time.sleep(cfg["pause_s"])

    threads = [threading.Thread(target=run) for _ in range(cfg.get("threads", 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = proc.rotator.state
    deadline = time.monotonic() + 5
    while state.degraded and time.monotonic() < deadline:  # give the probe time to resync
        time.sleep(0.05)
    status = proc.rotator.status()
    proc.close()
    print(
        json.dumps(
            {"ok": ok[0], "errors": errors, "degraded": proc.rotator.state.degraded, "in_flight": status.in_flight}
        ),
        flush=True,
    )


def spawn(cfg: dict, *, ttl_s: float = 30.0, namespace: str = "test") -> subprocess.Popen:
    env = dict(os.environ)
    env["CSCTRACKER_AI_REDIS_LEASE_TTL_S"] = str(ttl_s)
    env["CSCTRACKER_AI_REDIS_NAMESPACE"] = namespace
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def results(procs: list[subprocess.Popen], timeout: float = 60) -> list[dict]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        lines = [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]
        final = [x for x in lines if "ok" in x]
        assert p.returncode == 0 and final, f"worker failed (rc {p.returncode}):\n{stderr[-3000:]}"
        out.append({**final[-1], "stderr": stderr})
    return out


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
    sys.exit(0)


# --- the tests ---------------------------------------------------------------------------

from csctracker_ai_core.fingerprint import key_fingerprint  # noqa: E402
from csctracker_ai_core.pool.redis_state import RedisPoolState  # noqa: E402
from csctracker_ai_core.pool.rotator import ApiKeyRotator  # noqa: E402
from csctracker_ai_core.testing.emulator import KeySpec  # noqa: E402


def base(emu, redis_url, **kw) -> dict:
    cfg = {"redis_url": redis_url, "base_url": emu.base_url, "limits": f"{FLASH}=1", "calls": 1}
    cfg.update(kw)
    return cfg


def test_four_processes_never_exceed_a_cap_or_a_limit(make_gemini_emulator, redis_url):
    """4 processes x 2 threads, cap 1 per key x model, rpm 4 per free project known: the
    emulator sees zero 429s, never two requests at once on a key, and exactly the free
    quota (2 projects x 4) spent before paid keys take the rest."""
    emu = make_gemini_emulator(
        keys=[
            KeySpec("AIzaF1", "p1"),
            KeySpec("AIzaF2", "p1"),
            KeySpec("AIzaF3", "p2"),
            KeySpec("AIzaP", "pp", tier="paid"),
        ],
        quotas={"free": {FLASH: {"rpm": 4}}},
        latency_s=0.02,
    )
    cfg = base(
        emu,
        redis_url,
        free=["p1:AIzaF1", "p1:AIzaF2", "p2:AIzaF3"],
        paid=["pp:AIzaP"],
        known={FLASH: {"free": {"rpm": 4}}},
        calls=6,
        threads=2,
    )
    res = results([spawn(cfg) for _ in range(4)])
    assert [r["errors"] for r in res] == [[]] * 4
    assert sum(r["ok"] for r in res) == 48
    assert emu.rate_limited == 0
    assert emu.max_in_flight() == 1
    free = sum(emu.count(key=k, status=200) for k in ("AIzaF1", "AIzaF2", "AIzaF3"))
    assert free == 8
    assert emu.count(key="AIzaP", status=200) == 40


def test_a_429_seen_by_one_process_stops_the_others(make_gemini_emulator, redis_url):
    """Process A meets a per-minute 429 on the free project; process B never touches it."""
    emu = make_gemini_emulator(
        keys=[KeySpec("AIzaF1", "p1"), KeySpec("AIzaP", "pp", tier="paid")], quotas={"free": {FLASH: {"rpm": 1}}}
    )
    cfg = base(emu, redis_url, free=["p1:AIzaF1"], paid=["pp:AIzaP"])
    a = results([spawn({**cfg, "calls": 2})])
    assert a[0]["ok"] == 2
    assert emu.count(key="AIzaF1", status=200) == 1 and emu.rate_limited == 1
    b = results([spawn({**cfg, "calls": 3})])
    assert b[0]["ok"] == 3 and not b[0]["errors"]
    assert emu.count(key="AIzaF1") == 2  # B sent nothing to the suspended project
    assert emu.count(key="AIzaP", status=200) == 4


def test_a_sigkilled_process_gives_its_slots_back(make_gemini_emulator, redis_url):
    """A worker killed with SIGKILL mid-call holds both slots; they come back lease_ttl_s later."""
    ttl = 1.0
    emu = make_gemini_emulator(keys=["AIzaA", "AIzaB"], latency_s=5.0)
    cfg = base(emu, redis_url, free=["AIzaA", "AIzaB"], paid=[], threads=2)
    victim = spawn(cfg, ttl_s=ttl, namespace="kill")
    deadline = time.monotonic() + 20
    while emu.in_flight() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emu.in_flight() == 2, "the worker never got both slots in flight"
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    killed_at = time.monotonic()
    emu.latency_s = 0.0
    state = RedisPoolState.from_url(redis_url, namespace="kill")
    rot = ApiKeyRotator(["AIzaA", "AIzaB"], [], f"{FLASH}=1", state=state)
    assert rot.status().in_flight == 2  # still held by the dead process
    leases = [rot.acquire(max_wait_s=10) for _ in range(2)]
    waited = time.monotonic() - killed_at
    assert waited <= ttl + 1.0, f"slots came back after {waited:.2f} s (ttl {ttl} s)"
    assert {x.slot.key_fingerprint for x in leases} == {key_fingerprint("AIzaA"), key_fingerprint("AIzaB")}
    for x in leases:
        rot.release(x)
    state.close()


def test_redis_restarted_mid_run(make_gemini_emulator, redis_server, redis_url):
    """Redis stops and comes back empty while 3 processes work: every call succeeds and the
    disabled bad key is pushed back into the new Redis."""
    emu = make_gemini_emulator(
        keys=[KeySpec("AIzaBAD", state="invalid"), "AIzaA", "AIzaB", KeySpec("AIzaP", tier="paid")], latency_s=0.01
    )
    cfg = base(emu, redis_url, free=["AIzaBAD", "AIzaA", "AIzaB"], paid=["AIzaP"], calls=60, threads=2, pause_s=0.01)
    procs = [spawn(cfg, namespace="restart") for _ in range(3)]
    # Wait for real work, however slow the workers are to start on a loaded machine: a
    # restart before any worker reached Redis tests nothing (and logs nothing).
    deadline = time.monotonic() + 120
    while emu.count(status=200) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emu.count(status=200) >= 30, "the workers did not start within 120 s"
    redis_server.stop()
    time.sleep(0.5)
    during = emu.count(status=200)
    redis_server.start()
    res = results(procs)
    assert [r["errors"] for r in res] == [[]] * 3
    assert sum(r["ok"] for r in res) == 360 == emu.count(status=200)
    assert emu.count(status=200) > during  # work went on across the restart
    assert emu.count(key="AIzaBAD") <= 6  # once per process at most before, once after
    state = RedisPoolState.from_url(redis_url, namespace="restart")
    rot = ApiKeyRotator(["AIzaBAD", "AIzaA", "AIzaB"], ["AIzaP"], f"{FLASH}=1", state=state)
    bad = [s for s in rot.status().slots if s.key_fingerprint == key_fingerprint("AIzaBAD")]
    assert bad and all(s.disabled for s in bad)
    assert not any(r["degraded"] for r in res)  # every process is back on Redis
    logs = "".join(r["stderr"] for r in res)
    assert "unreachable" in logs or "lost the pool's data" in logs
    assert "AIza" not in logs
    state.close()
