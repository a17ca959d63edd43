"""Structured output: a JSON schema or a Pydantic model class, sent and checked.

``response_schema=`` takes a JSON schema (a dict) or a Pydantic model class. Either is
sent as Gemini's ``responseJsonSchema`` (a Pydantic class as its
``model_json_schema()``), and the parsed reply is checked against it: a Pydantic class
validates and returns an instance; a dict schema is checked by :func:`check_schema`,
which covers the JSON Schema subset Gemini documents for structured output (type,
properties, required, additionalProperties, items, prefixItems, enum, const, anyOf,
nullable, min/max items, minimum/maximum, $ref to $defs). Keywords outside that subset
are not enforced. A reply that fails the check is an unusable reply, like invalid
JSON: it counts as a failed attempt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import InvalidInputError

__all__ = ["ResponseSchema", "response_schema_from", "check_schema", "SchemaMismatch"]


class SchemaMismatch(ValueError):
    """The reply does not match the schema; the message says where (a JSON path)."""


@dataclass(frozen=True)
class ResponseSchema:
    """A validated ``response_schema`` argument: what is sent and how the reply is checked."""

    json_text: str  # the JSON schema, canonical JSON (hashable, for the config cache)
    model_class: type | None = field(default=None, compare=False)
    schema: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def validate(self, value: Any) -> Any:
        """``value`` as the caller asked for it: a model instance, or ``value`` itself.

        Raises :class:`SchemaMismatch` when it does not fit.
        """
        if self.model_class is not None:
            from pydantic import ValidationError

            try:
                return self.model_class.model_validate(value)  # type: ignore[attr-defined]
            except ValidationError as exc:
                details = exc.errors()
                loc = details[0]["loc"] if details else ()
                msg = details[0]["msg"] if details else str(exc)
                where = "/".join(str(p) for p in loc) or "(root)"
                raise SchemaMismatch(
                    f"{exc.error_count()} error(s) against {self.model_class.__name__}; first at {where}: {msg}"
                ) from None
        check_schema(value, self.schema)
        return value


def _is_pydantic_class(value: Any) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover (the SDK depends on pydantic)
        return False
    return isinstance(value, type) and issubclass(value, BaseModel)


def response_schema_from(value: Any) -> ResponseSchema | None:
    """Validate the ``response_schema`` argument; ``None`` passes through.

    Raises :class:`InvalidInputError` for anything but a JSON-schema dict or a Pydantic
    model class (nothing is sent).
    """
    if value is None:
        return None
    if _is_pydantic_class(value):
        schema = value.model_json_schema()
        return ResponseSchema(json.dumps(schema, sort_keys=True), value, schema)
    if isinstance(value, Mapping):
        try:
            text = json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"response_schema is not JSON-serialisable ({exc}); pass plain dicts and lists."
            ) from None
        schema = json.loads(text)
        if not isinstance(schema.get("type", "object"), (str, list)) and "anyOf" not in schema:
            raise InvalidInputError("response_schema: 'type' must be a JSON Schema type name or a list of them.")
        return ResponseSchema(text, None, schema)
    raise InvalidInputError(
        f"response_schema must be a JSON schema (dict) or a Pydantic model class, not {type(value).__name__}."
    )


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    if not ref.startswith("#/"):
        return {}  # remote references are not followed
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, Mapping) else {}
    return target if isinstance(target, Mapping) else {}


def check_schema(
    value: Any, schema: Mapping[str, Any], *, _root: Mapping[str, Any] | None = None, _path: str = "$"
) -> None:
    """Raise :class:`SchemaMismatch` when ``value`` breaks ``schema`` (subset above)."""
    root = schema if _root is None else _root
    schema = _resolve(schema, root)
    if value is None and schema.get("nullable") is True:
        return
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                check_schema(value, option, _root=root, _path=_path)
                break
            except SchemaMismatch as exc:
                errors.append(str(exc))
        else:
            raise SchemaMismatch(f"{_path}: matches none of anyOf ({'; '.join(errors)})")
    kind = schema.get("type")
    if kind is not None:
        kinds = [str(k).lower() for k in (kind if isinstance(kind, list) else [kind])]
        if not any(_TYPES.get(k, lambda v: True)(value) for k in kinds):
            raise SchemaMismatch(f"{_path}: expected {'/'.join(kinds)}, got {type(value).__name__}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaMismatch(f"{_path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise SchemaMismatch(f"{_path}: {value!r} is not {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaMismatch(f"{_path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaMismatch(f"{_path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        missing = [k for k in schema.get("required", ()) if k not in value]
        if missing:
            raise SchemaMismatch(f"{_path}: missing required {missing}")
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                check_schema(v, props[k], _root=root, _path=f"{_path}.{k}")
            elif extra is False:
                raise SchemaMismatch(f"{_path}: unexpected property {k!r}")
            elif isinstance(extra, Mapping):
                check_schema(v, extra, _root=root, _path=f"{_path}.{k}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaMismatch(f"{_path}: {len(value)} item(s) < minItems {schema['minItems']}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaMismatch(f"{_path}: {len(value)} item(s) > maxItems {schema['maxItems']}")
        prefix = schema.get("prefixItems") or []
        items = schema.get("items")
        for i, item in enumerate(value):
            if i < len(prefix):
                check_schema(item, prefix[i], _root=root, _path=f"{_path}[{i}]")
            elif isinstance(items, Mapping):
                check_schema(item, items, _root=root, _path=f"{_path}[{i}]")
