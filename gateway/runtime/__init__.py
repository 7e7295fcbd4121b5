"""The running gateway: the runtime, the manager applying changes, workers, draining, snapshots and metrics."""
