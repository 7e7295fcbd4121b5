"""STAND-INS, to be removed when issue 11's metrics aggregator and event log join the platform: `vamp run` hands
the SLA monitor and the workflow runner these until then (control/platform.py), and the real objects replace
them there.

- `NoMetrics` answers "no requests" for every scope: measured SLAs (response time, error rate) never act.
"""
from __future__ import annotations

from collections.abc import Sequence

from control.metrics.model import Scope, Summary




class NoMetrics:
    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        return Summary(window=window, requests=0, classes=(0, 0, 0, 0, 0), upstream_errors=0, in_flight=0,
                       mean_ms=None, p50_ms=None, p95_ms=None, p99_ms=None)
