"""How built-in workflows write a moment in their state and events: ISO 8601 in UTC with milliseconds, as events
show their timestamps."""
from __future__ import annotations

import datetime


def iso(timestamp: float) -> str:
    """1764675783.5 -> "2025-12-02T11:43:03.500Z"."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
