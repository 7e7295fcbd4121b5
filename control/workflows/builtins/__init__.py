"""The built-in workflows, by the name a workflow gives in `workflow: NAME`. Each is a
`control.workflows.context.BuiltinWorkflow`; the runner constructs one per run with its context, parameters and
restored state, and the DSL checks a workflow's parameters against it when the workflow is written."""
from __future__ import annotations

from control.workflows.builtins.heartbeat import Heartbeat
from control.workflows.context import BuiltinWorkflow

BUILTINS: dict[str, type[BuiltinWorkflow]] = {
    "heartbeat": Heartbeat,
}
