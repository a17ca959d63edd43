"""Facts about Gemini model names: family, capability rank, and how they think.

Pure functions over the model name, so a model released tomorrow is handled by its
name's shape (``gemini-<version>-<family>[-preview]``) without a release of ours.
"""

from __future__ import annotations

import re
from typing import Optional

__all__ = [
    "DEFAULT_MODEL_LIMITS",
    "model_family",
    "capability_rank",
    "thinking_style",
    "matches_family",
]

# The original library's defaults (GOOGLE_MODEL_LIMITS unset): one request in
# flight per key x model.
DEFAULT_MODEL_LIMITS: dict[str, int] = {
    "gemini-3-flash-preview": 1,
    "gemini-2.5-flash": 1,
}

_VERSION = re.compile(r"gemini-(\d+(?:\.\d+)?)")


def model_family(model: str) -> str:
    """``"pro"``, ``"flash"``, ``"lite"`` (flash-lite), ``"ultra"`` or ``"other"``."""
    m = model.lower()
    if "lite" in m:
        return "lite"
    if "ultra" in m:
        return "ultra"
    if "pro" in m:
        return "pro"
    if "flash" in m:
        return "flash"
    return "other"


_FAMILY_WEIGHT = {"ultra": 100, "pro": 80, "other": 50, "flash": 10, "lite": 5}


def capability_rank(model: str) -> tuple[int, float]:
    """A sort key, larger = more capable: family first, then version number.

    Free keys use models most-capable-first ("spend the expensive one for free");
    paid keys cheapest-first, i.e. this order reversed.
    """
    version = _VERSION.search(model.lower())
    return (_FAMILY_WEIGHT[model_family(model)], float(version.group(1)) if version else 0.0)


def matches_family(model: str, family: str) -> bool:
    """Whether ``model`` belongs to ``family`` (pro, flash, lite / flash-lite, ultra).

    ``flash`` excludes flash-lite, as in the original library. An unknown family name
    matches as a substring.
    """
    f = family.strip().lower()
    if f in ("lite", "flash-lite"):
        return model_family(model) == "lite"
    if f in ("pro", "flash", "ultra"):
        return model_family(model) == f
    return f in model.lower()


def thinking_style(model: str) -> Optional[str]:
    """How a model takes thinking settings.

    ``"level"`` (Gemini 3 and later: ``thinking_level``), ``"budget"`` (Gemini 2.5:
    ``thinking_budget``) or ``None`` (older models: send nothing).
    """
    version = _VERSION.search(model.lower())
    if not version:
        return None
    number = float(version.group(1))
    if number >= 3:
        return "level"
    if number >= 2.5:
        return "budget"
    return None
