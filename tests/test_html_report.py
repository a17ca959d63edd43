"""The HTML report opened in a real headless Chromium (Debian package ``chromium``):
the inline script draws every chart without errors, nothing is fetched from the
network, and a screenshot is kept under ``test-artifacts/`` at the repository root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from csctracker_ai_core.reports.html_report import build_report_data, render_html, write_html_report
from csctracker_ai_core.reports.telemetry_report import Telemetry

from test_reports_support import attempt, call_event, chdb_client, insert_events

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=timezone.utc)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium not found: the HTML report is not opened in a browser outside CI "
    "(apt-get install chromium to run these; with CI set they fail instead of skipping)",
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def chromium(page: Path, *extra: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is not installed"
    with tempfile.TemporaryDirectory(prefix="csc-ai-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )


def dump_dom(page: Path) -> str:
    proc = chromium(page, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def body_attrs(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))


def _events():
    out = []
    tasks = ["notas_fiscais", "resumo", "classificacao"]
    models = [
        ("gemini-2.5-flash", "free"),
        ("gemini-2.5-pro", "paid"),
        ("gemini-3-flash-preview", "free"),
        ("gemini-2.5-flash-lite", "paid"),
    ]
    for day in range(10):
        for i in range(3 + day % 4):
            when = NOW - timedelta(days=day, hours=i * 2 + 1)
            model, tier = models[(day + i) % len(models)]
            key = "k-free00001" if tier == "free" else "k-paid00001"
            attempts = [attempt(when, 1, key, tier, model)]
            if i == 1:
                attempts.insert(
                    0,
                    attempt(
                        when,
                        1,
                        "k-free00002",
                        "free",
                        model,
                        status=429,
                        quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    ),
                )
                attempts[1] = attempt(when, 2, key, tier, model)
            out.append(
                call_event(
                    when,
                    tasks[(day + i) % 3],
                    model,
                    tier,
                    1000 * (i + 1) * (day + 1),
                    400 * (i + 1),
                    key=key,
                    event_id=f"h{day}-{i}",
                    attempts=attempts,
                    total_duration_ms=800.0 + 100 * i,
                )
            )
    return out


@pytest.fixture
def telemetry(tmp_path, monkeypatch):
    monkeypatch.setenv("CSCTRACKER_AI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CSCTRACKER_AI_PRICES_FILE", raising=False)
    with chdb_client(tmp_path / "chdb") as client:
        tel = Telemetry(client=client, now=NOW)
        yield client, tel
        tel.close()


def test_report_renders_its_charts_in_chromium(telemetry, tmp_path):
    client, tel = telemetry
    insert_events(client, _events())
    tel.set_exchange_rate("2025-06-01", "5.5")
    page = write_html_report(tel, tmp_path / "report.html", "month")

    dom = dump_dom(page)
    attrs = body_attrs(dom)
    errors = re.search(r'<div id="render-errors">(.*?)</div>', dom, re.S)
    assert attrs.get("data-render") == "ok", errors.group(1) if errors else dom[:2000]
    assert attrs.get("data-charts") == "4"
    assert errors is not None and errors.group(1).strip() == ""
    # the bars were drawn by the script (the page source has none)
    assert "<rect" not in page.read_text(encoding="utf-8")
    assert len(re.findall(r'<rect [^>]*class="bar"', dom)) >= 40
    assert dom.count('<svg class="chart"') == 4
    for label in ("notas_fiscais", "gemini-2.5-pro", "k-free00001", "Economia"):
        assert label in dom

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "html-report.png"
    if shot.exists():
        shot.unlink()
    proc = chromium(page, f"--screenshot={shot}", "--window-size=1280,1800")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a drawn page, not a blank one
    shutil.copy(page, ARTIFACTS / "html-report.html")


def test_empty_period_renders_without_errors(telemetry, tmp_path):
    _, tel = telemetry
    page = write_html_report(tel, tmp_path / "empty.html", "24h")
    dom = dump_dom(page)
    attrs = body_attrs(dom)
    assert attrs.get("data-render") == "ok" and attrs.get("data-charts") == "0"
    assert "Sem dados no período." in dom


def test_hostile_task_names_stay_text(telemetry, tmp_path):
    client, tel = telemetry
    evil = "</script><script>document.body.setAttribute('data-pwned','1')</script><img src=x onerror=alert(1)>"
    insert_events(
        client, [call_event(NOW - timedelta(hours=1), evil, "gemini-2.5-flash", "paid", 100, 100, event_id="evil")]
    )
    page = write_html_report(tel, tmp_path / "evil.html", "24h")
    dom = dump_dom(page)
    attrs = body_attrs(dom)
    assert attrs.get("data-render") == "ok" and "data-pwned" not in attrs
    assert '<img src="x"' not in dom  # shown as text, never parsed as markup


def test_script_errors_are_reported_by_the_page(tmp_path):
    """The marker really detects failures: broken data makes the page say so."""
    page = tmp_path / "broken.html"
    page.write_text(render_html({"title": "x", "summary": None}), encoding="utf-8")
    dom = dump_dom(page)
    assert body_attrs(dom).get("data-render") == "error"
    assert re.search(r'<div id="render-errors">\s*\S', dom)


def test_page_is_self_contained(telemetry, tmp_path):
    client, tel = telemetry
    insert_events(client, _events()[:5])
    text = render_html(build_report_data(tel, "month"))
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', text)
    assert "@import" not in text and "url(" not in text


def test_budget_section_renders_in_chromium(telemetry, tmp_path):
    client, tel = telemetry
    insert_events(client, _events())
    rules = [{"limit": "50", "period": "month", "timezone": "UTC", "name": "mensal-pago"}]
    line = tel.get_budget_status(rules)[0]
    start = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    stored = client.query(
        "SELECT sum(cost_usd) FROM ai_events FINAL WHERE tier = 'paid' AND timestamp >= {s:DateTime64(6)}",
        parameters={"s": start.replace(tzinfo=None)},
    ).result_rows[0][0]
    assert line.spent == stored > 0 and line.reserved == 0 and line.limit == 50

    page = write_html_report(tel, tmp_path / "budgets.html", "month", budgets=rules)
    dom = dump_dom(page)
    assert body_attrs(dom).get("data-render") == "ok"
    section = re.search(r'<div id="table-budgets">(.*?)</div>', dom, re.S)
    assert section and "mensal-pago" in section.group(1) and "<table>" in section.group(1)
