"""The `workflows` artifact as the DSL reads it: a script (`breed:`) or a built-in (`workflow:` with
`parameters:` the built-in checks when the workflow is read), never both; its schedules; and the ISO 8601
periods of time schedules with their calendar arithmetic."""
from __future__ import annotations

import datetime

import pytest

from control import dsl
from control.dsl.model import Reference, Schedule, Workflow
from control.dsl.units import Period, parse_period
from control.workflows.builtins import BUILTINS
from control.workflows.context import BuiltinWorkflow
from gateway.common.errors import Invalid

HEARTBEAT = {"name": "alive", "schedule": "daemon", "workflow": "heartbeat", "parameters": {"interval": "5s"}}


def read(data: dict) -> Workflow:
    workflow = dsl.read("workflows", data)
    assert isinstance(workflow, Workflow)
    return workflow


def refusal(data: dict) -> dsl.DslError:
    with pytest.raises(dsl.DslError) as caught:
        dsl.read("workflows", data)
    return caught.value


def test_a_built_in_is_read_with_its_parameters_and_written_back_the_same():
    workflow = read(HEARTBEAT)
    assert workflow == Workflow("alive", None, Schedule("daemon"), workflow="heartbeat",
                                parameters={"interval": "5s"})
    document = dsl.to_dict(workflow)
    assert document == {"kind": "workflows", **HEARTBEAT}
    assert read(document) == workflow


def test_a_script_is_read_as_before_and_its_long_form_has_no_built_in_fields():
    workflow = read({"name": "report", "breed": "reporter", "schedule": {"event": ["deployments"]},
                     "environment_variables": {"WINDOW": "30s"}})
    assert workflow.breed == Reference("breed", "reporter") and workflow.workflow is None
    document = dsl.to_dict(workflow)
    assert "workflow" not in document and "parameters" not in document
    assert read(document) == workflow


@pytest.mark.parametrize("schedule, expected", [
    ("daemon", Schedule("daemon")),
    ({"event": {"tags": ["deployments:sava", "synchronization"]}},
     Schedule("event", tags=("deployments:sava", "synchronization"))),
    ({"event": ["archive:update"]}, Schedule("event", tags=("archive:update",))),       # VAMP's own form
    ({"event": "archive"}, Schedule("event", tags=("archive",))),
    ({"time": {"period": "pt10m", "start": "2030-01-31T12:00:00Z", "repeat": 3}},
     Schedule("time", period="PT10M", start="2030-01-31T12:00:00+00:00", repeat=3)),
    ({"time": "P1D"}, Schedule("time", period="P1D")),
])
def test_every_schedule_form_is_read(schedule, expected):
    assert read({**HEARTBEAT, "schedule": schedule}).schedule == expected


@pytest.mark.parametrize("changes, path, words", [
    ({"breed": "reporter"}, "workflow", "give breed (a script) or workflow (a built-in), not both"),
    ({"workflow": None}, "breed", "required field missing: what to run"),
    ({"workflow": "no-such-thing"}, "workflow", "expected a built-in workflow, one of"),
    ({"parameters": {"interval": "soon"}}, "parameters.interval", "expected a duration"),
    ({"parameters": {"interval": "5s", "colour": "red"}}, "parameters.colour", "unknown parameter 'colour'"),
    ({"parameters": {"beats": 0}}, "parameters.beats", "expected a whole number from 1"),
    ({"parameters": ["interval"]}, "parameters", "expected a mapping of the built-in's parameters"),
    ({"environment_variables": {"A": "1"}}, "environment_variables", "is for a script (breed:)"),
    ({"scale": 2}, "scale", "is for a script (breed:)"),
    ({"schedule": {"time": {"period": "PT0.5S"}}}, "schedule.time.period", "at least 1 second"),
    ({"schedule": {"time": {"period": "every day"}}}, "schedule.time.period", "an ISO 8601 period"),
    ({"schedule": {"time": {"start": "now"}}}, "schedule.time.period", "required field missing: period"),
    ({"schedule": {"time": {"period": "P1D", "repeat": 0}}}, "schedule.time.repeat", "from 1"),
    ({"schedule": {"event": {"tags": []}}}, "schedule.event.tags", "at least one tag"),
    ({"schedule": "hourly"}, "schedule", "expected daemon"),
])
def test_a_bad_workflow_is_refused_naming_the_field(changes, path, words):
    error = refusal({**HEARTBEAT, **changes})
    assert error.path == path and words in error.expected, str(error)


def test_a_script_takes_no_parameters():
    error = refusal({"name": "report", "breed": "reporter", "schedule": "daemon", "parameters": {"a": 1}})
    assert error.path == "parameters" and "for a built-in workflow" in error.expected


class Stepper(BuiltinWorkflow):
    """Refuses a step that is not a percentage, pointing at it as a built-in does: /parameters/steps/INDEX."""

    def __init__(self, context, parameters, restored=None):
        super().__init__(context, parameters, restored)
        for index, step in enumerate(parameters.get("steps", [])):
            if not str(step).endswith("%"):
                raise Invalid(f"expected a percentage, got {step!r}", f"/parameters/steps/{index}")

    async def run(self):
        pass


def test_a_built_in_s_refusal_points_into_its_parameters_lists_by_index(monkeypatch):
    monkeypatch.setitem(BUILTINS, "stepper", Stepper)
    error = refusal({"name": "s", "schedule": "daemon", "workflow": "stepper", "parameters": {"steps": ["5%", 7]}})
    assert (error.location, str(error)) == (("parameters", "steps", 1),
                                            "workflow 's', parameters.steps[1]: expected a percentage, got 7")
    assert read({"name": "s", "schedule": "daemon", "workflow": "stepper",
                 "parameters": {"steps": ["5%"]}}).parameters == {"steps": ["5%"]}


@pytest.mark.parametrize("text, period", [
    ("P1Y2M3DT4H5M6S", Period(months=14, days=3, seconds=4 * 3600 + 5 * 60 + 6)),
    ("P2W", Period(days=14)),
    ("PT1.5S", Period(seconds=1.5)),
    ("pt10m", Period(seconds=600)),
])
def test_periods_keep_their_calendar_parts(text, period):
    assert parse_period(text) == period


@pytest.mark.parametrize("text", ["P", "PT", "1D", "P1H", "PT1D", "P-1D", "", "PT0S", 5])
def test_what_is_not_a_period_is_refused(text):
    with pytest.raises(ValueError):
        parse_period(text)


def test_a_month_after_the_31st_is_the_month_s_last_day_and_never_drifts():
    start = datetime.datetime(2030, 1, 31, 12, tzinfo=datetime.UTC)
    monthly = parse_period("P1M")
    assert monthly.after(start, 1) == datetime.datetime(2030, 2, 28, 12, tzinfo=datetime.UTC)
    assert monthly.after(start, 2) == datetime.datetime(2030, 3, 31, 12, tzinfo=datetime.UTC)
    assert parse_period("P1Y").after(datetime.datetime(2028, 2, 29, tzinfo=datetime.UTC), 1) == \
        datetime.datetime(2029, 2, 28, tzinfo=datetime.UTC)
    assert parse_period("P1DT1H").after(start, 3) == datetime.datetime(2030, 2, 3, 15, tzinfo=datetime.UTC)
