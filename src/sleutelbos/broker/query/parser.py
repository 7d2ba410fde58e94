"""Parser of the NGSI-LD Query Language, the ``q`` parameter (ETSI GS CIM 009 v1.8/v1.9, clause 4.9).

A hand-written scanner and recursive-descent parser over the clause's ABNF::

    Query          = (QueryTerm / QueryTermAssoc) *(LogicalOp (QueryTerm / QueryTermAssoc))
    QueryTermAssoc = "(" QueryTerm *(LogicalOp QueryTerm) ")"
    QueryTerm      = Attribute [ Operator ComparableValue / ("=="/"!=") CompEqualityValue
                                 / "~=" RegExp / "!~=" RegExp ]
    Attribute      = DottedPath *1("[" DottedPath "]")
    CompEqualityValue = OtherValue / ValueList / Range / URI

Precedence follows the clause: ``;`` (AND) binds tighter than ``|`` (OR); parentheses group and may nest (the
clause's example 6 nests them although the ABNF does not). The result is an :mod:`.ast` tree whose attribute names
are expanded with the caller's @context (clause 5.5.7), so evaluation never looks a term up again.

Where the clause leaves room, this parser decides (see docs/decisions/0550-ngsi-ld-query-language.md):

* an unquoted word that is not a number, boolean, dateTime, date, time or URI is read as a string
  (``brandName==Mercedes``), as Orion-LD does;
* an unquoted regular expression ends at the first ``;`` or ``|`` outside parentheses/brackets — quote it
  (``name~="a|b"``) to use those characters;
* ``!attr`` (no such attribute) is accepted, as Orion-LD does; the clause itself only negates operators.

Left out, with a typed error: linked-entity paths ``attr{...}`` (clause 4.5.23), ``expandValues``/``jsonKeys``.
A syntax error is a :class:`QuerySyntaxError` (ETSI BadRequestData) whose ``detail`` names the position (0-based)
and what was expected there.
"""

from __future__ import annotations

import json
import re
from typing import Final, Protocol

from sleutelbos.broker.errors import BadRequestData, OperationNotSupported, TooComplexQuery
from sleutelbos.broker.query.ast import (
    INSTANCE_METADATA,
    And,
    AttributePath,
    Comparison,
    Exists,
    Node,
    Operator,
    Or,
    Pattern,
    Range,
)
from sleutelbos.broker.query.values import Literal, classify_bare

MAX_QUERY_LENGTH: Final = 8192
MAX_DEPTH: Final = 32
MAX_TERMS: Final = 256

_OPERATORS: Final = ("!~=", "==", "!=", "~=", ">=", "<=", ">", "<")
_BARE_WORD: Final = re.compile(r"^[\w\-]+$")
_COMPOUND_STOP: Final = frozenset('.[]"\\')
#: AttrName = unicodeLetter *(unicodeLetter / unicodeNumber / "_") — ``[^\W\d_]`` is "a word character that is
#: neither a digit nor '_'", i.e. a letter.
_NAME: Final = re.compile(r"[^\W\d_]\w*")


class TermExpander(Protocol):
    """What the parser needs of a ``CompiledContext`` (``sleutelbos.broker.context``)."""

    def expand_term(self, name: str) -> str: ...


class QuerySyntaxError(BadRequestData):
    """``q`` does not parse; ``position`` is the 0-based offset in the (URL-decoded) query where it went wrong."""

    def __init__(self, message: str, position: int, query: str) -> None:
        super().__init__(f"invalid q at position {position}: {message} (q={query!r})")
        self.position = position
        self.message = message


class UnsupportedQuery(OperationNotSupported):
    """``q`` is valid NGSI-LD but uses a part this broker does not implement (linked-entity paths)."""


class _Parser:
    def __init__(self, text: str, context: TermExpander) -> None:
        self.text = text
        self.pos = 0
        self.context = context
        self.terms = 0

    # --- helpers -------------------------------------------------------------------------------------------
    def error(self, message: str, position: int | None = None) -> QuerySyntaxError:
        return QuerySyntaxError(message, self.pos if position is None else position, self.text)

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def describe_here(self) -> str:
        return "end of query" if self.at_end() else repr(self.text[self.pos])

    # --- logical structure ---------------------------------------------------------------------------------
    def parse(self) -> Node:
        if not self.text:
            raise self.error("empty query")
        node = self.or_expr(0)
        if not self.at_end():
            if self.peek() == ")":
                raise self.error("unbalanced ')'")
            raise self.error(f"expected ';', '|' or end of query, found {self.describe_here()}")
        return node

    def or_expr(self, depth: int) -> Node:
        terms = [self.and_expr(depth)]
        while self.peek() == "|":
            self.pos += 1
            terms.append(self.and_expr(depth))
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def and_expr(self, depth: int) -> Node:
        terms = [self.primary(depth)]
        while self.peek() == ";":
            self.pos += 1
            terms.append(self.primary(depth))
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def primary(self, depth: int) -> Node:
        if self.peek() == "(":
            if depth >= MAX_DEPTH:
                raise TooComplexQuery(f"q nests parentheses more than {MAX_DEPTH} levels deep")
            start = self.pos
            self.pos += 1
            node = self.or_expr(depth + 1)
            if self.peek() != ")":
                raise self.error(f"expected ')' to close the '(' at position {start}, found {self.describe_here()}")
            self.pos += 1
            return node
        return self.term()

    # --- query terms ---------------------------------------------------------------------------------------
    def term(self) -> Node:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise TooComplexQuery(f"q has more than {MAX_TERMS} query terms")
        negated = False
        if self.peek() == "!" and self.text[self.pos + 1:self.pos + 2] not in ("=", "~"):
            negated = True
            self.pos += 1
        path = self.attribute_path()
        op_start = self.pos
        op = next((o for o in _OPERATORS if self.text.startswith(o, self.pos)), None)
        if op is None:
            if self.at_end() or self.peek() in ";|)":
                return Exists(path, negated)
            raise self.error(f"expected an operator (==, !=, <, <=, >, >=, ~=, !~=), ';', '|' or ')' after "
                             f"attribute path {path.text!r}, found {self.describe_here()}")
        if negated:
            raise self.error("'!' negates an attribute's existence and takes no operator; use != or !~=", op_start)
        self.pos += len(op)
        if op in ("~=", "!~="):
            return Pattern(path, self.regex(), negated=op == "!~=")
        return self.comparison(path, op, op_start)  # type: ignore[arg-type]

    def attribute_path(self) -> AttributePath:
        start = self.pos
        names = [self.name("an attribute name")]
        while self.peek() == "." and self.text[self.pos + 1:self.pos + 2] != ".":
            self.pos += 1
            names.append(self.name("an attribute name after '.'"))
        if self.peek() == "{":
            raise UnsupportedQuery(
                f"linked-entity query paths ({names[-1]}{{...}}, clause 4.5.23) are not supported (q={self.text!r})"
            )
        compound: tuple[str, ...] | None = None
        if self.peek() == "[":
            self.pos += 1
            parts = [self.compound_name()]
            while self.peek() == ".":
                self.pos += 1
                parts.append(self.compound_name())
            if self.peek() != "]":
                raise self.error(f"expected ']' or '.' in the compound path, found {self.describe_here()}")
            self.pos += 1
            compound = tuple(parts)
        text = self.text[start:self.pos]
        metadata = None
        if len(names) > 1 and names[-1] in INSTANCE_METADATA:
            metadata = names.pop()
            if compound is not None:
                raise self.error(f"{metadata} is a plain value and has no compound path", start)
        for i, name in enumerate(names[1:], start=1):
            if name in INSTANCE_METADATA:
                raise self.error(f"{name} must be the last name of a dotted path", start)
            names[i] = name
        expand = self.context.expand_term
        return AttributePath(
            attribute=expand(names[0]),
            sub_attributes=tuple(expand(n) for n in names[1:]),
            metadata=metadata,
            compound=compound,
            text=text,
        )

    def name(self, what: str) -> str:
        match = _NAME.match(self.text, self.pos)
        if match is None:
            raise self.error(f"expected {what} (a letter, then letters, digits or '_'), found {self.describe_here()}")
        self.pos = match.end()
        return match.group()

    def compound_name(self) -> str:
        start = self.pos
        while not self.at_end() and self.text[self.pos] not in _COMPOUND_STOP:
            self.pos += 1
        if self.pos == start:
            raise self.error(f"expected a member name in the compound path, found {self.describe_here()}")
        return self.text[start:self.pos]

    # --- values --------------------------------------------------------------------------------------------
    def comparison(self, path: AttributePath, op: Operator, op_start: int) -> Comparison:
        value_start = self.pos
        first = self.value()
        value: Literal | Range | tuple[Literal, ...] = first
        if self.text.startswith("..", self.pos):
            self.pos += 2
            high_start = self.pos
            high = self.value()
            for lit, at in ((first, value_start), (high, high_start)):
                if lit.kind in ("boolean", "uri"):
                    raise self.error(f"a range bound must be a number, string, dateTime, date or time, "
                                     f"not {lit.kind} {lit.text!r}", at)
            if first.kind != high.kind:
                raise self.error(f"range bounds have different types ({first.kind} and {high.kind})", high_start)
            value = Range(first, high)
        elif self.peek() == ",":
            items = [first]
            while self.peek() == ",":
                self.pos += 1
                items.append(self.value())
            value = tuple(items)
        if op not in ("==", "!="):
            if not isinstance(value, Literal):
                raise self.error(f"ranges and value lists are only allowed with == and !=, not {op}", op_start)
            if value.kind in ("boolean", "uri"):
                raise self.error(f"{op} needs a number, string, dateTime, date or time, not {value.kind} "
                                 f"{value.text!r}", value_start)
        literals = value if isinstance(value, tuple) else (value,) if isinstance(value, Literal) else ()
        vocab = tuple(
            expanded
            for lit in literals
            if lit.is_textual and (expanded := self.context.expand_term(lit.value)) != lit.value
        )
        return Comparison(path, op, value, vocab)

    def value(self) -> Literal:
        start = self.pos
        if self.peek() == '"':
            try:
                decoded, end = json.JSONDecoder().raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                raise self.error(f"unterminated or invalid quoted string: {exc.msg}", exc.pos) from exc
            self.pos = end
            return Literal("string", decoded, self.text[start:end])
        while not self.at_end():
            ch = self.text[self.pos]
            if ch in ";|),\"" or self.text.startswith("..", self.pos):
                break
            self.pos += 1
        raw = self.text[start:self.pos]
        if not raw:
            raise self.error(f"expected a value, found {self.describe_here()}")
        literal = classify_bare(raw)
        if literal is None:
            if _BARE_WORD.match(raw):
                return Literal("string", raw, raw)
            raise self.error(f"{raw!r} is not a number, quoted string, boolean, dateTime, date, time or URI", start)
        return literal

    def regex(self) -> str:
        start = self.pos
        if self.peek() == '"':
            try:
                pattern, end = json.JSONDecoder().raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                raise self.error(f"unterminated or invalid quoted regular expression: {exc.msg}", exc.pos) from exc
            if not isinstance(pattern, str):
                raise self.error("a regular expression must be a string", start)
            self.pos = end
        else:
            depth, in_class = 0, False
            while not self.at_end():
                ch = self.text[self.pos]
                if ch == "\\":
                    self.pos += 2
                    continue
                if in_class:
                    in_class = ch != "]"
                elif ch == "[":
                    in_class = True
                elif ch == "(":
                    depth += 1
                elif ch == ")":
                    if depth == 0:
                        break
                    depth -= 1
                elif ch in ";|" and depth == 0:
                    break
                self.pos += 1
            self.pos = min(self.pos, len(self.text))
            pattern = self.text[start:self.pos]
        if not pattern:
            raise self.error("expected a regular expression", start)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise self.error(f"invalid regular expression {pattern!r}: {exc}", start) from exc
        return pattern


def parse_query(q: str, context: TermExpander) -> Node:
    """Parse an NGSI-LD ``q`` (already URL-decoded) into an AST with names expanded through ``context``.

    ASTs are immutable, so parses are cached per (query, compiled @context): a dashboard repeating its queries pays
    the parse once. A context without a ``key`` (any :class:`TermExpander`) is not cached.
    """
    if len(q) > MAX_QUERY_LENGTH:
        raise TooComplexQuery(f"q is longer than {MAX_QUERY_LENGTH} characters")
    key = getattr(context, "key", None)
    if key is None:
        return _Parser(q, context).parse()
    cache_key = (q, key, id(context))
    node = _PARSED.get(cache_key)
    if node is None:
        node = _Parser(q, context).parse()
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[cache_key] = node
    return node


_PARSED: dict[tuple[str, str, int], Node] = {}
_PARSED_MAX: Final = 4096
