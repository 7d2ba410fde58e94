"""Scope Query Language (clause 4.19): patterns, wildcards, and SQL that agrees with Python on SQLite/PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest

from sleutelbos.broker.query.scopeq import ScopeQuerySyntaxError, parse_scope_query, scope_sql, scopes_match
from tests.broker.query_corpus import pg_number, sqlite_table

SCOPES = {
    "urn:s:1": ["/Madrid"],
    "urn:s:2": ["/Madrid/Gardens"],
    "urn:s:3": ["/Madrid/Gardens/ParqueNorte", "/CompanyA"],
    "urn:s:4": ["/Madrid/Sights/ParqueNorte"],
    "urn:s:5": ["/Madrid/Districts", "/CompanyA"],
    "urn:s:6": ["/CompanyB"],
    "urn:s:7": [],
}
ENTITIES = [{"id": k, "type": ["T"], "scope": v} if v else {"id": k, "type": ["T"]} for k, v in SCOPES.items()]

CASES = [
    ("/Madrid", {"urn:s:1"}),
    ("/Madrid/Gardens/#", {"urn:s:2", "urn:s:3"}),
    ("/Madrid/+/ParqueNorte", {"urn:s:3", "urn:s:4"}),
    ("(/Madrid/Districts;/CompanyA)", {"urn:s:5"}),
    ("(/Madrid/Districts;/CompanyA)|CompanyB", {"urn:s:5", "urn:s:6"}),
    ("(/Madrid/Districts;/CompanyA),/CompanyB", {"urn:s:5", "urn:s:6"}),
    ("/#", {f"urn:s:{i}" for i in range(1, 7)}),
    ("/Madrid/#", {f"urn:s:{i}" for i in range(1, 6)}),
    ("/+", {"urn:s:1", "urn:s:3", "urn:s:5", "urn:s:6"}),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_clause_4_19_examples_in_python_and_sqlite(text, expected):
    groups = parse_scope_query(text)
    assert {e["id"] for e in ENTITIES if scopes_match(groups, e.get("scope", []))} == expected
    conn = sqlite_table(ENTITIES)
    condition = scope_sql(groups, "sqlite")
    rows = conn.execute(f"SELECT e.id FROM broker_entities e WHERE {condition.sql}", condition.params)  # noqa: S608
    assert {r[0] for r in rows} == expected


@pytest.mark.postgres
def test_scope_sql_on_postgres(pg_database_url):
    import asyncpg

    async def run():
        conn = await asyncpg.connect(pg_database_url, server_settings={"jit": "off"})
        try:
            await conn.execute("CREATE TABLE broker_entities (id TEXT PRIMARY KEY, doc JSONB NOT NULL)")
            await conn.executemany("INSERT INTO broker_entities VALUES ($1, $2::jsonb)",
                                   [(e["id"], json.dumps(e)) for e in ENTITIES])
            for text, expected in CASES:
                condition = scope_sql(parse_scope_query(text), "postgresql")
                rows = await conn.fetch(f"SELECT e.id FROM broker_entities e WHERE {pg_number(condition.sql)}",  # noqa: S608
                                        *condition.params)
                assert {r["id"] for r in rows} == expected, text
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.mark.parametrize(("text", "position", "fragment"), [
    ("", 0, "empty"),
    ("/", 1, "expected a scope level"),
    ("/Madrid/", 8, "expected a scope level"),
    ("/Madrid;/X", 7, "needs parentheses"),
    ("(/A;/B", 6, "closing the '('"),
    ("/1abc", 1, "expected a scope level"),
    ("/A/#/B", 4, "expected ',' or '|'"),
])
def test_errors(text, position, fragment):
    with pytest.raises(ScopeQuerySyntaxError) as info:
        parse_scope_query(text)
    assert info.value.position == position
    assert fragment in info.value.detail
