"""DslError: a document of Vamp's DSL that cannot be read or is not complete, in one line naming the document,
the path to the field at fault and what was expected."""
from __future__ import annotations

import re

Path = tuple[str | int, ...]

_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def format_path(path: Path) -> str:
    """("clusters", "sava", "services", 0, "scale") -> "clusters.sava.services[0].scale"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class DslError(ValueError):
    """`document` names the document ("blueprint 'sava:1.0'", or "document 2" when it has no usable name),
    `path` the field as written (`clusters.sava.services[0].scale.instances`, empty for the whole document),
    `expected` what is wrong ("expected a whole number >= 0, got 'x'"); `location` is the path as a tuple
    and `line` the source line when the document came from YAML text. str() is one line:
    `blueprint 'sava:1.0', clusters.sava.services[0].scale.instances: expected a whole number >= 0, got 'x'`.
    """

    def __init__(self, expected: str, location: Path = (), document: str = "", line: int | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.location = tuple(location)
        self.document = document
        self.line = line

    @property
    def path(self) -> str:
        return format_path(self.location)

    def __str__(self) -> str:
        where = ", ".join(part for part in (self.document, self.path) if part)
        text = f"{where}: {self.expected}" if where else self.expected
        if self.line is not None:
            text += f" (line {self.line})"
        return _LINE_BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
