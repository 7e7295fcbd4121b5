"""Which of a gateway's conditioned routes a request can match, found without trying each one of them.

Most conditions require one plain fact of the request: its path is /x, or starts with /x; its host, its method,
a header or a cookie equals a value. That is the condition itself, or one operand of its top-level `and`. A
route whose condition requires a fact can only match requests that have it, so `RouteIndex` files the route
under that fact (the most selective one when its condition requires several); a route whose condition requires
none (an `or`, a regex, a browser, a negation) is a candidate for every request. For a request, the index
gathers the candidates of its facts: one dict lookup for the path, the host and the method, one per header or
cookie name that some condition compares, and one per distinct length of the path prefixes. It hands them
back in the routes' order, so the first candidate whose whole condition matches is the route a scan of every
route would have found: first-match order and condition strength keep their meaning exactly.

The index reads a fact with the same accessor as the condition's own check and compares by the same string
equality (a dict lookup), so it never disagrees with the condition. Below INDEX_FROM conditioned routes a
plain scan costs less than the lookups, and the route table builds no index.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from gateway.routing.conditions import (COOKIE, EQUALS, HEADER, HOST, METHOD, PATH, PREFIX, And, Check, Node)
from gateway.routing.request import RequestView

INDEX_FROM = 8          # conditioned routes in a gateway from which it is looked up rather than scanned

Entry = TypeVar("Entry")
Positions = tuple[int, ...]

# The facts an index knows, most selective first: a route requiring several is filed under the first kind.
_PATH, _HOST, _HEADER, _COOKIE, _PREFIX, _METHOD = range(6)
_EQUALITY_KINDS = {PATH: _PATH, HOST: _HOST, METHOD: _METHOD, HEADER: _HEADER, COOKIE: _COOKIE}
# How the request gives a named fact: exactly as the condition's own check reads it.
_NAMED_READERS: dict[int, Callable[[RequestView, str], str | None]] = {
    _HEADER: RequestView.header, _COOKIE: RequestView.cookie}


def required_fact(node: Node) -> tuple[int, str | None, str] | None:
    """(kind, header or cookie name, value) of the most selective fact the condition requires, or None."""
    checks = node.operands if isinstance(node, And) else (node,)
    facts = [fact for fact in map(_fact, checks) if fact is not None]
    if not facts:
        return None
    # the most selective kind; among path prefixes the longest
    return min(facts, key=lambda fact: (fact[0], -len(fact[2])))


def _fact(node: Node) -> tuple[int, str | None, str] | None:
    if not isinstance(node, Check) or node.negated or not isinstance(node.value, str):
        return None
    if node.op == EQUALS:
        kind = _EQUALITY_KINDS.get(node.subject)
        if kind is not None:
            return kind, node.name, node.value
    elif node.op == PREFIX and node.subject == PATH:
        return _PREFIX, None, node.value
    return None


class RouteIndex(Generic[Entry]):
    """The candidates among `entries` (in their order) for a request; `conditions[i]` is entry i's condition."""

    def __init__(self, entries: Sequence[Entry], conditions: Sequence[Node]) -> None:
        self._entries = tuple(entries)
        everywhere: list[int] = []
        filed: dict[tuple[int, str | None], dict[str, list[int]]] = {}     # (kind, name) -> value -> positions
        for position, node in enumerate(conditions):
            fact = required_fact(node)
            if fact is None:
                everywhere.append(position)
            else:
                kind, name, value = fact
                filed.setdefault((kind, name), {}).setdefault(value, []).append(position)

        def table(kind: int, name: str | None = None) -> dict[str, Positions]:
            return {value: tuple(found) for value, found in filed.get((kind, name), {}).items()}
        self._everywhere: Positions = tuple(everywhere)
        self._everywhere_entries = tuple(self._entries[i] for i in everywhere)
        self._paths, self._hosts, self._methods = table(_PATH), table(_HOST), table(_METHOD)
        self._prefixes = table(_PREFIX)
        self._prefix_lengths = tuple(sorted({len(value) for value in self._prefixes}))
        self._named = tuple((_NAMED_READERS[kind], name, table(kind, name)) for kind, name in filed
                            if kind in _NAMED_READERS and name is not None)
        self.reads_path = bool(self._paths or self._prefixes)

    def candidates(self, request: RequestView) -> Sequence[Entry]:
        """The entries whose condition `request` may satisfy, in order: no other entry's condition can."""
        found: list[int] = []
        extend = found.extend
        if self.reads_path:
            path = request.path
            hit = self._paths.get(path)
            if hit:
                extend(hit)
            if self._prefix_lengths:
                prefixes = self._prefixes
                size = len(path)
                for length in self._prefix_lengths:
                    if length > size:
                        break
                    hit = prefixes.get(path[:length])
                    if hit:
                        extend(hit)
        if self._hosts:
            hit = self._hosts.get(request.host)
            if hit:
                extend(hit)
        if self._methods:
            hit = self._methods.get(request.method)
            if hit:
                extend(hit)
        for read, name, values in self._named:
            value = read(request, name)
            if value is not None:
                hit = values.get(value)
                if hit:
                    extend(hit)
        if not found:
            return self._everywhere_entries
        extend(self._everywhere)
        found.sort()
        entries = self._entries
        return [entries[position] for position in found]

