"""Orchestrator drivers behind one small interface (`base`): the local-process driver (`local`) by default."""
