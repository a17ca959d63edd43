"""Telemetry that no record can block, a spool with limits, torn writes, private files (issue 14)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import subprocess
import uuid
from pathlib import Path

import chdb  # noqa: F401  (a dev dependency: fail loudly when it is missing)
import pytest
from test_telemetry_support import embedded_settings, make_event, wait_until

from csctracker_ai_core import AiCoreError, IaProcessor
from csctracker_ai_core.exceptions import TelemetryError
from csctracker_ai_core.telemetry import open_telemetry, ownership, resolve_clickhouse_settings
from csctracker_ai_core.telemetry.connection import connect
from csctracker_ai_core.telemetry.quarantine import QUARANTINE_FILE, insert_isolating, is_data_error
from csctracker_ai_core.telemetry.records import encode_event, encode_record, event_to_record
from csctracker_ai_core.telemetry.schema import SchemaDriftError, ensure_schema
from csctracker_ai_core.telemetry.writer import DroppingSink, NullSink, TelemetryWriter


def _writer(settings, **kw):
    kw.setdefault("batch_interval_s", 0.05)
    kw.setdefault("backoff_base_s", 0.05)
    kw.setdefault("backoff_max_s", 0.2)
    return TelemetryWriter(settings, **kw)


def _rows(settings, sql):
    client = connect(settings)
    try:
        return client.query(sql).result_rows
    finally:
        client.close()


# ----------------------------------------------------------------------------- 1. no record blocks another


def test_surrogate_texts_are_sanitized_and_never_block_the_batch(tmp_path):
    """A lone surrogate (as os.fsdecode gives) in task, metadata, id and reply: every event lands.

    On 0.1.0 the driver could not encode the batch and retried it forever: nothing landed.
    """
    settings = embedded_settings(tmp_path)
    w = _writer(settings)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    w.record(make_event(0, event_id=ids[0]))
    w.record(make_event(1, event_id=ids[1], task="t\udc80x", result="reply \udcff", metadata={"file": "a\udce9.txt"}))
    w.record(make_event(2, event_id=ids[2]))
    assert w.flush(15)
    w.record(make_event(3, event_id=ids[3]))  # later events land too
    assert w.flush(15)
    s = w.stats()
    assert s.pending == 0 and s.written == 4 and s.sanitized == 1 and s.quarantined == 0
    w.close()
    rows = {
        r[0]: r[1:]
        for r in _rows(settings, "SELECT event_id, task, result, metadata, sanitized_fields FROM ai_events FINAL")
    }
    assert set(rows) == set(ids)
    task, result, metadata, fixed = rows[ids[1]]
    assert task == "t\ufffdx" and result == "reply \ufffd" and metadata == {"file": "a\ufffd.txt"}
    assert set(fixed.split(",")) == {"task", "result", "metadata", "_a.task"}
    assert rows[ids[0]][3] == ""
    attempts = _rows(settings, f"SELECT task FROM ai_attempts FINAL WHERE event_id = '{ids[1]}'")
    assert attempts == [("t\ufffdx",)]


def test_surrogate_task_over_the_wire_never_blocks_telemetry(make_gemini_emulator, tmp_path):
    """The issue's case end to end: IaProcessor on the emulator, embedded store, a task from
    os.fsdecode of a non-UTF-8 name. The call succeeds and every event (before, it, after) lands."""
    free = ["AIzaFREE-one-0000000000000000000000"]
    emu = make_gemini_emulator()
    emu.add_keys(free, tier="free")
    data = tmp_path / "data"
    bad_task = os.fsdecode(b"lote-\xe9")  # 'lote-\udce9'
    with IaProcessor(google_free_keys=free, base_url=emu.base_url, env={"CSCTRACKER_AI_DATA_DIR": str(data)}) as p:
        ids = [
            p.analisar_com_gemini(input_text="oi", prompt="Responda.", task=t)[2] for t in ("antes", bad_task, "depois")
        ]
    rows = dict(_rows(embedded_settings(data), "SELECT event_id, task FROM ai_events FINAL"))
    assert rows == {ids[0]: "antes", ids[1]: "lote-\ufffd", ids[2]: "depois"}
    assert not list((data / "spool").glob("seg-*"))


def _plant_segment(spool: Path, lines):
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / f"seg-{1:020d}-999999-deadbeef.jsonl"
    path.write_bytes(b"".join(lines))
    os.chmod(path, 0o600)
    return path


def test_bad_spool_lines_are_quarantined_and_the_rest_delivered(tmp_path, caplog):
    """Spool lines of another process: wrong type, not JSON, old surrogate bytes, good ones.

    Good ones (and the surrogate one, sanitized) land; the other two go to the quarantine
    file and ai_events_rejected with the reason, counted, each cause logged once; the
    segment is consumed (0.1.0 retried it forever and delivered nothing after it).
    """
    settings = embedded_settings(tmp_path)
    good = [event_to_record(make_event(i)) for i in range(3)]
    wrong = event_to_record(make_event(10))
    wrong["tokens_input"] = "x"
    wrong2 = event_to_record(make_event(11))
    wrong2["tokens_output"] = "y"
    old = event_to_record(make_event(12, task="old\udc80"))
    old_line = (json.dumps(old, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass")
    seg = _plant_segment(
        settings.spool_path,
        [
            encode_record(good[0]),
            encode_record(wrong),
            b"{not json\n",
            old_line,
            encode_record(good[1]),
            encode_record(wrong2),
            encode_record(good[2]),
        ],
    )
    caplog.set_level(logging.WARNING, logger="csctracker_ai_core")
    w = _writer(settings)
    assert w.flush(15)
    s = w.stats()
    assert s.written == 4 and s.replayed == 4 and s.quarantined == 3
    w.record(make_event(20, event_id="later"))
    assert w.flush(15)
    w.close()
    assert not seg.exists()
    ids = {r[0] for r in _rows(settings, "SELECT event_id FROM ai_events FINAL")}
    assert ids == {good[0]["event_id"], good[1]["event_id"], good[2]["event_id"], old["event_id"], "later"}
    lines = [json.loads(x) for x in (settings.spool_path / QUARANTINE_FILE).read_text().splitlines()]
    reasons = {q["event_id"]: q["reason"] for q in lines}
    assert reasons[wrong["event_id"]].startswith("tokens_input: expected an unsigned integer (UInt32), got str")
    assert reasons[wrong2["event_id"]].startswith("tokens_output: expected an unsigned integer")
    assert any(r.startswith("unreadable spool line") for r in reasons.values())
    assert json.loads(next(q for q in lines if q["event_id"] == wrong["event_id"])["record"])["tokens_input"] == "x"
    assert stat.S_IMODE(os.stat(settings.spool_path / QUARANTINE_FILE).st_mode) == 0o600
    table = _rows(settings, "SELECT event_id, source_table, reason FROM ai_events_rejected")
    assert len(table) == 3 and {t[1] for t in table} == {"ai_events"}
    rejected_logs = [r for r in caplog.records if "record rejected" in r.getMessage()]
    # Three records, two causes (tokens_input, tokens_output) + unreadable: one line per cause.
    assert len(rejected_logs) == 3


def test_row_the_driver_refuses_is_isolated_from_its_batch(tmp_path):
    """A record built in this process (not screened) that the driver cannot encode: the
    batch is split, the 5 others land, the bad one is quarantined with the driver's reason."""
    settings = embedded_settings(tmp_path)
    w = _writer(settings, batch_interval_s=5)  # one batch for all six
    for i in range(6):
        w.record(make_event(i, event_id=f"e{i}", **({"tokens_input": "x"} if i == 3 else {})))
    assert w.flush(15)
    s = w.stats()
    assert s.written == 5 and s.quarantined == 1 and s.pending == 0
    w.close()
    assert sorted(r[0] for r in _rows(settings, "SELECT event_id FROM ai_events FINAL")) == [
        "e0",
        "e1",
        "e2",
        "e4",
        "e5",
    ]
    (line,) = (settings.spool_path / QUARANTINE_FILE).read_text().splitlines()
    assert json.loads(line)["event_id"] == "e3" and json.loads(line)["reason"].startswith(
        "refused by the store: ValueError"
    )


def test_insert_isolating_delivers_every_good_row_and_isolates_the_bad():
    """Bisection: good rows all inserted once; each bad row alone; tokens are deterministic."""
    inserted, tokens = [], []

    def insert(rows, token):
        tokens.append(token)
        if any(r == "bad" for r in rows):
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")
        inserted.extend(rows)

    rows = ["a", "b", "bad", "c", "d", "bad", "e"]
    refused = insert_isolating(rows, "T", insert)
    assert sorted(inserted) == ["a", "b", "c", "d", "e"]
    assert [r for r, _, _ in refused] == ["bad", "bad"]
    assert all(c == "refused by the store: UnicodeEncodeError" for _, _, c in refused)
    again: list = []
    tokens_first = list(tokens)
    tokens.clear()
    inserted.clear()
    insert_isolating(rows, "T", insert)
    assert tokens == tokens_first  # a retried batch splits the same way (dedup tokens match)

    def down(rows, token):
        raise ConnectionError("server gone")

    with pytest.raises(ConnectionError):
        insert_isolating(rows, "T", down)
    assert not again


@pytest.mark.parametrize(
    "exc, data",
    [
        (UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates"), True),
        (TypeError("int() argument"), True),
        (ValueError("invalid literal for int()"), True),
        (ConnectionError("refused"), False),
        (TimeoutError("timed out"), False),
    ],
)
def test_is_data_error_table(exc, data):
    assert is_data_error(exc) is data


def test_driver_errors_classified():
    """The driver's own errors: a bad value is data; an unknown column is schema (retried)."""
    from clickhouse_connect.driver.exceptions import DataError, OperationalError, ProgrammingError

    assert is_data_error(DataError("Unable to create native array for column `a`"))
    assert not is_data_error(ProgrammingError("Unrecognized column 'x' in table t"))
    assert not is_data_error(OperationalError("Error HTTPConnectionPool"))


def test_dropped_attempts_column_is_repaired_at_reconnect(tmp_path):
    """A column dropped by hand from ai_attempts: the writer re-adds it and delivers.

    On 0.1.0 the ai_attempts migration never re-ran: every insert failed until a human
    re-added the column.
    """
    settings = embedded_settings(tmp_path)
    client = connect(settings)
    ensure_schema(client)
    client.command("ALTER TABLE ai_attempts DROP COLUMN quota_id")
    client.command("ALTER TABLE ai_events DROP COLUMN finish_reason")
    client.close()
    w = _writer(settings)
    w.record(make_event(0, event_id="after-drift", ok=False))
    assert w.flush(15)
    assert w.stats().written == 1
    w.close()
    assert _rows(settings, "SELECT quota_id FROM ai_attempts FINAL WHERE event_id = 'after-drift'") == [
        ("GenerateRequestsPerDay",)
    ]


def test_column_dropped_while_running_is_repaired(tmp_path):
    """The drift happens under a running writer: the failed insert reconnects, repairs, delivers."""
    settings = embedded_settings(tmp_path)
    w = _writer(settings)
    w.record(make_event(0))
    assert w.flush(15)
    w._client.command("ALTER TABLE ai_attempts DROP COLUMN decision")  # the writer's own store handle
    w.record(make_event(1, event_id="during-drift"))
    # The first insert fails (unknown column); the retry reconnects, repairs, delivers.
    assert wait_until(lambda: w.flush(5), timeout_s=20)
    s = w.stats()
    assert s.written == 2 and s.quarantined == 0
    w.close()
    assert _rows(settings, "SELECT decision FROM ai_attempts FINAL WHERE event_id = 'during-drift'") == [("served",)]


class _NoAlter:
    """A client that refuses ALTER (a user without the right): drift cannot be repaired."""

    def __init__(self, inner):
        self._inner = inner

    def command(self, sql, *a, **kw):
        if sql.startswith("ALTER"):
            raise PermissionError("Not enough privileges")
        return self._inner.command(sql, *a, **kw)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_unrepairable_drift_keeps_events_spooled_and_says_what_to_run(tmp_path):
    settings = embedded_settings(tmp_path)
    client = connect(settings)
    ensure_schema(client)
    client.command("ALTER TABLE ai_attempts DROP COLUMN quota_id")
    with pytest.raises(SchemaDriftError) as err:
        ensure_schema(_NoAlter(client))
    assert "ALTER TABLE `default`.`ai_attempts` ADD COLUMN IF NOT EXISTS `quota_id`" in str(err.value)
    assert isinstance(err.value, AiCoreError)
    client.close()

    w = _writer(settings, connect=lambda s: _NoAlter(connect(s)))
    w.record(make_event(0))
    assert not w.flush(2)
    s = w.stats()
    assert s.pending == 1 and s.written == 0 and "ADD COLUMN IF NOT EXISTS `quota_id`" in (s.last_error or "")
    w.close()
    w2 = _writer(settings)  # once the column can be added, the spooled event lands
    assert w2.flush(15)
    assert w2.stats().replayed == 1
    w2.close()


# ----------------------------------------------------------------------------- 2. torn writes / disk full


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB tmpfs (root needed; CI runs as root)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root, where this test runs)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not allowed here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    """Take every free byte of the file system holding ``path`` (down to the last byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 256, 16, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) < size:
                        break
                except OSError:
                    break
    finally:
        os.close(fd)


def test_disk_full_loses_only_what_was_reported_dropped(tmp_path, small_tmpfs, caplog):
    """Spool on a full 1 MiB tmpfs: short writes are rolled back, counters exact, recovery clean.

    On 0.1.0 a short write left a torn line that the next event was glued to: that event
    was counted spooled and lost at replay.
    """
    settings = dataclasses.replace(embedded_settings(tmp_path), spool_path=small_tmpfs / "spool")
    allow = {"connect": False}

    def gated(s):
        if not allow["connect"]:
            raise ConnectionError("store away")
        return connect(s)

    w = _writer(settings, connect=gated)
    big = "x" * 3000
    ids = []
    for i in range(20):
        ids.append(f"before-{i}")
        w.record(make_event(i, event_id=ids[-1], result=big))
    filler = small_tmpfs / "filler"
    _fill(filler)
    for i in range(40):
        ids.append(f"full-{i}")
        w.record(make_event(i, event_id=ids[-1], result=big))
    s = w.stats()
    assert s.dropped > 0 and s.spooled + s.dropped == 60
    # The segment's last page had room for part of the next line: a real short write.
    assert any("rolled back to its last whole record" in r.getMessage() for r in caplog.records)
    filler.unlink()  # the disk-full period ends
    for i in range(20):
        ids.append(f"after-{i}")
        w.record(make_event(i, event_id=ids[-1], result=big))
    allow["connect"] = True
    assert w.flush(30)
    s = w.stats()
    assert s.spooled + s.dropped == 80 and s.written == s.spooled and s.pending == 0 and s.quarantined == 0
    w.close()
    landed = {r[0] for r in _rows(settings, "SELECT event_id FROM ai_events FINAL")}
    assert len(landed) == s.spooled
    assert {i for i in ids if i.startswith(("before", "after"))} <= landed
    assert not list((small_tmpfs / "spool").glob("seg-*"))


# ----------------------------------------------------------------------------- 3. spool cap


def test_spool_cap_drops_new_events_loudly_and_keeps_the_oldest(tmp_path, caplog):
    settings = embedded_settings(tmp_path)
    allow = {"connect": False}

    def gated(s):
        if not allow["connect"]:
            raise ConnectionError("store away")
        return connect(s)

    caplog.set_level(logging.WARNING, logger="csctracker_ai_core")
    w = _writer(settings, connect=gated, spool_max_bytes=64 * 1024)
    events = [make_event(i, event_id=f"e-{i:03d}", result="r" * 2000) for i in range(60)]
    sizes = [len(encode_event(e)[0]) for e in events]  # the lines record() writes
    kept = max(k for k in range(61) if sum(sizes[:k]) <= 64 * 1024)
    for e in events:
        w.record(e)
    s = w.stats()
    assert s.spooled == kept and s.dropped == 60 - kept and s.spool_bytes <= 64 * 1024
    assert "SpoolFullError" in (s.last_error or "") and "CSCTRACKER_AI_SPOOL_MAX_BYTES" in s.last_error
    warn = [r for r in caplog.records if "% full" in r.getMessage()]
    drop = [r for r in caplog.records if "TELEMETRY EVENT DROPPED" in r.getMessage()]
    assert len(warn) == 1 and warn[0].levelno == logging.WARNING
    assert len(drop) == 1 and drop[0].levelno == logging.ERROR  # once per run of drops, all counted
    allow["connect"] = True
    assert w.flush(15)
    w.record(make_event(99, event_id="after-drain"))  # room again once delivered
    assert w.flush(15)
    w.close()
    ids = sorted(r[0] for r in _rows(settings, "SELECT event_id FROM ai_events FINAL"))
    assert ids == sorted([f"e-{i:03d}" for i in range(kept)] + ["after-drain"])  # the oldest were kept


def test_spool_cap_setting_from_environment():
    s = resolve_clickhouse_settings(env={"CSCTRACKER_AI_SPOOL_MAX_BYTES": "2097152"})
    assert s.spool_max_bytes == 2 * 1024 * 1024
    assert resolve_clickhouse_settings(env={}).spool_max_bytes == 1024**3
    from csctracker_ai_core.exceptions import ConfigurationError

    for bad in ("abc", "10", "inf"):
        with pytest.raises(ConfigurationError, match="CSCTRACKER_AI_SPOOL_MAX_BYTES"):
            resolve_clickhouse_settings(env={"CSCTRACKER_AI_SPOOL_MAX_BYTES": bad})


# ----------------------------------------------------------------------------- 4. files at rest


def _modes(root: Path):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + [""]:
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            out[p] = stat.S_IMODE(st.st_mode)
    return out


def test_every_created_path_is_private_even_with_a_permissive_umask(tmp_path):
    """Data folder, spool, chDB store (chDB's own files included), lock, quarantine: 0700 / 0600."""
    data = tmp_path / "new" / "data"
    settings = dataclasses.replace(embedded_settings(tmp_path), embedded_path=data / "chdb", spool_path=data / "spool")
    old = os.umask(0o022)
    try:
        w = _writer(settings)
        w.record(make_event(0))
        bad = event_to_record(make_event(1))
        bad["tokens_input"] = "x"
        _plant_segment(settings.spool_path, [encode_record(bad)])  # makes a quarantine file
        w._next_scan_at = 0
        assert w.flush(15)
        assert w.stats().quarantined == 1
        w.close()
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "new")
    assert any(p.endswith("chdb.lock") for p in modes) and any(p.endswith(QUARANTINE_FILE) for p in modes)
    assert sum(1 for p in modes if "/chdb/" in p) > 20  # chDB's own files are covered
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o700 if os.path.isdir(p) else 0o600)}
    assert wrong == {}


def test_existing_spool_and_store_folders_of_ours_are_tightened(tmp_path):
    """0.1.0 left spool/ and chdb/ 0755: they are narrowed at the next start. The data
    folder itself is only checked (it may be a folder the user chose)."""
    os.chmod(tmp_path, 0o755)
    settings = embedded_settings(tmp_path)
    settings.embedded_path.mkdir(mode=0o755)
    settings.spool_path.mkdir(mode=0o755)
    os.chmod(settings.embedded_path, 0o755)
    os.chmod(settings.spool_path, 0o755)
    w = _writer(settings, start=False)
    w.close()
    assert stat.S_IMODE(os.stat(settings.spool_path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(settings.embedded_path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o755


def test_planted_symlink_at_the_lock_file_is_refused_and_its_target_untouched(tmp_path):
    settings = embedded_settings(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock = ownership.lock_path(settings.embedded_path)
    lock.symlink_to(victim)
    with pytest.raises(TelemetryError, match="symbolic link"):
        open_telemetry(settings)
    with pytest.raises(TelemetryError, match="symbolic link"):
        ownership.try_acquire(settings.embedded_path)
    assert victim.read_text() == "precious"


def test_planted_symlink_in_the_spool_is_not_followed(tmp_path):
    settings = embedded_settings(tmp_path)
    victim = tmp_path / "victim.jsonl"
    victim.write_bytes(encode_record(event_to_record(make_event(0, event_id="not-ours"))))
    settings.spool_path.mkdir(mode=0o700)
    (settings.spool_path / f"seg-{1:020d}-1-aaaaaaaa.jsonl").symlink_to(victim)
    w = _writer(settings)
    w.record(make_event(1, event_id="ours"))
    assert w.flush(15)
    w.close()
    assert {r[0] for r in _rows(settings, "SELECT event_id FROM ai_events FINAL")} == {"ours"}
    assert victim.exists()


@pytest.mark.parametrize("problem", ["other-user", "group-writable", "world-writable"])
def test_unsafe_data_folder_is_refused_with_a_clear_error(tmp_path, problem):
    settings = embedded_settings(tmp_path)
    settings.spool_path.mkdir(mode=0o700)
    if problem == "other-user":
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root (CI runs as root)")
        os.chown(settings.spool_path, 12345, 12345)
        match = "belongs to user id 12345"
    else:
        os.chmod(settings.spool_path, 0o770 if problem == "group-writable" else 0o707)
        match = "writable by group or others"
    with pytest.raises(TelemetryError, match=match):
        open_telemetry(settings)


# ----------------------------------------------------------------------------- 7. store unusable at construction


def test_unusable_store_is_an_error_at_construction(tmp_path):
    """The data folder cannot be created: a typed error, not telemetry silently off.

    On 0.1.0: one ERROR, then every event dropped while stats() counted 0 dropped.
    """
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"CSCTRACKER_AI_DATA_DIR": str(blocker / "data")}
    with pytest.raises(TelemetryError, match="cannot create the telemetry folder"):
        open_telemetry(resolve_clickhouse_settings(env=env))
    with pytest.raises(TelemetryError):
        IaProcessor(google_free_keys=["AIzaFREE-one-0000000000000000000000"], env=env)
    assert isinstance(open_telemetry(resolve_clickhouse_settings(telemetry="off", env=env)), NullSink)


def test_clickhouse_db_log_event_never_raises_and_counts_what_it_drops(tmp_path):
    """The original's ClickHouseDb.log_event_telemetry never raised: it still does not,
    but a store that cannot be opened is counted, not silent."""
    from csctracker_ai_core.telemetry import ClickHouseDb

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    db = ClickHouseDb(env={"CSCTRACKER_AI_DATA_DIR": str(blocker / "data")})
    with pytest.raises(TelemetryError):
        db.get_ch_client()
    for i in range(2):
        db.log_event_telemetry(f"e{i}", {"input": 1}, "p", "r", "gemini-2.5-flash-free", "t", 0.1)
    s = db.writer.stats()
    assert s.dropped == 2 and "cannot create the telemetry folder" in s.last_error
    db.close()


def test_best_effort_counts_every_dropped_event(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"CSCTRACKER_AI_DATA_DIR": str(blocker / "data"), "CSCTRACKER_AI_TELEMETRY_BEST_EFFORT": "1"}
    caplog.set_level(logging.ERROR, logger="csctracker_ai_core")
    sink = open_telemetry(resolve_clickhouse_settings(env=env))
    assert isinstance(sink, DroppingSink)
    for i in range(3):
        sink.record(make_event(i))
    s = sink.stats()
    assert s.dropped == 3 and s.role == "dropping" and "cannot create the telemetry folder" in s.last_error
    assert len([r for r in caplog.records if "best effort" in r.getMessage()]) == 1


def test_processor_takes_the_cap_and_best_effort_as_arguments(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"CSCTRACKER_AI_DATA_DIR": str(blocker / "data")}
    with IaProcessor(
        google_free_keys=["AIzaFREE-one-0000000000000000000000"],
        env=env,
        telemetry_best_effort=True,
        spool_max_bytes=4096,
    ) as p:
        assert isinstance(p.telemetry, DroppingSink)
        assert p.settings.telemetry.spool_max_bytes == 4096
