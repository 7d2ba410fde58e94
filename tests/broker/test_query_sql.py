"""SQL translation of q on REAL SQLite and REAL PostgreSQL selects exactly what the Python evaluator accepts.

Each query runs four ways on a table of the store's shape (``broker_entities.doc`` = expanded entity): the Python
reference (``compile_predicate``), the document-scan SQL alone (``direct=False``), the default SQL (direct extraction
for the common shape, the scan otherwise) and the SQL that uses the attribute value index. Fixed
queries cover every rule; hypothesis then generates queries (and, on SQLite, entities) to look for disagreements.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.query import VALUE_INDEX_TABLE, SqlTarget, compile_predicate, parse_query, translate
from tests.broker.query_corpus import (
    CORPUS,
    V,
    entity,
    pg_insert,
    pg_select,
    pg_table,
    sqlite_select,
    sqlite_table,
)

CTX = ContextStore().core
CTX_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"

#: The SQL variants every query must agree on: document scan only, direct extraction + scan (PostgreSQL's default),
#: the same reading the scalar column first (SQLite's default; ignored by PostgreSQL), value index.
VARIANTS: list[dict[str, Any]] = [{"direct": False}, {}, {"scalars": "e.scalars"}, {"value_index": VALUE_INDEX_TABLE}]
VARIANT_IDS = ["scan", "direct", "scalars", "index"]

QUERIES = [
    "temperature", "!temperature", "address", "temperature==20", "temperature==30", "temperature!=20",
    "temperature>15", "temperature>=25", "temperature<20", "temperature<=19.999", "speed==40..60", "speed!=40..60",
    "temperature==10,25", 'count==20', 'count=="20"', 'color=="red"', 'color!="red"', 'color!="yellow"',
    'brandName=="Mercedes"', 'brandName>"Mercedes"', 'brandName=="Volvo","Mercedes"', 'brandName=="A".."N"',
    'isParked=="urn:p:1"', "isParked==urn:p:3", "isParked!=urn:p:1", 'isParked>"a"', 'address[city]=="Berlin"',
    "address[geo.zip]>10000", 'address[country]!="NL"', "address[geo]", "address[nope]",
    "sensor.rawdata[airquality.particulate]==40", 'parkingTickets[value]=="Overstay 60 minutes"',
    'name[en]=="red"', 'name=="rouge"', 'name[*]=="black"', 'name[en]!="red"', 'name[fr]=="chat"', "name[de]",
    "tags==3", 'tags=="b"', 'route=="urn:stop:2"', "route!=urn:stop:9", "gender==Male", 'gender!="Female"',
    "active==true", "active!=true", "active==false",
    "temperature.observedAt>=2017-12-24T12:00:00Z", "temperature.observedAt<2017-12-31T23:30:00Z",
    "temperature.observedAt==2017-12-31T23:00:00Z", "dateFirstUsed>2010-01-01T00:00:00Z",
    "controlledAsset.observedAt<2021-06-01T10:00:00.124Z", "controlledAsset.observedAt>2021-06-01T10:00:00.123Z",
    "controlledAsset.since", "controlledAsset.since<2022-01-01T00:00:00Z", "startDate<2021-01-01",
    "startDate==2020-01-01..2020-12-31", "opens>08:00:00", "opens==08:30", 'temperature.unitCode=="CEL"',
    "brandName~=(?i)^merc", "brandName!~=^Merc", "temperature~=2", 'isParked~="urn"', "name~=^ro",
    "temperature;brandName|rpm", "(temperature>=20;temperature<=25)|count",
    '((speed>50|rpm>3000);brandName=="Mercedes")', "!address;!name|active==false",
    'brandName=="Zoë \\"quoted\\" \\\\ back"', 'brandName~="Zoë"', 'color=="Mercedes"',
]


def python_ids(text: str, entities: list[dict[str, Any]]) -> set[str]:
    predicate = compile_predicate(parse_query(text, CTX))
    return {e["id"] for e in entities if predicate(e)}


# --- SQLite ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sqlite_corpus():
    conn = sqlite_table(CORPUS)
    yield conn
    conn.close()


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("text", QUERIES)
def test_sqlite_agrees_with_python(sqlite_corpus, text, variant):
    condition = translate(parse_query(text, CTX), SqlTarget("sqlite", **variant))
    assert sqlite_select(sqlite_corpus, condition.sql, condition.params) == python_ids(text, CORPUS)


def test_parameters_carry_values_and_sql_carries_none():
    hostile = '"); DROP TABLE broker_entities; --'
    condition = translate(parse_query(f"brandName=={json.dumps(hostile)}", CTX), SqlTarget("sqlite"))
    assert hostile not in condition.sql and "DROP" not in condition.sql
    assert hostile in condition.params
    pg = translate(parse_query(f"brandName=={json.dumps(hostile)}", CTX), SqlTarget("postgresql"))
    assert hostile not in pg.sql and "?" not in pg.sql.replace("? (", "")
    assert pg.sql.count("{}") == len(pg.params)


def test_sqlite_json_paths_are_literals_with_quotes_doubled():
    """SQLite JSON paths are written into the statement (decision 0750), so an attribute IRI with a single quote must
    come out as a well-formed literal and select what Python selects; values stay parameters."""
    odd = "http://example.org/it's"
    ctx = asyncio.run(ContextStore().compile([{"odd": odd}, CTX_URL]))
    entities = [{**entity("urn:odd:1"), odd: [{"type": "Property", "value": 5}]},
                {**entity("urn:odd:2"), odd: [{"type": "Property", "value": 1}]},
                {**entity("urn:odd:3"), odd: [{"type": "Property", "value": 7}, {"type": "Property", "value": 0,
                                                                                 "datasetId": "urn:d:1"}]}]
    conn = sqlite_table(entities)
    try:
        for text, expected in (("odd>2", {"urn:odd:1", "urn:odd:3"}), ("odd<2", {"urn:odd:2", "urn:odd:3"}),
                               ("odd", {"urn:odd:1", "urn:odd:2", "urn:odd:3"})):
            predicate = compile_predicate(parse_query(text, ctx))
            assert {e["id"] for e in entities if predicate(e)} == expected, text
            for variant in VARIANTS:
                condition = translate(parse_query(text, ctx), SqlTarget("sqlite", **variant))
                assert "it''s" in condition.sql or "value_index" in variant, (text, variant)
                assert all(not (isinstance(p, str) and p.startswith("$.")) for p in condition.params), condition
                assert sqlite_select(conn, condition.sql, condition.params) == expected, (text, variant)
    finally:
        conn.close()


def test_text_prefilter_only_for_plain_ascii_strings():
    plain = translate(parse_query('brandName=="Volvo"', CTX), SqlTarget("sqlite"))
    assert plain.sql.startswith("((instr(e.doc, ?) > 0") and plain.params[0] == '"Volvo"'
    for text in ('brandName=="Zoë"', 'brandName=="a\\"b"', "speed==40", 'brandName!="Volvo"'):
        assert "instr(" not in translate(parse_query(text, CTX), SqlTarget("sqlite")).sql, text
    assert "instr(" not in translate(parse_query('brandName=="Volvo"', CTX), SqlTarget("postgresql")).sql


def test_common_shape_is_answered_by_direct_extraction():
    """A top-level term gets the direct-extraction CASE first, with the scan as its fallback; dotted and compound
    paths (and the scan-only variant) go to the scan at once."""
    for text in ("temperature>15", 'brandName=="Volvo"', "isParked==urn:p:1", "brandName~=^M", "temperature"):
        for dialect in ("sqlite", "postgresql"):
            sql = translate(parse_query(text, CTX), SqlTarget(dialect)).sql  # type: ignore[arg-type]
            assert "(CASE WHEN" in sql and ("json_each" in sql or "jsonb_path_query" in sql), (text, dialect)
            scan = translate(parse_query(text, CTX), SqlTarget(dialect, direct=False)).sql  # type: ignore[arg-type]
            assert not scan.lstrip("(").startswith("CASE WHEN"), (text, dialect)
    for text in ("temperature.observedAt>2017-01-01T00:00:00Z", "address[city]==Berlin", "sensor.rawdata"):
        assert "(CASE WHEN json_extract(e.doc" not in translate(parse_query(text, CTX), SqlTarget("sqlite")).sql


def test_value_index_is_used_for_equality_and_ranges(sqlite_corpus):
    """The index-friendly terms become index range scans (SQLite's plan names the index)."""
    for text, index in (('brandName=="Volvo"', "_txt"), ("temperature>15", "_num"), ("speed==40..60", "_num")):
        condition = translate(parse_query(text, CTX), SqlTarget("sqlite", value_index=VALUE_INDEX_TABLE))
        plan = sqlite_corpus.execute(
            f"EXPLAIN QUERY PLAN SELECT e.id FROM broker_entities AS e WHERE {condition.sql}",  # noqa: S608
            condition.params).fetchall()
        assert any(f"{VALUE_INDEX_TABLE}{index}" in row[-1] for row in plan), plan


# --- PostgreSQL --------------------------------------------------------------------------------------------------

@pytest.fixture
def pg_corpus(pg_database_url):
    import asyncpg

    loop = asyncio.new_event_loop()
    # JIT off, as the store's pool should have it: PostgreSQL's estimates for nested jsonb_path_query are high
    # enough to trigger JIT compilation, which costs ~1 s per statement and buys nothing on these plans.
    conn = loop.run_until_complete(asyncpg.connect(pg_database_url, server_settings={"jit": "off"}))
    loop.run_until_complete(pg_table(conn, CORPUS))
    yield loop, conn
    loop.run_until_complete(conn.close())
    loop.close()


@pytest.mark.postgres
def test_postgres_agrees_with_python(pg_corpus):
    loop, conn = pg_corpus
    failures = []
    for text in QUERIES:
        expected = python_ids(text, CORPUS)
        for variant in VARIANTS:
            condition = translate(parse_query(text, CTX), SqlTarget("postgresql", **variant))
            got = loop.run_until_complete(pg_select(conn, condition.sql, condition.params))
            if got != expected:
                failures.append((text, variant, sorted(expected), sorted(got)))
    assert failures == []


# --- generated queries and entities ------------------------------------------------------------------------------

ATTRS = ["temperature", "speed", "brandName", "color", "isParked", "name", "tags", "route", "gender", "active",
         "address", "count", "startDate", "opens", "dateFirstUsed", "rpm", "missing"]
LITERALS = st.sampled_from([
    "20", "25", "25.0", "-300", "0", "3", "40", "10115", '"red"', '"Mercedes"', '"mercedes"', '"Volvo"', '"b"',
    '"20"', '"urn:p:1"', "urn:p:3", "urn:stop:2", "true", "false", "2017-12-24T12:00:00Z", "2014-09-11T11:00:00Z",
    "2020-03-01", "08:30:00Z", "Male", '""',
])
PATHS = st.one_of(
    st.sampled_from(ATTRS),
    st.sampled_from(["temperature.observedAt", "temperature.unitCode", "temperature.datasetId",
                     "controlledAsset.observedAt", "controlledAsset.since", "address[city]", "address[geo.zip]",
                     "name[en]", "name[fr]", "name[*]", "sensor.rawdata[airquality.particulate]",
                     "parkingTickets[value]", "parkingTickets[id]"]),
)


@st.composite
def terms(draw):
    path = draw(PATHS)
    shape = draw(st.sampled_from(["exists", "not", "eq", "ne", "order", "range", "list", "regex", "notregex"]))
    if shape == "exists":
        return path
    if shape == "not":
        return "!" + path if "[" not in path and "." not in path else path
    if shape in ("eq", "ne"):
        return f"{path}{'==' if shape == 'eq' else '!='}{draw(LITERALS)}"
    if shape == "order":
        lit = draw(LITERALS.filter(lambda s: s not in ("true", "false") and not s.startswith("urn")
                                   and s != "Male"))
        return f"{path}{draw(st.sampled_from(['<', '<=', '>', '>=']))}{lit}"
    if shape == "range":
        low, high = draw(st.sampled_from([("0", "30"), ('"A"', '"n"'), ("2000-01-01T00:00:00Z", "2018-01-01T00:00:00Z"),
                                          ("2020-01-01", "2020-12-31"), ("08:00:00", "09:00:00"), ("-1e3", "20")]))
        return f"{path}{draw(st.sampled_from(['==', '!=']))}{low}..{high}"
    if shape == "list":
        items = draw(st.lists(LITERALS, min_size=2, max_size=3))
        return f"{path}{draw(st.sampled_from(['==', '!=']))}{','.join(items)}"
    regex = draw(st.sampled_from(["^M", "(?i)merc", "o", "^$", "urn", "[0-9]", "red|rouge"]))
    return f'{path}{"~=" if shape == "regex" else "!~="}{json.dumps(regex)}'


@st.composite
def queries(draw, depth=0):
    if depth >= 2 or draw(st.booleans()):
        return draw(terms())
    parts = draw(st.lists(queries(depth=depth + 1), min_size=2, max_size=3))
    op = draw(st.sampled_from([";", "|"]))
    text = op.join(parts)
    return f"({text})" if draw(st.booleans()) else text


@settings(max_examples=100, deadline=None)
@given(queries())
def test_generated_queries_agree_on_sqlite(text):
    conn = sqlite_table(CORPUS)
    expected = python_ids(text, CORPUS)
    for variant in VARIANTS:
        condition = translate(parse_query(text, CTX), SqlTarget("sqlite", **variant))
        assert sqlite_select(conn, condition.sql, condition.params) == expected, (text, variant)


@pytest.mark.postgres
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=queries())
def test_generated_queries_agree_on_postgres(pg_corpus, text):
    loop, conn = pg_corpus
    expected = python_ids(text, CORPUS)
    for variant in VARIANTS:
        condition = translate(parse_query(text, CTX), SqlTarget("postgresql", **variant))
        assert loop.run_until_complete(pg_select(conn, condition.sql, condition.params)) == expected


SCALARS = st.one_of(st.integers(-50, 50), st.floats(-50, 50, allow_nan=False).map(lambda f: round(f, 3)),
                    st.sampled_from(["red", "Red", "", "20", "urn:p:1", "2017-12-24T12:00:00Z", "2020-03-01",
                                     "12:00:00"]), st.booleans(), st.none())
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.fixed_dictionaries({"city": SCALARS}))


@st.composite
def instances(draw):
    kind = draw(st.sampled_from(["Property", "Relationship", "ListProperty", "LanguageProperty", "VocabProperty"]))
    inst: dict[str, Any] = {"type": kind}
    if kind == "Property":
        inst["value"] = draw(VALUES)
    elif kind == "Relationship":
        inst["object"] = draw(st.sampled_from(["urn:p:1", "urn:p:3", ["urn:p:1", "urn:p:2"]]))
    elif kind == "ListProperty":
        inst["valueList"] = draw(st.lists(SCALARS, max_size=3))
    elif kind == "LanguageProperty":
        inst["languageMap"] = draw(st.dictionaries(st.sampled_from(["en", "fr"]),
                                                   st.one_of(st.sampled_from(["red", "rouge"]),
                                                             st.lists(st.sampled_from(["red", "chat"]), max_size=2))))
    else:
        inst["vocab"] = draw(st.sampled_from([V + "Male", V + "Female", [V + "Male", V + "Other"]]))
    if draw(st.booleans()):
        inst["observedAt"] = draw(st.sampled_from(["2017-12-24T12:00:00Z", "2018-01-01T00:00:00.5+01:00", "bad"]))
    return inst


@st.composite
def entities(draw):
    out = []
    for i in range(draw(st.integers(1, 6))):
        attrs = {}
        for name in draw(st.lists(st.sampled_from(["temperature", "brandName", "color", "name", "gender"]),
                                  unique=True, max_size=3)):
            insts = draw(st.lists(instances(), min_size=1, max_size=2))
            for n, inst in enumerate(insts[1:], start=1):
                inst["datasetId"] = f"urn:ds:{n}"
            attrs[name] = insts
        out.append(entity(f"urn:g:{i}", **attrs))
    return out


GENERATED_QUERIES = [
    "temperature==20", "temperature>0", "temperature<=0", "temperature!=20", 'temperature=="red"',
    'temperature!="red"', "temperature==true", "temperature==urn:p:1", "temperature==-10..10",
    "temperature==2017-12-24T12:00:00Z", "temperature<2020-03-02", "temperature>11:00", "temperature[city]==20",
    'temperature[city]!="red"', "temperature.observedAt>2017-12-24T11:59:59Z",
    "temperature.observedAt==2017-12-31T23:00:00.500Z", 'brandName~="^r"', 'brandName!~="^r"', 'color=="red"',
    'name=="red"', 'name[en]=="red"', 'name[fr]!="rouge"', "gender==Male", "gender!=Male", "temperature",
    "temperature[city]", "color;name|gender", "!brandName",
    # the direct extraction's NULL cases (a string that is no date under != / !~=) and its other tests
    "temperature!=2017-12-24T12:00:00Z", "temperature!=12:00", "temperature!=-10..10", "temperature!=urn:p:1",
    'temperature~="^r"', 'temperature!~="e"', "temperature==20,red,true", "brandName==urn:p:1", "!temperature",
]


@settings(max_examples=60, deadline=None)
@given(entities())
def test_generated_entities_agree_on_sqlite(generated):
    conn = sqlite_table(generated)
    for text in GENERATED_QUERIES:
        expected = python_ids(text, generated)
        for variant in VARIANTS:
            condition = translate(parse_query(text, CTX), SqlTarget("sqlite", **variant))
            assert sqlite_select(conn, condition.sql, condition.params) == expected, (text, variant, generated)


@pytest.mark.postgres
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=entities())
def test_generated_entities_agree_on_postgres(pg_corpus, generated):
    loop, conn = pg_corpus
    loop.run_until_complete(conn.execute(f"DELETE FROM broker_entities; DELETE FROM {VALUE_INDEX_TABLE}"))  # noqa: S608
    loop.run_until_complete(pg_insert(conn, generated))
    for text in GENERATED_QUERIES:
        expected = python_ids(text, generated)
        for variant in VARIANTS:
            condition = translate(parse_query(text, CTX), SqlTarget("postgresql", **variant))
            got = loop.run_until_complete(pg_select(conn, condition.sql, condition.params))
            assert got == expected, (text, variant, generated)


def test_placeholder_count_matches_parameters_in_both_dialects():
    for text in QUERIES:
        node = parse_query(text, CTX)
        for variant in VARIANTS:
            lite = translate(node, SqlTarget("sqlite", **variant))
            assert len(re.findall(r"\?", lite.sql)) == len(lite.params), text
            pg = translate(node, SqlTarget("postgresql", **variant))
            assert pg.sql.count("{}") == len(pg.params), text
