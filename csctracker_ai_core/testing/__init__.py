"""Test helpers shipped with the library: a Gemini emulator and pytest fixtures.

See :mod:`csctracker_ai_core.testing.emulator`; the pytest fixtures ``gemini_emulator``
and ``make_gemini_emulator`` come from :mod:`csctracker_ai_core.testing.pytest_plugin`.

The emulator answers what the real API answers, with the real bodies: quotas per
project (429 with QuotaFailure and RetryInfo), bad keys (invalid, expired, leaked,
blocked, suspended, service disabled), and the error cases of
:mod:`~csctracker_ai_core.testing.emulator_errors`: scripted errors per model, key,
project or tier (``add_error``, ``deny_model``: a 403 for one model), retired models
(``retire_model``: 404 "no longer available" for every key), per-model parameter checks
(:class:`ModelRule`: thinking levels and budgets per family, input token limit, JSON
mode), the free tier unavailable in a project's region (``block_free_tier``) and an
unsupported caller location (``location_unsupported``).
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
