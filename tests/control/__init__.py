"""The control plane's tests: Vamp's DSL, the store, the API, the local orchestrator, the engine and `vamp run`
end to end."""
