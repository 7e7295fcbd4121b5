"""Label and field selectors as the API server reads them (k8s.io/apimachinery's labels.Parse and
fields.ParseSelector): equality (`a=b`, `a==b`, `a!=b`), set-based (`a in (x,y)`, `a notin (x)`), existence
(`a`, `!a`), `a>1`/`a<1`, requirements joined by commas (and). A selector that does not parse is a 400
BadRequest with the parser's words; a field the resource does not index is 400 "field label not supported".
Also the other way: a LabelSelector object (matchLabels, matchExpressions) as the string a Scale shows."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request

_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_OPERATORS = ("==", "!=", "=", ">", "<")


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label (or annotation) key, or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _PREFIX.match(prefix)):
        return ("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character")
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
                "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _VALUE.match(value):
        return ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
                "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
                "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
    return None


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str           # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        try:
            number, bound = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return number > bound if self.operator == ">" else number < bound


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(requirement.matches(labels or {}) for requirement in self.requirements)


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _parse_error(message: str) -> ApiError:
    return bad_request(f"unable to parse requirement: {message}")


def _checked_key(key: str) -> str:
    problem = label_key_problem(key)
    if problem is not None:
        raise _parse_error(f'<nil>: Invalid value: "{key}": {problem}')
    return key


def _checked_value(key: str, value: str) -> str:
    problem = label_value_problem(value)
    if problem is not None:
        raise _parse_error(f'values[0][{key}]: Invalid value: "{value}": {problem}')
    return value


_SET = re.compile(r"^\s*([^\s!=<>(),]+)\s+(in|notin)\s*\(([^()]*)\)\s*$")


def parse_label_selector(text: str | None) -> LabelSelector:
    """A label selector string as the API server parses it; 400 BadRequest when it does not parse."""
    if text is None or not text.strip():
        return LabelSelector()
    requirements = []
    for part in _split_requirements(text):
        stripped = part.strip()
        if not stripped:
            raise _parse_error("found '', expected: !, identifier, or 'end of string'")
        match = _SET.match(stripped)
        if match:
            key = _checked_key(match.group(1))
            values = tuple(value.strip() for value in match.group(3).split(","))
            if values == ("",):
                values = ()
            for value in values:
                _checked_value(key, value)
            if match.group(2) == "in" and not values:
                raise _parse_error("values: Required value: for 'in', 'notin' operators, values set can't be empty")
            requirements.append(Requirement(key, match.group(2), values))
            continue
        if stripped.startswith("!"):
            key = stripped[1:].strip()
            if any(op in key for op in _OPERATORS) or " " in key:
                raise _parse_error(f"found '{key}', expected: identifier")
            requirements.append(Requirement(_checked_key(key), "!"))
            continue
        for operator in _OPERATORS:
            if operator in stripped:
                key, _, value = stripped.partition(operator)
                key, value = key.strip(), value.strip()
                if not key:
                    raise _parse_error(f"found '{operator}', expected: !, identifier, or 'end of string'")
                if " " in key or " " in value:
                    raise _parse_error(f"found '{value.split()[-1] if value else key}', expected: ',' or "
                                       "'end of string'")
                if operator in (">", "<"):
                    if not re.fullmatch(r"-?\d+", value):
                        raise _parse_error(f'values[0]: Invalid value: "{value}": for \'Gt\', \'Lt\' operators, '
                                           "the value must be an integer")
                    requirements.append(Requirement(_checked_key(key), operator, (value,)))
                else:
                    normalized = "=" if operator == "==" else operator
                    requirements.append(Requirement(_checked_key(key), normalized, (_checked_value(key, value),)))
                break
        else:
            if " " in stripped or "(" in stripped or ")" in stripped:
                raise _parse_error(f"found '{stripped.split()[-1]}', expected: in, notin, =, ==, !=, gt, lt")
            requirements.append(Requirement(_checked_key(stripped), "exists"))
    return LabelSelector(tuple(requirements))


def selector_from_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A LabelSelector object (matchLabels and matchExpressions) as requirements."""
    requirements: list[Requirement] = []
    if not selector:
        return LabelSelector()
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        requirements.append(Requirement(key, "=", (value,)))
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expression in selector.get("matchExpressions") or []:
        requirements.append(Requirement(expression["key"], operators[expression["operator"]],
                                        tuple(sorted(expression.get("values") or ()))))
    return LabelSelector(tuple(requirements))


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector object as the API server writes it (metav1.FormatLabelSelector): sorted by key."""
    parts = []
    for requirement in sorted(selector_from_object(selector).requirements, key=lambda r: r.key):
        if requirement.operator == "=":
            parts.append(f"{requirement.key}={requirement.values[0]}")
        elif requirement.operator in ("in", "notin"):
            parts.append(f"{requirement.key} {requirement.operator} ({','.join(requirement.values)})")
        elif requirement.operator == "exists":
            parts.append(requirement.key)
        else:
            parts.append(f"!{requirement.key}")
    return ",".join(parts)


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[tuple[str, bool, str], ...] = ()     # (field, equal, value)

    def matches(self, fields: Callable[[str], str]) -> bool:
        return all((fields(field) == value) == equal for field, equal, value in self.requirements)


def parse_field_selector(text: str | None, supported: tuple[str, ...]) -> FieldSelector:
    """A field selector over the fields the resource indexes (`supported`); 400 BadRequest otherwise."""
    if text is None or not text.strip():
        return FieldSelector()
    requirements = []
    for part in text.split(","):
        for operator, equal in (("!=", False), ("==", True), ("=", True)):
            if operator in part:
                field, _, value = part.partition(operator)
                field = field.strip()
                if field not in supported:
                    raise bad_request(f'field label not supported: {field}')
                requirements.append((field, equal, value.strip()))
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
    return FieldSelector(tuple(requirements))
