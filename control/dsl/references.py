"""Values with references: Vamp's `$cluster.host`, `$cluster.ports.NAME`, `$cluster.environment_variables.X`,
`$cluster.constants.X` and `$NAME` inside environment variable values, parsed once into a `Template`.

Syntax (Vamp's): `$` starts a reference; `$$` is a literal `$`; `${...}` is the strict form, needed when a
name character follows the reference (`${backend.host}s`). A reference is one to three names separated by
dots, a name being a run of characters other than whitespace and ``/[].{}:;,$``:

- `$NAME`: a local reference to an environment variable or constant of the same service (`LocalReference`);
- `$CLUSTER.host`: the host at which the cluster is reached (`HostReference`);
- `$CLUSTER.ports.NAME`, `$CLUSTER.environment_variables.NAME`, `$CLUSTER.constants.NAME`: a trait of
  another cluster (`TraitReference`); CLUSTER may also be an alias from the breed's `dependencies`.

Anything else after a `$` (`$a.b`, `$x.groups.y`, a lone `$` at the end) is an error, so a typo never becomes
a silent literal. `render(template, lookup)` fills the references in; `references(template)` lists them so
the caller can check that the clusters, ports and variables they name exist.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Callable

TRAIT_GROUPS = ("ports", "environment_variables", "constants")

_NAME = r"[^\s/\[\].{}:;,$]+"
_REFERENCE = re.compile(rf"{_NAME}(?:\.{_NAME}){{0,2}}")
_NAME_START = re.compile(_NAME)


@dataclass(frozen=True, slots=True)
class LocalReference:
    """`$NAME`: an environment variable or constant of the same service."""
    name: str

    @property
    def text(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class HostReference:
    """`$CLUSTER.host`: where the cluster is reached (its internal gateway's host)."""
    cluster: str

    @property
    def text(self) -> str:
        return f"{self.cluster}.host"


@dataclass(frozen=True, slots=True)
class TraitReference:
    """`$CLUSTER.GROUP.NAME` with GROUP one of ports, environment_variables, constants."""
    cluster: str
    group: str
    name: str

    @property
    def text(self) -> str:
        return f"{self.cluster}.{self.group}.{self.name}"


ValueReference = LocalReference | HostReference | TraitReference


@dataclass(frozen=True, slots=True)
class Template:
    """A value as literal text and references, in order: adjacent literals are merged and empty ones dropped,
    so two templates are equal exactly when they mean the same."""
    parts: tuple[str | ValueReference, ...] = ()

    @property
    def text(self) -> str:
        """The source form: `$` escaped as `$$`, references as `$ref`, or `${ref}` when a name follows."""
        out: list[str] = []
        for index, part in enumerate(self.parts):
            if isinstance(part, str):
                out.append(part.replace("$", "$$"))
                continue
            following = self.parts[index + 1] if index + 1 < len(self.parts) else ""
            strict = isinstance(following, str) and (following.startswith(".")
                                                     or _NAME_START.match(following) is not None)
            out.append(f"${{{part.text}}}" if strict else f"${part.text}")
        return "".join(out)


def parse_template(text: str) -> Template:
    """Parse a value; raises ValueError (one line, with the 0-based position) for a malformed reference."""
    parts: list[str | ValueReference] = []
    literal: list[str] = []
    position = 0
    while position < len(text):
        dollar = text.find("$", position)
        if dollar < 0:
            literal.append(text[position:])
            break
        literal.append(text[position:dollar])
        if text.startswith("$$", dollar):
            literal.append("$")
            position = dollar + 2
            continue
        if text.startswith("${", dollar):
            close = text.find("}", dollar + 2)
            if close < 0:
                raise ValueError(f"'${{' without a closing '}}' at position {dollar}")
            reference = _reference(text[dollar + 2:close].strip(), dollar)
            position = close + 1
        else:
            match = _REFERENCE.match(text, dollar + 1)
            if match is None:
                raise ValueError(f"expected a reference like $cluster.host after '$' at position {dollar} "
                                 "(write $$ for a literal $)")
            reference = _reference(match.group(), dollar)
            position = match.end()
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(reference)
    if "".join(literal):
        parts.append("".join(literal))
    return Template(tuple(parts))


def _reference(text: str, position: int) -> ValueReference:
    if not _REFERENCE.fullmatch(text):
        raise ValueError(f"expected a reference like $cluster.host or ${{cluster.ports.NAME}} at position "
                         f"{position}, got {text!r}")
    names = text.split(".")
    if len(names) == 1:
        return LocalReference(names[0])
    if len(names) == 2 and names[1] == "host":
        return HostReference(names[0])
    if len(names) == 3 and names[1] in TRAIT_GROUPS:
        return TraitReference(*names)
    raise ValueError(f"unknown reference '${text}' at position {position}: expected $NAME, $CLUSTER.host or "
                     f"$CLUSTER.{{{'|'.join(TRAIT_GROUPS)}}}.NAME (write $$ for a literal $)")


def references(template: Template) -> tuple[ValueReference, ...]:
    """The distinct references of a template, in the order they first appear."""
    return tuple(dict.fromkeys(part for part in template.parts if not isinstance(part, str)))


def render(template: Template, lookup: Callable[[ValueReference], str]) -> str:
    """The template's text with every reference replaced by `lookup(reference)` (whose errors propagate)."""
    return "".join(part if isinstance(part, str) else lookup(part) for part in template.parts)
