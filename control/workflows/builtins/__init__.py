"""The built-in workflows, by the name a workflow gives in `workflow:` (docs/canary.md, docs/workflows.md): each
is a `BuiltinWorkflow` that works only through its `WorkflowContext`. The runner constructs one per run with its
context, parameters and restored state; the DSL checks a workflow's parameters against it when the workflow is
written."""
from __future__ import annotations

from control.workflows.context import BuiltinWorkflow

from .brown_out import BrownOut
from .canary import Canary
from .follow_the_sun import FollowTheSun
from .heartbeat import Heartbeat

BUILTINS: dict[str, type[BuiltinWorkflow]] = {
    "canary": Canary,
    "follow-the-sun": FollowTheSun,
    "brown-out": BrownOut,
    "heartbeat": Heartbeat,
}
