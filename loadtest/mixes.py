"""User-agent mixes for `--mix`: the built-in `browsers` and `mobile` mixes, mix files, and report labels.

A mix is a list of (user agent, weight). The built-in ones are real, current browser strings weighted
roughly like public market shares (desktop and mobile respectively). A mix file is UTF-8 text with one user
agent per line and an optional weight before it (`30 Mozilla/5.0 ...` or `12.5% Mozilla/5.0 ...`; a line
without one weighs 1); blank lines and `#` comments are skipped.
"""
from __future__ import annotations

import codecs
import re
from typing import NamedTuple

from gateway import UserAgentParser

from .plan import PlanError


class MixEntry(NamedTuple):
    label: str          # what `ua_label` says of the user agent (checked by the tests)
    weight: float
    user_agent: str


BUILTIN_MIXES: dict[str, list[MixEntry]] = {
    "browsers": [
        MixEntry("Chrome / Windows", 48, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                                         "(KHTML, like Gecko) Chrome/134.0.0.0 Safari/537.36"),
        MixEntry("Chrome / Mac OS X", 12, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
                                          "(KHTML, like Gecko) Chrome/134.0.0.0 Safari/537.36"),
        MixEntry("Chrome / Linux", 3, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                                      "Chrome/134.0.0.0 Safari/537.36"),
        MixEntry("Edge / Windows", 13, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                                       "(KHTML, like Gecko) Chrome/134.0.0.0 Safari/537.36 Edg/134.0.0.0"),
        MixEntry("Safari / Mac OS X", 9, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                                         "(KHTML, like Gecko) Version/18.3 Safari/605.1.15"),
        MixEntry("Firefox / Windows", 6, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:136.0) Gecko/20100101 "
                                         "Firefox/136.0"),
        MixEntry("Firefox / Mac OS X", 1, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:136.0) "
                                          "Gecko/20100101 Firefox/136.0"),
        MixEntry("Firefox / Linux", 2, "Mozilla/5.0 (X11; Linux x86_64; rv:136.0) Gecko/20100101 Firefox/136.0"),
        MixEntry("Opera / Windows", 6, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                                       "(KHTML, like Gecko) Chrome/134.0.0.0 Safari/537.36 OPR/117.0.0.0"),
    ],
    "mobile": [
        MixEntry("Chrome Mobile / Android", 63, "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 "
                                                "(KHTML, like Gecko) Chrome/134.0.0.0 Mobile Safari/537.36"),
        MixEntry("Mobile Safari / iOS", 22, "Mozilla/5.0 (iPhone; CPU iPhone OS 18_3_2 like Mac OS X) "
                                            "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.3 "
                                            "Mobile/15E148 Safari/604.1"),
        MixEntry("Mobile Safari / iOS", 3, "Mozilla/5.0 (iPad; CPU OS 18_3_2 like Mac OS X) AppleWebKit/605.1.15 "
                                           "(KHTML, like Gecko) Version/18.3 Mobile/15E148 Safari/604.1"),
        MixEntry("Chrome Mobile iOS / iOS", 3, "Mozilla/5.0 (iPhone; CPU iPhone OS 18_3_2 like Mac OS X) "
                                               "AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/134.0.6998.99 "
                                               "Mobile/15E148 Safari/604.1"),
        MixEntry("Samsung Internet / Android", 7, "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) "
                                                  "AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/27.0 "
                                                  "Chrome/125.0.0.0 Mobile Safari/537.36"),
        MixEntry("Firefox Mobile / Android", 2, "Mozilla/5.0 (Android 14; Mobile; rv:136.0) Gecko/136.0 "
                                                "Firefox/136.0"),
    ],
}

_WEIGHTED_LINE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(%?)(?:\s+(.*))?")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_parser = UserAgentParser()


def load_mix(spec: str) -> list[tuple[str, float]]:
    """A built-in mix by name, else a mix file by path: [(user agent, weight)]; PlanError naming `--mix`."""
    builtin = BUILTIN_MIXES.get(spec)
    if builtin is not None:
        return [(entry.user_agent, entry.weight) for entry in builtin]
    try:
        with open(spec, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise PlanError(f"--mix: no built-in mix or file named {spec!r} "
                        f"(built-in mixes: {', '.join(BUILTIN_MIXES)})") from None
    except OSError as exc:
        raise PlanError(f"--mix: cannot read {spec!r}: {exc.strerror}") from None
    return parse_mix(raw, spec)


def parse_mix(raw: bytes, source: str) -> list[tuple[str, float]]:
    """The user agents of a mix file's bytes; errors say `--mix: SOURCE:LINE: ...`."""
    mix = []
    for number, line in enumerate(raw.removeprefix(codecs.BOM_UTF8).split(b"\n"), start=1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise PlanError(f"--mix: {source}:{number}: not UTF-8 text") from None
        if not text or text.startswith("#"):
            continue
        weight, user_agent = 1.0, text
        weighted = _WEIGHTED_LINE.fullmatch(text)
        if weighted:
            number_text, _, user_agent = weighted.groups()
            weight = float(number_text)
            if not user_agent:
                raise PlanError(f"--mix: {source}:{number}: a weight without a user agent")
            if weight <= 0:
                raise PlanError(f"--mix: {source}:{number}: the weight must be above zero, got {number_text}")
        if _CONTROL.search(user_agent):
            raise PlanError(f"--mix: {source}:{number}: a user agent cannot hold control characters")
        mix.append((user_agent, weight))
    if not mix:
        raise PlanError(f"--mix: {source}: no user agents in the file")
    return mix


def ua_label(user_agent: str) -> str:
    """A short label for reports, as the gateway's ua-parser sees the agent: "Chrome Mobile / Android"."""
    browser, os_family, _ = _parser.families(user_agent)
    return f"{browser} / {os_family}"
