"""The built-in follow-the-sun (`workflow: follow-the-sun`): a service's instance count by the time of day in a time
zone (docs/canary.md, "Follow-the-sun").

The count is that of the latest `at` of the schedule passed in the zone's local time. It is set when the workflow
starts and whenever a time of the schedule passes; in between the service is left alone, so an SLA or a person may
scale it meanwhile. Scaling down drains (the context's `set_instances` does). Daylight saving time is the zone's:
a time skipped when the clocks go forward takes effect when they jump past it; a time that happens twice when
they go back takes effect the first time.
"""
from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from control.workflows.context import BuiltinWorkflow, WorkflowContext
from gateway.common.errors import Invalid, RequestError
from gateway.common.units import shown

from . import parameters as read
from .moments import iso

PARAMETERS = ("deployment", "cluster", "service", "timezone", "schedule")
ENTRY_FIELDS = ("at", "instances")
MAX_INSTANCES = 1000
RECHECK = 60.0              # seconds: the longest sleep, so a clock change or a failed scale is noticed
_CLOCK = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime.time
    instances: int


@dataclass(frozen=True, slots=True)
class FollowTheSunSettings:
    deployment: str
    cluster: str
    service: str
    timezone: zoneinfo.ZoneInfo
    schedule: tuple[Entry, ...]       # sorted by `at`


def read_settings(parameters: Any) -> FollowTheSunSettings:
    given = read.only_known(parameters, PARAMETERS, "follow-the-sun")
    zone_name = read.text(given, "timezone")
    try:
        zone = zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"timezone: unknown time zone {shown(zone_name)}; use an IANA name like 'Europe/Amsterdam'",
                      read.pointer("timezone")) from None
    return FollowTheSunSettings(deployment=read.text(given, "deployment"), cluster=read.text(given, "cluster"),
                                service=read.text(given, "service"), timezone=zone,
                                schedule=_schedule(given.get("schedule")))


def _schedule(value: Any) -> tuple[Entry, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(f"schedule: expected a list like [{{at: '08:00', instances: 5}}, {{at: '20:00', instances: 1}}]"
                      f", got {shown(value)}", read.pointer("schedule"))
    entries: dict[datetime.time, Entry] = {}
    for index, item in enumerate(value):
        at = ("schedule", index)
        if not isinstance(item, Mapping):
            raise Invalid(f"schedule: each entry is a mapping with at and instances, got {shown(item)}",
                          read.pointer(*at))
        unknown = [key for key in item if key not in ENTRY_FIELDS]
        if unknown:
            raise Invalid(f"{unknown[0]}: unknown field; an entry has: at, instances", read.pointer(*at, unknown[0]))
        clock = item.get("at")
        match = _CLOCK.fullmatch(clock) if isinstance(clock, str) else None
        if match is None:
            raise Invalid(f"at: expected a time of day like '08:00' (24-hour), got {shown(clock)}",
                          read.pointer(*at, "at"))
        moment = datetime.time(int(match.group(1)), int(match.group(2)))
        if moment in entries:
            raise Invalid(f"at: {clock} appears twice in the schedule", read.pointer(*at, "at"))
        entries[moment] = Entry(moment, read.whole(item, "instances", minimum=0, maximum=MAX_INSTANCES, at=at))
    return tuple(sorted(entries.values(), key=lambda entry: entry.at))


def local_instant(day: datetime.date, at: datetime.time, zone: zoneinfo.ZoneInfo) -> float:
    """When the local clock of `zone` first shows `at` on `day` (or, if it skips it, first shows a later time)."""
    wall = datetime.datetime.combine(day, at)
    first = datetime.datetime.combine(day, at, tzinfo=zone).timestamp()          # fold=0: the first of two
    if _wall(first, zone) == wall:
        return first
    # Skipped: find the instant the clock jumps past `wall` (between the two readings of the gap).
    second = datetime.datetime.combine(day, at, tzinfo=zone).replace(fold=1).timestamp()
    low, high = sorted((first, second))
    while high - low > 1:
        middle = (low + high) / 2
        if _wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return float(int(high))


def _wall(timestamp: float, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, zone).replace(tzinfo=None, fold=0)


def occurrences(settings: FollowTheSunSettings, now: float) -> list[tuple[float, Entry]]:
    """Each entry's instants from the day before `now` to the day after, in order."""
    today = datetime.datetime.fromtimestamp(now, settings.timezone).date()
    found = [(local_instant(today + datetime.timedelta(days=offset), entry.at, settings.timezone), entry)
             for offset in (-1, 0, 1, 2) for entry in settings.schedule]
    return sorted(found, key=lambda pair: pair[0])


def current_and_next(settings: FollowTheSunSettings, now: float) -> tuple[tuple[float, Entry], tuple[float, Entry]]:
    """The latest entry passed (with when it passed) and the next to come."""
    found = occurrences(settings, now)
    passed = [pair for pair in found if pair[0] <= now]
    coming = [pair for pair in found if pair[0] > now]
    return passed[-1], coming[0]


class FollowTheSun(BuiltinWorkflow):
    def __init__(self, context: WorkflowContext, parameters: Mapping[str, Any],
                 restored: Mapping[str, Any] | None = None) -> None:
        super().__init__(context, parameters, restored)
        self.settings = read_settings(parameters)
        applied = restored.get("applied_at") if restored else None
        self.applied_at: str | None = applied if isinstance(applied, str) else None     # the entry's instant
        self.reason: str | None = None

    async def run(self) -> None:
        settings = self.settings
        while True:
            now = self.context.now()
            (passed_at, entry), (next_at, coming) = current_and_next(settings, now)
            if self.applied_at != iso(passed_at):
                await self._apply(entry, passed_at)
            self.context.set_state(self._state(entry, passed_at, coming, next_at))
            await self.context.sleep(max(1.0, min(RECHECK, next_at - now)))

    async def _apply(self, entry: Entry, passed_at: float) -> None:
        settings = self.settings
        where = f"{settings.deployment}/{settings.cluster}/{settings.service}"
        tags = ["follow-the-sun:scale", f"deployments:{settings.deployment}", f"clusters:{settings.cluster}",
                f"services:{settings.service}"]
        figures = {"at": entry.at.strftime("%H:%M"), "timezone": settings.timezone.key, "instances": entry.instances}
        try:
            current = self.context.instances(settings.deployment, settings.cluster, settings.service)
            if current != entry.instances:
                await self.context.set_instances(settings.deployment, settings.cluster, settings.service,
                                                 entry.instances)
                self.context.publish(tags, {**figures, "from": current})
                self.reason = f"scaled {where} from {current} to {entry.instances} ({figures['at']} in " \
                              f"{settings.timezone.key})"
            else:
                self.reason = f"{where} already has {current} instances ({figures['at']} in {settings.timezone.key})"
        except RequestError as error:
            self.reason = f"could not scale {where} to {entry.instances}: {error.message} (trying again)"
            self.context.publish(["follow-the-sun:error", f"deployments:{settings.deployment}",
                                  f"clusters:{settings.cluster}", f"services:{settings.service}"],
                                 {**figures, "error": error.message})
            return
        self.applied_at = iso(passed_at)

    def _state(self, entry: Entry, passed_at: float, coming: Entry, next_at: float) -> dict[str, Any]:
        return {"timezone": self.settings.timezone.key,
                "local_time": datetime.datetime.fromtimestamp(self.context.now(), self.settings.timezone)
                .isoformat(timespec="seconds"),
                "current": {"at": entry.at.strftime("%H:%M"), "instances": entry.instances, "since": iso(passed_at)},
                "next": {"at": coming.at.strftime("%H:%M"), "instances": coming.instances, "from": iso(next_at)},
                "applied_at": self.applied_at, "reason": self.reason}
