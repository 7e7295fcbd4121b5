"""The rule every name of an artifact follows, whichever API or file it comes from (gateways, breeds,
blueprints, deployments, ...): 1-253 characters, and none of its `/`-separated parts empty, `.` or `..`, so a
name is always one path in a URL and can never walk out of it. Each kind adds the characters it allows."""
from __future__ import annotations

MAX_LENGTH = 253
RULE = f"a name has 1 to {MAX_LENGTH} characters, and no part of it between '/' is empty, '.' or '..'"


def breaks_rule(name: str) -> bool:
    """True when `name` breaks RULE."""
    return not 0 < len(name) <= MAX_LENGTH or any(part in ("", ".", "..") for part in name.split("/"))
