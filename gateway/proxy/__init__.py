"""The hot path: client connections, exchanges, upstream connections and pools, tunnels, wire format, counters."""
