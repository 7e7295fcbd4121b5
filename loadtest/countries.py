"""Client addresses by country for `--forwarded-for countries:GB=20,US=50,DE=30`.

The addresses come from iptocc, the country data the gateway uses by default, so a `country = GB` condition
sees exactly the country the mix says. iptocc keeps its ranges inside its compiled extension and offers only
the lookup, so the IPv4 space is sampled once per process (one address per /20 block, about 0.2 s) and
every address handed out is checked with `iptocc.country_code`.
"""
from __future__ import annotations

import functools
import math
import re
from array import array
from ipaddress import IPv4Address

import iptocc

from gateway.common.units import shown

from .plan import PlanError

THIRD_OCTET_STEP = 16                   # one sample per /20 block: every 16th /24
BLOCK_SIZE = THIRD_OCTET_STEP * 256     # addresses in a sampled block
PUBLIC_FIRST_OCTETS = range(1, 224)     # unicast IPv4; iptocc knows no country for private ranges within
_COUNTRY_ITEM = re.compile(r"\s*([A-Za-z]{2})\s*=\s*([^,]*?)\s*(%?)\s*")


def parse_country_mix(spec: str) -> list[tuple[str, float]]:
    """`countries:GB=20,US=50,DE=30` (or `GB=20%,...`) -> [("GB", 20.0), ("US", 50.0), ("DE", 30.0)].

    Weights are relative (percentages need not add up to 100); codes are ISO 3166 alpha-2, any case in."""
    kind, sep, items = spec.partition(":")
    if kind.strip().lower() != "countries" or not sep or not items.strip():
        raise PlanError("--forwarded-for: expected an IP address or countries:CC=WEIGHT,... like "
                        f"countries:GB=20,US=80, got {shown(spec)}")
    mix: dict[str, float] = {}
    for item in items.split(","):
        match = _COUNTRY_ITEM.fullmatch(item)
        if not match:
            raise PlanError(f"--forwarded-for: expected a country code and weight like GB=20, got {shown(item)}")
        code, number, _ = match.groups()
        code = code.upper()
        try:
            weight = float(number)
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight <= 0:
            raise PlanError(f"--forwarded-for: the weight of {code} must be a number above zero, got {shown(number)}")
        if code in mix:
            raise PlanError(f"--forwarded-for: country {code} is given twice")
        mix[code] = weight
    return list(mix.items())


def country_of(address: str) -> str | None:
    """The country iptocc (so the gateway, by default) places an address in; None when it knows none."""
    return iptocc.country_code(address)


def addresses_for(country: str, count: int) -> list[str]:
    """`count` distinct public IPv4 addresses that iptocc places in `country`, the same list every run, spread
    evenly over the country's blocks. PlanError for a country iptocc has no addresses for."""
    code = country.upper()
    blocks = _sampled_blocks().get(code)
    if not blocks:
        raise PlanError(f"--forwarded-for: iptocc knows no addresses in country {shown(country)}")
    stride = max(1, len(blocks) // count)
    chosen: list[str] = []
    for host in range(1, BLOCK_SIZE - 1):           # the first host of every chosen block, then the next
        candidates = [str(IPv4Address(base + host)) for base in blocks[::stride]]
        for address, found in zip(candidates, iptocc.country_code(candidates)):
            if found == code and IPv4Address(address).is_global:
                chosen.append(address)
                if len(chosen) == count:
                    return chosen
    raise PlanError(f"--forwarded-for: iptocc has only {len(chosen)} addresses in country {code}, {count} needed")


@functools.cache
def _sampled_blocks() -> dict[str, array]:
    """Country -> the base addresses (as integers) of the /20 blocks whose first host iptocc places there."""
    blocks: dict[str, array] = {}
    for first in PUBLIC_FIRST_OCTETS:
        bases = [(second, third) for second in range(256) for third in range(0, 256, THIRD_OCTET_STEP)]
        codes = iptocc.country_code([f"{first}.{second}.{third}.1" for second, third in bases])
        for (second, third), code in zip(bases, codes):
            if code is not None:
                blocks.setdefault(code, array("I")).append(first << 24 | second << 16 | third << 8)
    return blocks
