"""Who sends what: the identities of a load test and the exact bytes of their requests.

An `Identity` is one virtual user (`--clients`) or one anonymous request variant: its user agent (from
`--mix`), its X-Forwarded-For address (from `--forwarded-for`) and the plan's headers and cookies with
`{user}` expanded to its number. Identity i is the same in every process. The mixes are dealt out by smooth
weighted round-robin (nginx's algorithm, as the gateway splits routes), so every value gets its exact share
over a period and stays within a request or two of it in any window: the country mix over the identity
number, and the user-agent mix over the identity's rank among those of its country, so that every country
gets the whole user-agent mix (the two mixes are independent, as a user expects). `Traffic.render` builds a
request once; the load generator reuses the bytes.

Also the cookie jar of a virtual user: `store_set_cookie` applies one Set-Cookie header to it.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from fractions import Fraction
from typing import Generic, TypeVar

import numpy

from .countries import addresses_for, country_of, parse_country_mix
from .mixes import load_mix, ua_label
from .plan import Plan, is_ip_literal

MAX_CYCLE = 1000            # anonymous request variants at most
MAX_PERIOD = 10_000         # positions of one round-robin period; finer weights are rounded to fit
ADDRESSES_PER_COUNTRY = 64  # distinct X-Forwarded-For addresses per country, taken in turn by its identities
BODY_METHODS = ("POST", "PUT", "PATCH")     # send Content-Length even with an empty body

Value = TypeVar("Value")


@dataclass(frozen=True)
class Identity:
    """What one virtual user (or one anonymous request variant) sends besides the plan's fixed parts."""
    index: int                      # virtual user number (0-based); {user} in -H/--cookie values expands to it
    user_agent: str | None          # from --mix, else None (then no User-Agent unless -H gives one)
    ua_label: str | None            # a short label for reports: ua-parser family + major OS
    forwarded_for: str | None       # X-Forwarded-For value from --forwarded-for, else None
    country: str | None             # the country of forwarded_for (as iptocc says), for reports
    headers: tuple[tuple[str, str], ...]   # plan.headers with {user} expanded
    cookies: tuple[tuple[str, str], ...]   # plan.cookies with {user} expanded


class WeightedCycle(Generic[Value]):
    """Values dealt out over positions 0, 1, 2, ... by smooth weighted round-robin, periodic: position i
    always holds the same value, and each period of `period` positions holds every value exactly its
    (integer-rounded) weight times."""

    def __init__(self, weighted: list[tuple[Value, float]]) -> None:
        self.values = [value for value, _ in weighted]
        self.weights = integer_weights([weight for _, weight in weighted])
        self.period = sum(self.weights)
        current = numpy.zeros(len(self.weights), dtype=numpy.int64)
        increments = numpy.array(self.weights, dtype=numpy.int64)
        seen = [0] * len(self.weights)
        self._slots: list[tuple[int, int]] = []      # per position of a period: (value number, its rank so far)
        for _ in range(self.period):
            current += increments
            best = int(current.argmax())             # the first of the largest, as nginx picks
            current[best] -= self.period
            self._slots.append((best, seen[best]))
            seen[best] += 1

    def at(self, position: int) -> tuple[Value, int]:
        """(the value at `position`, how many earlier positions hold the same value)."""
        periods, offset = divmod(position, self.period)
        number, rank = self._slots[offset]
        return self.values[number], periods * self.weights[number] + rank


def integer_weights(weights: list[float]) -> list[int]:
    """Relative weights as the smallest integers in the same ratio (12.5, 87.5 -> 1, 7), or, when those add
    up to more than MAX_PERIOD, rounded to MAX_PERIOD by largest remainder."""
    exact = [Fraction(str(weight)) for weight in weights]
    scale = math.lcm(*(fraction.denominator for fraction in exact))
    integers = [int(fraction * scale) for fraction in exact]
    divisor = math.gcd(*integers)
    integers = [integer // divisor for integer in integers]
    if sum(integers) <= MAX_PERIOD:
        return integers
    total = sum(weights)
    quotas = [weight * MAX_PERIOD / total for weight in weights]
    rounded = [int(quota) for quota in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda number: quotas[number] - rounded[number], reverse=True)
    for number in by_remainder[:MAX_PERIOD - sum(rounded)]:
        rounded[number] += 1
    return rounded


class Traffic:
    """The identities and requests of one plan. `cycle` is the number of anonymous variants the load generator
    cycles through when the plan has no virtual users: whole periods of the mixes when they fit in MAX_CYCLE."""

    def __init__(self, plan: Plan) -> None:
        """Loads the mixes; raises PlanError naming the option on a bad mix file or spec."""
        self.plan = plan
        self._agents: WeightedCycle[tuple[str, str]] | None = None
        self._countries: WeightedCycle[str] | None = None
        self._addresses: dict[str, list[str]] = {}
        self._fixed_address: tuple[str, str | None] | None = None
        if plan.mix is not None:
            self._agents = WeightedCycle([((agent, ua_label(agent)), weight) for agent, weight in load_mix(plan.mix)])
        if plan.forwarded_for is not None and is_ip_literal(plan.forwarded_for):
            self._fixed_address = (plan.forwarded_for, country_of(plan.forwarded_for))
        elif plan.forwarded_for is not None:
            mix = parse_country_mix(plan.forwarded_for)
            self._countries = WeightedCycle(mix)
            self._addresses = {code: addresses_for(code, ADDRESSES_PER_COUNTRY) for code, _ in mix}
        periods = [cycle.period for cycle in (self._agents, self._countries) if cycle is not None]
        self.cycle = min(math.prod(periods), MAX_CYCLE)

    def identities(self, start: int, count: int) -> list[Identity]:
        """Identities start..start+count-1; identity i is the same in every process."""
        return [self._identity(index) for index in range(start, start + count)]

    def _identity(self, index: int) -> Identity:
        user_agent = label = forwarded_for = country = None
        rank = index                # among the identities of the same country, when there is a country mix
        if self._fixed_address is not None:
            forwarded_for, country = self._fixed_address
        if self._countries is not None:
            country, rank = self._countries.at(index)
            addresses = self._addresses[country]
            forwarded_for = addresses[rank % len(addresses)]
        if self._agents is not None:
            (user_agent, label), _ = self._agents.at(rank)
        user = str(index)
        return Identity(index=index, user_agent=user_agent, ua_label=label, forwarded_for=forwarded_for,
                        country=country,
                        headers=tuple((name, value.replace("{user}", user)) for name, value in self.plan.headers),
                        cookies=tuple((name, value.replace("{user}", user)) for name, value in self.plan.cookies))

    def render(self, identity: Identity, jar: Mapping[str, str] | None = None) -> bytes:
        """The complete request (head + body): the request line, Host, User-Agent, X-Forwarded-For, the
        identity's headers (a -H header replaces a default of the same name), one Cookie header (identity
        cookies, then jar cookies; the jar wins on the same name), Content-Length when there is a body (or the
        method is POST/PUT/PATCH), then the body."""
        plan = self.plan
        given = {name.lower() for name, _ in identity.headers}
        defaults = (("Host", plan.host_header), ("User-Agent", identity.user_agent),
                    ("X-Forwarded-For", identity.forwarded_for))
        headers = [(name, value) for name, value in defaults if value is not None and name.lower() not in given]
        headers += identity.headers
        cookies = dict(identity.cookies)
        cookies.update(jar or {})
        if cookies:
            headers.append(("Cookie", "; ".join(f"{name}={value}" for name, value in cookies.items())))
        if (plan.body or plan.method in BODY_METHODS) and "content-length" not in given:
            headers.append(("Content-Length", str(len(plan.body))))
        lines = [f"{plan.method} {plan.target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers), "", ""]
        return "\r\n".join(lines).encode("utf-8") + plan.body

    def profiles(self) -> list[tuple[Identity, float]]:
        """The distinct identities of the traffic with their shares of requests (adding up to 1): one cycle of
        anonymous variants, or the plan's virtual users; identities equal apart from their index are one
        profile (the first of them stands for it)."""
        count = self.plan.clients or self.cycle
        first: dict[Identity, Identity] = {}
        members: Counter[Identity] = Counter()
        for index in range(count):
            identity = self._identity(index)
            profile = replace(identity, index=0)
            first.setdefault(profile, identity)
            members[profile] += 1
        return [(first[profile], number / count) for profile, number in members.items()]


def store_set_cookie(jar: dict[str, str], value: bytes) -> bool:
    """Apply one Set-Cookie header value to a jar (`name=value`; `Max-Age` <= 0, or else an `Expires` in the
    past, deletes). Domain and Path are ignored: there is one origin. True when the jar changed."""
    pair, *attribute_texts = value.decode("latin-1").split(";")
    name, sep, cookie_value = pair.partition("=")
    name = name.strip()
    if not sep or not name:
        return False
    attributes = {}
    for text in attribute_texts:
        key, _, argument = text.partition("=")
        attributes[key.strip().lower()] = argument.strip()
    if _expired(attributes):
        return jar.pop(name, None) is not None
    cookie_value = cookie_value.strip()
    if jar.get(name) == cookie_value:
        return False
    jar[name] = cookie_value
    return True


def _expired(attributes: dict[str, str]) -> bool:
    """Whether a cookie's attributes delete it: Max-Age wins over Expires; unparseable values are ignored."""
    try:
        return int(attributes["max-age"]) <= 0
    except (KeyError, ValueError):
        pass
    try:
        expires = parsedate_to_datetime(attributes["expires"])
    except (KeyError, TypeError, ValueError):
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires <= datetime.now(UTC)
