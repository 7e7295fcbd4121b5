"""Reading a built-in workflow's `parameters`: each reader takes the mapping and a field name, returns a plain value
and raises `Invalid(message, "/parameters/FIELD")` on anything wrong, so a bad workflow is refused when it is
written. Values use the gateway's syntaxes (`gateway.common.units`): percentages ("99%", 99.5), durations ("30s",
"500ms", a bare number of seconds)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gateway.common.errors import Invalid
from gateway.common.units import parse_duration, parse_percent, shown, unknown_field

MISSING = object()


def pointer(*parts: str | int) -> str:
    """The JSON pointer of a parameter: pointer("steps", 1) -> "/parameters/steps/1"."""
    return "/parameters" + "".join(f"/{str(part).replace('~', '~0').replace('/', '~1')}" for part in parts)


def only_known(parameters: Any, allowed: tuple[str, ...], workflow: str) -> Mapping[str, Any]:
    """`parameters` as a mapping whose keys are all in `allowed`."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping):
        raise Invalid(f"the parameters of a {workflow} workflow are a mapping, got {shown(parameters)}",
                      "/parameters")
    unknown = unknown_field(dict(parameters), allowed, f"a {workflow} workflow")
    if unknown is not None:
        key, message = unknown
        raise Invalid(f"{key}: {message}", pointer(key))
    return parameters


def text(parameters: Mapping[str, Any], name: str, default: Any = MISSING, *, at: tuple = ()) -> str:
    """A non-empty string."""
    value = parameters.get(name, default)
    field = pointer(*at, name)
    if value is MISSING:
        raise Invalid(f"{name} is required", field)
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{name}: expected a non-empty string, got {shown(value)}", field)
    return value.strip()


def choice(parameters: Mapping[str, Any], name: str, options: tuple[str, ...], default: str) -> str:
    value = parameters.get(name, default)
    if value not in options:
        raise Invalid(f"{name}: expected one of {', '.join(options)}, got {shown(value)}", pointer(name))
    return value


def whole(parameters: Mapping[str, Any], name: str, default: Any = MISSING, *, minimum: int = 0,
          maximum: int | None = None, at: tuple = ()) -> int:
    """A whole number within [minimum, maximum]."""
    value = parameters.get(name, default)
    field = pointer(*at, name)
    if value is MISSING:
        raise Invalid(f"{name} is required", field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise Invalid(f"{name}: expected a whole number {bounds}, got {shown(value)}", field)
    return value


def number(parameters: Mapping[str, Any], name: str, *, at: tuple = ()) -> float | None:
    """A finite number, or None when absent."""
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(f"{name}: expected a number, got {shown(value)}", pointer(*at, name))
    return float(value)


def fraction(value: Any, field: str, what: str) -> float:
    """A percentage ("99%", 99.5, "0.5%") as a fraction 0–1."""
    try:
        return parse_percent(value) / 10_000
    except ValueError as error:
        raise Invalid(f"{what}: {error}", field) from None


def percent_field(parameters: Mapping[str, Any], name: str, default: Any = MISSING) -> float:
    value = parameters.get(name, default)
    if value is MISSING:
        raise Invalid(f"{name} is required", pointer(name))
    return fraction(value, pointer(name), name)


def duration(parameters: Mapping[str, Any], name: str, default: Any = MISSING, *, minimum: float = 0.0) -> float:
    """A duration in seconds, at least `minimum`."""
    value = parameters.get(name, default)
    if value is MISSING:
        raise Invalid(f"{name} is required", pointer(name))
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise Invalid(f"{name}: {error}", pointer(name)) from None
    if seconds < minimum:
        raise Invalid(f"{name}: expected at least {minimum:g}s, got {shown(value)}", pointer(name))
    return seconds


def optional_duration(parameters: Mapping[str, Any], name: str) -> float | None:
    return None if parameters.get(name) is None else duration(parameters, name)
