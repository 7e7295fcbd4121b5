"""What one load-test process measured: per group counts, errors by kind, statuses, latency histograms and a
timeline, plus which group each sticky virtual user saw.

`Recorder` is written on the hot path (one call per finished request) and read at the end: `snapshot()` is a
plain picklable dict (histograms in HdrHistogram's compressed encoding), so the snapshots of several
processes travel over a pipe and `merge()` adds them up. Latencies are recorded in microseconds.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

from .plan import MAX_GROUPS, NO_LABEL, NO_RESPONSE, OTHER_GROUP

LOWEST_US = 1
HIGHEST_US = 3_600_000_000          # one hour: anything slower is recorded as one hour
SIGNIFICANT_FIGURES = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def _microseconds(seconds: float) -> int:
    us = int(seconds * 1_000_000)
    return LOWEST_US if us < LOWEST_US else HIGHEST_US if us > HIGHEST_US else us


class Group:
    """Everything counted for one group label."""
    __slots__ = ("name", "requests", "errors", "errors_by_kind", "statuses", "histogram", "timeline")

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.errors = 0
        self.errors_by_kind: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.histogram = new_histogram()
        self.timeline: list[int] = []

    def count(self, slot: int) -> None:
        timeline = self.timeline
        if slot >= len(timeline):
            timeline.extend([0] * (slot + 1 - len(timeline)))
        timeline[slot] += 1

    def error(self, kind: str) -> None:
        self.errors += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1


class Recorder:
    """Counters of one process. `start` is the process's time origin (time.perf_counter())."""

    def __init__(self, start: float, interval: float, sticky: bool = False) -> None:
        self.start = start
        self.interval = interval
        self.sticky = sticky
        self.requests = 0
        self.errors = 0
        self.errors_timeline: list[int] = []
        self._groups: dict[bytes | int | str | None, Group] = {}
        self._named: dict[str, Group] = {}
        self.first_group: dict[int, str] = {}            # sticky: user -> the first group it saw
        self.other_groups: dict[int, set[str]] = {}      # sticky: user -> further groups it saw

    # -- the hot path ---------------------------------------------------------------------------------------
    def response(self, label: bytes | int | None, status: int, latency: float, now: float, user: int = -1) -> None:
        """A complete response; `label` is the grouping value: header value or body match (None when the
        response has none), or the status code when grouping by status."""
        group = self._groups.get(label)
        if group is None:
            group = self._group_for(label)
        self.requests += 1
        group.requests += 1
        group.statuses[status] = group.statuses.get(status, 0) + 1
        group.histogram.record_value(_microseconds(latency))
        slot = int((now - self.start) / self.interval)
        group.count(slot)
        if status >= 400:
            group.error("http_5xx" if status >= 500 else "http_4xx")
            self._error(slot)
        if self.sticky and user >= 0 and label is not None:
            self._saw(user, group.name)

    def failure(self, kind: str, latency: float, now: float) -> None:
        """A request that got no (complete) response: kind is connect, timeout, reset or protocol."""
        group = self._group_for(NO_RESPONSE)
        self.requests += 1
        group.requests += 1
        group.histogram.record_value(_microseconds(latency))
        slot = int((now - self.start) / self.interval)
        group.count(slot)
        group.error(kind)
        self._error(slot)

    # -- the rest -------------------------------------------------------------------------------------------
    def _error(self, slot: int) -> None:
        self.errors += 1
        timeline = self.errors_timeline
        if slot >= len(timeline):
            timeline.extend([0] * (slot + 1 - len(timeline)))
        timeline[slot] += 1

    def _group_for(self, label: bytes | int | str | None) -> Group:
        group = self._groups.get(label)
        if group is not None:
            return group
        if label is None:
            name = NO_LABEL
        elif isinstance(label, str):
            name = label
        elif isinstance(label, int):
            name = str(label)
        else:
            name = label.decode("utf-8", "replace").strip() or NO_LABEL
        if name not in self._named and len(self._named) >= MAX_GROUPS:
            name = OTHER_GROUP
        group = self._named.get(name)
        if group is None:
            group = self._named[name] = Group(name)
        self._groups[label] = group
        return group

    def _saw(self, user: int, name: str) -> None:
        first = self.first_group.setdefault(user, name)
        if first != name:
            self.other_groups.setdefault(user, set()).add(name)

    def group_counts(self) -> dict[str, int]:
        return {name: group.requests for name, group in self._named.items()}

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "errors_timeline": list(self.errors_timeline),
            "groups": {name: {
                "requests": group.requests,
                "errors": group.errors,
                "errors_by_kind": dict(group.errors_by_kind),
                "statuses": dict(group.statuses),
                "hdr": group.histogram.encode(),
                "timeline": list(group.timeline),
            } for name, group in self._named.items()},
            "first_group": dict(self.first_group),
            "other_groups": {user: sorted(names) for user, names in self.other_groups.items()},
        }


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Adds up the snapshots of several processes (their virtual users are disjoint); histograms stay
    encoded in the result, and `merged_histogram` decodes one."""
    merged: dict[str, Any] = {"requests": 0, "errors": 0, "errors_timeline": [], "groups": {},
                              "first_group": {}, "other_groups": {}}
    histograms: dict[str, HdrHistogram] = {}
    for snapshot in snapshots:
        merged["requests"] += snapshot["requests"]
        merged["errors"] += snapshot["errors"]
        _add_series(merged["errors_timeline"], snapshot["errors_timeline"])
        for name, data in snapshot["groups"].items():
            into = merged["groups"].setdefault(name, {"requests": 0, "errors": 0, "errors_by_kind": {},
                                                      "statuses": {}, "timeline": []})
            into["requests"] += data["requests"]
            into["errors"] += data["errors"]
            add_counts(into["errors_by_kind"], data["errors_by_kind"])
            add_counts(into["statuses"], data["statuses"])
            _add_series(into["timeline"], data["timeline"])
            histogram = histograms.get(name)
            if histogram is None:
                histogram = histograms[name] = new_histogram()
            histogram.decode_and_add(data["hdr"])
        merged["first_group"].update(snapshot["first_group"])
        merged["other_groups"].update(snapshot["other_groups"])
    for name, histogram in histograms.items():
        merged["groups"][name]["hdr"] = histogram.encode()
    return merged


def decode(encoded: bytes | str) -> HdrHistogram:
    histogram = new_histogram()
    histogram.decode_and_add(encoded)
    return histogram


def add_counts(into: dict, counts: dict) -> None:
    """Adds `counts` (key -> number) into `into`."""
    for key, value in counts.items():
        into[key] = into.get(key, 0) + value


def _add_series(into: list[int], series: list[int]) -> None:
    if len(series) > len(into):
        into.extend([0] * (len(series) - len(into)))
    for index, value in enumerate(series):
        into[index] += value
