"""Events: every change the platform makes or sees, with Vamp's tags, kept for a bounded time and count, and
streamed live (`model` is the surface the rest of the control plane uses)."""
