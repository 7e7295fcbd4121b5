"""Benchmarks: the gateway measured side by side with HAProxy and nginx."""
