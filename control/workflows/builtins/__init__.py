"""The built-in workflows, by the name a workflow gives in `workflow:` (docs/canary.md): each is a
`BuiltinWorkflow` that works only through its `WorkflowContext`."""
from __future__ import annotations

from control.workflows.context import BuiltinWorkflow

from .brown_out import BrownOut
from .canary import Canary
from .follow_the_sun import FollowTheSun

BUILTINS: dict[str, type[BuiltinWorkflow]] = {
    "canary": Canary,
    "follow-the-sun": FollowTheSun,
    "brown-out": BrownOut,
}
