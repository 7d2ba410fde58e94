"""The NGSI-LD Query Language (ETSI GS CIM 009 v1.8/v1.9, clause 4.9) and the Entity Type Selection Language (4.17).

``parse_query(q, ctx)`` → AST (:mod:`.ast`); ``compile_predicate(ast)`` → Python predicate over expanded entities
(:mod:`.evaluate`, the reference semantics, used by subscriptions); ``translate(ast, SqlTarget(...))`` → SQL for the
stores (:mod:`.sql`); ``parse_type_selection`` for the ``type`` parameter (:mod:`.typeselection`); ``scopeQ``
(:mod:`.scopeq`, clause 4.19); :class:`~.selection.EntitySelection` for the whole selection of one entity in Python.
"""

from sleutelbos.broker.query.ast import And, AttributePath, Comparison, Exists, Node, Or, Pattern, Range
from sleutelbos.broker.query.evaluate import compile_predicate, matches
from sleutelbos.broker.query.parser import QuerySyntaxError, UnsupportedQuery, parse_query
from sleutelbos.broker.query.scopeq import ScopeQuerySyntaxError, parse_scope_query, scope_sql, scopes_match
from sleutelbos.broker.query.sql import (
    POSTGRES_FUNCTIONS_DDL,
    SQLITE_FUNCTIONS,
    VALUE_INDEX_DDL,
    VALUE_INDEX_TABLE,
    SqlTarget,
    attribute_value_rows,
    register_aiosqlite_functions,
    register_sqlite_functions,
    translate,
)
from sleutelbos.broker.query.typeselection import TypeSelectionError, parse_type_selection, type_selection_matches
from sleutelbos.broker.query.values import Literal

__all__ = [
    "POSTGRES_FUNCTIONS_DDL",
    "SQLITE_FUNCTIONS",
    "VALUE_INDEX_DDL",
    "VALUE_INDEX_TABLE",
    "And",
    "AttributePath",
    "Comparison",
    "Exists",
    "Literal",
    "Node",
    "Or",
    "Pattern",
    "QuerySyntaxError",
    "Range",
    "ScopeQuerySyntaxError",
    "SqlTarget",
    "TypeSelectionError",
    "UnsupportedQuery",
    "attribute_value_rows",
    "compile_predicate",
    "matches",
    "parse_query",
    "parse_scope_query",
    "parse_type_selection",
    "register_aiosqlite_functions",
    "register_sqlite_functions",
    "scope_sql",
    "scopes_match",
    "translate",
    "type_selection_matches",
]
