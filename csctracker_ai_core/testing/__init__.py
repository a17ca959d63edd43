"""Test helpers shipped with the library: a Gemini emulator and pytest fixtures.

See :mod:`csctracker_ai_core.testing.emulator`; the pytest fixtures ``gemini_emulator``
and ``make_gemini_emulator`` come from :mod:`csctracker_ai_core.testing.pytest_plugin`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # real imports for type checkers and IDEs
    from .emulator import (
        DEFAULT_MODELS,
        EmulatorConfig,
        ErrorRule,
        Fault,
        FaultKind,
        GeminiEmulator,
        KeySpec,
        KeyState,
        ModelRule,
        QuotaRule,
        RecordedRequest,
        ReplyRule,
    )
    from .emulator_wire import OVERLOADED_2026, OVERLOADED_LEGACY

__all__ = [
    "DEFAULT_MODELS",
    "EmulatorConfig",
    "ErrorRule",
    "Fault",
    "FaultKind",
    "GeminiEmulator",
    "KeySpec",
    "KeyState",
    "ModelRule",
    "QuotaRule",
    "RecordedRequest",
    "ReplyRule",
    "OVERLOADED_2026",
    "OVERLOADED_LEGACY",
]

_WIRE_NAMES = {"OVERLOADED_2026", "OVERLOADED_LEGACY"}


def __getattr__(name: str) -> Any:
    # Imported lazily so that `python -m csctracker_ai_core.testing.emulator` does not load
    # the module twice (once here, once as __main__), and plain imports stay cheap.
    if name in __all__:
        module = importlib.import_module(".emulator_wire" if name in _WIRE_NAMES else ".emulator", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
