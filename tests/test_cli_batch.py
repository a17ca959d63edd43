"""``csc-ai batch``: one output line per input, errors recorded, and resume after an
interruption processes only what is missing (checked on the emulator's counters)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import (
    _isolated,  # noqa: F401  (autouse fixture: tmp data dir, clean environment)
    subprocess_env,
)

from csctracker_ai_core.cli import main

KEYS = ["AIzaFAKE-batch-free-1", "AIzaFAKE-batch-free-2", "AIzaFAKE-batch-free-3"]


def write_jsonl(path: Path, objects) -> Path:
    path.write_text(
        "".join((o if isinstance(o, str) else json.dumps(o, ensure_ascii=False)) + "\n" for o in objects),
        encoding="utf-8",
    )
    return path


def read_out(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def batch(args, emu, capsys, *, keys=KEYS, telemetry="off"):
    code = main(
        [
            "batch",
            *args,
            "--free-keys",
            ",".join(keys),
            "--base-url",
            emu.base_url,
            "--telemetry",
            telemetry,
            "--max-wait",
            "5",
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def emu(make_gemini_emulator):
    return make_gemini_emulator(keys=KEYS)


def test_resume_processes_only_missing_lines(emu, tmp_path, capsys):
    inputs = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"input_text": f"pergunta {i}", "prompt": "Responda.", "task": "lote", **({"id": f"q{i}"} if i % 2 else {})}
            for i in range(6)
        ],
    )
    out = tmp_path / "out.jsonl"
    # "interrupted" after 2 inputs
    code, _, err = batch([str(inputs), "--out", str(out), "--limit", "2", "--workers", "2"], emu, capsys)
    assert code == 0, err
    assert emu.count(status=200) == 2 and len(read_out(out)) == 2
    # the same command again: only the 4 missing lines reach Gemini
    code, _, err = batch([str(inputs), "--out", str(out), "--workers", "3"], emu, capsys)
    assert code == 0, err
    assert "2 already done, 4 to run" in err
    assert emu.count(status=200) == 6
    records = read_out(out)
    assert len(records) == 6 and all(r["ok"] for r in records)
    assert sorted(r["line"] for r in records) == [1, 2, 3, 4, 5, 6]
    assert {r["key"] for r in records} == {"line:1", "id:q1", "line:3", "id:q3", "line:5", "id:q5"}
    assert {r.get("id") for r in records} == {None, "q1", "q3", "q5"}
    for r in records:
        assert r["tokens"]["input"] > 0 and r["event_id"] and isinstance(r["resultado"], dict)
    # and once more: nothing left to do
    code, _, err = batch([str(inputs), "--out", str(out)], emu, capsys)
    assert code == 0 and emu.count(status=200) == 6 and "6 already done, 0 to run" in err
    assert not any(k in out.read_text() for k in KEYS)


def test_failed_lines_are_retried_on_the_next_run(emu, tmp_path, capsys):
    inputs = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"input_text": "um", "prompt": "Responda."},
            {"prompt": "Descreva a imagem.", "file": "nota.png"},  # the file is not there yet
            "this is not json",
            {"input_text": "dois", "prompt": "Responda.", "colour": "blue"},  # unknown field
        ],
    )
    out = tmp_path / "out.jsonl"
    code, _, err = batch([str(inputs), "--out", str(out)], emu, capsys)
    assert code == 1  # some inputs failed
    records = {r["line"]: r for r in read_out(out)}
    assert records[1]["ok"] is True
    assert records[2]["ok"] is False and records[2]["error"]["type"] == "InvalidInputError"
    assert "nota.png" in records[2]["error"]["message"]
    assert records[3]["ok"] is False and "not a JSON object" in records[3]["error"]["message"]
    assert records[4]["ok"] is False and "colour" in records[4]["error"]["message"]
    assert emu.count(status=200) == 1

    # fix the inputs; a second run retries only the failed lines
    (tmp_path / "nota.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    write_jsonl(
        inputs,
        [
            {"input_text": "um", "prompt": "Responda."},
            {"prompt": "Descreva a imagem.", "file": "nota.png"},
            {"input_text": "três", "prompt": "Responda."},
            {"input_text": "dois", "prompt": "Responda."},
        ],
    )
    code, _, err = batch([str(inputs), "--out", str(out)], emu, capsys)
    assert code == 0, err
    assert emu.count(status=200) == 4  # 1 before + 3 retried
    records = read_out(out)
    assert len(records) == 4 and all(r["ok"] for r in records)  # one line per input, errors replaced
    assert "image/png" in json.dumps([r.body for r in emu.requests])


def test_skip_errors_keeps_earlier_failures(emu, tmp_path, capsys):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x", "file": "missing.png"}])
    out = tmp_path / "out.jsonl"
    assert batch([str(inputs), "--out", str(out)], emu, capsys)[0] == 1
    code, _, err = batch([str(inputs), "--out", str(out), "--skip-errors"], emu, capsys)
    assert code == 0 and "1 already done, 0 to run" in err
    assert len(read_out(out)) == 1


def test_a_line_cut_short_by_a_crash_runs_again(emu, tmp_path, capsys):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"input_text": f"q{i}", "prompt": "Responda."} for i in range(3)])
    out = tmp_path / "out.jsonl"
    assert batch([str(inputs), "--out", str(out), "--limit", "2", "--workers", "1"], emu, capsys)[0] == 0
    # simulate a crash in the middle of writing the second result
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    code, _, err = batch([str(inputs), "--out", str(out)], emu, capsys)
    assert code == 0, err
    assert "1 unreadable lines" in err and "1 already done, 2 to run" in err
    assert emu.count(status=200) == 4
    assert sorted(r["line"] for r in read_out(out)) == [1, 2, 3]


def test_defaults_from_the_command_line_and_overrides(emu, tmp_path, capsys):
    inputs = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"input_text": "sem prompt"},
            {"input_text": "com prompt", "prompt": "PROMPT-DA-LINHA", "return_json": False},
        ],
    )
    out = tmp_path / "out.jsonl"
    code, _, err = batch(
        [str(inputs), "--out", str(out), "--prompt", "PROMPT-PADRAO", "--task", "t1", "--workers", "1"], emu, capsys
    )
    assert code == 0, err
    bodies = [json.dumps(r.body, ensure_ascii=False) for r in emu.requests]
    assert any("PROMPT-PADRAO" in b and "sem prompt" in b for b in bodies)
    assert any("PROMPT-DA-LINHA" in b and "com prompt" in b for b in bodies)
    by_line = {r["line"]: r for r in read_out(out)}
    assert isinstance(by_line[1]["resultado"], dict) and isinstance(by_line[2]["resultado"], str)


def test_progress_and_summary_on_stderr(emu, tmp_path, capsys):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"input_text": f"q{i}", "prompt": "p"} for i in range(10)])
    code, out_text, err = batch([str(inputs), "--out", str(tmp_path / "o.jsonl"), "--workers", "4"], emu, capsys)
    assert code == 0 and out_text == ""
    assert "[##############################] 10/10 ok=10 erro=0" in err
    assert "done: 10 ok, 0 failed" in err
    code, _, err = batch([str(inputs), "--out", str(tmp_path / "o2.jsonl"), "--no-progress"], emu, capsys)
    assert code == 0 and "[#" not in err


@pytest.mark.parametrize("bad", [["--workers", "0"], ["--limit", "-1"]])
def test_bad_batch_options(emu, tmp_path, capsys, bad):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"input_text": "x", "prompt": "p"}])
    assert batch([str(inputs), "--out", str(tmp_path / "o.jsonl"), *bad], emu, capsys)[0] == 2


def test_duplicate_ids_and_same_file_are_usage_errors(emu, tmp_path, capsys):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "input_text": "a"}, {"id": 1, "input_text": "b"}])
    code, _, err = batch([str(inputs), "--out", str(tmp_path / "o.jsonl")], emu, capsys)
    assert code == 2 and "appears twice" in err
    code, _, err = batch([str(inputs), "--out", str(inputs)], emu, capsys)
    assert code == 2
    code, _, err = batch([str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")], emu, capsys)
    assert code == 2 and "nope.jsonl" in err


def test_batch_calls_are_recorded_and_reported(emu, tmp_path, capsys):
    """Every call lands in the embedded store and shows in the report, free ones included."""
    inputs = write_jsonl(
        tmp_path / "in.jsonl", [{"input_text": f"q{i}", "prompt": "p", "task": "lote_tel"} for i in range(4)]
    )
    code, _, err = batch([str(inputs), "--out", str(tmp_path / "o.jsonl")], emu, capsys, telemetry="embedded")
    assert code == 0, err
    assert main(["report", "--period", "1h", "--group", "group", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    (row,) = [r for r in rows if r["task"] == "lote_tel"]
    assert row["total_events"] == 4 and row["free_events"] == 4
    assert float(row["custo_total_usd"]) == 0 and float(row["economia_usd"]) > 0


def test_batch_as_a_subprocess_resumes(tmp_path, make_gemini_emulator):
    emu = make_gemini_emulator(keys=KEYS)
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"input_text": f"q{i}", "prompt": "p"} for i in range(5)])
    out = tmp_path / "out.jsonl"
    base = [sys.executable, "-m", "csctracker_ai_core", "batch", str(inputs), "--out", str(out), "--telemetry", "off"]
    env = subprocess_env(tmp_path, GOOGLE_FREE_KEYS=",".join(KEYS), GOOGLE_GEMINI_BASE_URL=emu.base_url)
    first = subprocess.run(base + ["--limit", "3"], capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(base, capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0, second.stderr
    assert emu.count(status=200) == 5 and len(read_out(out)) == 5
