"""The SDK's request models, as subclasses its request converter reads for less CPU.

google-genai turns a request's models into the wire dict field by field with
``_common.get_value_by_path``, which asks ``name in model`` before it falls back to
``getattr``. A pydantic model has no ``__contains__``, so Python answers ``in`` by
iterating the model's ``(name, value)`` pairs, and a field name is never one of them:
the answer is always False, after a full scan. A ``GenerateContentConfig`` has 39
fields and is asked about 36 of them per request, a ``Part`` 20 fields and 21 questions,
so a one-line request pays about 1,900 iteration steps for nothing (google-genai 3.6.1,
read in its ``_common.py`` and ``models.py``).

These subclasses give a str the answer the scan gives (False) at once, and leave every
other behaviour to pydantic: same fields, same validation, same serialization, so the
same bytes on the wire (``tests/test_gemini_request.py`` compares the request bodies the
emulator receives both ways). Should an SDK version give its models a ``__contains__``
of their own, the subclasses keep it: the SDK then means something by ``in``, and its
answer stands. Measured on the in-process emulator: the SDK's CPU per
``generate_content`` falls by about a fifth with the config, and a tenth more with the
contents (bench/RESULTS.md, "the SDK's share").
"""

from __future__ import annotations

import pydantic
from google.genai import types

__all__ = ["RequestConfig", "RequestContent", "RequestPart", "scans_for_names"]


def _contains(self: pydantic.BaseModel, item: object) -> bool:
    """``item in model``: at once for a field name, what iteration answers otherwise."""
    if isinstance(item, str):
        # Iteration yields (name, value) pairs, and no str equals a tuple.
        return False
    return any(pair is item or pair == item for pair in self)


def scans_for_names(model: type[pydantic.BaseModel]) -> bool:
    """Whether ``name in model`` scans the fields: no class of ``model`` but ``object``
    defines ``__contains__`` (pydantic's ``BaseModel`` does not)."""
    return not any("__contains__" in vars(base) for base in model.__mro__[:-1])


class RequestConfig(types.GenerateContentConfig):
    """A ``GenerateContentConfig`` the SDK converts without scanning its 39 fields."""

    if scans_for_names(types.GenerateContentConfig):
        __contains__ = _contains


class RequestPart(types.Part):
    """A ``Part`` the SDK converts without scanning its 20 fields."""

    if scans_for_names(types.Part):
        __contains__ = _contains


class RequestContent(types.Content):
    """A ``Content`` (a user turn) the SDK converts without scanning its fields."""

    if scans_for_names(types.Content):
        __contains__ = _contains
