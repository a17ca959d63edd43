"""``csc-ai`` / ``python -m csctracker_ai_core``: the library from a terminal.

Commands: ``ask`` (one analysis), ``batch`` (a JSONL file through the pool, resumable),
``report`` (usage and cost tables, JSON, CSV or a self-contained HTML page), ``keys``
(the pool's state), ``emulator`` (a local Gemini emulator) and ``demo`` (the README's
example end to end, with no keys).

Exit codes: 0 success; 1 the call (or the report's store) failed; 2 usage or
configuration error; 130 interrupted. Results go to stdout, everything else (tokens,
event ids, progress, errors) to stderr. Keys are never printed: the pool shows
fingerprints, and error messages are scrubbed of any key given to the command.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import logging
import mimetypes
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, is_dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from . import redaction
from ._version import __version__
from .exceptions import (
    AiCoreError,
    ConfigurationError,
    GeminiServiceException,
    InvalidInputError,
    QuotaExhaustedError,
    ReportError,
)
from .pool.keys import parse_key_list
from .reports.safe_text import csv_cell, escape_controls

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

README_EXAMPLE = {
    "input_text": "Qual a capital da França?",
    "prompt": "Responda de forma concisa.",
    "task": "pergunta_geral",
}


class UsageError(Exception):
    """A command-line mistake the user can fix (exit code 2)."""


# ----------------------------------------------------------------------------- output


class Output:
    """Where the CLI writes, with every configured key hidden (see :mod:`.redaction`)."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def add_secrets(self, keys: Iterable[str]) -> None:
        redaction.register_keys(keys, owner=self)

    def scrub(self, text: str) -> str:
        return redaction.redact(text)

    def print(self, text: str = "") -> None:
        self.out.write(self.scrub(text) + "\n")
        self.out.flush()

    def info(self, text: str = "") -> None:
        self.err.write(self.scrub(text) + "\n")
        self.err.flush()

    def error(self, text: str) -> None:
        self.info(f"csc-ai: error: {text}")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Exact, and in plain notation: str() gives "0E-12" for a zero with 12 places.
        return format(value, "f")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def to_json(value: Any, *, indent: int | None = None) -> str:
    """JSON text of CLI output (Decimal as exact strings, datetimes as ISO)."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict):
        return escape_controls(", ".join(f"{k}: {v}" for k, v in sorted(value.items()))) or "-"
    return escape_controls(str(value))


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A fixed-width text table of ``rows`` with ``columns`` = [(key, header)]."""
    cells = [[_cell(r.get(k)) for k, _ in columns] for r in rows]
    headers = [h for _, h in columns]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [values[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):
        return to_json(value)
    if isinstance(value, (Decimal, datetime, date)):
        return _json_default(value)
    return value


def render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV of every column of ``rows`` (header from the first row); text cells that a
    spreadsheet would run as a formula are neutralised (see :mod:`.reports.safe_text`)."""
    buf = io.StringIO()
    if not rows:
        return ""
    # RFC 4180 line ends: the writer quotes a field holding any character of the line
    # terminator, so with "\r\n" a bare carriage return inside a cell is quoted too.
    writer = csv.writer(buf, lineterminator="\r\n")
    columns = list(rows[0].keys())
    writer.writerow([csv_cell(c) for c in columns])
    for r in rows:
        writer.writerow([csv_cell(_csv_value(r.get(c))) for c in columns])
    return buf.getvalue()


# ----------------------------------------------------------------------------- parser

_EPILOG = """\
examples:
  csc-ai demo                                   the README example, no keys needed
  csc-ai ask -p "Responda de forma concisa." "Qual a capital da França?" --text
  csc-ai ask -p "Descreva a imagem em JSON." --image nota.jpg --task notas
  csc-ai batch entradas.jsonl --out saidas.jsonl --workers 4
  csc-ai report --period thisMonth --group day
  csc-ai report --period month --html relatorio.html
  csc-ai keys

keys come from --free-keys/--paid-keys or GOOGLE_FREE_KEYS/GOOGLE_PAID_KEYS (comma
separated; "project:KEY" names a key's Google Cloud project). Prefer the environment:
arguments are visible to other users of the machine in the process list.
telemetry goes to CLICKHOUSE_HOST when set, else to the embedded store under
CSCTRACKER_AI_DATA_DIR (default ~/.local/share/csctracker-ai-core).
"""


def _add_pool_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("keys and endpoint")
    g.add_argument("--free-keys", metavar="K1,K2", help="free-tier API keys (default: $GOOGLE_FREE_KEYS)")
    g.add_argument(
        "--paid-keys",
        metavar="K1,K2",
        help="paid API keys, used when no free slot can serve (default: $GOOGLE_PAID_KEYS)",
    )
    g.add_argument(
        "--model-limits",
        metavar="SPEC",
        help='models and requests in flight per key, e.g. "gemini-2.5-flash=1,gemini-2.5-pro=1" (default: $GOOGLE_MODEL_LIMITS)',
    )
    g.add_argument(
        "--base-url",
        metavar="URL",
        help="Gemini endpoint, e.g. an emulator (default: the SDK's, or $GOOGLE_GEMINI_BASE_URL)",
    )
    g.add_argument("--max-wait", type=float, metavar="SECONDS", help="longest wait for a free slot before giving up")


def _add_telemetry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--telemetry",
        choices=("server", "embedded", "off"),
        help="where calls are recorded (default: server if CLICKHOUSE_HOST is set, else embedded)",
    )


def _add_call_options(p: argparse.ArgumentParser, *, defaults: bool = False) -> None:
    prefix = "default " if defaults else ""
    g = p.add_argument_group("call options" + (" (defaults for lines that do not set them)" if defaults else ""))
    g.add_argument("-p", "--prompt", default=None, help=f"{prefix}instructions sent with the input")
    g.add_argument("--task", default=None, help=f"{prefix}task label recorded in telemetry (reports group by it)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument(
        "--json",
        dest="return_json",
        action="store_true",
        default=None,
        help=f"{prefix}ask for a JSON reply (the library's default)",
    )
    mode.add_argument("--text", dest="return_json", action="store_false", help=f"{prefix}ask for plain text")
    g.add_argument(
        "--model-variant", metavar="NAME", help=f"{prefix}only models whose name contains NAME (e.g. flash, 2.5-pro)"
    )
    g.add_argument(
        "--thinking",
        dest="thinking_level",
        choices=("minimal", "low", "medium", "high"),
        help=f"{prefix}thinking level",
    )
    g.add_argument(
        "--service-tier",
        choices=("standard", "flex", "priority"),
        default=None,
        help=f"{prefix}Gemini service tier (flex: half price, slower)",
    )
    tier = g.add_mutually_exclusive_group()
    tier.add_argument("--free-only", dest="forced_free", action="store_true", help="use free keys only")
    tier.add_argument("--paid-only", dest="forced_paid", action="store_true", help="use paid keys only")


def build_parser() -> argparse.ArgumentParser:
    """The ``csc-ai`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="csc-ai",
        description="Google Gemini on a pool of API keys (free first, paid as fallback), "
        "with every call recorded in ClickHouse.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"csctracker-ai-core {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug) to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    ask = sub.add_parser(
        "ask",
        help="one analysis: prompt + text or image -> result, tokens, event id",
        description="Send one request through the pool and print the result (stdout), "
        "then the tokens used and the event id (stderr).",
    )
    ask.add_argument(
        "input_text",
        nargs="?",
        default=None,
        metavar="TEXT",
        help='the input text ("-" reads stdin); optional with --image',
    )
    ask.add_argument("--image", metavar="FILE", help="an image (or PDF...) to send with the prompt")
    ask.add_argument("--mime-type", metavar="TYPE", help="type of --image (default: guessed from its name)")
    ask.add_argument("--event-id", metavar="ID", help="record the call under this id (default: a new UUID)")
    _add_call_options(ask)
    _add_pool_options(ask)
    _add_telemetry_options(ask)

    batch = sub.add_parser(
        "batch",
        help="run a JSONL file of inputs through the pool (resumable)",
        description=(
            "Run every line of IN (one JSON object per line) through one processor with N threads.\n\n"
            "Each line may set: input_text, prompt, task, file (a path, relative to IN), file_base64,\n"
            "mime_type, return_json, model_variant, thinking_level, service_tier, forced_free,\n"
            "forced_paid, event_id, metadata, and id.\n\n"
            "OUT gets one JSON line per input:\n"
            '  {"line": 3, "key": "line:3", "ok": true, "resultado": ..., "tokens": {...}, "event_id": "..."}\n'
            '  {"line": 4, "key": "id:a7", "id": "a7", "ok": false, "error": {"type": ..., "message": ...}}\n\n'
            "Resume by running the same command again: inputs already answered in OUT are skipped\n"
            "(matched by id, else by line number) and failed ones are tried again (--skip-errors\n"
            "keeps them). Exit code 1 when some input failed."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("input", metavar="IN.jsonl", help="input file, one JSON object per line")
    batch.add_argument("--out", required=True, metavar="OUT.jsonl", help="results file (created, or resumed)")
    batch.add_argument("--workers", type=int, default=4, metavar="N", help="parallel calls (default 4)")
    batch.add_argument("--limit", type=int, metavar="N", help="process at most N pending inputs this run")
    batch.add_argument(
        "--skip-errors", action="store_true", help="on resume, keep earlier errors instead of retrying them"
    )
    batch.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_call_options(batch, defaults=True)
    _add_pool_options(batch)
    _add_telemetry_options(batch)

    report = sub.add_parser(
        "report",
        help="usage and cost per task and period (table, JSON, CSV or HTML)",
        description=(
            "Read the telemetry store and show, per task and time bucket: calls (free ones included),\n"
            "tokens, cost in USD and BRL, the free keys' saving, and latency."
        ),
        epilog=(
            "periods: 1m 5m 10m 15m 30m 1h 2h 3h 6h 12h 24h today yesterday week thisWeek lastWeek\n"
            "         month thisMonth lastMonth quarter lastQuarter semester lastSemester year thisYear\n"
            "         lastYear max, or 'START|END' with ISO dates (e.g. '2025-01-01|2025-01-31', quoted)\n"
            "groups:  year month day hour (hour of the day) datehour minute, or group (one bucket)\n\n"
            "examples:\n"
            "  csc-ai report --period thisMonth --group day\n"
            "  csc-ai report --period lastMonth --group group --format csv > custos.csv\n"
            "  csc-ai report --period week --by key          # calls and 429s per key fingerprint\n"
            "  csc-ai report --period today --latency\n"
            "  csc-ai report --set-rate 2025-01-31=5.87 --period '2025-01-01|2025-01-31'\n"
            "  csc-ai report --period month --html relatorio.html"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("--period", default="24h", help="time window (default 24h)")
    report.add_argument("--group", default="day", help="time bucket (default day)")
    report.add_argument(
        "--by",
        choices=("task", "key", "project", "model", "tier", "service_tier"),
        help="instead of per task and bucket: totals per key fingerprint, project, model...",
    )
    report.add_argument("--latency", action="store_true", help="latency percentiles per model (or per --by)")
    report.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format (default table)"
    )
    report.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with charts to FILE")
    report.add_argument("--tz", default="UTC", help="time zone of days and buckets (default UTC, as the original)")
    report.add_argument(
        "--set-rate",
        action="append",
        default=[],
        metavar="DATE=RATE",
        help="store a USD->BRL exchange rate first (e.g. 2025-01-31=5.87); repeatable",
    )
    report.add_argument(
        "--prices-file",
        metavar="FILE",
        help="price file overriding the shipped prices (default: $CSCTRACKER_AI_PRICES_FILE)",
    )

    report.add_argument(
        "--waste",
        action="store_true",
        help="instead: cost of attempts that did not produce the result, per task, model and failure kind",
    )
    report.add_argument(
        "--tiers", action="store_true", help="instead: requests and cost per service tier billed (served)"
    )

    prices = sub.add_parser(
        "prices",
        help="list prices in force (or on --date); 'prices check': configured models with no price",
        description="The price table the ledger uses: the shipped prices, your price file and the model_prices "
        "table of the store. USD per 1M tokens.",
        epilog="examples:\n  csc-ai prices\n  csc-ai prices --date 2027-01-01\n  csc-ai prices check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prices.add_argument(
        "action",
        nargs="?",
        choices=("list", "check"),
        default="list",
        help="list (default) or check (configured models that have no price)",
    )
    prices.add_argument("--date", metavar="DATE", help="prices in force on this ISO date or datetime (default: now)")
    prices.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    prices.add_argument("--model-limits", metavar="SPEC", help="models to check (default $GOOGLE_MODEL_LIMITS)")
    prices.add_argument("--prices-file", metavar="FILE", help="price file overriding the shipped prices")
    prices.add_argument("--no-store", action="store_true", help="ignore the store's model_prices table")

    reprice = sub.add_parser(
        "reprice",
        help="recompute the stored costs of a period after a price fix (idempotent, history kept)",
        description="Price every event and attempt of PERIOD again with the current prices (price file and "
        "model_prices), rewrite only the rows whose cost changed, and keep every old figure in "
        "ai_cost_revisions. Running it twice changes nothing the second time.",
        epilog="examples:\n  csc-ai reprice --period lastMonth\n  csc-ai reprice --period '2026-12-01|2027-01-31'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reprice.add_argument("--period", required=True, help="time window, as in 'report' (max = everything)")
    reprice.add_argument("--prices-file", metavar="FILE", help="price file overriding the shipped prices")
    reprice.add_argument("--json", action="store_true", help="JSON instead of text")

    keys = sub.add_parser(
        "keys",
        help="the pool's state: slots by key fingerprint and model",
        description="Show every key x model slot of the pool (keys as fingerprints). "
        "With CSCTRACKER_AI_REDIS_URL set, this is the state shared by every process.",
    )
    keys.add_argument("--json", action="store_true", help="JSON instead of a table")
    _add_pool_options(keys)

    budgets = sub.add_parser(
        "budgets",
        help="spending caps: each rule's spend, reservations and limit this period",
        description="Show every budget rule (CSCTRACKER_AI_BUDGETS or --budgets): spent this period per the "
        "telemetry store, reserved by calls in flight (with CSCTRACKER_AI_REDIS_URL), limit, remaining, "
        "and when the period resets.",
    )
    budgets.add_argument(
        "--budgets",
        metavar="JSON",
        help='rules, e.g. \'[{"limit": "10", "period": "day"}]\' (default: $CSCTRACKER_AI_BUDGETS)',
    )
    budgets.add_argument("--json", action="store_true", help="JSON instead of a table")

    emu = sub.add_parser(
        "emulator",
        help="run the Gemini API emulator for local development",
        description="Serve Gemini's REST API on loopback until Ctrl-C. Point the library at it "
        "with --base-url or GOOGLE_GEMINI_BASE_URL.",
    )
    emu.add_argument("--config", metavar="FILE", help="emulator JSON config (keys, quotas, replies, faults)")
    emu.add_argument("--port", type=int, help="port (default: from the config, else a free one)")
    emu.add_argument("--host", help="address to bind (default 127.0.0.1)")

    demo = sub.add_parser(
        "demo",
        help="the README example end to end, with no keys (emulator + embedded store)",
        description="Start the emulator in this process, send the README's example through an "
        "IaProcessor with two fake free keys and one fake paid key, record it, and print "
        "the answer and today's report.",
    )
    demo.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the embedded store lives (default: $CSCTRACKER_AI_DATA_DIR or ~/.local/share/csctracker-ai-core)",
    )

    graf = sub.add_parser(
        "grafana-dashboard",
        help="print the Grafana dashboard (ClickHouse data source) as JSON",
        description="Print a dashboard for Grafana's ClickHouse data source plugin over the "
        "ai_events / ai_attempts tables: cost by day, tier and model, free-tier savings, 429s by "
        "quota kind and project, latency p50/p95, failed attempts, daily budget use. "
        "Usage: csc-ai grafana-dashboard > dash.json, then import it in Grafana.",
    )
    graf.add_argument(
        "--datasource-uid",
        metavar="UID",
        help="uid of your ClickHouse data source (default: asked by Grafana on import)",
    )

    met = sub.add_parser(
        "metrics",
        help="serve the pool's Prometheus metrics over HTTP",
        description="Serve Prometheus metrics of the key pool (slots free, busy, suspended, "
        "disabled, by tier and model) for a process that has no metrics endpoint of its own. "
        "With CSCTRACKER_AI_REDIS_URL set, that is the state every process shares. Needs the "
        "'prometheus' extra.",
    )
    met.add_argument("--port", type=int, default=9464, help="HTTP port (default 9464)")
    met.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    met.add_argument("--once", action="store_true", help="print the metrics once (exposition format) and exit")
    _add_pool_options(met)

    dlv = sub.add_parser(
        "deliver",
        help="insert every process's spooled telemetry (for CSCTRACKER_AI_TELEMETRY_DELIVERY=external)",
        description="Run the telemetry delivery out of your application's processes: this process "
        "claims the spool files the applications hand over (every second) and inserts them into "
        "the store of the environment's settings (CLICKHOUSE_* / CSCTRACKER_AI_*), until SIGTERM "
        "or Ctrl-C; then it delivers what is left and exits. With the embedded store it is the "
        "store's owner. Set CSCTRACKER_AI_TELEMETRY_DELIVERY=external in the applications so "
        "their calls never insert themselves.",
    )
    dlv.add_argument(
        "--nice",
        type=int,
        default=10,
        help="lower this process's CPU priority by N (default 10: the applications' calls come first)",
    )
    dlv.add_argument(
        "--scan-interval", type=float, default=0.5, help="seconds between looks at the spool (default 0.5)"
    )
    dlv.add_argument("--close-timeout", type=float, default=30.0, help="seconds for the last delivery (default 30)")
    dlv.add_argument("--once", action="store_true", help="deliver what is spooled now, then exit")
    dlv.add_argument("--telemetry", choices=["server", "embedded"], help="the store (default: from the environment)")
    return parser


# ----------------------------------------------------------------------------- helpers


def _pool_kwargs(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    free = args.free_keys if args.free_keys is not None else os.environ.get("GOOGLE_FREE_KEYS")
    paid = args.paid_keys if args.paid_keys is not None else os.environ.get("GOOGLE_PAID_KEYS")
    # Parsed exactly as the pool parses them, so every key (and "project:KEY" entry)
    # is known to the output scrubber before anything is printed.
    keys = [key for value in (free, paid) for _, key in parse_key_list(value)]
    out.add_secrets(keys)
    if not keys:
        raise UsageError(
            "no API keys: pass --free-keys/--paid-keys or set GOOGLE_FREE_KEYS/GOOGLE_PAID_KEYS "
            "(or try `csc-ai demo`, which needs none)."
        )
    kwargs: dict[str, Any] = {"google_free_keys": free or None, "google_paid_keys": paid or None}
    if getattr(args, "model_limits", None):
        kwargs["google_models_limits"] = args.model_limits
    if getattr(args, "base_url", None):
        kwargs["base_url"] = args.base_url
    if getattr(args, "max_wait", None) is not None:
        kwargs["max_wait_s"] = args.max_wait
    if getattr(args, "telemetry", None):
        kwargs["telemetry"] = args.telemetry
    return kwargs


def _make_processor(**kwargs: Any) -> Any:
    from .processor import IaProcessor

    return IaProcessor(**kwargs)


def _call_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for name in ("prompt", "task", "return_json", "model_variant", "thinking_level", "service_tier"):
        value = getattr(args, name, None)
        if value is not None:
            kw[name] = value
    if getattr(args, "forced_free", False):
        kw["forced_free"] = True
    if getattr(args, "forced_paid", False):
        kw["forced_paid"] = True
    return kw


def _tokens_dict(tokens: Any) -> dict[str, int]:
    return {
        name: int(getattr(tokens, name, 0) or 0)
        for name in ("input", "output", "reasoning", "image", "cached", "total")
    }


def _error_dict(exc: BaseException) -> dict[str, Any]:
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, QuotaExhaustedError) and exc.retry_at is not None:
        info["retry_at"] = datetime.fromtimestamp(exc.retry_at).astimezone().isoformat(timespec="seconds")
    event_id = getattr(exc, "event_id", None)
    if event_id:
        info["event_id"] = event_id
    return info


def _read_file_base64(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as exc:
        raise InvalidInputError(f"cannot read file {str(path)!r}: {exc.strerror or exc}") from None


def _guess_mime(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _print_result(out: Output, result: Any) -> None:
    if isinstance(result, (dict, list)):
        out.print(to_json(result, indent=2))
    else:
        out.print(str(result))


# ----------------------------------------------------------------------------- ask


def cmd_ask(args: argparse.Namespace, out: Output) -> int:
    text = args.input_text
    if text == "-":
        text = sys.stdin.read()
    if not text and not args.image:
        raise UsageError("ask needs a TEXT argument, '-' for stdin, or --image FILE.")
    call = _call_kwargs(args)
    call["input_text"] = text or ""
    if args.image:
        path = Path(args.image)
        call["file_base64"] = _read_file_base64(path)
        call["mime_type"] = args.mime_type or _guess_mime(path)
    if args.event_id:
        call["event_id"] = args.event_id
    with _make_processor(**_pool_kwargs(args, out)) as ia:
        try:
            result, tokens, event_id = ia.analisar_com_gemini(**call)
        except GeminiServiceException as exc:
            out.error(f"{type(exc).__name__}: {exc}")
            if getattr(exc, "event_id", None):
                out.info(f"event_id: {exc.event_id}")
            return EXIT_FAILED
    _print_result(out, result)
    out.info(f"Tokens usados: {tokens}")
    out.info(f"event_id: {event_id}")
    return EXIT_OK


# ----------------------------------------------------------------------------- batch


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal, unless forced)."""

    def __init__(self, err: TextIO, total: int, enabled: bool) -> None:
        self.err = err
        self.total = total
        self.enabled = enabled and total > 0
        self.tty = bool(getattr(err, "isatty", lambda: False)())
        self.done = self.ok = self.failed = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def update(self, ok: bool) -> None:
        with self._lock:
            self.done += 1
            if ok:
                self.ok += 1
            else:
                self.failed += 1
            if not self.enabled:
                return
            now = time.monotonic()
            # On a terminal redraw at most 10 times a second; in a log, every 10%.
            step = max(1, self.total // 10)
            if self.tty and (now - self._last >= 0.1 or self.done == self.total):
                self._last = now
                self.err.write("\r" + self._line())
                self.err.flush()
            elif not self.tty and (self.done % step == 0 or self.done == self.total):
                self.err.write(self._line() + "\n")
                self.err.flush()

    def _line(self) -> str:
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"ok={self.ok} erro={self.failed} {rate:.1f}/s"
        )

    def finish(self) -> None:
        if self.enabled and self.tty:
            self.err.write("\n")
            self.err.flush()


def _read_done(out_path: Path, retry_errors: bool) -> tuple[dict[str, dict[str, Any]], int]:
    """Results already in OUT, by input key; and how many lines were unreadable."""
    done: dict[str, dict[str, Any]] = {}
    broken = 0
    if not out_path.exists():
        return done, 0
    # errors="replace": a damaged line fails to parse and its input runs again.
    with out_path.open(encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            raw = raw.strip()
            if not raw:
                continue
            try:
                rec = json.loads(raw)
                key = rec["key"]
            except (ValueError, KeyError, TypeError):
                broken += 1  # a line cut short by a crash: its input runs again
                continue
            if rec.get("ok") or not retry_errors:
                done[key] = rec
            else:
                done.pop(key, None)
    return done, broken


def _compact(out_path: Path, kept: Mapping[str, dict[str, Any]]) -> None:
    """Rewrite OUT with one line per kept result (atomically), dropping retried errors."""
    tmp = out_path.with_name(out_path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in sorted(kept.values(), key=lambda r: r.get("line", 0)):
            fh.write(to_json(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out_path)


def _load_inputs(in_path: Path) -> list[tuple[int, str, Any]]:
    """``(line number, key, parsed object or error text)`` of every non-blank line."""
    items: list[tuple[int, str, Any]] = []
    seen: set[str] = set()
    try:
        fh = in_path.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {in_path}: {exc.strerror or exc}") from None
    with fh:
        for number, raw_bytes in enumerate(fh, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(
                    f"{in_path} is not UTF-8 text: line {number} has the byte 0x{raw_bytes[exc.start]:02x} "
                    f"at column {exc.start + 1}. Save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
                ) from None
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                items.append((number, f"line:{number}", f"line {number} is not a JSON object: {exc}"))
                continue
            key = f"id:{obj['id']}" if obj.get("id") not in (None, "") else f"line:{number}"
            if key in seen:
                raise UsageError(f"{in_path}: id {obj['id']!r} appears twice (line {number}); ids must be unique.")
            seen.add(key)
            items.append((number, key, obj))
    return items


_LINE_FIELDS = (
    "input_text",
    "prompt",
    "task",
    "return_json",
    "event_id",
    "mime_type",
    "model_variant",
    "forced_free",
    "forced_paid",
    "thinking_level",
    "service_tier",
    "metadata",
    "file_base64",
)


def _line_call(obj: Mapping[str, Any], defaults: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    unknown = set(obj) - set(_LINE_FIELDS) - {"id", "file"}
    if unknown:
        raise InvalidInputError(f"unknown fields {sorted(unknown)}; known: {', '.join(_LINE_FIELDS + ('file', 'id'))}")
    call = dict(defaults)
    call.update({k: obj[k] for k in _LINE_FIELDS if k in obj})
    if obj.get("file"):
        path = Path(str(obj["file"])).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        call["file_base64"] = _read_file_base64(path)
        call.setdefault("mime_type", _guess_mime(path))
    if isinstance(call.get("metadata"), Mapping):
        call["metadata"] = {str(k): str(v) for k, v in call["metadata"].items()}
    return call


def cmd_batch(args: argparse.Namespace, out: Output) -> int:
    if args.workers < 1:
        raise UsageError("--workers must be 1 or more.")
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more.")
    in_path, out_path = Path(args.input), Path(args.out)
    if in_path.resolve() == out_path.resolve():
        raise UsageError("--out must be another file than the input.")
    items = _load_inputs(in_path)
    done, broken = _read_done(out_path, retry_errors=not args.skip_errors)
    pending = [it for it in items if it[1] not in done]
    if args.limit is not None:
        pending = pending[: args.limit]
    skipped = len(items) - len([it for it in items if it[1] not in done])
    out.info(
        f"{len(items)} inputs: {skipped} already done, {len(pending)} to run"
        + (f" ({broken} unreadable lines in {out_path.name} ignored)" if broken else "")
    )
    if out_path.exists():
        _compact(out_path, done)  # one line per input, the retried errors dropped
    if not pending:
        return EXIT_OK
    pool = _pool_kwargs(args, out)
    defaults = _call_kwargs(args)
    progress = _Progress(out.err, len(pending), enabled=not args.no_progress)
    write_lock = threading.Lock()
    failures = 0

    with _make_processor(**pool) as ia, out_path.open("a", encoding="utf-8") as sink:

        def run(item: tuple[int, str, Any]) -> bool:
            number, key, obj = item
            record: dict[str, Any] = {"line": number, "key": key}
            if isinstance(obj, dict) and obj.get("id") not in (None, ""):
                record["id"] = obj["id"]
            try:
                if not isinstance(obj, dict):
                    raise InvalidInputError(str(obj))
                result, tokens, event_id = ia.analisar_com_gemini(**_line_call(obj, defaults, in_path.parent))
                record.update(ok=True, resultado=result, tokens=_tokens_dict(tokens), event_id=event_id)
            except AiCoreError as exc:
                record.update(ok=False, error=_error_dict(exc))
            except Exception as exc:  # a bug or an unexpected failure: keep going, record it
                logger.debug("batch line %d failed unexpectedly", number, exc_info=True)
                record.update(ok=False, error={"type": type(exc).__name__, "message": str(exc)})
            line = out.scrub(to_json(record))
            with write_lock:
                sink.write(line + "\n")
                sink.flush()
            progress.update(bool(record["ok"]))
            return bool(record["ok"])

        executor = ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="csc-ai-batch")
        futures: set[Future[Any]] = set()
        queue = iter(pending)
        try:
            # Keep at most 2 x workers submitted, so Ctrl-C stops soon and memory stays flat.
            for item in queue:
                futures.add(executor.submit(run, item))
                if len(futures) >= 2 * args.workers:
                    finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                    failures += sum(1 for f in finished if not f.result())
            finished, _ = wait(futures)
            failures += sum(1 for f in finished if not f.result())
        except KeyboardInterrupt:
            executor.shutdown(wait=True, cancel_futures=True)
            progress.finish()
            out.info(f"interrupted: {progress.done} written to {out_path}; run the same command to resume.")
            return EXIT_INTERRUPTED
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    progress.finish()
    out.info(f"done: {progress.ok} ok, {progress.failed} failed -> {out_path}")
    return EXIT_FAILED if failures else EXIT_OK


# ----------------------------------------------------------------------------- report

_REPORT_COLUMNS = (
    ("task", "tarefa"),
    ("data", "data"),
    ("total_events", "chamadas"),
    ("free_events", "gratuitas"),
    ("errors", "erros"),
    ("total_input_tokens", "tokens entrada"),
    ("total_output_tokens", "tokens saída"),
    ("custo_total_usd", "custo US$"),
    ("custo_total_reais", "custo R$"),
    ("economia_usd", "economia US$"),
    ("latencia_p50_ms", "p50 ms"),
)
_USAGE_COLUMNS = (
    ("calls", "chamadas"),
    ("free_events", "gratuitas"),
    ("errors", "erros"),
    ("requests", "requisições"),
    ("http_429", "429"),
    ("quota_429", "429 por cota"),
    ("tokens_input", "tokens entrada"),
    ("tokens_output", "tokens saída"),
    ("custo_usd", "custo US$"),
    ("economia_usd", "economia US$"),
)
_LATENCY_COLUMNS = (
    ("calls", "chamadas"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("request_p50_ms", "req p50 ms"),
)


def _make_telemetry(args: argparse.Namespace, **kwargs: Any) -> Any:
    from .pricing import load_prices
    from .reports.telemetry_report import Telemetry
    from .telemetry.settings import DELIVERY_ENV

    prices = load_prices(args.prices_file) if getattr(args, "prices_file", None) else None
    # A report is no application process: it may open the embedded store when nobody
    # holds it, whatever delivery the applications' environment sets.
    env = {**os.environ, DELIVERY_ENV: "thread"}
    return Telemetry(prices=prices, tz=getattr(args, "tz", "UTC"), env=env, **kwargs)


_WASTE_COLUMNS = (
    ("task", "task"),
    ("model_name", "modelo"),
    ("failure", "falha"),
    ("attempts", "tentativas"),
    ("tokens_input", "tokens entrada"),
    ("tokens_output", "tokens saída"),
    ("custo_usd", "custo US$"),
    ("custo_lista_usd", "custo lista US$"),
)
_TIER_COLUMNS = (
    ("service_tier", "nível"),
    ("requests", "requisições"),
    ("tokens_input", "tokens entrada"),
    ("tokens_output", "tokens saída"),
    ("custo_usd", "custo US$"),
    ("custo_lista_usd", "custo lista US$"),
)
_PRICE_COLUMNS = (
    ("model", "modelo"),
    ("valid_from", "desde"),
    ("valid_to", "até"),
    ("input_price_less_200", "entrada"),
    ("output_price_less_200", "saída"),
    ("input_price_more_200", "entrada >200k"),
    ("output_price_more_200", "saída >200k"),
    ("cached_input_price_less_200", "cache"),
    ("audio_input_price_less_200", "áudio"),
)


def _emit_rows(out: Output, rows: list[dict[str, Any]], fmt: str, columns: Sequence[tuple[str, str]]) -> None:
    if fmt == "json":
        out.print(to_json(rows, indent=2))
    elif fmt == "csv":
        out.out.write(out.scrub(render_csv(rows)))
        out.out.flush()
    elif not rows:
        out.print("(no calls in this period)")
    else:
        out.print(render_table(rows, columns))


def cmd_report(args: argparse.Namespace, out: Output) -> int:
    from .reports.periods import group_format, period_bounds

    # Check names before opening the store: a typo must not wait for a connection.
    group_format(args.group)
    period_bounds(args.period, tz=args.tz)
    rates = []
    for item in args.set_rate:
        day, sep, rate = item.partition("=")
        if not sep:
            raise UsageError(f"--set-rate {item!r}: use DATE=RATE, e.g. 2025-01-31=5.87")
        rates.append((day.strip(), rate.strip()))
    with _make_telemetry(args) as telemetry:
        for day, rate in rates:
            telemetry.set_exchange_rate(day, rate)
            out.info(f"exchange rate {day} = {rate} BRL/USD stored")
        if args.latency:
            by = args.by or "model"
            rows = telemetry.latency(args.period, by)
            col = "key_fingerprint" if by == "key" else ("model_name" if by == "model" else by)
            _emit_rows(out, rows, args.format, ((col, by),) + _LATENCY_COLUMNS)
        elif args.waste:
            _emit_rows(out, telemetry.waste(args.period), args.format, _WASTE_COLUMNS)
        elif args.tiers:
            _emit_rows(out, telemetry.cost_by_served_tier(args.period), args.format, _TIER_COLUMNS)
        elif args.by:
            rows = telemetry.usage_by(args.by, args.period)
            col = {"key": "key_fingerprint", "model": "model_name"}.get(args.by, args.by)
            _emit_rows(out, rows, args.format, ((col, args.by),) + _USAGE_COLUMNS)
        else:
            rows = telemetry.get_telemetry_data(args.group, args.period)
            _emit_rows(out, rows, args.format, _REPORT_COLUMNS)
            if args.format == "table" and any(r.get("taxa_cambio_ausente") for r in rows):
                out.info(
                    "note: some days have no USD->BRL rate (custo R$ shows '-'); add one with --set-rate DATE=RATE."
                )
        if args.html:
            from .reports.html_report import write_html_report

            try:
                path = write_html_report(telemetry, args.html, args.period, None)
            except OSError as exc:
                raise UsageError(
                    f"--html {args.html}: cannot write the report ({exc.strerror or type(exc).__name__}); "
                    "choose a path in a folder you can write to."
                ) from None
            out.info(f"HTML report written to {path}")
    return EXIT_OK


# ----------------------------------------------------------------------------- prices


def _price_table(args: argparse.Namespace) -> Any:
    from .pricing import get_prices
    from .settings import prices_file_from

    file = args.prices_file or prices_file_from(os.environ)
    base = get_prices(file)
    if getattr(args, "no_store", False):
        return base
    with _make_telemetry(args) as telemetry:
        return telemetry.prices()


def cmd_prices(args: argparse.Namespace, out: Output) -> int:
    from .pool.keys import parse_model_limits
    from .pricing import parse_instant

    at = (parse_instant(args.date, "--date") if args.date else None) or datetime.now(timezone.utc)
    table = _price_table(args)
    if args.action == "check":
        models = parse_model_limits(args.model_limits or os.environ.get("GOOGLE_MODEL_LIMITS"))
        missing = [m for m in sorted(models) if table.price_at(m, at) is None]
        for m in sorted(models):
            if m not in missing:
                out.info(f"ok       {m} (priced as {table.resolve(m)})")
        for m in missing:
            out.print(
                f"no price {m}: its calls are recorded at cost 0; add it to your price file "
                f"(CSCTRACKER_AI_PRICES_FILE) or with Telemetry.set_model_price"
            )
        return EXIT_FAILED if missing else EXIT_OK
    rows = []
    for model in sorted(table.models):
        price = table.price_at(model, at)
        if price is None:
            continue
        row = price.as_row()
        row["valid_from"] = price.valid_from.isoformat() if price.valid_from else ""
        row["valid_to"] = price.valid_to.isoformat() if price.valid_to else ""
        rows.append(row)
    _emit_rows(out, rows, args.format, _PRICE_COLUMNS)
    if args.format == "table":
        tiers = ", ".join(f"{k} x{v}" for k, v in sorted(table.service_tier_multipliers.items()))
        out.info(f"prices in force at {at.isoformat()}, USD per 1M tokens; service tiers: {tiers}")
    return EXIT_OK


def cmd_reprice(args: argparse.Namespace, out: Output) -> int:
    from .reports.periods import period_bounds

    period_bounds(args.period)  # a typo must not wait for a connection
    with _make_telemetry(args) as telemetry:
        result = telemetry.reprice(args.period)
    if args.json:
        out.print(to_json({f: getattr(result, f) for f in result.__dataclass_fields__}, indent=2))
    else:
        out.print(
            f"events seen {result.events_seen}; changed: {result.events_changed} events, "
            f"{result.attempts_changed} attempts; cost USD {format(result.cost_before_usd, 'f')} -> "
            f"{format(result.cost_after_usd, 'f')} (old figures kept in ai_cost_revisions)"
        )
    return EXIT_OK


# ----------------------------------------------------------------------------- keys


def cmd_keys(args: argparse.Namespace, out: Output) -> int:
    kwargs = _pool_kwargs(args, out)
    kwargs["telemetry"] = "off"  # looking at the pool records nothing
    with _make_processor(**kwargs) as ia:
        status = ia.rotator.status()
    if args.json:
        slots = []
        for s in status.slots:
            d = {f: getattr(s, f) for f in s.__dataclass_fields__}
            d["state"] = s.state
            slots.append(d)
        out.print(to_json({"taken_at": status.taken_at, "slots": slots}, indent=2))
    else:
        out.print(status.render_text())
    return EXIT_OK


# ----------------------------------------------------------------------------- budgets

_BUDGET_COLUMNS = (
    ("rule", "rule"),
    ("period_key", "period"),
    ("currency", "cur"),
    ("spent", "spent"),
    ("reserved", "reserved"),
    ("limit", "limit"),
    ("remaining", "remaining"),
    ("used_pct", "used %"),
    ("resets_at", "resets at"),
)


def cmd_budgets(args: argparse.Namespace, out: Output) -> int:
    from .budgets.rules import BUDGETS_ENV, parse_budgets

    rules = parse_budgets(args.budgets if args.budgets is not None else os.environ.get(BUDGETS_ENV))
    if not rules:
        raise UsageError(f"no budget rules: set {BUDGETS_ENV} or pass --budgets JSON.")
    with _make_telemetry(args) as telemetry:
        lines = telemetry.get_budget_status(rules)
    rows = [line.as_dict() for line in lines]
    if args.json:
        out.print(to_json(rows, indent=2))
    else:
        out.print(render_table(rows, _BUDGET_COLUMNS))
    return EXIT_OK


# ----------------------------------------------------------------------------- emulator


def cmd_emulator(args: argparse.Namespace, out: Output) -> int:
    from .testing.emulator import config_with_overrides, serve_until_stopped

    try:
        config = config_with_overrides(args.config, args.port, args.host)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"emulator config {args.config}: {exc}") from None

    def announce(emu: Any) -> None:
        out.print(emu.base_url)
        out.info(
            f"Gemini emulator on {emu.base_url} (Ctrl-C to stop). Use it with:\n"
            f"  export GOOGLE_GEMINI_BASE_URL={emu.base_url}\n"
            f'  csc-ai ask --base-url {emu.base_url} --free-keys any-key "Olá"'
        )

    serve_until_stopped(config, announce)
    return EXIT_OK


# ----------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from .telemetry.settings import DELIVERY_ENV, resolve_clickhouse_settings
    from .testing.emulator import GeminiEmulator, KeySpec

    # The demo reads its event back in this process: its writer delivers it itself.
    env = {**os.environ, DELIVERY_ENV: "thread"}
    if args.data_dir:
        env["CSCTRACKER_AI_DATA_DIR"] = str(Path(args.data_dir).expanduser())
    settings = resolve_clickhouse_settings(env=env)
    if settings.mode == "off":
        settings = resolve_clickhouse_settings(env=env, telemetry="embedded")
        env["CSCTRACKER_AI_TELEMETRY"] = "embedded"
    free_keys = ["demo-free-key-1", "demo-free-key-2"]
    paid_keys = ["demo-paid-key-1"]
    out.add_secrets(free_keys + paid_keys)
    keys = [KeySpec(k, tier="free") for k in free_keys] + [KeySpec(k, tier="paid") for k in paid_keys]
    with GeminiEmulator(keys=keys, default_json={"resposta": "Paris"}) as emu:
        out.info(f"Gemini emulator started on {emu.base_url} (no real keys, nothing leaves this machine)")
        ia = _make_processor(google_free_keys=free_keys, google_paid_keys=paid_keys, base_url=emu.base_url, env=env)
        try:
            resultado, tokens, event_id = ia.analisar_com_gemini(**README_EXAMPLE)
            location = ia.telemetry_location
        finally:
            ia.close()  # delivers the event to the store before we read it back
    out.print(f"Resultado: {to_json(resultado) if isinstance(resultado, (dict, list)) else resultado}")
    out.print(f"Tokens usados: {tokens}")
    out.print(f"event_id: {event_id}")
    out.print(f"Evento gravado em: {location}")
    from .reports.telemetry_report import Telemetry

    with Telemetry(settings=settings, env=env) as telemetry:
        rows = telemetry.get_telemetry_data("group", "today")
    out.print("")
    out.print("Relatório de hoje (csc-ai report --period today --group group):")
    if rows:
        out.print(
            render_table(
                rows,
                (
                    ("task", "tarefa"),
                    ("total_events", "chamadas"),
                    ("free_events", "gratuitas"),
                    ("total_input_tokens", "tokens entrada"),
                    ("total_output_tokens", "tokens saída"),
                    ("custo_total_usd", "custo US$"),
                    ("custo_lista_usd", "custo de tabela US$"),
                    ("economia_usd", "economia US$"),
                ),
            )
        )
    else:
        out.print("(the event has not reached the store yet; run `csc-ai report --period today` in a moment)")
    return EXIT_OK


# ----------------------------------------------------------------------------- main

# ----------------------------------------------------------------------------- observability


def cmd_grafana_dashboard(args: argparse.Namespace, out: Output) -> int:
    from .observability.grafana import dashboard_json

    out.print(dashboard_json(args.datasource_uid or "${DS_CLICKHOUSE}").rstrip("\n"))
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace, out: Output) -> int:
    try:
        import prometheus_client
    except ImportError:
        raise UsageError(
            "csc-ai metrics needs prometheus_client: pip install 'csctracker-ai-core[prometheus]'."
        ) from None
    from .observability.metrics import PrometheusMetrics

    kwargs = _pool_kwargs(args, out)
    kwargs["telemetry"] = "off"
    registry = prometheus_client.CollectorRegistry()
    with _make_processor(**kwargs) as ia:
        metrics = PrometheusMetrics(registry)
        metrics.bind(pool_status=ia.rotator.status)
        if args.once:
            out.print(prometheus_client.generate_latest(registry).decode("utf-8").rstrip("\n"))
            return EXIT_OK
        try:
            server, thread = prometheus_client.start_http_server(args.port, addr=args.host, registry=registry)
        except OSError as exc:
            raise UsageError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
        out.info(f"serving Prometheus metrics on http://{args.host}:{server.server_port}/metrics (Ctrl-C stops)")
        try:
            threading.Event().wait()
        finally:
            server.shutdown()
            thread.join(timeout=5)
    return EXIT_OK


# ----------------------------------------------------------------------------- deliver


def cmd_deliver(args: argparse.Namespace, out: Output) -> int:
    import dataclasses
    import signal

    from .telemetry.settings import resolve_clickhouse_settings
    from .telemetry.writer import TelemetryWriter

    if args.scan_interval <= 0 or args.close_timeout < 0:
        raise UsageError("--scan-interval must be above 0 and --close-timeout 0 or more (seconds).")
    settings = resolve_clickhouse_settings(env=dict(os.environ), telemetry=args.telemetry)
    if settings.mode == "off":
        raise UsageError("telemetry is off (CSCTRACKER_AI_TELEMETRY=off): there is nothing to deliver to.")
    # This process is the delivery, whatever the applications' setting says.
    settings = dataclasses.replace(settings, delivery="thread")
    if args.nice:
        os.nice(args.nice)
    stop = threading.Event()
    if not args.once:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    writer = TelemetryWriter(settings, scan_interval_s=args.scan_interval, close_timeout_s=args.close_timeout)
    out.info(
        f"delivering the spool {settings.spool_path} to {settings.location}"
        + ("" if args.once else " (SIGTERM or Ctrl-C stops)")
    )
    while not args.once and not stop.wait(0.5):
        pass
    writer.close(args.close_timeout)
    stats = writer.stats()
    # Applications' active files are there too: only a failing store makes this an error.
    left = sum(1 for f in Path(settings.spool_path).glob("seg-*.jsonl"))
    out.info(
        f"{stats.replayed} events delivered, {stats.quarantined} quarantined, {left} spool files left"
        + (f"; last error: {stats.last_error}" if stats.last_error else "")
    )
    return EXIT_FAILED if stats.last_error else EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "ask": cmd_ask,
    "batch": cmd_batch,
    "report": cmd_report,
    "prices": cmd_prices,
    "reprice": cmd_reprice,
    "keys": cmd_keys,
    "budgets": cmd_budgets,
    "emulator": cmd_emulator,
    "demo": cmd_demo,
    "grafana-dashboard": cmd_grafana_dashboard,
    "metrics": cmd_metrics,
    "deliver": cmd_deliver,
}


def _configure_logging(verbosity: int, err: TextIO) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger("csctracker_ai_core")
    if not any(getattr(h, "_csc_ai_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(err)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._csc_ai_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run ``csc-ai`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    out = Output(stdout or sys.stdout, stderr or sys.stderr)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if not args.command:
        parser.print_help(out.err)
        return EXIT_USAGE
    _configure_logging(args.verbose, out.err)
    try:
        return _COMMANDS[args.command](args, out)
    except UsageError as exc:
        out.error(str(exc))
        return EXIT_USAGE
    except (ConfigurationError, InvalidInputError, ReportError) as exc:
        out.error(str(exc))
        return EXIT_USAGE
    except AiCoreError as exc:
        out.error(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        out.info("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `csc-ai report | head`
        return EXIT_OK
    except Exception as exc:
        # A bug (ours or a dependency's): one line for the user, the traceback at -vv.
        logger.debug("unexpected error", exc_info=True)
        out.error(
            f"unexpected {type(exc).__name__}: {redaction.scrub(exc, 300)}. Run with -vv for the "
            "traceback, and please report it."
        )
        return EXIT_FAILED
