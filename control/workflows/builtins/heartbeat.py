"""`workflow: heartbeat`: an event every `interval` (tags `heartbeat` and `workflows:NAME`, value `{"beat": N}`),
a sign in the event stream that the platform and its workflow runner are alive. Its state counts the beats, so a
restarted platform carries on from the last one instead of starting again at 1.

    name: alive
    schedule: daemon
    workflow: heartbeat
    parameters:
      interval: 30s      # a duration, at least 100ms; default 60s
      beats: 10          # optional: stop (finished) after this many beats in all
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from control.workflows.context import BuiltinWorkflow, WorkflowContext
from gateway.common.errors import Invalid
from gateway.common.units import parse_duration, shown

FIELDS = ("interval", "beats")
DEFAULT_INTERVAL = 60.0
MIN_INTERVAL = 0.1          # seconds: a faster beat would only fill the event log
MAX_BEATS = 10**9


class Heartbeat(BuiltinWorkflow):
    def __init__(self, context: WorkflowContext, parameters: Mapping[str, Any],
                 restored: Mapping[str, Any] | None = None) -> None:
        super().__init__(context, parameters, restored)
        unknown = next((key for key in parameters if key not in FIELDS), None)
        if unknown is not None:
            raise Invalid(f"unknown parameter {unknown!r}; a heartbeat takes: {', '.join(FIELDS)}",
                          f"/parameters/{unknown}")
        try:
            self.interval = parse_duration(parameters.get("interval", DEFAULT_INTERVAL))
        except ValueError as exc:
            raise Invalid(str(exc), "/parameters/interval") from None
        if self.interval < MIN_INTERVAL:
            raise Invalid(f"expected an interval of at least {MIN_INTERVAL * 1000:g}ms, got "
                          f"{shown(parameters.get('interval'))}", "/parameters/interval")
        beats = parameters.get("beats")
        if beats is not None and (isinstance(beats, bool) or not isinstance(beats, int)
                                  or not 1 <= beats <= MAX_BEATS):
            raise Invalid(f"expected a whole number from 1 to {MAX_BEATS}, got {shown(beats)}", "/parameters/beats")
        self.beats: int | None = beats
        count = (restored or {}).get("beats", 0)
        self.count = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0

    async def run(self) -> None:
        while self.beats is None or self.count < self.beats:
            await self.context.sleep(self.interval)
            self.count += 1
            self.context.publish(["heartbeat"], {"beat": self.count})
            self.context.set_state({"beats": self.count})
