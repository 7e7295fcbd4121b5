"""The value syntaxes Vamp's DSL adds to the gateway's (gateway/common/units.py has percentages, durations, ports):
memory sizes and CPU quantities of a scale.

- Memory is returned as whole bytes: a number with a unit `B`, `KB|K`, `MB|M`, `GB|G` (powers of 1000) or
  `Ki|KiB`, `Mi|MiB`, `Gi|GiB` (powers of 1024), case-insensitive, decimals allowed ("64MB", "0.5GB",
  "512Mi", "2gb"). A bare number is refused: Vamp never said whether it meant bytes or megabytes.
- CPU is returned as a float number of cores: 0.2, "0.2", or millicores "200m"; greater than zero.

Like gateway.common.units, `parse_*` raise ValueError with a one-line message and `format_*` write a value that
parses back to exactly the same value.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from gateway.common.units import shown

MAX_MEMORY = 2**50          # 1 PiB: anything larger is a typo
MAX_CPU = 1024.0

_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]+)")
_MEMORY_UNITS = {
    "b": 1,
    **dict.fromkeys(("k", "kb"), 1000), **dict.fromkeys(("ki", "kib"), 1024),
    **dict.fromkeys(("m", "mb"), 1000**2), **dict.fromkeys(("mi", "mib"), 1024**2),
    **dict.fromkeys(("g", "gb"), 1000**3), **dict.fromkeys(("gi", "gib"), 1024**3),
}
_FORMAT_MEMORY_UNITS = (("Gi", 1024**3), ("GB", 1000**3), ("Mi", 1024**2), ("MB", 1000**2),
                        ("Ki", 1024), ("KB", 1000))
_CPU = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m?)")


def parse_memory(value: object) -> int:
    """'64MB' -> 64000000, '512Mi' -> 536870912, '0.5GB' -> 500000000."""
    expected = f"expected a memory size like '64MB', '1GB' or '512Mi', got {shown(value)}"
    match = _MEMORY.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(expected)
    size = Decimal(match.group(1)) * _MEMORY_UNITS[match.group(2)]
    if size != size.to_integral_value():
        raise ValueError(f"expected a memory size of whole bytes, got {shown(value)}")
    if size > MAX_MEMORY:
        raise ValueError(f"expected a memory size of at most 1024Ti, got {shown(value)}")
    return int(size)


def format_memory(size: int) -> str:
    """64000000 -> '64MB', 536870912 -> '512Mi', 1500 -> '1500B'."""
    for unit, unit_size in _FORMAT_MEMORY_UNITS:
        if size and size % unit_size == 0:
            return f"{size // unit_size}{unit}"
    return f"{size}B"


def parse_cpu(value: object) -> float:
    """0.2, '0.2', '200m' -> 0.2 cores."""
    expected = f"expected a number of CPUs greater than zero, like 0.5 or '500m', got {shown(value)}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(expected)
    if isinstance(value, str):
        match = _CPU.fullmatch(value.strip().lower())
        if match is None:
            raise ValueError(expected)
        try:
            cores = float(Decimal(match.group(1)) / (1000 if match.group(2) else 1))
        except InvalidOperation:
            raise ValueError(expected) from None
    else:
        cores = float(value) if abs(value) < 1e300 else math.inf
    if not 0 < cores <= MAX_CPU:
        raise ValueError(f"expected a number of CPUs from 0 to {MAX_CPU:g} (not 0), got {shown(value)}")
    return cores
