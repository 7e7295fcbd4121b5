"""The contract between the workflow runner and a built-in workflow (`workflow: canary`, `follow-the-sun`,
`brown-out`): what a built-in may read and change (`WorkflowContext`) and what it must offer
(`BuiltinWorkflow`).

A built-in never touches the engine, the store or the gateways directly: everything goes through its context,
so the same code runs under the platform and under a test's fake context with a virtual clock.
"""
from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from control.events.model import Event
from control.metrics.model import MetricsReader, Scope, Summary
from gateway.common.errors import Invalid


class WorkflowContext(Protocol):
    name: str                         # the workflow's name
    metrics: MetricsReader

    def now(self) -> float:
        """Seconds since the epoch (the context's clock: virtual under test)."""
        ...

    async def sleep(self, seconds: float) -> None:
        ...

    def publish(self, tags: Iterable[str], value: Any = None) -> Event:
        """An event tagged `workflows:NAME` besides `tags`."""
        ...

    def set_state(self, state: Mapping[str, Any]) -> None:
        """The workflow's `state` object (JSON-like), shown by `GET /api/v1/workflows/NAME` and kept across
        restarts of the platform."""
        ...

    async def gateway(self, name: str) -> dict[str, Any]:
        """The gateway's document as the API shows it (routes with `weight` "N%", `condition`, …).
        NotFound if there is none."""
        ...

    async def set_weights(self, gateway: str, weights: Mapping[str, int],
                          condition_strengths: Mapping[str, int] | None = None) -> None:
        """Set route weights (whole per cents, summing to 100 over the routes named) in one change of the
        gateway; routes not named keep theirs. `condition_strengths` (whole per cents) sets, in the same change,
        the condition strength of routes that have a condition: a rollback sets a conditional canary's to 0%, so
        the requests its condition matches follow the weights too. Conditions themselves never change.
        Invalid or NotFound as the gateway API would answer."""
        ...

    def instances(self, deployment: str, cluster: str, service: str) -> int:
        """The service's instance count as deployed (its scale)."""
        ...

    async def set_instances(self, deployment: str, cluster: str, service: str, instances: int) -> None:
        """Scale the service; instances that go are drained first."""
        ...


class BuiltinWorkflow(abc.ABC):
    """One run of a built-in workflow.

    The constructor checks `parameters` and raises `gateway.common.errors.Invalid` (with the field, e.g.
    "/parameters/steps/1") on anything wrong, so a bad workflow is refused when it is written, not when it
    runs. `restored` is the last state the workflow set before the platform stopped, if any: a run resumes
    from it instead of starting over.
    """

    def __init__(self, context: WorkflowContext, parameters: Mapping[str, Any],
                 restored: Mapping[str, Any] | None = None) -> None:
        self.context = context
        self.parameters = parameters
        self.restored = restored

    @abc.abstractmethod
    async def run(self) -> None:
        """Work until finished (return) or cancelled (suspended, restarted, deleted or the platform stopping)."""

    @classmethod
    def validate(cls, name: str, parameters: Mapping[str, Any]) -> None:
        """Raise Invalid (with the field, "/parameters/…") unless `parameters` suit this built-in: how workflow
        `name` is checked when it is written, before anything runs. By default the constructor is tried over a
        `DryContext`, which refuses every use; a built-in whose constructor needs its context overrides this."""
        cls(DryContext(name), parameters)

    def command(self, action: str) -> None:
        """A manual action from `PUT /api/v1/workflows/NAME/status` (the canary takes `promote` and `abort`).
        Invalid for an action this workflow does not take."""
        raise Invalid(f"workflow {self.context.name} takes no action {action!r}", "/status")


class DryContext:
    """A context for checking parameters only: it has a name, and every use of it is a RuntimeError."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.metrics: MetricsReader = _NoMetrics(self)

    def _refuse(self, what: str) -> RuntimeError:
        return RuntimeError(f"workflow {self.name} is being validated, not run: it cannot {what}")

    def now(self) -> float:
        raise self._refuse("read the clock")

    async def sleep(self, seconds: float) -> None:
        raise self._refuse("sleep")

    def publish(self, tags: Iterable[str], value: Any = None) -> Event:
        raise self._refuse("publish events")

    def set_state(self, state: Mapping[str, Any]) -> None:
        raise self._refuse("set its state")

    async def gateway(self, name: str) -> dict[str, Any]:
        raise self._refuse("read gateways")

    async def set_weights(self, gateway: str, weights: Mapping[str, int],
                          condition_strengths: Mapping[str, int] | None = None) -> None:
        raise self._refuse("set weights")

    def instances(self, deployment: str, cluster: str, service: str) -> int:
        raise self._refuse("read instance counts")

    async def set_instances(self, deployment: str, cluster: str, service: str, instances: int) -> None:
        raise self._refuse("scale services")


class _NoMetrics:
    def __init__(self, context: DryContext) -> None:
        self.context = context

    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        raise self.context._refuse("read metrics")
