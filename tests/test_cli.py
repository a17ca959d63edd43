"""The command line through its entry points: main(argv) in-process, and
``python -m csctracker_ai_core`` / ``csc-ai`` as subprocesses."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from csctracker_ai_core.cli import main
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.paths import embedded_clickhouse_path
from csctracker_ai_core.testing.emulator import KeySpec

from test_reports_support import call_event, chdb_client, insert_events

REPO = Path(__file__).resolve().parents[1]
FREE_KEY = "AIzaFAKE-free-key-0001"
FREE_KEY_2 = "AIzaFAKE-free-key-0002"
PAID_KEY = "AIzaFAKE-paid-key-0001"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test: its own data dir, no keys nor servers from the environment."""
    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(tmp_path / "data"))
    for name in (
        "GOOGLE_FREE_KEYS",
        "GOOGLE_PAID_KEYS",
        "GOOGLE_MODEL_LIMITS",
        "GOOGLE_GEMINI_BASE_URL",
        "CSCTRACKER_AI_BASE_URL",
        "CLICKHOUSE_HOST",
        "CSCTRACKER_AI_CLICKHOUSE_DSN",
        "CSCTRACKER_AI_TELEMETRY",
        "CSCTRACKER_AI_PRICES_FILE",
        "CSCTRACKER_AI_REDIS_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def subprocess_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLICKHOUSE_", "CSCTRACKER_AI_"))}
    env["CSCTRACKER_AI_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def cli(args, tmp_path, *, timeout=60, **extra):
    return subprocess.run(
        [sys.executable, "-m", "csctracker_ai_core", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path, **extra),
        cwd=tmp_path,
        timeout=timeout,
    )


# ------------------------------------------------------------------------- help / usage


def test_help_reads_well(tmp_path):
    proc = cli(["--help"], tmp_path)
    assert proc.returncode == 0
    for command in ("ask", "batch", "report", "keys", "emulator", "demo"):
        assert command in proc.stdout
    assert "GOOGLE_FREE_KEYS" in proc.stdout and "examples:" in proc.stdout


@pytest.mark.parametrize("command", ["ask", "batch", "report", "keys", "emulator", "demo"])
def test_every_subcommand_has_help(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0 and "usage: csc-ai " + command in out


def test_console_script_is_declared():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'csc-ai = "csctracker_ai_core.cli:main"' in pyproject


def test_version(tmp_path):
    proc = cli(["--version"], tmp_path)
    assert proc.returncode == 0 and "csctracker-ai-core" in proc.stdout


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["report", "--format", "xml"], ["batch"], ["ask", "--nope"]])
def test_usage_errors_exit_2(argv, capsys):
    assert run(argv, capsys)[0] == 2


def test_ask_without_keys_is_a_usage_error(capsys):
    code, out, err = run(["ask", "oi"], capsys)
    assert code == 2 and "GOOGLE_FREE_KEYS" in err and out == ""


# ------------------------------------------------------------------------- ask


def test_ask_prints_result_tokens_and_event_id(make_gemini_emulator, capsys):
    emu = make_gemini_emulator(keys=[FREE_KEY], default_json={"resposta": "Paris"})
    code, out, err = run(
        [
            "ask",
            "-p",
            "Responda de forma concisa.",
            "Qual a capital da França?",
            "--task",
            "cli",
            "--free-keys",
            FREE_KEY,
            "--base-url",
            emu.base_url,
            "--telemetry",
            "off",
            "--event-id",
            "evt-cli-1",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out) == {"resposta": "Paris"}
    assert "Tokens usados: input=" in err and "event_id: evt-cli-1" in err
    assert FREE_KEY not in out + err
    assert emu.count(key=FREE_KEY, status=200) == 1


def test_ask_text_mode_from_stdin(make_gemini_emulator, capsys, monkeypatch):
    emu = make_gemini_emulator(keys=[FREE_KEY], default_text="Paris.")
    monkeypatch.setattr(sys, "stdin", io.StringIO("Qual a capital da França?"))
    monkeypatch.setenv("GOOGLE_FREE_KEYS", FREE_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.base_url)
    code, out, err = run(["ask", "-", "--text", "--telemetry", "off"], capsys)
    assert code == 0, err
    assert out.strip().startswith("Paris")  # a plain text reply, not JSON
    body = json.dumps(emu.last_request.body)
    assert "Qual a capital" in body


def test_ask_with_an_image(make_gemini_emulator, capsys, tmp_path):
    emu = make_gemini_emulator(keys=[FREE_KEY])
    image = tmp_path / "nota.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nfake-image")
    code, out, err = run(
        [
            "ask",
            "-p",
            "Descreva.",
            "--image",
            str(image),
            "--free-keys",
            FREE_KEY,
            "--base-url",
            emu.base_url,
            "--telemetry",
            "off",
        ],
        capsys,
    )
    assert code == 0, err
    body = json.dumps(emu.last_request.body)
    assert base64.b64encode(image.read_bytes()).decode() in body
    assert "image/png" in body


def test_ask_failure_exits_1_and_never_shows_the_key(make_gemini_emulator, capsys):
    emu = make_gemini_emulator(keys=[KeySpec(FREE_KEY, state="invalid")])
    code, out, err = run(
        ["ask", "oi", "--free-keys", FREE_KEY, "--base-url", emu.base_url, "--telemetry", "off", "--max-wait", "0"],
        capsys,
    )
    assert code == 1
    assert "error" in err.lower()
    assert FREE_KEY not in out + err


def test_ask_missing_image_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(
        ["ask", "--image", str(tmp_path / "nope.png"), "--free-keys", FREE_KEY, "--telemetry", "off"], capsys
    )
    assert code == 2 and "nope.png" in err


# ------------------------------------------------------------------------- keys


def test_keys_shows_fingerprints_only(capsys):
    code, out, err = run(["keys", "--free-keys", f"{FREE_KEY},{FREE_KEY_2}", "--paid-keys", PAID_KEY], capsys)
    assert code == 0, err
    for key in (FREE_KEY, FREE_KEY_2, PAID_KEY):
        assert key not in out + err
        assert key_fingerprint(key) in out
    code, out, _ = run(["keys", "--json", "--free-keys", FREE_KEY, "--paid-keys", PAID_KEY], capsys)
    data = json.loads(out)
    assert {s["key_fingerprint"] for s in data["slots"]} == {key_fingerprint(FREE_KEY), key_fingerprint(PAID_KEY)}
    assert {s["tier"] for s in data["slots"]} == {"free", "paid"}
    assert all(s["state"] == "ready" for s in data["slots"])


def test_keys_from_environment(capsys, monkeypatch):
    monkeypatch.setenv("GOOGLE_FREE_KEYS", FREE_KEY)
    code, out, _ = run(["keys"], capsys)
    assert code == 0 and key_fingerprint(FREE_KEY) in out and FREE_KEY not in out


# ------------------------------------------------------------------------- report


NOW = datetime.now(timezone.utc)


def _seed_store(events):
    with chdb_client(embedded_clickhouse_path(os.environ)) as client:
        insert_events(client, events)


def _report_events():
    base = NOW - timedelta(hours=2)
    return [
        call_event(base, "notas", "gemini-2.5-flash", "paid", 1000, 500, key="k-paid00001", event_id="r1"),
        call_event(base + timedelta(minutes=1), "notas", "gemini-2.5-flash", "free", 2000, 1000, event_id="r2"),
        call_event(
            base + timedelta(minutes=2),
            "resumo",
            "gemini-2.5-pro",
            "paid",
            10_000,
            1000,
            key="k-paid00001",
            event_id="r3",
        ),
    ]


def test_report_formats(capsys):
    _seed_store(_report_events())
    code, out, err = run(["report", "--period", "24h", "--group", "group", "--format", "json"], capsys)
    assert code == 0, err
    rows = {r["task"]: r for r in json.loads(out)}
    assert Decimal(rows["notas"]["custo_total_usd"]) == Decimal("0.00155")
    assert Decimal(rows["notas"]["economia_usd"]) == Decimal("0.0031")
    # 10k x 1.25 + 1k x 10 = 0.0225
    assert Decimal(rows["resumo"]["custo_total_usd"]) == Decimal("0.0225")
    assert rows["notas"]["total_events"] == 2 and rows["notas"]["custo_total_reais"] is None

    code, out, _ = run(["report", "--period", "24h", "--group", "group", "--format", "csv"], capsys)
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {r["task"] for r in parsed} == {"notas", "resumo"}
    assert "custo_total_reais" in parsed[0] and "economia_usd" in parsed[0]

    today = (NOW - timedelta(hours=2)).date().isoformat()  # the events' day (yesterday just after midnight)
    code, out, err = run(["report", "--period", "24h", "--group", "group", "--set-rate", f"{today}=5.5"], capsys)
    assert code == 0, err
    assert "tarefa" in out and "notas" in out and "custo R$" in out
    assert "0.008525" in out  # 0.00155 USD x 5.5

    code, out, _ = run(["report", "--period", "24h", "--by", "key", "--format", "json"], capsys)
    assert {r["key_fingerprint"] for r in json.loads(out)} == {"k-paid00001", "k-free00001"}
    code, out, _ = run(["report", "--period", "24h", "--latency"], capsys)
    assert code == 0 and "gemini-2.5-flash" in out and "p95 ms" in out


def test_report_html_file(capsys, tmp_path):
    _seed_store(_report_events())
    page = tmp_path / "out" / "report.html"
    code, _, err = run(["report", "--period", "24h", "--html", str(page)], capsys)
    assert code == 0, err
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "report-data" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch
    assert "https://" not in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["report", "--period", "2d"], "unknown period"),
        (["report", "--group", "semana"], "unknown group"),
        (["report", "--set-rate", "2025-01-01"], "DATE=RATE"),
        (["report", "--set-rate", "2025-01-01=-3"], "positive"),
    ],
)
def test_report_bad_arguments_exit_2(argv, message, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err


def test_report_empty_store(capsys):
    code, out, _ = run(["report", "--period", "1h"], capsys)
    assert code == 0 and "no calls" in out


def test_report_and_demo_read_the_store_whatever_delivery_the_applications_use(capsys, monkeypatch):
    """`telemetry_delivery="process"` keeps application processes out of the embedded
    store, reads included (test_delivery.py); a report, or the demo, is no application
    process: with that setting in the environment they still open the store when nobody
    holds it."""
    monkeypatch.setenv("CSCTRACKER_AI_TELEMETRY_DELIVERY", "process")
    _seed_store(_report_events())
    code, out, err = run(["report", "--period", "24h", "--group", "group", "--format", "json"], capsys)
    assert code == 0, err
    assert {r["task"] for r in json.loads(out)} == {"notas", "resumo"}
    code, out, err = run(["demo"], capsys)
    assert code == 0, err
    assert "Relatório de hoje" in out and "Evento gravado em: embedded ClickHouse" in out


def test_report_as_a_subprocess(tmp_path):
    _seed_store(_report_events())
    proc = cli(["report", "--period", "today", "--group", "day", "--format", "json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {r["task"] for r in json.loads(proc.stdout)} <= {"notas", "resumo"}


# ------------------------------------------------------------------------- emulator / demo


def test_emulator_command_serves_until_terminated(tmp_path):
    config = tmp_path / "emu.json"
    config.write_text(json.dumps({"keys": [{"key": FREE_KEY, "tier": "free"}], "unknown_keys": "reject"}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "csctracker_ai_core", "emulator", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        request = urllib.request.Request(
            f"{base_url}/v1beta/models/gemini-2.5-flash:generateContent",
            data=json.dumps({"contents": [{"parts": [{"text": "oi"}], "role": "user"}]}).encode(),
            headers={"x-goog-api-key": FREE_KEY, "content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200 and "candidates" in json.loads(reply.read())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        finally:
            proc.stdout.close()
            proc.stderr.close()
    assert proc.returncode == 0


def test_emulator_bad_config_is_a_usage_error(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"no_such_field": 1}')
    code, _, err = run(["emulator", "--config", str(bad)], capsys)
    assert code == 2 and "no_such_field" in err


def test_demo_end_to_end(tmp_path):
    proc = cli(["demo"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Resultado:" in out and "Tokens usados: input=" in out and "event_id:" in out
    assert str(tmp_path / "data" / "chdb") in out  # where the event was recorded
    assert "pergunta_geral" in out  # today's report read back from the store
    assert "demo-free-key" not in out + proc.stderr and "demo-paid-key" not in out + proc.stderr


def test_demo_with_data_dir(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    code, out, err = run(["demo", "--data-dir", str(target)], capsys)
    assert code == 0, err
    assert str(target / "chdb") in out and "pergunta_geral" in out


def test_decimals_are_written_in_plain_notation_in_json_and_csv():
    from decimal import Decimal

    from csctracker_ai_core.cli import render_csv, to_json

    rows = [{"custo_total_usd": Decimal("0E-12"), "custo_lista_usd": Decimal("0.000012500000")}]
    assert to_json(rows) == '[{"custo_total_usd": "0.000000000000", "custo_lista_usd": "0.000012500000"}]'
    assert render_csv(rows).splitlines()[1] == "0.000000000000,0.000012500000"
