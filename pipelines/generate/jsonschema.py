"""The subset of JSON Schema that generation prompts use: object/array/string/number types,
required properties, string lengths and array sizes. Errors name the JSON path at fault."""

from __future__ import annotations

from typing import Any

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def schema_errors(value: Any, schema: dict, path: str = "$") -> list[str]:
    kind = schema.get("type")
    if kind and (not isinstance(value, _TYPES[kind]) or (kind != "boolean" and value is True)):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    errors = []
    if kind == "object":
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{path}: missing property {name!r}")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += schema_errors(value[name], sub, f"{path}.{name}")
    elif kind == "array":
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: {len(value)} items, fewer than {schema['minItems']}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: {len(value)} items, more than {schema['maxItems']}")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{path}[{i}]")
    elif kind == "string":
        if len(value.strip()) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    return errors
