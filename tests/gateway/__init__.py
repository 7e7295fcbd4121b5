"""The gateway's tests: the proxy (wire, framing, hostile input, fuzzing), routing and conditions,
configuration, the admin API and CLI, live changes, draining, workers and lifecycle."""
