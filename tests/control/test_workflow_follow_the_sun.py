"""The built-in follow-the-sun (`workflow: follow-the-sun`, docs/canary.md) on a virtual clock: the service is
scaled when a time of the schedule passes in its time zone, daylight saving time included, and left alone in
between; restarts do not scale it again; a failed scale is retried; bad parameters are refused by field."""
from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from control.workflows.builtins.follow_the_sun import FollowTheSun
from gateway.common.errors import Invalid
from tests.support.workflow_context import FakeContext

SERVICE = ("sava", "sava", "sava:1.0.0")
DAY_AND_NIGHT = [{"at": "08:00", "instances": 5}, {"at": "20:00", "instances": 1}]


def utc(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def parameters(timezone: str = "Europe/Amsterdam", schedule: list | None = None, **changes: Any) -> dict[str, Any]:
    given = {"deployment": "sava", "cluster": "sava", "service": "sava:1.0.0", "timezone": timezone,
             "schedule": DAY_AND_NIGHT if schedule is None else schedule}
    given.update(changes)
    return given


async def follow(start: str, until: str, given: dict[str, Any], instances: int = 3,
                 restored: dict[str, Any] | None = None) -> tuple[FakeContext, asyncio.Task]:
    context = FakeContext(start=utc(start), instances={SERVICE: instances})
    task = asyncio.create_task(FollowTheSun(context, given, restored).run())
    await context.run_until(task, utc(until))
    return context, task


def scalings(context: FakeContext) -> list[tuple[str, int]]:
    """(UTC time, instances) of each scale."""
    return [(datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%m-%d %H:%M"), count)
            for when, _, count in context.scaled]


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_service_is_scaled_when_each_time_of_the_schedule_passes_locally():
    context, task = await follow("2026-03-02 05:00", "2026-03-03 08:00", parameters())
    # Amsterdam is UTC+1 in March before the clocks change: 08:00 local is 07:00 UTC
    assert scalings(context) == [("03-02 05:00", 1), ("03-02 07:00", 5), ("03-02 19:00", 1), ("03-03 07:00", 5)]
    scale = context.tagged("follow-the-sun:scale")
    assert [event.value["from"] for event in scale] == [3, 1, 5, 1]
    assert set(scale[1].tags) >= {"deployments:sava", "clusters:sava", "services:sava:1.0.0", "workflows:release"}
    assert scale[1].value == {"at": "08:00", "timezone": "Europe/Amsterdam", "instances": 5, "from": 1}
    state = context.state
    assert state["current"] == {"at": "08:00", "instances": 5, "since": "2026-03-03T07:00:00.000Z"}
    assert state["next"]["at"] == "20:00" and state["next"]["from"] == "2026-03-03T19:00:00.000Z"
    assert state["local_time"].startswith("2026-03-03T09:00") and state["local_time"].endswith("+01:00")
    await stop(task)


@pytest.mark.parametrize("timezone, expected", [
    ("Europe/Amsterdam", 5),         # 15:00
    ("America/New_York", 5),         # 09:00
    ("Asia/Tokyo", 1),               # 23:00
    ("Australia/Sydney", 1),         # 01:00 the next day
    ("UTC", 5),                      # 14:00
])
async def test_the_count_is_that_of_the_time_zone(timezone, expected):
    context, task = await follow("2026-03-02 14:00", "2026-03-02 14:01", parameters(timezone), instances=0)
    assert context.counts[SERVICE] == expected
    await stop(task)


async def test_the_clocks_going_forward_move_the_scaling_with_them():
    context, task = await follow("2026-03-28 00:00", "2026-03-30 00:00", parameters())
    # 29 March 2026, 02:00 CET becomes 03:00 CEST: 08:00 local is 07:00 UTC before, 06:00 UTC after
    assert scalings(context) == [("03-28 00:00", 1), ("03-28 07:00", 5), ("03-28 19:00", 1),
                                 ("03-29 06:00", 5), ("03-29 18:00", 1)]
    await stop(task)


async def test_a_time_the_clocks_skip_takes_effect_when_they_jump_past_it():
    schedule = [{"at": "02:30", "instances": 4}, {"at": "12:00", "instances": 2}]
    context, task = await follow("2026-03-28 12:00", "2026-03-29 12:00", parameters(schedule=schedule), instances=2)
    # 02:30 does not exist on 29 March in Amsterdam: it applies at the jump, 01:00 UTC (03:00 CEST)
    assert scalings(context) == [("03-29 01:00", 4), ("03-29 10:00", 2)]
    await stop(task)


async def test_a_time_the_clocks_repeat_takes_effect_once():
    schedule = [{"at": "02:30", "instances": 4}, {"at": "12:00", "instances": 2}]
    context, task = await follow("2026-10-24 12:00", "2026-10-25 12:00", parameters(schedule=schedule), instances=2)
    # 25 October 2026, 03:00 CEST becomes 02:00 CET: 02:30 happens at 00:30 UTC and again at 01:30 UTC
    assert scalings(context) == [("10-25 00:30", 4), ("10-25 11:00", 2)]
    await stop(task)


async def test_between_the_times_of_the_schedule_the_service_is_left_alone():
    context = FakeContext(start=utc("2026-03-02 06:00"), instances={SERVICE: 1})
    context.at(utc("2026-03-02 09:00"), lambda: context.counts.__setitem__(SERVICE, 7))     # an SLA scaled it
    task = asyncio.create_task(FollowTheSun(context, parameters()).run())
    await context.run_until(task, utc("2026-03-02 18:00"))
    assert context.counts[SERVICE] == 7 and scalings(context) == [("03-02 07:00", 5)]
    await context.run_until(task, utc("2026-03-02 20:00"))
    assert context.counts[SERVICE] == 1
    await stop(task)


async def test_a_restart_within_the_same_time_of_the_schedule_scales_nothing():
    context, task = await follow("2026-03-02 06:00", "2026-03-02 08:00", parameters(), instances=1)
    await stop(task)
    restored = context.state
    context.counts[SERVICE] = 7                       # scaled by hand meanwhile
    task = asyncio.create_task(FollowTheSun(context, parameters(), restored).run())
    await context.run_until(task, utc("2026-03-02 10:00"))
    assert context.counts[SERVICE] == 7 and scalings(context) == [("03-02 07:00", 5)]
    await stop(task)


async def test_a_failed_scale_is_retried_within_a_minute():
    context = FakeContext(start=utc("2026-03-02 07:59"), instances={})
    context.at(utc("2026-03-02 08:10"), lambda: context.counts.__setitem__(SERVICE, 1))   # deployed at last
    task = asyncio.create_task(FollowTheSun(context, parameters()).run())
    await context.run_until(task, utc("2026-03-02 08:20"))
    errors = context.tagged("follow-the-sun:error")
    assert errors and "no service sava/sava/sava:1.0.0" in errors[0].value["error"]
    assert scalings(context) == [("03-02 08:10", 5)]
    assert all(later.timestamp - earlier.timestamp <= 60 for earlier, later in zip(errors, errors[1:]))
    await stop(task)


INVALID = [
    ({"timezone": "Mars/Olympus_Mons"}, "/parameters/timezone", "unknown time zone"),
    ({"timezone": "../../etc/passwd"}, "/parameters/timezone", "unknown time zone"),
    ({"timezone": None}, "/parameters/timezone", "timezone is required"),
    ({"schedule": []}, "/parameters/schedule", "expected a list"),
    ({"schedule": [{"at": "25:00", "instances": 1}]}, "/parameters/schedule/0/at", "time of day"),
    ({"schedule": [{"at": "8am", "instances": 1}]}, "/parameters/schedule/0/at", "time of day"),
    ({"schedule": [{"at": "08:00", "instances": 1}, {"at": "8:00", "instances": 2}]},
     "/parameters/schedule/1/at", "appears twice"),
    ({"schedule": [{"at": "08:00", "instances": -1}]}, "/parameters/schedule/0/instances", "whole number"),
    ({"schedule": [{"at": "08:00"}]}, "/parameters/schedule/0/instances", "instances is required"),
    ({"schedule": [{"at": "08:00", "instances": 1, "scale": 2}]}, "/parameters/schedule/0/scale", "unknown"),
    ({"deployment": None}, "/parameters/deployment", "deployment is required"),
    ({"zone": "UTC"}, "/parameters/zone", "unknown field"),
]


@pytest.mark.parametrize("changes, field, message", INVALID, ids=[case[1] + " " + case[2] for case in INVALID])
def test_bad_parameters_are_refused_with_the_field(changes, field, message):
    given = {key: value for key, value in parameters(**changes).items() if value is not None}
    with pytest.raises(Invalid) as refused:
        FollowTheSun(FakeContext(), given)
    assert refused.value.field == field and message in refused.value.message
