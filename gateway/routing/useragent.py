"""User-agent families for `browser`, `os` and `device` conditions.

Owns the ua-parser 1.x resolver (the `regex` extra: ua-parser-rs) and the LRU cache in front of it. The
resolver takes about 0.1 s to build, so it is built on first use — a route table without user-agent
conditions never pays for it — or eagerly with `warm()` when the configuration has such a condition.
"""
from __future__ import annotations

import functools
import threading

from ua_parser import Domain, load_lazy_builtins
from ua_parser.regex import Resolver

UNKNOWN = "Other"                  # ua-parser's family for anything it does not recognise
DEFAULT_CACHE_SIZE = 4096          # distinct user agents remembered
MAX_USER_AGENT_LENGTH = 1024       # characters of a User-Agent considered; the rest is ignored


class UserAgentParser:
    """(browser, OS, device) families of User-Agent strings, cached."""

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE,
                 max_length: int = MAX_USER_AGENT_LENGTH) -> None:
        self._max_length = max_length
        self._resolver: Resolver | None = None
        self._build_lock = threading.Lock()
        self._cached_families = functools.lru_cache(maxsize=cache_size)(self._parse)

    def families(self, user_agent: str) -> tuple[str, str, str]:
        """(browser family, OS family, device family); "Other" for each part ua-parser does not know.

        Only the first `max_length` characters count, so a huge hostile header costs no more than a
        normal one, and it is cached under its truncated form.
        """
        return self._cached_families(user_agent[:self._max_length])

    def warm(self) -> None:
        """Build the resolver now (at configuration time) instead of on the first request."""
        self._get_resolver()

    @property
    def loaded(self) -> bool:
        """Whether the resolver has been built."""
        return self._resolver is not None

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the LRU cache."""
        return self._cached_families.cache_info()

    def _get_resolver(self) -> Resolver:
        if self._resolver is None:
            with self._build_lock:
                if self._resolver is None:
                    self._resolver = Resolver(load_lazy_builtins())
        return self._resolver

    def _parse(self, user_agent: str) -> tuple[str, str, str]:
        if not user_agent:
            return (UNKNOWN, UNKNOWN, UNKNOWN)
        result = self._get_resolver()(user_agent, Domain.ALL)
        return (
            (result.user_agent and result.user_agent.family) or UNKNOWN,
            (result.os and result.os.family) or UNKNOWN,
            (result.device and result.device.family) or UNKNOWN,
        )
