"""Vamp's control plane: the DSL, the store, the API, orchestrator drivers and the gateway sync."""
