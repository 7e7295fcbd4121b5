"""The condition grammar: parse route conditions, print them canonically, compile them to closures.

This module owns the condition language of docs/conditions.md (with Vamp's spellings). Routing calls
`compile_condition` once per configuration; the resulting `Condition.matches(request)` does no parsing and no
regex compilation per request. Config validation calls `canonical` (or `parse`) and reports `ConditionError`.

Grammar (keywords, subjects and operator words are case-insensitive; whitespace is free between tokens)::

    condition  := or
    or         := and (("or" | "||" | "|") and)*
    and        := unary (("and" | "&&" | "&") unary)*
    unary      := ("not" | "!") unary | primary
    primary    := "(" or ")" | "true" | "false" | presence | check
    presence   := ("has" | "contains" | "misses") ("cookie" | "header" | "query") NAME
    check      := SUBJECT [NAME] OPERATOR VALUE          (NAME only after cookie, header, query)

Precedence is not > and > or. A VALUE (or NAME) is either quoted with ' or " -- inside quotes a backslash
escapes the quote character or a backslash, any other backslash is literal -- or a bare word: a run of
characters other than whitespace, quotes, parentheses, `&` and `|`. So `user-agent = Mozilla/5.0` and
`path prefix /api/v1` need no quotes, but a value with a space must be quoted (`browser = "Chrome Mobile"`),
and a bare value cannot be `and` or `or`. A regular expression is written `/re/` (`\\/` for a slash inside; no
flags, use `(?i)`) in RE2 syntax and matched with RE2 (`google-re2`), which finds a match anywhere in the value
in time linear in its length, whatever the pattern: a hostile pattern cannot freeze a worker. What RE2 cannot
express (backreferences, lookahead and lookbehind, possessive quantifiers) is rejected, with its position, and so
is a pattern whose RE2 program has more than MAX_REGEX_PROGRAM instructions (which bounds the cost per byte). A
country list is `(GB, IE)`.

Operators: `=`, `==`, `is` (equality), negated `!=`, `!`, `not`; `has`, `contains`, negated `misses`;
`~`, negated `!~` (regex); `prefix` and `not prefix` (path); `in` and `not in` (country). After `not` or `!`
the words `prefix` and `in` are operators: quote them to compare with those literal values.

Semantics (every negated form is exactly `not` of its positive form, so e.g. `cookie x misses v` is true when
cookie x is absent, and `country != GB` is true when the country is unknown):

- `user-agent` (also `user.agent`, `useragent`) `= V` (`has V` is the same): the raw User-Agent contains V,
  case-insensitive -- except that Vamp's browser names Chrome, Firefox, Safari, Edge and IE (any case) mean
  `browser = V`, so `user-agent = Chrome` does not match Samsung Internet or Edge, whose agents say "Chrome".
- `host = V` / `host has V`: the Host (lower case, without port) equals / contains V, case-insensitive.
- `cookie N = V` / `cookie N has V` (same for `header N`, `query N`): the value equals / contains V,
  case-sensitive; an absent one never matches. `has cookie N` / `misses cookie N`: present / absent.
- `browser = V`, `os = V`, `device = V`: the ua-parser family contains V as whole words, case-insensitive:
  `browser = Chrome` matches Chrome, Chrome Mobile and Chrome Mobile iOS but not Samsung Internet;
  `browser = "Chrome Mobile"` only the mobile ones; `browser = Safari` Safari and Mobile Safari.
- `country = CC`, `country in (CC, ...)`: the client's ISO 3166 code (two letters, any case in the text);
  an unknown country never matches.
- `path = /p` / `path prefix /p`: the percent-decoded path equals / starts with /p.
- `method = M`: the method equals M, case-insensitive.
- `SUBJECT [N] ~ /re/`, for every subject: RE2 finds a match anywhere in the value (in the family for
  browser/os/device, in the upper-case code for country); an absent value never matches.

Cookie names are case-sensitive, header names are not (kept lower case). `parse` normalises what is
case-insensitive: header names and hosts to lower case, countries and methods to upper case.

`unparse` prints the canonical form: lower-case keywords, `and`/`or`/`not`, every value and name in double
quotes (escaping `"` and `\\`), operators `=`, `!=`, `has`, `misses`, `~`, `!~`, `prefix`, `not prefix`, `in`,
`not in`, and only the parentheses the tree needs. Parsing keeps the grouping written (`a and (b and c)`
stays two nested `And`s), so `parse(unparse(node)) == node` for every node `parse` returns.

Errors: `ConditionError.position` is the 0-based character offset of the fault in the text, and
`str(error)` is `"<message> at position <position>"` with that same 0-based number.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from operator import attrgetter, methodcaller
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, NoReturn

import re2

from gateway.common.memo import remember
from gateway.routing.request import RequestView

MAX_DEPTH = 100   # nested parentheses and negations; keeps parsing, printing and matching far from recursion limits
MAX_REGEX_PROGRAM = 100   # RE2 instructions in one regular expression: Envoy's default max_program_size


class ConditionError(ValueError):
    """A condition that does not parse; `position` is the 0-based offset of the fault in the text."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.message = message
        self.position = position


# -- the syntax tree --------------------------------------------------------------------------------------

USER_AGENT, HOST, COOKIE, HEADER, QUERY = "user-agent", "host", "cookie", "header", "query"
BROWSER, OS, DEVICE, COUNTRY, PATH, METHOD = "browser", "os", "device", "country", "path", "method"

EQUALS, HAS, REGEX, PREFIX, IN, EXISTS = "=", "has", "~", "prefix", "in", "exists"


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]   # two or more


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]   # two or more


@dataclass(frozen=True, slots=True)
class Check:
    """One predicate: `subject [name] op value`, e.g. Check(COOKIE, HAS, "abc", name="session")."""
    subject: str                              # one of the subject constants above
    op: str                                   # EQUALS, HAS, REGEX, PREFIX, IN or EXISTS
    value: str | tuple[str, ...] | None       # a tuple of country codes for IN; None for EXISTS
    name: str | None = None                   # the cookie, header or query parameter name
    negated: bool = False


Node = Const | Not | And | Or | Check

_SUBJECTS = {
    "user-agent": USER_AGENT, "user.agent": USER_AGENT, "useragent": USER_AGENT, "host": HOST,
    "cookie": COOKIE, "header": HEADER, "query": QUERY, "browser": BROWSER, "os": OS, "device": DEVICE,
    "country": COUNTRY, "path": PATH, "method": METHOD,
}
_NAMED_SUBJECTS = (COOKIE, HEADER, QUERY)
_FAMILY_SUBJECTS = (BROWSER, OS, DEVICE)
_OPERATORS = {   # what each subject accepts after parsing (user-agent's `has` is its `=`)
    USER_AGENT: (EQUALS, REGEX), HOST: (EQUALS, HAS, REGEX),
    COOKIE: (EQUALS, HAS, REGEX), HEADER: (EQUALS, HAS, REGEX), QUERY: (EQUALS, HAS, REGEX),
    BROWSER: (EQUALS, REGEX), OS: (EQUALS, REGEX), DEVICE: (EQUALS, REGEX),
    COUNTRY: (EQUALS, IN, REGEX), PATH: (EQUALS, PREFIX, REGEX), METHOD: (EQUALS, REGEX),
}
_OPERATOR_SYMBOLS = (   # (symbol, op, negated), longest first
    ("==", EQUALS, False), ("!=", EQUALS, True), ("!~", REGEX, True), ("=", EQUALS, False), ("~", REGEX, False),
    ("!", EQUALS, True),
)
_OPERATOR_WORDS = {
    "is": (EQUALS, False), "not": (EQUALS, True), "has": (HAS, False), "contains": (HAS, False),
    "misses": (HAS, True), "prefix": (PREFIX, False), "in": (IN, False),
}
_OPERATOR_SPELLINGS = {
    EQUALS: "=, ==, is, !=, !, not", HAS: "has, contains, misses", REGEX: "~, !~", PREFIX: "prefix, not prefix",
    IN: "in, not in",
}
BROWSER_FAMILY_NAMES = frozenset({"chrome", "firefox", "safari", "edge", "ie"})   # Vamp's user-agent names

_SPACES = re.compile(r"\s*")
_WORD = re.compile(r"[A-Za-z0-9_.-]+")
_BARE_VALUE = re.compile(r"[^\s()'\"&|]+")
_BARE_LIST_ITEM = re.compile(r"[^\s()'\"&|,]+")
_COUNTRY_CODE = re.compile(r"[A-Za-z]{2}")
_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


# -- parsing ------------------------------------------------------------------------------------------------

def parse(text: object) -> Node:
    """The syntax tree of a condition; raises ConditionError (and nothing else) for any input."""
    if not isinstance(text, str):
        raise ConditionError(f"a condition must be text, not {type(text).__name__}", 0)
    if not text.strip():
        raise ConditionError("empty condition", 0)
    return _Parser(text).condition()


class _Parser:
    """Recursive descent over the text; the lexing is driven by what the grammar expects next."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.bare_value_end = -1   # where the last bare value ended: hints at unquoted multi-word values

    # -- structure ----------------------------------------------------------------------------------------
    def condition(self) -> Node:
        node = self.disjunction()
        self.skip_spaces()
        if self.pos < len(self.text):
            if self.text[self.pos] == ")":
                raise ConditionError("unexpected ')' with no '(' to close", self.pos)
            self.fail_expected("'and', 'or' or the end of the condition", after_value=True)
        return node

    def disjunction(self) -> Node:
        operands = [self.conjunction()]
        while self.take_connective(("||", "|"), "or"):
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def conjunction(self) -> Node:
        operands = [self.unary()]
        while self.take_connective(("&&", "&"), "and"):
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def unary(self) -> Node:
        self.skip_spaces()
        start = self.pos
        word = self.peek_word()
        if word.lower() == "not" or (not word and self.text.startswith("!", start)):
            self.pos += len(word) or 1
            self.enter(start)
            node = Not(self.unary())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        self.skip_spaces()
        start = self.pos
        if start == len(self.text):
            raise ConditionError("expected a condition", start)
        if self.text[start] == "(":
            self.pos += 1
            self.enter(start)
            node = self.disjunction()
            self.skip_spaces()
            if self.pos == len(self.text):
                raise ConditionError("unclosed '('", start)
            if self.text[self.pos] != ")":
                self.fail_expected("'and', 'or' or ')'", after_value=True)
            self.pos += 1
            self.depth -= 1
            return node
        word = self.peek_word()
        if not word:
            self.fail_expected("a condition")
        keyword = word.lower()
        self.pos += len(word)
        if keyword in ("true", "false"):
            return Const(keyword == "true")
        if keyword in ("has", "contains", "misses"):
            return self.presence(word, negated=keyword == "misses")
        subject = _SUBJECTS.get(keyword)
        if subject is None:
            raise ConditionError(f"unknown predicate '{word}'", start)
        return self.check(subject, word)

    def presence(self, keyword: str, negated: bool) -> Check:
        self.skip_spaces()
        word = self.peek_word()
        subject = word.lower()
        if subject not in _NAMED_SUBJECTS:
            self.fail_expected(f"'cookie', 'header' or 'query' after '{keyword}'")
        self.pos += len(word)
        name = self.value(f"a {subject} name after '{word}'", _BARE_VALUE)
        return Check(subject, EXISTS, None, name.lower() if subject == HEADER else name, negated)

    def check(self, subject: str, subject_word: str) -> Check:
        name = None
        if subject in _NAMED_SUBJECTS:
            name = self.value(f"a {subject} name after '{subject_word}'", _BARE_VALUE)
            if subject == HEADER:
                name = name.lower()
        op, negated, op_text, op_start = self.operator(subject)
        if subject == USER_AGENT and op == HAS:
            op = EQUALS
        if op not in _OPERATORS[subject]:
            raise ConditionError(f"'{op_text}' does not apply to {subject}", op_start)
        if op == REGEX:
            return Check(subject, op, self.regex(op_text), name, negated)
        if op == IN:
            return Check(subject, op, self.country_list(op_text), name, negated)
        self.skip_spaces()
        value_start = self.pos
        value = self.value(f"a value after '{op_text}'", _BARE_VALUE)
        return Check(subject, op, _normalised(subject, value, value_start), name, negated)

    # -- tokens -------------------------------------------------------------------------------------------
    def operator(self, subject: str) -> tuple[str, bool, str, int]:
        """(op, negated, the operator as written, its position)."""
        self.skip_spaces()
        start = self.pos
        op: str | None
        for symbol, op, negated in _OPERATOR_SYMBOLS:  # noqa: B007 - the match found is used after the loop
            if self.text.startswith(symbol, start):
                self.pos += len(symbol)
                break
        else:
            word = self.peek_word()
            op, negated = _OPERATOR_WORDS.get(word.lower(), (None, False))
            if op is None:
                spellings = "; ".join(_OPERATOR_SPELLINGS[o] for o in _OPERATORS[subject])
                self.fail_expected(f"an operator for {subject} ({spellings})")
            self.pos += len(word)
        if self.text[start:self.pos].lower() in ("!", "not"):   # `not prefix`, `! in`, where the subject has them
            self.skip_spaces()
            token = _BARE_VALUE.match(self.text, self.pos)
            word = token.group().lower() if token else ""
            if (word == PREFIX and subject == PATH) or (word == IN and subject == COUNTRY):
                self.pos += len(word)
                op = word
        return op, negated, self.text[start:self.pos].rstrip(), start

    def value(self, expected: str, bare: re.Pattern[str]) -> str:
        self.skip_spaces()
        start = self.pos
        if start < len(self.text) and self.text[start] in "'\"":
            return self.quoted()
        match = bare.match(self.text, start)
        if match is None:
            self.fail_expected(expected)
        word = match.group()
        if word.lower() in ("and", "or"):
            raise ConditionError(f"expected {expected}, found '{word}' (quote it to use it as a value)", start)
        self.pos = self.bare_value_end = match.end()
        return word

    def quoted(self) -> str:
        start = self.pos
        quote = self.text[start]
        chars: list[str] = []
        i = start + 1
        while i < len(self.text):
            char = self.text[i]
            if char == quote:
                self.pos = i + 1
                return "".join(chars)
            if char == "\\" and i + 1 < len(self.text) and self.text[i + 1] in (quote, "\\"):
                i += 1
                char = self.text[i]
            chars.append(char)
            i += 1
        raise ConditionError(f"unterminated string (no closing {quote})", start)

    def regex(self, op_text: str) -> str:
        self.skip_spaces()
        start = self.pos
        if not self.text.startswith("/", start):
            self.fail_expected(f"a /regular expression/ after '{op_text}'")
        i = start + 1
        while i < len(self.text) and self.text[i] != "/":
            i += 2 if self.text[i] == "\\" else 1
        if i >= len(self.text):
            raise ConditionError("unterminated regular expression (no closing /)", start)
        source = self.text[start + 1:i]
        compile_regex(source, offset=start + 1)
        self.pos = i + 1
        return source

    def country_list(self, op_text: str) -> tuple[str, ...]:
        self.skip_spaces()
        if not self.text.startswith("(", self.pos):
            self.fail_expected(f"'(' after '{op_text}'")
        self.pos += 1
        codes = []
        separator = "("
        while True:   # each pass consumes at least one character, so this ends
            self.skip_spaces()
            start = self.pos
            codes.append(_normalised(COUNTRY, self.value(f"a country after '{separator}'", _BARE_LIST_ITEM), start))
            self.skip_spaces()
            separator = self.text[self.pos:self.pos + 1]
            if separator not in (",", ")"):
                self.fail_expected("',' or ')' in the country list")
            self.pos += 1
            if separator == ")":
                return tuple(codes)

    def take_connective(self, symbols: tuple[str, ...], word: str) -> bool:
        self.skip_spaces()
        for symbol in symbols:
            if self.text.startswith(symbol, self.pos):
                self.pos += len(symbol)
                return True
        found = self.peek_word()
        if found.lower() == word:
            self.pos += len(found)
            return True
        return False

    def peek_word(self) -> str:
        match = _WORD.match(self.text, self.pos)
        return match.group() if match else ""

    def skip_spaces(self) -> None:
        self.pos = _SPACES.match(self.text, self.pos).end()  # type: ignore[union-attr]  # `\s*` always matches

    def enter(self, start: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(f"condition nested too deeply (more than {MAX_DEPTH} levels)", start)

    def fail_expected(self, expected: str, after_value: bool = False) -> NoReturn:
        """Raise "expected X, found Y"; `after_value` hints at quoting when a bare value was followed by a word."""
        start = self.pos
        if start >= len(self.text):
            raise ConditionError(f"expected {expected}, found the end", start)
        token = _BARE_VALUE.match(self.text, start)
        found = token.group() if token else self.text[start]
        if len(found) > 30:
            found = found[:27] + "..."
        hint = ""
        if after_value and token and self.bare_value_end >= 0 and self.text[self.bare_value_end:start].isspace():
            hint = " (quote values that contain spaces)"
        raise ConditionError(f"expected {expected}, found '{found}'{hint}", start)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.never_capture = True    # conditions only ask "is there a match": no submatch tracking
_RE2_OPTIONS.log_errors = False      # a rejected pattern is the user's error, reported as a ConditionError
_RE2_CAPTURING = re2.Options()       # route rewrites (gateway.proxy.rules) read their groups
_RE2_CAPTURING.log_errors = False
_UNANCHORED = re2._Anchor.UNANCHORED   # with `_Regexp._regexp.Match` below: re2's C++ binding (google-re2 1.x)
_LOOKAROUND = ("(?=", "(?!", "(?<=", "(?<!")
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")
_NOT_IN_RE2 = "conditions use RE2, which runs in linear time"


def compile_regex(source: str, offset: int = 0, captures: bool = False) -> re2._Regexp:
    """The RE2 regular expression of a condition; a ConditionError (at `offset` + the position of the fault
    in `source`) for what RE2 cannot express or for a program over MAX_REGEX_PROGRAM instructions. With
    `captures`, the match reports its groups (a route's path rewrite); conditions never ask for them."""
    try:
        compiled = re2.compile(source, _RE2_CAPTURING if captures else _RE2_OPTIONS)
    except re2.error as error:
        message, position = _explained(error, source)
        raise ConditionError(message, offset + position) from None
    except UnicodeEncodeError as error:   # a lone surrogate, from JSON's \ud800
        raise ConditionError("invalid regular expression: not valid Unicode text", offset + error.start) from None
    if compiled.programsize > MAX_REGEX_PROGRAM:
        raise ConditionError(f"regular expression too complex: its RE2 program has {compiled.programsize} "
                             f"instructions, at most {MAX_REGEX_PROGRAM} are allowed (simplify it, or split it "
                             "into several conditions)", offset)
    return compiled


def _explained(error: re2.error, source: str) -> tuple[str, int]:
    """(message, position in source) for RE2's error text, "<what>: <the text at fault>"."""
    what, fault = _error_parts(error)
    position = _fault_position(source, what, fault)
    if what == "invalid perl operator" and source.startswith(_LOOKAROUND, position):
        found = next(prefix for prefix in _LOOKAROUND if source.startswith(prefix, position))
        return f"invalid regular expression: lookaround '{found}' is not supported ({_NOT_IN_RE2})", position
    backreference = _BACKREFERENCE.match(source, position)
    if backreference:
        return (f"invalid regular expression: backreference '{backreference.group()}' is not supported "
                f"({_NOT_IN_RE2})", position)
    if what in ("missing )", "unexpected )", "trailing \\") or not fault:
        return f"invalid regular expression: {what}", position
    shown = fault if len(fault) <= 30 else fault[:27] + "..."
    return f"invalid regular expression: {what} '{shown}'", position


def _error_parts(error: re2.error) -> tuple[str, str]:
    text = error.args[0] if error.args else ""
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    what, _, fault = text.partition(": ")
    return what, fault


def _fault_position(source: str, what: str, fault: str) -> int:
    """Where in `source` RE2's error points. RE2 names the text at fault but not its offset: of the places
    that text appears (outside escapes and, unless the fault is about a class, outside classes), the first
    where the pattern cut just after it, its parentheses closed, fails the same way."""
    scan = _Scan(source, what, fault)
    if what == "missing )" and scan.unclosed:
        return scan.unclosed[-1]
    if what == "unexpected )" and scan.unexpected is not None:
        return scan.unexpected
    if what == "trailing \\":
        return max(0, len(source) - 1)
    if len(scan.candidates) > 16:            # each check compiles a prefix: keep the worst case small
        return scan.candidates[0]
    for position in scan.candidates[:-1]:    # the last one, if it comes to that, is the fault by elimination
        prefix = _Scan(source[:position + len(fault)], what, "")
        if prefix.in_class:
            continue
        try:
            re2.compile(prefix.source + ")" * len(prefix.unclosed), _RE2_OPTIONS)
        except re2.error as error:
            if _error_parts(error) == (what, fault):
                return position
    if scan.candidates:
        return scan.candidates[-1]
    return max(source.find(fault), 0) if fault else 0


class _Scan:
    """One pass over a pattern: the places `fault` appears, the '(' left open, the first ')' that closes
    nothing, and whether it ends inside a character class (escapes, classes and \\Q...\\E are skipped)."""

    def __init__(self, source: str, what: str, fault: str) -> None:
        self.source = source
        self.candidates: list[int] = []
        self.unclosed: list[int] = []
        self.unexpected: int | None = None
        self.in_class = False
        class_body = 0
        i = 0
        while i < len(source):
            if (fault and source.startswith(fault, i)
                    and (not self.in_class or fault[0] == "\\" or "class" in what)
                    and not source.startswith("(?P<", i)):   # RE2 says "(?P" for "(?P=", not for named groups
                self.candidates.append(i)
            char = source[i]
            if source.startswith("\\Q", i):
                end = source.find("\\E", i + 2)
                i = len(source) if end < 0 else end + 2
            elif char == "\\":
                i += 2
            elif self.in_class:
                closing = source.find(":]", i + 2) if source.startswith("[:", i) else -1
                if closing >= 0:
                    i = closing + 2
                    continue
                if char == "]" and i > class_body:
                    self.in_class = False
                i += 1
            elif char == "[":
                self.in_class = True
                i += 2 if source.startswith("^", i + 1) else 1
                class_body = i       # a ']' right here is a literal
            else:
                if char == "(":
                    self.unclosed.append(i)
                elif char == ")":
                    if self.unclosed:
                        self.unclosed.pop()
                    elif self.unexpected is None:
                        self.unexpected = i
                i += 1


def _normalised(subject: str, value: str, position: int) -> str:
    """The value as the tree keeps it; rejects values that can never be valid for the subject."""
    if subject == COUNTRY:
        if not _COUNTRY_CODE.fullmatch(value):
            raise ConditionError(f"a country is a two-letter ISO 3166 code, not '{value}'", position)
        return value.upper()
    if subject == METHOD:
        if not _HTTP_TOKEN.fullmatch(value):
            raise ConditionError(f"'{value}' is not an HTTP method", position)
        return value.upper()
    if subject == HOST:
        return value.lower()
    if subject in _FAMILY_SUBJECTS and not value.strip():
        raise ConditionError(f"expected a {subject} family name", position)
    return value


# -- printing -------------------------------------------------------------------------------------------------

def unparse(node: Node) -> str:
    """The canonical text of a tree: parse(unparse(node)) == node."""
    if isinstance(node, Const):
        return "true" if node.value else "false"
    if isinstance(node, Not):
        return "not " + _grouped(node.operand, (And, Or))
    if isinstance(node, And):
        return " and ".join(_grouped(operand, (And, Or)) for operand in node.operands)
    if isinstance(node, Or):
        return " or ".join(_grouped(operand, (Or,)) for operand in node.operands)
    return _unparse_check(node)


def canonical(text: str) -> str:
    """The canonical form of a condition text (raises ConditionError when it does not parse)."""
    return unparse(parse(text))


def _grouped(node: Node, needs_parentheses: tuple[type, ...]) -> str:
    text = unparse(node)
    return f"({text})" if isinstance(node, needs_parentheses) else text


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PRINTED_OPERATORS = {   # (op, negated) -> text
    (EQUALS, False): "=", (EQUALS, True): "!=", (HAS, False): "has", (HAS, True): "misses",
    (REGEX, False): "~", (REGEX, True): "!~", (PREFIX, False): "prefix", (PREFIX, True): "not prefix",
    (IN, False): "in", (IN, True): "not in",
}


def _unparse_check(check: Check) -> str:
    given: Any = check.value      # by op: a tuple of country codes for IN, else a str (None only for EXISTS)
    named: Any = check.name       # a str for the named subjects (cookie, header, query), which EXISTS is for
    if check.op == EXISTS:
        return f"{'misses' if check.negated else 'has'} {check.subject} {_quoted(named)}"
    if check.op == REGEX:
        value = f"/{given}/"
    elif check.op == IN:
        value = "(" + ", ".join(map(_quoted, given)) + ")"
    else:
        value = _quoted(given)
    name = f" {_quoted(named)}" if check.subject in _NAMED_SUBJECTS else ""
    return f"{check.subject}{name} {_PRINTED_OPERATORS[check.op, check.negated]} {value}"


# -- compiling ------------------------------------------------------------------------------------------------

Matcher = Callable[[RequestView], bool]


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition: call `matches(request)` on the hot path."""
    text: str                                    # canonical text
    node: Node
    matches: Matcher = field(compare=False, repr=False)
    needs_user_agent: bool = False               # a browser/os/device predicate is present
    needs_country: bool = False


def compile_condition(text_or_node: str | Node) -> Condition:
    """Parse (a tree is checked by printing and re-parsing it) and compile, once, at configuration time."""
    node = parse(text_or_node if isinstance(text_or_node, str) else unparse(text_or_node))
    checks = list(_checks(node))
    return Condition(
        text=unparse(node),
        node=node,
        matches=_compile(node),
        needs_user_agent=any(c.subject in _FAMILY_SUBJECTS or _is_browser_alias(c) for c in checks),
        needs_country=any(c.subject == COUNTRY for c in checks),
    )


def _checks(node: Node) -> Iterator[Check]:
    if isinstance(node, Check):
        yield node
    elif isinstance(node, Not):
        yield from _checks(node.operand)
    elif isinstance(node, (And, Or)):
        for operand in node.operands:
            yield from _checks(operand)


def _is_browser_alias(check: Check) -> bool:
    value: Any = check.value      # a str for EQUALS
    return check.subject == USER_AGENT and check.op == EQUALS and value.lower() in BROWSER_FAMILY_NAMES


def _always(request: RequestView) -> bool:
    return True


def _never(request: RequestView) -> bool:
    return False


def _compile(node: Node) -> Matcher:
    if isinstance(node, Const):
        return _always if node.value else _never
    if isinstance(node, Not):
        return _negation(_compile(node.operand))
    if isinstance(node, (And, Or)):
        matchers = tuple(_compile(operand) for operand in node.operands)
        return _all(matchers) if isinstance(node, And) else _any(matchers)
    matcher = _compile_check(node)
    return _negation(matcher) if node.negated else matcher


def _negation(matcher: Matcher) -> Matcher:
    def negation(request: RequestView) -> bool:
        return not matcher(request)
    return negation


def _all(matchers: tuple[Matcher, ...]) -> Matcher:
    if len(matchers) == 2:
        first, second = matchers

        def both(request: RequestView) -> bool:
            return first(request) and second(request)
        return both

    def every(request: RequestView) -> bool:
        for matcher in matchers:
            if not matcher(request):
                return False
        return True
    return every


def _any(matchers: tuple[Matcher, ...]) -> Matcher:
    if len(matchers) == 2:
        first, second = matchers

        def either(request: RequestView) -> bool:
            return first(request) or second(request)
        return either

    def some(request: RequestView) -> bool:
        for matcher in matchers:
            if matcher(request):
                return True
        return False
    return some


Getter = Callable[[RequestView], str | None]     # a subject's value, None when absent
TextGetter = Callable[[RequestView], str]           # a subject's value that is always there

_TEXT_GETTERS: dict[str, TextGetter] = {   # subject -> how to read its value from a RequestView
    USER_AGENT: attrgetter("user_agent"), HOST: attrgetter("host"), BROWSER: attrgetter("browser"),
    OS: attrgetter("os"), DEVICE: attrgetter("device"), PATH: attrgetter("path"), METHOD: attrgetter("method"),
}
_GETTERS: dict[str, Getter] = {**_TEXT_GETTERS, COUNTRY: methodcaller("country")}   # the country: None if unknown


def _compile_check(check: Check) -> Matcher:
    """The positive form of one predicate as a closure over precomputed values."""
    get: Getter
    if check.subject in _NAMED_SUBJECTS:
        get = methodcaller(check.subject, check.name)
    else:
        get = _GETTERS[check.subject]
    value: Any      # by op: a tuple of country codes for IN, else a str (None only for EXISTS)
    op, value = check.op, check.value

    if op == EXISTS:
        def present(request: RequestView) -> bool:
            return get(request) is not None
        return present

    if op == REGEX:
        # RE2's own object, called directly: re2's Python `search` builds a generator and a match object per
        # call (3-4 us), this is one call into C++ (under 1 us for a User-Agent).
        match: Callable[[int, bytes, int, int], Sequence[tuple[int, int]]] = compile_regex(value)._regexp.Match

        def regex_matches(request: RequestView) -> bool:
            found = get(request)
            if found is None:
                return False
            encoded = found.encode("utf-8", "surrogatepass")
            return match(_UNANCHORED, encoded, 0, len(encoded))[0][0] >= 0
        return regex_matches

    if check.subject in _FAMILY_SUBJECTS or _is_browser_alias(check):
        family_of = _TEXT_GETTERS[BROWSER if check.subject == USER_AGENT else check.subject]
        words: str = re.escape(value)
        search_words = re.compile(r"(?<!\w)" + words + r"(?!\w)", re.IGNORECASE).search

        def family_matches(request: RequestView) -> bool:
            return search_words(family_of(request)) is not None
        return _remembered_by_user_agent(family_matches)

    if check.subject == USER_AGENT:
        needle = value.lower()

        def user_agent_contains(request: RequestView) -> bool:
            return needle in request.user_agent.lower()
        return _remembered_by_user_agent(user_agent_contains)

    if op == HAS:
        def contains(request: RequestView) -> bool:
            found = get(request)
            return found is not None and value in found
        return contains

    if op == PREFIX:
        path_of = _TEXT_GETTERS[check.subject]      # `prefix` is the path's
        prefix: str = value

        def starts_with(request: RequestView) -> bool:
            return path_of(request).startswith(prefix)
        return starts_with

    if op == IN:
        members = frozenset(value)

        def is_member(request: RequestView) -> bool:
            return get(request) in members
        return is_member

    expected: str = value

    def equals(request: RequestView) -> bool:
        return get(request) == expected
    return equals


VERDICTS_REMEMBERED: Final = 4096        # user agents whose verdict one predicate remembers (forgotten all at once)
REMEMBERED_AGENT_BYTES: Final = 512      # longer user agents are judged every time


def _remembered_by_user_agent(judge: Matcher) -> Matcher:
    """A predicate on the user agent alone, remembering its verdict per User-Agent value as sent: keep-alive
    clients and fleets of one browser repeat theirs, and a hit is one dict lookup instead of the family lookup
    and a regular expression. The memory is bounded (entries and their length), keyed by the exact bytes, and a
    client sending a new user agent every time costs one lookup and one store more than a plain judgement."""
    verdicts: dict[bytes, bool] = {}
    remembered = verdicts.get

    def judged_once(request: RequestView) -> bool:
        agent = request.raw_user_agent
        if agent is None:
            return judge(request)
        verdict = remembered(agent)
        if verdict is None:
            return remember(verdicts, agent, judge(request), VERDICTS_REMEMBERED, REMEMBERED_AGENT_BYTES)
        return verdict
    return judged_once
