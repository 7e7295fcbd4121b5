"""Strict YAML reading shared by every file format of Vamp (gateway configs, Vamp's DSL documents).

PyYAML's safe loader, made strict: duplicate keys are refused (PyYAML keeps the last one silently), keys must
be plain scalars and are kept as the text written (`9050:` is the name "9050", not a number), and every error
carries its source line. One exception, for VAMP's external routes written without quotes: a key that is a
flow list of one plain scalar, `[external/1/2]:`, is the text "[external/1/2]". `line_of` finds the line of a
field in the node tree, so validation errors found after loading can name it too.

Hostile text is refused before anything is built from it: lists and mappings nest at most MAX_DEPTH levels
(checked while the node tree is composed, so a deep document never reaches Python's recursion limit), and
aliases may neither refer to the node that contains them nor make a document, expanded, more than MAX_DEPTH
levels deep or MAX_NODES nodes big ("billion laughs").
"""
from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import yaml

MAX_DEPTH = 64              # levels of nested lists and mappings in one document
MAX_NODES = 1_000_000       # nodes of one document with its aliases expanded
TOO_DEEP = f"nested too deeply: at most {MAX_DEPTH} levels of lists and mappings"

_NodeOrNone = TypeVar("_NodeOrNone", bound="yaml.Node | None")


class YamlTextError(ValueError):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0              # of the collection being composed
        self.aliased = False        # whether the document composed so far uses an alias

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliased = True
        return super().compose_node(parent, index)

    # `anchor`: the anchor's name or None (types-PyYAML declares it a dict)
    def compose_sequence_node(self, anchor: Any) -> yaml.SequenceNode:
        with self._nested():
            return super().compose_sequence_node(anchor)

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        with self._nested():
            return super().compose_mapping_node(anchor)

    @contextmanager
    def _nested(self) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            # (types-PyYAML leaves Parser.peek_event unannotated)
            raise YamlTextError(TOO_DEEP, self.peek_event().start_mark.line + 1)  # type: ignore[no-untyped-call]
        try:
            yield
        finally:
            self.depth -= 1

    def checked(self, node: _NodeOrNone) -> _NodeOrNone:
        """`node` (a composed document), once its aliases are known not to loop, nest too deeply or blow up."""
        if node is not None and self.aliased:
            _check_expansion(node)
        self.aliased = False
        return node

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Hashable, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping, found {node.id}",  # type: ignore[attr-defined]  # every node kind has one
                node.start_mark)
        first_lines: dict[str, int] = {}
        node.value = [(_bracketed(key_node), value_node) for key_node, value_node in node.value]
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlTextError(f"a key must be a plain name, not a {key_node.id}", line)
            if key_node.value in first_lines:
                raise YamlTextError(f"duplicate key {key_node.value!r} (first on line "
                                    f"{first_lines[key_node.value]})", line)
            first_lines[key_node.value] = line
        self.flatten_mapping(node)
        return {key_node.value: self.construct_object(value_node, deep=deep) for key_node, value_node in node.value}


def _bracketed(key: yaml.Node) -> yaml.Node:
    """`[external/1/2]` (a flow list of one plain scalar) as the scalar "[external/1/2]"; any other key as it is."""
    if isinstance(key, yaml.SequenceNode) and key.flow_style and len(key.value) == 1 \
            and isinstance(key.value[0], yaml.ScalarNode) and key.value[0].tag == "tag:yaml.org,2002:str" \
            and key.value[0].style is None:
        return yaml.ScalarNode("tag:yaml.org,2002:str", f"[{key.value[0].value}]", key.start_mark, key.end_mark)
    return key


def _check_expansion(root: yaml.Node) -> None:
    """Refuses a node tree whose aliases loop or, expanded, nest deeper than MAX_DEPTH or count more than
    MAX_NODES nodes. Each node is measured once (its height and expanded size remembered), so this takes time
    in proportion to the text, however much its aliases would expand."""
    measured: dict[int, tuple[int, int]] = {}       # id(node) -> (levels of collections, nodes expanded)
    open_nodes: set[int] = set()

    def measure(node: yaml.Node, level: int) -> tuple[int, int]:
        """(height, size) of `node`, found `level` collections deep."""
        if isinstance(node, yaml.ScalarNode):
            return 0, 1
        line = node.start_mark.line + 1
        if id(node) not in measured:
            if id(node) in open_nodes:
                raise YamlTextError("a YAML alias refers to a node that contains it", line)
            if level >= MAX_DEPTH:
                raise YamlTextError(TOO_DEEP + " (with its aliases expanded)", line)
            open_nodes.add(id(node))
            children = node.value if isinstance(node, yaml.SequenceNode) else \
                [part for pair in node.value for part in pair]
            height, size = 0, 1
            for child in children:
                child_height, child_size = measure(child, level + 1)
                height, size = max(height, child_height), size + child_size
                if size > MAX_NODES:
                    raise YamlTextError(f"YAML aliases expand this document to more than {MAX_NODES:,} nodes",
                                        line)
            open_nodes.discard(id(node))
            measured[id(node)] = (height + 1, size)
        height, size = measured[id(node)]
        if level + height > MAX_DEPTH:
            raise YamlTextError(TOO_DEEP + " (with its aliases expanded)", line)
        return height, size

    measure(root, 0)


def _loader(text: str, source: str) -> _StrictLoader:
    try:
        loader = _StrictLoader(text)
    except yaml.reader.ReaderError as exc:
        raise YamlTextError(f"YAML syntax error: {exc.reason} (#x{exc.character:04x})",
                            text.count("\n", 0, exc.position) + 1) from None
    loader.name = source
    return loader


@contextmanager
def _translated(loader: _StrictLoader) -> Iterator[None]:
    """PyYAML's errors as YamlTextError with the line; the loader disposed of at the end."""
    try:
        yield
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = ", ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        raise YamlTextError(f"YAML syntax error: {problem}", mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()


def documents(text: str, source: str = "<text>") -> Iterator[tuple[yaml.Node, Any]]:
    """(node, data) of every document of `text`, empty ones included (data None)."""
    loader = _loader(text, source)
    with _translated(loader):
        while loader.check_node():
            composed = loader.get_node()
            assert composed is not None         # check_node() found one (an empty document is an empty scalar)
            node = loader.checked(composed)
            yield node, loader.construct_document(node)


def single_document(text: str, source: str = "<text>") -> tuple[yaml.Node | None, Any]:
    """The one document of `text` ((None, None) when empty); a second one is an error."""
    loader = _loader(text, source)
    with _translated(loader):
        node = loader.checked(loader.get_single_node())
        return node, (loader.construct_document(node) if node is not None else None)


def line_of(node: yaml.Node | None, location: Sequence[str | int]) -> int | None:
    """The source line of the deepest part of `location` present in the node tree: a mapping entry's key
    line, a list item's line, or a list item found by its `name` field."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in location:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            entry = next(((k, v) for k, v in reversed(node.value)
                          if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if entry is None:
                return line
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, str):
            named = next((item for item in node.value if _name_of(item) == part), None)
            if named is None:
                return line
            node, line = named, named.start_mark.line + 1
        else:
            return line
    return line


def _name_of(node: yaml.Node) -> str | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "name" \
                    and isinstance(value_node, yaml.ScalarNode):
                name: str = value_node.value
                return name
    return None
