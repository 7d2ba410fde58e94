"""The NGSI-LD Scope Query Language, the ``scopeQ`` parameter (ETSI GS CIM 009 v1.8/v1.9, clause 4.19)::

    ScopesQ  = OrScopeQ *(orOp OrScopeQ) / "/#"         ; orOp = "|" / ","
    OrScopeQ = "(" ScopeQ *(";" ScopeQ) ")" / ScopeQ ["/#"]
    ScopeQ   = "/" ScopeQLevel *("/" ScopeQLevel)         ; ScopeQLevel = AttrName-like name / "+"

Each scope pattern becomes an anchored regular expression over the entity's ``scope`` strings (``+`` one level,
a trailing ``/#`` the scope and everything below, ``/#`` alone any scope); the result is an OR of AND-groups, evaluated
in Python (:func:`scopes_match`) or as SQL over ``doc.scope`` (:func:`scope_sql`) with the same regexes. A missing
leading ``/`` is tolerated (the clause's own example 5 omits it).
"""

from __future__ import annotations

import re
from typing import Any, Final

from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.query.evaluate import regex_search
from sleutelbos.broker.store.base import SqlCondition

_LEVEL: Final = re.compile(r"[^\W\d_]\w*|\+")


class ScopeQuerySyntaxError(BadRequestData):
    def __init__(self, message: str, position: int, text: str) -> None:
        super().__init__(f"invalid scopeQ at position {position}: {message} (scopeQ={text!r})")
        self.position = position


def parse_scope_query(text: str) -> list[list[str]]:
    """``scopeQ`` → OR of AND-groups of anchored regexes (one per scope pattern)."""
    if text == "/#":
        return [["^/.+$"]]
    pos = 0

    def pattern() -> str:
        nonlocal pos
        start = pos
        parts: list[str] = []
        if text.startswith("/", pos):
            pos += 1
        while True:
            match = _LEVEL.match(text, pos)
            if match is None:
                found = "end of input" if pos >= len(text) else repr(text[pos])
                raise ScopeQuerySyntaxError(f"expected a scope level (a name or '+'), found {found}", pos, text)
            parts.append("[^/]+" if match.group() == "+" else re.escape(match.group()))
            pos = match.end()
            if text.startswith("/#", pos):
                pos += 2
                return "^/" + "/".join(parts) + "(/.*)?$"
            if not text.startswith("/", pos):
                break
            pos += 1
        if pos == start:
            raise ScopeQuerySyntaxError("expected a scope", pos, text)
        return "^/" + "/".join(parts) + "$"

    if not text:
        raise ScopeQuerySyntaxError("empty scopeQ", 0, text)
    groups: list[list[str]] = []
    while True:
        if text.startswith("(", pos):
            open_at = pos
            pos += 1
            group = [pattern()]
            while text.startswith(";", pos):
                pos += 1
                group.append(pattern())
            if not text.startswith(")", pos):
                raise ScopeQuerySyntaxError(f"expected ';' or ')' closing the '(' at position {open_at}", pos, text)
            pos += 1
            groups.append(group)
        else:
            groups.append([pattern()])
        if pos >= len(text):
            return groups
        if text[pos] in ",|":
            pos += 1
            continue
        if text[pos] == ";":
            raise ScopeQuerySyntaxError("';' (and) needs parentheses: write (/A;/B)", pos, text)
        raise ScopeQuerySyntaxError(f"expected ',' or '|' between scopes, found {text[pos]!r}", pos, text)


def scopes_match(groups: list[list[str]], scopes: Any) -> bool:
    """Whether an entity with these ``scope`` values is selected."""
    values = [s for s in (scopes if isinstance(scopes, list) else [scopes]) if isinstance(s, str)]
    return any(all(any(regex_search(p, s) for s in values) for p in group) for group in groups)


def scope_sql(groups: list[list[str]], dialect: str, doc: str = "e.doc") -> SqlCondition:
    """The same selection as SQL over the document's ``scope`` (``?`` for SQLite, ``{}`` for PostgreSQL)."""
    params: list[Any] = []
    ors = []
    for group in groups:
        ands = []
        for p in group:
            params.append(p)
            if dialect == "postgresql":
                ands.append(f"EXISTS (SELECT 1 FROM jsonb_path_query({doc} -> 'scope', 'lax $[*]') AS s(v) "  # noqa: S608
                            "WHERE jsonb_typeof(s.v) = 'string' AND (jsonb_build_array(s.v) ->> 0) ~ {})")
            else:
                ands.append(f"EXISTS (SELECT 1 FROM json_each({doc}, '$.scope') AS s "  # noqa: S608
                            "WHERE s.type = 'text' AND ngsild_regexp(?, s.atom))")
        ors.append("(" + " AND ".join(ands) + ")")
    return SqlCondition(sql="(" + " OR ".join(ors) + ")", params=params)
