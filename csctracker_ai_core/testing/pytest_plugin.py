"""pytest fixtures for the Gemini emulator (enabled with ``-p csctracker_ai_core.testing.pytest_plugin``).

- ``gemini_emulator``: a started :class:`~.emulator.GeminiEmulator` with default
  settings (every key accepted as free, no quotas), stopped after the test.
- ``make_gemini_emulator``: a factory taking the same arguments as ``GeminiEmulator``
  (``config``, ``clock``, any :class:`~.emulator.EmulatorConfig` field); every emulator
  it starts is stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .emulator import GeminiEmulator

__all__ = ["gemini_emulator", "make_gemini_emulator"]


@pytest.fixture
def make_gemini_emulator() -> Iterator[Callable[..., GeminiEmulator]]:
    """Factory: ``make_gemini_emulator(keys=[...], minute_s=0.5, clock=fake)`` -> started emulator."""
    started: list[GeminiEmulator] = []

    def make(*args: Any, **kwargs: Any) -> GeminiEmulator:
        emu = GeminiEmulator(*args, **kwargs).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def gemini_emulator(make_gemini_emulator: Callable[..., GeminiEmulator]) -> GeminiEmulator:
    """A started emulator with default settings, stopped after the test."""
    return make_gemini_emulator()
