"""The history of one measured scope (a gateway, a route's remainder, a target), in bounded memory: what it
received second by second, at 1 s resolution for the last minute and in coarser buckets further back, up to
the aggregation window.

A sample is what happened in one second: the responses in each latency bucket, by status class, the upstream
errors (`INTS` whole numbers, kept in `array('I')`) and the sum of the response times (a float, `array('d')`).
Samples go into tier 0, a ring of 1 s buckets. Each coarser tier is a ring of buckets `step` seconds long,
filled from the tier below once a bucket of it is complete (so it costs nothing per second):

    tier   step    kept for          (a window of 1 h keeps 61 + 41 + 31 buckets of 92 bytes: 12 KB)
    0      1 s     the last minute
    1      15 s    the last 10 minutes
    2      2 min   the last 2 hours
    3      20 min  the rest of the window

The rings are allocated on a series' first sample, so a scope that never received anything costs a few
hundred bytes. `total(start)` sums everything after second `start`, taking each part from the finest tier
that still holds it: a window is exact to the second up to a minute, and further back starts on a bucket
boundary of the tier it reaches into (`window_start` says where; the aggregator reports the seconds covered).
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass

from gateway import LATENCY_BUCKETS

BUCKETS = len(LATENCY_BUCKETS) + 1           # the histogram's buckets, the last one +Inf
CLASSES = 5                                  # 1xx … 5xx
ERRORS = BUCKETS + CLASSES                   # index of the upstream errors in a sample
INTS = ERRORS + 1                            # whole numbers per sample

# (step, reach): a tier's buckets are `step` seconds long and serve windows up to `reach` seconds (None: any).
TIER_STEPS: tuple[tuple[int, int | None], ...] = ((1, 60), (15, 600), (120, 7200), (1200, None))


@dataclass(frozen=True, slots=True)
class Tier:
    step: int           # seconds per bucket
    slots: int          # buckets kept


def tiers_for(window: int) -> tuple[Tier, ...]:
    """The tiers that keep `window` seconds (at least 1): each coarser one only when the window reaches past
    the one before; each keeps its reach (or the window) plus one bucket for a start that is not aligned."""
    tiers = []
    for step, reach in TIER_STEPS:
        span = window if reach is None else min(window, reach)
        tiers.append(Tier(step, -(-span // step) + 1))
        if reach is None or window <= reach:
            break
    return tuple(tiers)


def window_start(now: int, window: int) -> int:
    """Where a window of `window` seconds ending at second `now` starts: `now - window` up to a minute, else
    the first boundary after it of the coarsest tier it reaches into (so it covers a little less, never more)."""
    start = now - window
    for step, reach in TIER_STEPS:
        if reach is None or window <= reach:
            return -(-start // step) * step
    raise AssertionError("the last tier reaches any window")


class Totals:
    """What a set of series received over a window: latency buckets, classes and upstream errors (`ints`) and
    the sum of response times in seconds."""
    __slots__ = ("ints", "seconds")

    def __init__(self) -> None:
        self.ints = [0] * INTS
        self.seconds = 0.0

    @property
    def requests(self) -> int:
        return sum(self.ints[:BUCKETS])


_ZEROS = array("I", bytes(4 * INTS))


class _Ring:
    """`slots` buckets of one tier: bucket k (seconds ((k-1)*step, k*step]) lives in slot k % slots; `newest` is
    the newest bucket held, and the ring holds buckets (newest - slots, newest]."""
    __slots__ = ("step", "slots", "ints", "seconds", "newest")

    def __init__(self, tier: Tier) -> None:
        self.step = tier.step
        self.slots = tier.slots
        self.ints = array("I", bytes(4 * INTS * tier.slots))
        self.seconds = array("d", bytes(8 * tier.slots))
        self.newest: int | None = None

    def advance(self, bucket: int) -> None:
        """Make `bucket` the newest, emptying the slots of the buckets skipped on the way."""
        newest = self.newest
        if newest is not None and bucket <= newest:
            return
        first = bucket if newest is None else max(newest + 1, bucket - self.slots + 1)
        for skipped in range(first, bucket + 1):
            slot = skipped % self.slots
            self.ints[slot * INTS:(slot + 1) * INTS] = _ZEROS
            self.seconds[slot] = 0.0
        self.newest = bucket

    def add(self, bucket: int, ints: list[int], seconds: float) -> None:
        """Add to `bucket`, the newest (advance first)."""
        slot = bucket % self.slots
        offset = slot * INTS
        values = self.ints
        for index, value in enumerate(ints):
            if value:
                values[offset + index] += value
        self.seconds[slot] += seconds

    def add_bucket(self, bucket: int, into: list[int]) -> float:
        """Add what bucket `bucket` (held) received to `into`; return its seconds."""
        slot = bucket % self.slots
        offset = slot * INTS
        values = self.ints
        for index in range(INTS):
            into[index] += values[offset + index]
        return self.seconds[slot]

    def total(self, after: int, until: int, into: Totals) -> None:
        """Add the buckets ending after second `after` and at the latest at second `until`, of those held."""
        newest = self.newest
        if newest is None:
            return
        first = max(after // self.step + 1, newest - self.slots + 1)
        last = min(until // self.step, newest)
        for bucket in range(first, last + 1):
            into.seconds += self.add_bucket(bucket, into.ints)


class Series:
    """The samples of one scope, second by second, in tiers of coarser buckets (module docstring)."""
    __slots__ = ("tiers", "rings", "folded")

    def __init__(self, tiers: tuple[Tier, ...]) -> None:
        self.tiers = tiers
        self.rings: list[_Ring] | None = None       # allocated with the first sample
        self.folded = [0] * len(tiers)               # per coarser tier: its newest complete bucket

    @property
    def newest(self) -> int | None:
        """The second of the newest sample (None before the first)."""
        return None if self.rings is None else self.rings[0].newest

    def add(self, second: int, ints: list[int], seconds: float) -> None:
        """Record what the scope received in second `second` (never older than the newest sample so far)."""
        rings = self.rings
        if rings is None:
            rings = self.rings = [_Ring(tier) for tier in self.tiers]
            for tier_index in range(1, len(rings)):
                self.folded[tier_index] = (second - 1) // rings[tier_index].step
        elif len(rings) > 1 and second > rings[0].newest:  # type: ignore[operator]
            self._fold_before(second)
        ring = rings[0]
        ring.advance(second)
        ring.add(second, ints, seconds)

    def _fold_before(self, second: int) -> None:
        """Every bucket of the coarser tiers that ends before `second` is complete: fill it from the tier below
        (only those that can hold anything: the lower tier's newest bucket bounds them)."""
        rings = self.rings
        assert rings is not None
        for tier_index in range(1, len(rings)):
            lower, upper = rings[tier_index - 1], rings[tier_index]
            ratio = upper.step // lower.step
            complete = (second - 1) // upper.step
            folded = self.folded[tier_index]
            if complete <= folded:
                continue
            if lower.newest is not None:
                holding = -(-lower.newest // ratio)          # the upper bucket of the lower tier's newest
                for bucket in range(folded + 1, min(complete, holding) + 1):
                    ints = [0] * INTS
                    seconds = 0.0
                    for below in range(max((bucket - 1) * ratio + 1, lower.newest - lower.slots + 1),
                                       min(bucket * ratio, lower.newest) + 1):
                        seconds += lower.add_bucket(below, ints)
                    if seconds or any(ints):
                        upper.advance(bucket)
                        upper.add(bucket, ints, seconds)
            self.folded[tier_index] = complete

    def total(self, start: int, into: Totals, until: int | None = None) -> None:
        """Add everything received after second `start` (a `window_start`) to `into`, up to second `until`
        (default: the newest sample; a range in the past is exact where it falls on the boundaries of the
        buckets that hold it)."""
        rings = self.rings
        if rings is None:
            return
        newest = rings[0].newest
        assert newest is not None
        until = newest if until is None else min(until, newest)
        for tier_index, ring in enumerate(rings):
            held_from = (ring.newest - ring.slots) * ring.step if ring.newest is not None else start
            if tier_index == len(rings) - 1 or start >= held_from:
                ring.total(start, until, into)
                return
            boundary = self.folded[tier_index + 1] * rings[tier_index + 1].step   # the tier above holds up to here
            ring.total(max(start, boundary), until, into)
            until = min(until, boundary)
            if until <= start:
                return
