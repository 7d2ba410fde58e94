"""Entities of the contract's shape (expanded normalized, ``sleutelbos.broker.entity``) that exercise every rule of
clause 4.9, and a tiny table of the store's shape on real SQLite and real PostgreSQL to run translated queries on."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from sleutelbos.broker.query.sql import (
    POSTGRES_FUNCTIONS_DDL,
    VALUE_INDEX_DDL,
    VALUE_INDEX_TABLE,
    attribute_value_rows,
    register_sqlite_functions,
    scalar_values,
)

V = "https://uri.etsi.org/ngsi-ld/default-context/"
TENANT = ""


def P(value: Any, **extra: Any) -> list[dict[str, Any]]:
    return [{"type": "Property", "value": value, **extra}]


def entity(eid: str, **attrs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": eid, "type": [V + "Device"], "createdAt": "2026-01-01T00:00:00.000000Z",
                           "modifiedAt": "2026-01-01T00:00:00.000000Z"}
    for name, instances in attrs.items():
        out[V + name] = instances
    return out


CORPUS: list[dict[str, Any]] = [
    entity("urn:e:1", temperature=P(20, observedAt="2017-12-24T12:00:00Z", unitCode="CEL"),
           brandName=P("Mercedes"), speed=P(55.5), isParked=[{"type": "Relationship", "object": "urn:p:1"}]),
    entity("urn:e:2", temperature=P(25.0, observedAt="2018-01-01T00:00:00+01:00"), brandName=P("Volvo"),
           speed=P(40), rpm=P(3500)),
    entity("urn:e:3", temperature=[{"type": "Property", "value": 10}, {"type": "Property", "value": 30,
                                                                       "datasetId": "urn:ds:1"}],
           color=P(["blue", "red", "green"]), address=P({"city": "Berlin", "street": "Ulrich Strasse",
                                                         "geo": {"zip": 10115}})),
    entity("urn:e:4", brandName=P("mercedes"), active=P(True), count=P("20"),
           sensor=[{"type": "Property", "value": 40, V + "rawdata": [
               {"type": "Property", "value": {"airquality": {"particulate": 40, "PM20": 85}}}]}]),
    entity("urn:e:5", name=[{"type": "LanguageProperty", "languageMap": {"fr": "rouge", "en": "red", "de": "rot"}}],
           tags=[{"type": "ListProperty", "valueList": ["a", "b", 3]}],
           route=[{"type": "ListRelationship", "objectList": [{"object": "urn:stop:1"}, {"object": "urn:stop:2"}]}],
           gender=[{"type": "VocabProperty", "vocab": V + "Male"}]),
    entity("urn:e:6", name=[{"type": "LanguageProperty", "languageMap": {"fr": ["chat", "rouge"],
                                                                         "en": ["cat", "black"]}}],
           dateFirstUsed=P({"@type": "DateTime", "@value": "2014-09-11T11:00:00Z"}), active=P(False),
           parkingTickets=[{"type": "JsonProperty", "json": {"id": "85a6", "value": "Overstay 60 minutes"}}]),
    entity("urn:e:7", temperature=P(None), startDate=P("2020-03-01"), opens=P("08:30:00Z"),
           isParked=[{"type": "Relationship", "object": ["urn:p:2", "urn:p:3"]}], speed=P(-3e2)),
    entity("urn:e:8", controlledAsset=[{"type": "Relationship", "object": "urn:asset:9",
                                        "observedAt": "2021-06-01T10:00:00.123456Z",
                                        V + "since": P("2021-01-01T00:00:00Z")}],
           brandName=P("Mercedes-Benz"), temperature=P(19.999)),
    entity("urn:e:9"),
    entity("urn:e:10", brandName=P('Zoë "quoted" \\ back'), color=P(["Mercedes"])),
]


# --- SQLite ----------------------------------------------------------------------------------------------------

#: ``scalars``: the store's scalar column (``query.sql.scalar_values``), used by the ``SqlTarget(scalars=...)`` variant
SQLITE_ENTITIES = "CREATE TABLE broker_entities (tenant TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL, "\
                  "scalars TEXT, PRIMARY KEY (tenant, id))"


def sqlite_table(entities: list[dict[str, Any]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    register_sqlite_functions(conn)
    conn.execute(SQLITE_ENTITIES)
    for ddl in VALUE_INDEX_DDL["sqlite"]:
        conn.execute(ddl)
    sqlite_insert(conn, entities)
    return conn


def sqlite_insert(conn: sqlite3.Connection, entities: list[dict[str, Any]]) -> None:
    conn.executemany("INSERT OR REPLACE INTO broker_entities VALUES (?, ?, ?, ?)",
                     [(TENANT, e["id"], json.dumps(e), scalar_values(e)) for e in entities])
    conn.executemany(f"INSERT INTO {VALUE_INDEX_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                     [r for e in entities for r in attribute_value_rows(TENANT, e)])


def sqlite_select(conn: sqlite3.Connection, sql: str, params: list[Any]) -> set[str]:
    rows = conn.execute(f"SELECT e.id FROM broker_entities AS e WHERE {sql}", params).fetchall()  # noqa: S608
    return {r[0] for r in rows}


# --- PostgreSQL ------------------------------------------------------------------------------------------------

PG_ENTITIES = 'CREATE TABLE broker_entities (tenant TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, '\
              "doc JSONB NOT NULL, PRIMARY KEY (tenant, id))"  # as the store's (decision 0702)


async def pg_table(conn: Any, entities: list[dict[str, Any]]) -> None:
    await conn.execute(POSTGRES_FUNCTIONS_DDL)
    await conn.execute(PG_ENTITIES)
    for ddl in VALUE_INDEX_DDL["postgresql"]:
        await conn.execute(ddl)
    await pg_insert(conn, entities)


async def pg_insert(conn: Any, entities: list[dict[str, Any]]) -> None:
    await conn.executemany("INSERT INTO broker_entities VALUES ($1, $2, $3::jsonb)",
                           [(TENANT, e["id"], json.dumps(e)) for e in entities])
    await conn.executemany(f"INSERT INTO {VALUE_INDEX_TABLE} VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",  # noqa: S608
                           [r for e in entities for r in attribute_value_rows(TENANT, e)])


def pg_number(sql: str) -> str:
    """The store's job: number the ``{}`` placeholders of a fragment as ``$1, $2, ...``."""
    return sql.format(*(f"${i}" for i in range(1, sql.count("{}") + 1)))


async def pg_select(conn: Any, sql: str, params: list[Any]) -> set[str]:
    rows = await conn.fetch(f"SELECT e.id FROM broker_entities AS e WHERE {pg_number(sql)}", *params)  # noqa: S608
    return {r["id"] for r in rows}
