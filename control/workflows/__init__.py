"""Workflows: the `workflows` artifact, run on its schedule (daemon, on events, on a timer) either as a script
the orchestrator runs or as a built-in (`workflow: canary`, …). `context` is the contract between the runner
and a built-in."""
