"""Text from the data (task names, models, metadata) made safe for each report output.

Anyone who can call the library chooses the task name, and the report is read by
someone else, in a spreadsheet, a terminal or a browser:

* CSV: a cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return is
  a formula to Excel, LibreOffice and Google Sheets (``=HYPERLINK(...)`` exfiltrates
  data when clicked). OWASP's "CSV Injection" advice: prefix such a cell with a single
  quote, which the spreadsheet shows as text.
* Terminal tables: control characters (ANSI escapes, carriage returns, bidi overrides)
  could rewrite the screen; they are shown escaped (``\\x1b``, ``\\u202e``).
* HTML tables and charts: names are inserted as text already; a long one is cut to
  :data:`LABEL_MAX_CHARS` so that one caller cannot stretch the page.
"""

from __future__ import annotations

import unicodedata
from typing import Any

__all__ = ["CSV_FORMULA_PREFIXES", "LABEL_MAX_CHARS", "csv_cell", "escape_controls", "cut_label"]

CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
LABEL_MAX_CHARS = 80


def csv_cell(value: Any) -> Any:
    """``value`` with a leading single quote when it is text a spreadsheet would run.

    Numbers stay numbers (a negative amount is not text a user typed).
    """
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES):
        return "'" + value
    return value


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_controls(text: str) -> str:
    """``text`` with control and format characters (Cc, Cf, line/paragraph separators)
    written as escapes, so that it prints on one line and cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") else ch for ch in text)


def cut_label(text: Any, limit: int = LABEL_MAX_CHARS) -> Any:
    """A string cut to ``limit`` characters (the last one an ellipsis); others unchanged."""
    if isinstance(text, str) and len(text) > limit:
        return text[: limit - 1] + "…"
    return text
