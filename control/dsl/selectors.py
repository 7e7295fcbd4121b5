"""VAMP's route selectors: which orchestrator services a gateway or route would reach by their labels, image,
name or id, like `label(tier)(web) and image(^magneticio/sava:.*)` (`check_selector`).

This project reads a selector, checks it as VAMP does (its operands, its boolean syntax, its regular
expressions) and keeps it on the gateway or route; it routes to the services a blueprint names, so a selector
selects nothing here.

Syntax: operands `name(RE)`, `kind(RE)`, `namespace(RE)`, `image(RE)`, `id(RE)` and `label(RE)(RE)` (a label's
name and value), combined with `and`/`&&`/`&`, `or`/`||`/`|`, `not`/`!` and parentheses. An argument is the text
up to its closing parenthesis (parentheses inside it must balance) and must be a valid regular expression.
"""
from __future__ import annotations

import re

OPERANDS = {"name": 1, "kind": 1, "namespace": 1, "image": 1, "id": 1, "label": 2}

_TOKEN = re.compile(r"\s*(?:(and\b|&&|&)|(or\b|\|\||\|)|(not\b|!)|(\()|(\))|([A-Za-z_]+)\s*(?=\())")


def check_selector(text: str) -> str:
    """The selector, stripped; ValueError naming what is wrong."""
    source = text.strip()
    if not source:
        raise ValueError("expected a selector, like label(tier)(web) or image(^magneticio/.*)")
    position = _expression(source, 0)
    if source[position:].strip():
        raise ValueError(f"invalid selector {source!r}: unexpected {source[position:].strip()!r} at position "
                         f"{position}")
    return source


def _expression(source: str, position: int) -> int:
    """An operand or a parenthesised expression, optionally negated, then `and`/`or` and another: the position
    after it."""
    for _ in range(len(source) + 1):        # each round consumes at least one operand
        position = _operand(source, position)
        match = _TOKEN.match(source, position)
        if match is None or not (match.group(1) or match.group(2)):
            return position
        position = match.end()
    raise ValueError(f"invalid selector {source!r}")


def _operand(source: str, position: int) -> int:
    match = _TOKEN.match(source, position)
    if match is None or not (match.group(3) or match.group(4) or match.group(6)):
        raise ValueError(f"invalid selector {source!r}: expected {', '.join(f'{op}(…)' for op in OPERANDS)}, "
                         f"'not' or '(' at position {position}")
    if match.group(3):
        return _operand(source, match.end())
    if match.group(4):
        position = _expression(source, match.end())
        close = _TOKEN.match(source, position)
        if close is None or not close.group(5):
            raise ValueError(f"invalid selector {source!r}: expected ')' at position {position}")
        return close.end()
    name = match.group(6)
    if name not in OPERANDS:
        raise ValueError(f"invalid selector {source!r}: unknown operand {name!r} (expected one of "
                         f"{', '.join(OPERANDS)})")
    position = match.end()
    for _ in range(OPERANDS[name]):
        position = _argument(source, position, name)
    return position


def _argument(source: str, position: int, operand: str) -> int:
    """`(RE)` at `position`: the position after its closing parenthesis."""
    if not source.startswith("(", position):
        wanted = "(NAME)(VALUE)" if operand == "label" else "(…)"
        raise ValueError(f"invalid selector {source!r}: {operand} needs {wanted}")
    depth, index = 0, position
    while index < len(source):
        depth += {"(": 1, ")": -1}.get(source[index], 0)
        if depth == 0:
            break
        index += 1
    if depth:
        raise ValueError(f"invalid selector {source!r}: '(' at position {position} is not closed")
    pattern = source[position + 1:index]
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid selector {source!r}: {operand}({pattern}) is not a valid regular expression "
                         f"({exc})") from None
    return index + 1
