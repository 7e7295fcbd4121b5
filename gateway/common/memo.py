"""`remember`: the one rule for the gateway's small per-process memories (head readings, user-agent verdicts):
bounded by entries and by key length, and forgotten all at once when full (no bookkeeping per hit)."""
from __future__ import annotations

from typing import TypeVar

V = TypeVar("V")


def remember(memory: dict[bytes, V], key: bytes, value: V, entries: int, key_bytes: int) -> V:
    """Store `value` under `key` unless the key is longer than `key_bytes`; a full memory starts afresh.
    Returns `value`. Callers look up with `memory.get` themselves (a hit costs no call)."""
    if len(key) <= key_bytes:
        if len(memory) >= entries:
            memory.clear()
        memory[key] = value
    return value
