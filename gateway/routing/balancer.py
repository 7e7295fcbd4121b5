"""`SmoothWeighted`: the one weighted round-robin of the gateway, at every level (routes, then targets).

nginx's smooth weighted round-robin: each pick adds every candidate's weight to its running value, takes the
candidate with the highest value (the first one written on a tie) and subtracts the candidates' total weight
from it. With two candidates every window of consecutive picks is within one pick of the exact split; over
`sum(weights)` picks each candidate is taken exactly `weight` times.

A child is a candidate while `child.down_until <= now` (a target backed off or unhealthy, a route with no target
to serve it: see gateway.routing.table). Children of weight <= 0 are never picked. Fenced children (draining) get no
new picks; `pick_for_sticky_client` still reaches them when no unfenced child is available, for the clients a
sticky cookie ties to them. Weights and fences are fixed when the balancer is built (a route table is rebuilt
on every change); the running values belong to the balancer, so a rebuilt table starts afresh.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar


class Balanced(Protocol):
    """What the balancer reads of a child: it takes no new pick before `down_until` (0.0: it can now)."""

    @property
    def down_until(self) -> float: ...


C = TypeVar("C", bound=Balanced)


class Pick(Protocol[C]):
    """The next child available at `now` (other than `exclude`), or None."""

    def __call__(self, now: float, exclude: C | None = None) -> C | None: ...


class SmoothWeighted(Generic[C]):
    """Smooth weighted round-robin over a fixed sequence of (child, weight, fenced).

    `pick(now, exclude=None)`: the next unfenced child available at `now` (other than `exclude`); None if
    there is none. `pick_for_sticky_client(now)`: for a client a cookie ties to this balancer's owner, an
    unfenced child first, else a fenced one. Both are bound at construction to the cheapest code for the
    children (one Python frame per pick): with a single unfenced child, whose running value stays 0, no
    arithmetic at all; without fenced children, the sticky client's pick is `pick`.
    """

    __slots__ = ("children", "pick", "pick_for_sticky_client", "_open", "_fenced", "_only")

    def __init__(self, children: Iterable[tuple[C, int, bool]]) -> None:
        entries = [(child, weight, fenced) for child, weight, fenced in children if weight > 0]
        self.children: tuple[C, ...] = tuple(child for child, _, _ in entries)
        self._open = _Ring([(child, weight) for child, weight, fenced in entries if not fenced])
        self._fenced = _Ring([(child, weight) for child, weight, fenced in entries if fenced])
        self._only = self._open.children[0] if len(self._open.children) == 1 else None
        self.pick: Pick[C] = self._pick_only if self._only is not None else self._open.next
        self.pick_for_sticky_client: Pick[C] = self._pick_any if self._fenced.children else self.pick

    def _pick_only(self, now: float, exclude: C | None = None) -> C | None:
        only = self._only
        return only if only is not None and only.down_until <= now and only is not exclude else None

    def _pick_any(self, now: float, exclude: C | None = None) -> C | None:
        chosen = self.pick(now, exclude)
        return chosen if chosen is not None else self._fenced.next(now, exclude)

    def __repr__(self) -> str:
        return f"SmoothWeighted({self.children})"


class _Ring(Generic[C]):
    """Children with their weights and running values (the balancer's own): one round-robin step per `next`."""

    __slots__ = ("children", "_slots")

    def __init__(self, entries: list[tuple[C, int]]) -> None:
        self.children = tuple(child for child, _ in entries)
        self._slots = tuple(_Slot(child, weight) for child, weight in entries)

    def next(self, now: float, exclude: C | None = None) -> C | None:
        """The child with the highest running value among those available at `now` (but `exclude`)."""
        best = None
        top = 0
        total = 0
        for slot in self._slots:
            child = slot.child
            if child.down_until > now or child is exclude:
                continue
            weight = slot.weight
            value = slot.current + weight
            slot.current = value
            total += weight
            if best is None or value > top:
                best = slot
                top = value
        if best is None:
            return None
        best.current = top - total
        return best.child


class _Slot(Generic[C]):
    """A child of a ring, with its weight and running value."""

    __slots__ = ("child", "weight", "current")

    def __init__(self, child: C, weight: int) -> None:
        self.child = child
        self.weight = weight
        self.current = 0
