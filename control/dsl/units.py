"""The value syntaxes Vamp's DSL adds to the gateway's (gateway/common/units.py has percentages, durations, ports):
memory sizes and CPU quantities of a scale.

- Memory is returned as whole bytes: a number with a unit `B`, `KB|K`, `MB|M`, `GB|G` (powers of 1000) or
  `Ki|KiB`, `Mi|MiB`, `Gi|GiB` (powers of 1024), case-insensitive, decimals allowed ("64MB", "0.5GB",
  "512Mi", "2gb"). A bare number (1024, 2048.5, "1024") is megabytes, as VAMP reads it.
- CPU is returned as a float number of cores: 0.2, "0.2", or millicores "200m"; greater than zero.
- A workflow's time schedule has an ISO 8601 period (`P1D`, `PT10M`), returned as a `Period` in calendar parts.

Like gateway.common.units, `parse_*` raise ValueError with a one-line message and `format_*` write a value that
parses back to exactly the same value.
"""
from __future__ import annotations

import calendar
import datetime
import math
import re
from dataclasses import dataclass
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
_BARE_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_FORMAT_MEMORY_UNITS = (("Gi", 1024**3), ("GB", 1000**3), ("Mi", 1024**2), ("MB", 1000**2),
                        ("Ki", 1024), ("KB", 1000))
_CPU = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m?)")


def parse_memory(value: object) -> int:
    """'64MB' -> 64000000, '512Mi' -> 536870912, '0.5GB' -> 500000000."""
    expected = f"expected a memory size like '64MB', '1GB' or '512Mi', got {shown(value)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and 0 <= value < 10**12:
        value = f"{value}MB"
    elif isinstance(value, str) and _BARE_NUMBER.fullmatch(value.strip()):
        value = f"{value.strip()}MB"
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


@dataclass(frozen=True, slots=True)
class Period:
    """An ISO 8601 duration (`P1Y2M3DT4H5M6S`, `P2W`, `PT10M`) in its calendar parts: years and months have no
    fixed length, so they are kept apart from the days and the seconds; `after` adds `times` periods to a moment
    the way a calendar does (31 January + 1 month = 28 or 29 February)."""
    months: int = 0             # years × 12 + months
    days: int = 0               # weeks × 7 + days
    seconds: float = 0.0        # hours, minutes and seconds

    def after(self, moment: datetime.datetime, times: int = 1) -> datetime.datetime:
        """`moment` plus `times` periods, computed from `moment` in one step (no day lost to repeated clamping)."""
        month_index = moment.year * 12 + moment.month - 1 + self.months * times
        year, month = divmod(month_index, 12)
        if not datetime.MINYEAR <= year <= datetime.MAXYEAR:
            raise OverflowError("date out of range")
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        shifted = moment.replace(year=year, month=month + 1, day=day)
        return shifted + datetime.timedelta(days=self.days * times, seconds=self.seconds * times)


_PERIOD = re.compile(r"P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
                     r"(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")
MIN_PERIOD_SECONDS = 1.0     # a shorter period would only spin: a run takes longer than that anyway
MAX_PERIOD_PART = 10**6      # years, months, weeks … beyond this are a typo


def parse_period(value: object) -> Period:
    """'P1D' -> Period(days=1), 'PT10M' -> Period(seconds=600), 'P1Y2M' -> Period(months=14); case-insensitive.
    At least one second long (a period of months or days always is)."""
    expected = f"expected an ISO 8601 period like P1D, PT10M or P1Y2M3DT4H5M6S, got {shown(value)}"
    match = _PERIOD.fullmatch(value.strip().upper()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(expected)
    years, months, weeks, days, hours, minutes = (int(part or 0) for part in match.groups()[:6])
    if max(years, months, weeks, days, hours, minutes) > MAX_PERIOD_PART:
        raise ValueError(f"expected a period of at most {MAX_PERIOD_PART} of each unit, got {shown(value)}")
    seconds = hours * 3600 + minutes * 60 + float(match.group(7) or 0)
    period = Period(months=years * 12 + months, days=weeks * 7 + days, seconds=seconds)
    if period.months == 0 and period.days == 0 and seconds < MIN_PERIOD_SECONDS:
        raise ValueError(f"expected a period of at least {MIN_PERIOD_SECONDS:g} second, got {shown(value)}")
    return period
