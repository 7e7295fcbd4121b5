"""Shift weight while healthy: a workflow script for `vamp run` (examples/workflows/shift-weight.yaml).

Each run moves STEP per cent of GATEWAY's traffic from route BASELINE to route CANARY, if the canary was healthy
over WINDOW: at least MIN_REQUESTS requests, of which at least MIN_HEALTH (0–1) were not 5xx. Too few requests
is no verdict: the weights stay and the run says it waits. An unhealthy canary is rolled back (0%, the baseline
100%) and the workflow suspends itself. The first step, from 0%, needs no verdict: at 0% the canary has no
traffic to be judged by. Every run posts one event (`shift:step`, `shift:waiting`, `shift:rollback` or
`shift:done`, with `gateways:GATEWAY` and `workflows:NAME`) saying what it saw and did.
"""
from __future__ import annotations

import os
import sys

from control.client import Vamp


def main() -> int:
    vamp = Vamp()
    gateway, baseline, canary = os.environ["GATEWAY"], os.environ["BASELINE"], os.environ["CANARY"]
    step = float(os.environ.get("STEP", "10"))
    min_requests = int(os.environ.get("MIN_REQUESTS", "100"))
    min_health = float(os.environ.get("MIN_HEALTH", "0.99"))
    window = os.environ.get("WINDOW", "60s")
    tags = [f"gateways:{gateway}"]

    weight = vamp.weights(gateway).get(canary) or 0.0
    if weight >= 100:
        vamp.event(["shift:done", *tags], {"canary": canary, "weight": weight})
        return 0
    figures: dict[str, float | None] = {"weight": weight}
    if weight > 0:
        figures["requests"] = vamp.metric(gateway, "requests", route=canary, window=window)
        figures["health"] = vamp.health(gateway, route=canary, window=window)
        if figures["requests"] is None or figures["requests"] < min_requests or figures["health"] is None:
            vamp.event(["shift:waiting", *tags], {**figures, "needs": min_requests})
            return 0
        if figures["health"] < min_health:
            vamp.set_weights(gateway, {canary: 0, baseline: 100})
            vamp.event(["shift:rollback", *tags], figures)
            vamp.suspend()
            return 0
    new = min(100.0, weight + step)
    vamp.set_weights(gateway, {canary: new, baseline: 100 - new})
    vamp.event(["shift:step", *tags], {**figures, "to": new})
    return 0


if __name__ == "__main__":
    sys.exit(main())
