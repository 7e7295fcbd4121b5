"""What the platform's metrics answer: a `Scope` (what was measured) and the `Summary` of a window of it.

The platform's own gateways name everything the DSL deploys, so one scope shape covers Vamp's paths:

    gateway                      Scope("sava/9050")                                  an external gateway
    route of a gateway           Scope("sava/9050", "sava/sava/webport")
    cluster port                 Scope("sava/sava/webport")                          the cluster's internal gateway
    service on a cluster port    Scope("sava/sava/webport", "sava/sava/sava:1.0.0/webport")
    instance of that service     Scope("sava/sava/webport", "sava/sava/sava:1.0.0/webport", "127.0.0.1:40123")

Anything that reads metrics (the API, SLAs, workflows) depends on `MetricsReader` only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Scope:
    gateway: str
    route: str | None = None       # None: every route of the gateway
    target: str | None = None      # "HOST:PORT" of one instance behind `route`; None: every target


@dataclass(frozen=True, slots=True)
class Summary:
    """What the scopes received over the last `window` seconds (responses counted when they ended)."""
    window: float                                  # seconds covered (less than asked while history is short)
    requests: int                                  # responses in the window
    classes: tuple[int, int, int, int, int]        # of them: 1xx, 2xx, 3xx, 4xx, 5xx
    upstream_errors: int                           # connect, timeout and reset failures towards the targets
    in_flight: int                                 # requests under way now
    mean_ms: float | None                          # response time; None without requests
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def rate(self) -> float:
        """Requests per second over the window."""
        return self.requests / self.window if self.window > 0 else 0.0

    @property
    def errors(self) -> int:
        """5xx responses."""
        return self.classes[4]

    @property
    def health(self) -> float | None:
        """The share of non-5xx responses, 0–1; None when there were no requests (no data is not health)."""
        return (self.requests - self.errors) / self.requests if self.requests else None

    @property
    def error_rate(self) -> float | None:
        """The share of 5xx responses, 0–1; None when there were no requests."""
        return self.errors / self.requests if self.requests else None


class MetricsReader(Protocol):
    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        """The sum of `scopes` over the last `window` seconds. A scope that names nothing known adds nothing."""
        ...


class NoMetrics:
    """A `MetricsReader` for a platform whose aggregation is off (`vamp run --metrics-window 0`): every scope had
    no requests, so nothing that reads metrics ever acts on them (no data is neither good nor bad)."""

    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        return Summary(window=window, requests=0, classes=(0, 0, 0, 0, 0), upstream_errors=0, in_flight=0,
                       mean_ms=None, p50_ms=None, p95_ms=None, p99_ms=None)
