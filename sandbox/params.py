"""Stripe's form encoding (`metadata[plan]=pro`, `expand[]=...`, `created[lt]=...`) and
per-endpoint parameter schemas, checked the way Stripe checks them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sandbox.apierrors import ApiError, invalid_request, unknown_parameter

__all__ = ["Spec", "parse_form", "require", "validate"]

# A schema is a mapping of parameter name to a kind or a nested schema.
Spec = Mapping[str, Any]

_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_INT = re.compile(r"^-?[0-9]+$")


def _split_key(raw: str) -> list[str]:
    # Metadata is flat: everything between the outer brackets is the key, so keys that
    # themselves contain brackets reach the metadata rules and get Stripe's message.
    if raw.startswith("metadata[") and raw.endswith("]"):
        return ["metadata", raw[len("metadata[") : -1]]
    head, sep, rest = raw.partition("[")
    if not sep:
        return [raw]
    rest = "[" + rest
    parts = [head]
    position = 0
    for match in _BRACKET.finditer(rest):
        if match.start() != position:
            break
        parts.append(match.group(1))
        position = match.end()
    if position != len(rest):
        raise invalid_request(f"Invalid parameter name: {raw}", param=raw)
    return parts


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nested dicts from bracket notation; `[]` and `[N]` both become index-keyed dicts."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        parts = _split_key(raw_key)
        node = root
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None or child == "":
                child = {}
                node[part] = child
            elif not isinstance(child, dict):
                name = _display(parts[: depth + 1])
                raise invalid_request(f"Invalid {name}: mixes a value and an object", param=name)
            node = child
        last = parts[-1]
        if last == "" and len(parts) > 1:
            last = str(len(node))
        existing = node.get(last)
        if isinstance(existing, dict) and existing:
            name = _display(parts)
            raise invalid_request(f"Invalid {name}: mixes a value and an object", param=name)
        node[last] = value
    return root


def _display(parts: list[str]) -> str:
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, str) and _INT.match(value):
        return int(value)
    raise invalid_request(f"Invalid integer: {value!r}", param=name)


def _as_str(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise invalid_request(f"Invalid string: {name} must be a string, not an object", param=name)


def _as_list(value: Any, name: str) -> list[str]:
    if isinstance(value, dict) and all(_INT.match(k) for k in value):
        items = [value[k] for k in sorted(value, key=int)]
        if all(isinstance(item, str) for item in items):
            return items
    if value == "":
        return []
    raise invalid_request(f"Invalid array: {name} must be a list, e.g. {name}[]=value", param=name)


def _as_bool(value: Any, name: str) -> bool:
    if value in ("true", "false"):
        return bool(value == "true")
    raise invalid_request(f"Invalid boolean: {value!r}", param=name)


def _as_range(value: Any, name: str) -> int | dict[str, int]:
    if isinstance(value, str):
        return _as_int(value, name)
    if isinstance(value, dict):
        bounds: dict[str, int] = {}
        for op, raw in value.items():
            if op not in ("gt", "gte", "lt", "lte"):
                raise unknown_parameter(f"{name}[{op}]")
            bounds[op] = _as_int(raw, f"{name}[{op}]")
        return bounds
    raise invalid_request(f"Invalid {name}", param=name)


def _as_map(value: Any, name: str) -> dict[str, str] | str:
    # `metadata=""` unsets every key; otherwise a flat mapping of strings.
    if value == "":
        return ""
    if isinstance(value, dict):
        result: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(item, str):
                raise invalid_request(
                    f"Invalid {name}[{key}]: metadata values must be strings",
                    param=f"{name}[{key}]",
                )
            result[key] = item
        return result
    raise invalid_request(f"Invalid {name}: must be an object of strings", param=name)


_CONVERTERS = {
    "str": _as_str,
    "int": _as_int,
    "bool": _as_bool,
    "list": _as_list,
    "range": _as_range,
    "map": _as_map,
}


def validate(params: Mapping[str, Any], spec: Spec, prefix: str = "") -> dict[str, Any]:
    """Typed parameters; an unknown name or wrong type raises Stripe's 400."""
    result: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        kind = spec.get(key)
        if kind is None:
            raise unknown_parameter(name)
        if isinstance(kind, Mapping):
            if value == "":
                result[key] = ""
                continue
            if not isinstance(value, dict):
                raise invalid_request(f"Invalid object: {name} must be an object", param=name)
            result[key] = validate(value, kind, name)
        else:
            result[key] = _CONVERTERS[kind](value, name)
    return result


def require(params: Mapping[str, Any], name: str) -> Any:
    if name not in params or params[name] == "":
        raise ApiError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return params[name]
