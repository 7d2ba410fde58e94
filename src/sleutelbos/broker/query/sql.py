"""Translation of an NGSI-LD query AST to SQL for the broker's stores (SQLite JSON1 and PostgreSQL JSONB).

The SQL selects exactly what :mod:`.evaluate` accepts (the tests run both on the same entities and compare), over the
schema of ``sleutelbos.broker.store.base``: the entity row ``e`` holds the expanded normalized entity in ``e.doc``.
Values travel as bound parameters only — SQLite ``?``, PostgreSQL ``{}`` placeholders that the store numbers
(:class:`~sleutelbos.broker.store.base.SqlCondition`); attribute IRIs go into JSON paths that are parameters too.

Two ways to answer a term:

* **Document scan** (always available): ``EXISTS`` over ``json_each``/``json_tree`` (SQLite) or
  ``jsonb_path_query`` (PostgreSQL) of the attribute's instances and their target elements. Correct for every term;
  costs a JSON walk per candidate row.
* **Attribute value index** (when the store keeps it, see :data:`VALUE_INDEX_DDL` and :func:`attribute_value_rows`):
  a side table with one row per scalar element of each top-level attribute, with covering indexes led by
  ``(attr, num)`` and ``(attr, txt)``. The common index-friendly terms — ``attr==v``, value lists, ranges,
  ``< <= > >=`` on numbers and strings, booleans — become
  ``(e.tenant, e.id) IN (SELECT ... WHERE attr = ? AND num > ?)``, an index range scan.
  Everything else (``!=``, regex, dotted/compound paths, dateTime/date/time) uses the document scan.

Both dialects need two helper functions, also given here: SQLite gets Python functions registered on each connection
(:func:`register_sqlite_functions`); PostgreSQL gets :data:`POSTGRES_FUNCTIONS_DDL` in a migration.
"""

# ruff: noqa: S608 - SQL text is assembled from fixed fragments and generated aliases; every value is a bound parameter

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache, partial
from typing import Any, Final
from typing import Literal as TypingLiteral

import orjson

from sleutelbos.broker.entity import VALUE_MEMBER, Entity, attributes
from sleutelbos.broker.query.ast import And, AttributePath, Comparison, Exists, Node, Or, Pattern, Range
from sleutelbos.broker.query.evaluate import RELATIONSHIP_TYPES, regex_search, target_elements
from sleutelbos.broker.query.parser import UnsupportedQuery
from sleutelbos.broker.query.values import Literal, temporal_key
from sleutelbos.broker.store.base import SqlCondition

Dialect = TypingLiteral["sqlite", "postgresql"]

VALUE_INDEX_TABLE: Final = "entity_attribute_values"

#: DDL of the attribute value index, per dialect (the store runs it in a migration and keeps rows in step with
#: ``entities``: delete the entity's rows and insert :func:`attribute_value_rows` in the same transaction).
VALUE_INDEX_DDL: Final[dict[str, tuple[str, ...]]] = {
    "sqlite": (
        f"CREATE TABLE IF NOT EXISTS {VALUE_INDEX_TABLE} ("
        " tenant TEXT NOT NULL, entity_id TEXT NOT NULL, attr TEXT NOT NULL, kind TEXT NOT NULL,"
        " num REAL, txt TEXT, rel INTEGER NOT NULL DEFAULT 0, vocab INTEGER NOT NULL DEFAULT 0)",
        f"CREATE INDEX IF NOT EXISTS {VALUE_INDEX_TABLE}_num ON {VALUE_INDEX_TABLE} "
        " (attr, num, kind, rel, tenant, entity_id) WHERE num IS NOT NULL",
        f"CREATE INDEX IF NOT EXISTS {VALUE_INDEX_TABLE}_txt ON {VALUE_INDEX_TABLE} "
        " (attr, txt, kind, vocab, tenant, entity_id) WHERE txt IS NOT NULL",
        f"CREATE INDEX IF NOT EXISTS {VALUE_INDEX_TABLE}_entity ON {VALUE_INDEX_TABLE} (tenant, entity_id)",
    ),
    "postgresql": (
        # identifiers in byte order, as the store's tables (decision 0702): (tenant, entity_id) is compared with theirs
        f"CREATE TABLE IF NOT EXISTS {VALUE_INDEX_TABLE} ("
        ' tenant TEXT COLLATE "C" NOT NULL, entity_id TEXT COLLATE "C" NOT NULL, attr TEXT COLLATE "C" NOT NULL,'
        ' kind CHAR(1) NOT NULL, num DOUBLE PRECISION, txt TEXT COLLATE "C", rel BOOLEAN NOT NULL DEFAULT false,'
        " vocab BOOLEAN NOT NULL DEFAULT false)",
        f"CREATE INDEX IF NOT EXISTS {VALUE_INDEX_TABLE}_num ON {VALUE_INDEX_TABLE} "
        " (attr, num, kind, rel, tenant, entity_id) WHERE num IS NOT NULL",
        f"CREATE INDEX IF NOT EXISTS {VALUE_INDEX_TABLE}_txt ON {VALUE_INDEX_TABLE} "
        " (attr, txt, kind, vocab, tenant, entity_id) WHERE txt IS NOT NULL",
        f"CREATE INDEX IF NOT EXISTS {VALUE_INDEX_TABLE}_entity ON {VALUE_INDEX_TABLE} (tenant, entity_id)",
    ),
}

#: PostgreSQL side of :func:`sleutelbos.broker.query.values.temporal_key` (NULL for anything that is not one).
POSTGRES_FUNCTIONS_DDL: Final = r"""
CREATE OR REPLACE FUNCTION ngsild_temporal_key(kind text, v text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
  rest text;
  zone text;
  y int; mo int; d int; h int; mi int; sec int := 0;
  frac text := '';
  ts timestamp;
BEGIN
  -- Validation uses regular expressions without capture groups (fast in PostgreSQL); fields are read by position.
  IF kind = 'date' THEN
    IF v ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN RETURN v; END IF;
    RETURN NULL;
  ELSIF kind = 'time' THEN
    IF v !~ '^[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?Z?$' THEN RETURN NULL; END IF;
    h := substr(v, 1, 2)::int; mi := substr(v, 4, 2)::int;
    rest := rtrim(substr(v, 6), 'Z');
    IF left(rest, 1) = ':' THEN sec := substr(rest, 2, 2)::int; frac := substr(rest, 5); END IF;
    IF h > 23 OR mi > 59 OR sec > 59 THEN RETURN NULL; END IF;
    RETURN lpad(h::text, 2, '0') || ':' || lpad(mi::text, 2, '0') || ':' || lpad(sec::text, 2, '0') || '.'
           || substr(frac || '000', 1, 3);
  ELSIF kind = 'datetime' THEN
    IF v !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?$' THEN
      RETURN NULL;
    END IF;
    y := substr(v, 1, 4)::int; mo := substr(v, 6, 2)::int; d := substr(v, 9, 2)::int;
    h := substr(v, 12, 2)::int; mi := substr(v, 15, 2)::int;
    rest := substr(v, 17);
    IF right(rest, 1) = 'Z' THEN
      zone := 'Z'; rest := left(rest, -1);
    ELSIF rest ~ '[+-][0-9]{2}:[0-9]{2}$' THEN
      zone := right(rest, 6); rest := left(rest, -6);
    END IF;
    IF left(rest, 1) = ':' THEN sec := substr(rest, 2, 2)::int; frac := substr(rest, 5); END IF;
    IF y < 1 OR mo NOT BETWEEN 1 AND 12 OR d < 1 OR h > 23 OR mi > 59 OR sec > 59 THEN RETURN NULL; END IF;
    IF d > extract(day FROM make_date(y, mo, 1) + interval '1 month - 1 day') THEN RETURN NULL; END IF;
    ts := make_timestamp(y, mo, d, h, mi, sec + ('0.' || substr(frac || '000000', 1, 6))::float8);
    IF zone IS NOT NULL AND zone <> 'Z' THEN
      IF substr(zone, 2, 2)::int * 60 + substr(zone, 5, 2)::int >= 1440 THEN RETURN NULL; END IF;
      ts := ts - (CASE WHEN left(zone, 1) = '-' THEN -1 ELSE 1 END)
                 * make_interval(hours => substr(zone, 2, 2)::int, mins => substr(zone, 5, 2)::int);
    END IF;
    RETURN to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
  END IF;
  RETURN NULL;
END
$fn$;
"""

_SQLITE_SCALAR_TYPE_LITERALS: Final = ("'integer'", "'real'", "'text'", "'true'", "'false'", "'null'")
_SQLITE_SCALARS: Final = "(" + ", ".join(_SQLITE_SCALAR_TYPE_LITERALS) + ")"
_KIND_TYPES_SQLITE: Final = {"number": "('integer','real')", "boolean": "('true','false')"}
_ORDER_OPS: Final = frozenset({">", ">=", "<", "<="})
_SQLITE_MEMBER_CASE: Final = (
    ("Relationship", "$.object"), ("ListProperty", "$.valueList"), ("ListRelationship", "$.objectList"),
    ("JsonProperty", "$.json"), ("VocabProperty", "$.vocab"),
)
_PG_MEMBER_CASE: Final = (
    ("Relationship", "object"), ("ListProperty", "valueList"), ("ListRelationship", "objectList"),
    ("JsonProperty", "json"), ("VocabProperty", "vocab"),
)
_PG_LEAVES: Final = "'strict $.** ? (@.type() != \"object\" && @.type() != \"array\")'"


def _sqlite_regexp(pattern: str, text: Any) -> int:
    return 1 if regex_search(pattern, text) else 0


def _sqlite_temporal_key(kind: str, text: Any) -> str | None:
    return temporal_key(kind, text)


#: ``name → (number of arguments, function)`` to register on every SQLite connection of the store.
SQLITE_FUNCTIONS: Final[dict[str, tuple[int, Callable[..., Any]]]] = {
    "ngsild_regexp": (2, _sqlite_regexp),
    "ngsild_temporal_key": (2, _sqlite_temporal_key),
}


def register_sqlite_functions(conn: Any) -> None:
    """Register :data:`SQLITE_FUNCTIONS` on a ``sqlite3.Connection`` (for aiosqlite: ``await conn.create_function``)."""
    for name, (nargs, fn) in SQLITE_FUNCTIONS.items():
        conn.create_function(name, nargs, fn, deterministic=True)


async def register_aiosqlite_functions(conn: Any) -> None:
    """The same for an ``aiosqlite.Connection``."""
    for name, (nargs, fn) in SQLITE_FUNCTIONS.items():
        await conn.create_function(name, nargs, fn, deterministic=True)


def attribute_value_rows(tenant: str, entity: Entity) -> list[tuple[Any, ...]]:
    """Rows of :data:`VALUE_INDEX_TABLE` for an entity: ``(tenant, entity_id, attr, kind, num, txt, rel, vocab)``.

    One row per scalar element (number, string, boolean) of each top-level attribute instance's target value, as
    :func:`~sleutelbos.broker.query.evaluate.target_elements` defines it, so the index answers exactly like the
    evaluator. ``rel``/``vocab`` flag elements of Relationship/ListRelationship and VocabProperty instances.
    """
    rows: list[tuple[Any, ...]] = []
    entity_id = entity["id"]
    for attr, instances in attributes(entity):
        path = AttributePath(attribute=attr)
        for instance in instances:
            if not isinstance(instance, dict):
                continue
            elements = target_elements(instance, path)
            if not elements:
                continue
            kind_of = instance.get("type")
            rel = kind_of in RELATIONSHIP_TYPES
            vocab = kind_of == "VocabProperty"
            seen: set[tuple[str, Any]] = set()
            for element in elements:
                if isinstance(element, bool):
                    row = ("b", float(element), None)
                elif isinstance(element, int | float):
                    row = ("n", float(element), None)
                elif isinstance(element, str):
                    row = ("s", None, element)
                else:
                    continue
                key = (row[0], row[1] if row[2] is None else row[2])
                if key in seen:
                    continue
                seen.add(key)
                rows.append((tenant, entity_id, attr, row[0], row[1], row[2], rel, vocab))
    return rows


#: Python types of the scalars :func:`scalar_values` keeps (exact types: a set lookup is cheaper than
#: ``isinstance``, and a value of another type is simply left to the document).
_SCALAR_TYPES: Final = frozenset((str, int, float, bool, type(None)))


def scalar_values(entity: Entity) -> str | None:
    """The entity's *scalar column* (decision 0555): ``{"<attribute IRI>": <value>, ...}`` as JSON text for every
    top-level attribute that holds exactly one instance, of type ``Property``, whose ``value`` is a JSON scalar —
    the common shape the direct extraction (:meth:`_Builder.direct`) answers; ``None`` when there is none.

    SQLite 3.40 has no JSONB: every ``json_*`` call on a row parses its text, and the ~1.1 KB document costs ~3 µs
    per candidate row; this ~0.3 KB text costs a quarter of that. It is derived from the document alone and written
    with it in the same statement, so it cannot disagree with it; an attribute missing here (another shape, or a row
    written before the column existed: NULL) is answered from the document as before. Written in SQLite only.
    """
    out: dict[str, Any] = {}
    for key, instances in entity.items():  # on the write path: ~2 µs per meter entity, kept plain
        if type(instances) is list and len(instances) == 1:
            instance = instances[0]
            if type(instance) is dict and instance.get("type") == "Property":
                value = instance.get("value", instance)  # absent: the instance itself, not a scalar
                if type(value) in _SCALAR_TYPES:
                    out[key] = value
    # orjson, as the document itself is written: the same number text, so json_extract reads the same value
    return orjson.dumps(out).decode() if out else None


@dataclass(frozen=True)
class SqlTarget:
    """Where the translated SQL looks: the dialect, the document expression and (optionally) the value index."""

    dialect: Dialect
    doc: str = "e.doc"
    row_key: str = "(e.tenant, e.id)"
    value_index: str | None = None
    #: Answer the common shape of a top-level term (one instance, a scalar value) by direct extraction, with the
    #: document scan as the fallback for every other shape (see :meth:`_Builder.direct`). Off only in tests that
    #: check the scan on its own.
    direct: bool = True
    #: SQLite: the SQL expression of the row's scalar column (:func:`scalar_values`), if the table keeps one; the
    #: direct extraction then reads a Property's value from it before it touches the document.
    scalars: str | None = None


@dataclass
class _Builder:
    target: SqlTarget
    params: list[Any] = field(default_factory=list)
    aliases: int = 0

    @property
    def pg(self) -> bool:
        return self.target.dialect == "postgresql"

    def p(self, value: Any) -> str:
        self.params.append(value)
        return "{}" if self.pg else "?"

    def path(self, value: str) -> str:
        """A SQLite JSON path argument: written into the statement as a string literal where it safely can be.

        Why not a parameter: SQLite's ``json_*`` functions take ~0.3 µs less per call with a constant path than with
        a bound one, and a query reads a few paths for each of its ~40 candidate rows (the issue's query: 101 → 89 µs
        of SQL, decision 0750). Paths are built from attribute IRIs (``json_path``) and fixed members, never from a
        query's values, so the statement text stays one per query shape (Python's statement cache still serves it).
        The literal doubles single quotes (the only escape in an SQL string literal); a path with a character that is
        not printable (NUL, controls) is bound as before."""
        if self.pg or not value.isprintable():
            return self.p(value)
        return "'" + value.replace("'", "''") + "'"

    def alias(self, prefix: str) -> str:
        self.aliases += 1
        return f"{prefix}{self.aliases}"

    # --- structure ---------------------------------------------------------------------------------------------
    def node(self, node: Node) -> str:
        if isinstance(node, And):
            return "(" + " AND ".join(self.node(t) for t in node.terms) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.node(t) for t in node.terms) + ")"
        if isinstance(node, Comparison):
            indexed = self.indexed_comparison(node)
            if indexed is not None:
                return indexed
            prefilter = self.text_prefilter(node)
            scan = self.direct_comparison(node) or self.scan(node.path, lambda i, t: self.comparison(node, i, t))
            return f"({prefilter} AND {scan})" if prefilter else scan
        if isinstance(node, Pattern):
            return self.direct_pattern(node) or self.scan(node.path, lambda i, t: self.pattern(node, i, t))
        if isinstance(node, Exists):
            path = node.path
            if path.metadata is None and path.compound is None:
                sql = self.direct_exists(path) or self.scan(path, lambda i, t: "1=1")
            else:
                sql = self.scan(path, lambda i, t: self.has_target(path, i))
            return f"NOT {sql}" if node.negated else sql
        raise TypeError(f"not a query node: {node!r}")

    # --- direct extraction: the common shape without a scan ----------------------------------------------------
    def direct(self, path: AttributePath, kinds: tuple[str, ...],
               test: Callable[[str, str, str, str], str], general: Callable[[], str]) -> str | None:
        """``CASE`` that answers a top-level term from the document's own paths when the attribute has the common
        shape, and falls back to ``general()`` (the document scan, the full semantics) for every other shape.

        The common shape: the attribute holds exactly one instance whose ``type`` is one of ``kinds`` and whose value
        member (``value``, or ``object`` for a Relationship) is a JSON scalar (PostgreSQL also answers an absent
        attribute directly: no instance, no match). Then the instance's target elements are that one scalar (see
        ``evaluate.target_elements``) and ``test(kind, type_sql, atom_sql, json_sql)`` decides on it directly —
        ``json_extract``/``json_type`` of fixed paths in SQLite (the document's parse is cached per row), ``->``
        operators on the jsonb in PostgreSQL — instead of ``json_each``/``jsonb_path_query`` over instances and
        elements, which costs several times as much per row.
        A test may be NULL (e.g. ``ngsild_temporal_key`` of a string that is no date); it is read as false, as the
        scan's ``EXISTS`` does.
        """
        if not self.target.direct or not path.is_top_level_value:
            return None
        iri = path.attribute
        if '"' in iri or "\\" in iri:
            return None  # the scan raises the proper error
        doc = self.target.doc
        whens: list[str] = []
        from_scalars: str | None = None
        if self.pg:
            attr = f"({doc} -> {self.p(iri)})"
            whens.append(f"WHEN {attr} IS NULL THEN false")
            for kind in kinds:
                member = VALUE_MEMBER[kind]
                # written in text order: each placeholder is appended as it is written
                shape = (f"({doc} -> {self.p(iri)} -> 1) IS NULL AND ({doc} -> {self.p(iri)} -> 0 ->> 'type') = "
                         f"'{kind}' AND jsonb_typeof({doc} -> {self.p(iri)} -> 0 -> '{member}') "
                         f"NOT IN ('object', 'array')")
                js = _Bound(self, f"({doc} -> {{}} -> 0 -> '{member}')", iri)
                atom = _Bound(self, f"({doc} -> {{}} -> 0 ->> '{member}')", iri)
                ty = _Bound(self, f"jsonb_typeof({doc} -> {{}} -> 0 -> '{member}')", iri)
                whens.append(f"WHEN {shape} THEN COALESCE({test(kind, ty, atom, js)}, false)")  # type: ignore[arg-type]
        else:
            # Every json_* call on the document costs a cached-parse lookup and a path walk, so the shape test is
            # one two-path json_extract: '[null,"Property"]' = no second instance, the first one a Property. (A
            # JSON null as second instance also reads as null; evaluate skips such non-object instances, so the
            # direct answer is still right.) An absent attribute falls to the scan, which finds no instance.
            base = "$." + json.dumps(iri)
            scalars = self.target.scalars
            if scalars is not None and "Property" in kinds:
                # The scalar column holds exactly the one-Property-with-a-scalar shape (see scalar_values): an
                # attribute present there gets the answer the document's Property branch below would give, read
                # from ~0.3 KB instead of the ~1.1 KB document. One simple CASE on the value's JSON type, with the
                # test written once per type (the type then a constant), so a row costs one json_type and the
                # test's json_extract; NULL (no WHEN) only where the attribute is not in the column, and COALESCE
                # then asks the document (decision 0750). Written first: parameters bind in text order.
                kind_of = f"json_type({scalars}, {self.path(base)})"  # before the branches' parameters
                atom = _Bound(self, f"json_extract({scalars}, ?)", base, is_path=True)
                branches = " ".join(f"WHEN {t} THEN COALESCE({test('Property', t, atom, atom)}, 0)"  # type: ignore[arg-type]
                                    for t in _SQLITE_SCALAR_TYPE_LITERALS)
                from_scalars = f"CASE {kind_of} {branches} END"
            for kind in kinds:
                member = VALUE_MEMBER[kind]
                value_path = f"{base}[0].{member}"
                shape = (f"json_extract({doc}, {self.path(base + '[1]')}, {self.path(base + '[0].type')}) = "
                         f"'[null,\"{kind}\"]' AND json_type({doc}, {self.path(value_path)}) IN {_SQLITE_SCALARS}")
                ty = _Bound(self, f"json_type({doc}, ?)", value_path, is_path=True)
                atom = _Bound(self, f"json_extract({doc}, ?)", value_path, is_path=True)
                whens.append(f"WHEN {shape} THEN COALESCE({test(kind, ty, atom, atom)}, 0)")  # type: ignore[arg-type]
        answer = f"(CASE {' '.join(whens)} ELSE {general()} END)"
        return answer if from_scalars is None else f"COALESCE({from_scalars}, {answer})"

    def direct_comparison(self, term: Comparison) -> str | None:
        path = term.path
        general = partial(self.scan, path, lambda i, t: self.comparison(term, i, t))
        if term.op in ("==", "!="):
            def equality(kind: str, ty: str, atom: str, js: str) -> str:
                # a Property is never a VocabProperty, so the vocabulary rule has nothing to add here
                value = term.value
                if isinstance(value, Range):
                    hit = (f"({self.literal_test(value.low, '>=', ty, atom, js)} AND "
                           f"{self.literal_test(value.high, '<=', ty, atom, js)})")
                else:
                    literals = value if isinstance(value, tuple) else (value,)
                    hit = "(" + " OR ".join(self.literal_test(lit, "==", ty, atom, js) for lit in literals) + ")"
                if term.op == "==":
                    return hit
                false = "false" if self.pg else "0"
                return f"(NOT COALESCE({hit}, {false}))"  # the single element exists and does not equal

            return self.direct(path, ("Property", "Relationship"), equality, general)
        assert isinstance(term.value, Literal)
        literal = term.value
        # Relationships never match an ordering; only a Property instance is answered directly
        return self.direct(path, ("Property",),
                           lambda kind, ty, atom, js: self.literal_test(literal, term.op, ty, atom, js), general)

    def direct_pattern(self, term: Pattern) -> str | None:
        def matching(kind: str, ty: str, atom: str, js: str) -> str:
            # built in text order: every placeholder is appended as it is written
            string = f"{ty} = 'string'" if self.pg else f"{ty} = 'text'"
            found = f"({atom} ~ {self.p(term.regex)})" if self.pg else f"ngsild_regexp({self.p(term.regex)}, {atom})"
            return f"({string} AND NOT {found})" if term.negated else f"({string} AND {found})"

        return self.direct(term.path, ("Property",), matching,
                           partial(self.scan, term.path, lambda i, t: self.pattern(term, i, t)))

    def direct_exists(self, path: AttributePath) -> str | None:
        """``attr`` alone: some instance is an object. The first one being an object settles it."""
        if not self.target.direct or not path.is_top_level_value or '"' in path.attribute or "\\" in path.attribute:
            return None
        doc = self.target.doc
        if self.pg:
            first = f"jsonb_typeof({doc} -> {self.p(path.attribute)} -> 0) = 'object'"
            return f"(CASE WHEN {first} THEN true ELSE {self.scan(path, lambda i, t: '1=1')} END)"
        first = f"json_type({doc}, {self.path('$.' + json.dumps(path.attribute) + '[0]')}) = 'object'"
        return f"(CASE WHEN {first} THEN 1 ELSE {self.scan(path, lambda i, t: '1=1')} END)"

    def scan(self, path: AttributePath, instance_predicate: Callable[[str, str], str]) -> str:
        """``EXISTS`` over the leaf instances of the path; ``instance_predicate(alias, type_expr)`` filters them."""
        for iri in (path.attribute, *path.sub_attributes):
            if '"' in iri or "\\" in iri:
                raise UnsupportedQuery(f"attribute IRI {iri!r} contains a quote or backslash and cannot be queried")
        sources: list[str] = []
        if self.pg:
            previous = f"{self.target.doc} -> {self.p(path.attribute)}"
            alias = ""
            for sub in (None, *path.sub_attributes):
                if sub is not None:
                    previous = f"{alias}.v -> {self.p(sub)}"
                alias = self.alias("i")
                sources.append(f"jsonb_path_query({previous}, 'lax $[*]') AS {alias}(v)")
            type_expr = f"COALESCE({alias}.v ->> 'type', 'Property')"
        else:
            previous = f"json_each({self.target.doc}, {self.path('$.' + json.dumps(path.attribute))})"
            alias = self.alias("i")
            sources.append(f"{previous} AS {alias}")
            for sub in path.sub_attributes:
                parent = alias
                alias = self.alias("i")
                sources.append(f"json_each({parent}.value, {self.path('$.' + json.dumps(sub))}) AS {alias}")
            type_expr = f"COALESCE(json_extract({alias}.value, '$.type'), 'Property')"
        where = instance_predicate(alias, type_expr)
        if not self.pg:
            where = f"{alias}.type = 'object' AND ({where})"
        else:
            where = f"jsonb_typeof({alias}.v) = 'object' AND ({where})"
        return f"EXISTS (SELECT 1 FROM {', '.join(sources)} WHERE {where})"

    # --- the target of an instance -------------------------------------------------------------------------------
    def target_path_sqlite(self, path: AttributePath, alias: str, type_expr: str) -> str:
        """A SQLite JSON path expression (SQL text) to the instance's target value, NULL when it cannot exist."""
        if path.metadata is not None:
            return self.path(f"$.{path.metadata}")
        suffix = "".join("." + json.dumps(k) for k in path.compound or ())
        whens = " ".join(f"WHEN '{t}' THEN {self.path(m + suffix)}" for t, m in _SQLITE_MEMBER_CASE)
        if path.compound is None or path.compound == ("*",):
            language = self.path("$.languageMap")
        elif len(path.compound) == 1:
            language = self.path("$.languageMap" + suffix)
        else:
            language = "NULL"
        if path.compound is None:
            value = (f"CASE WHEN json_type({alias}.value, '$.value.\"@value\"') IS NOT NULL "
                     f"THEN '$.value.\"@value\"' ELSE '$.value' END")
        else:
            value = self.path("$.value" + suffix)
        return f"(CASE {type_expr} {whens} WHEN 'LanguageProperty' THEN {language} ELSE {value} END)"

    def target_pg(self, path: AttributePath, alias: str, type_expr: str) -> str:
        """A PostgreSQL jsonb expression for the instance's target value (NULL when absent)."""
        inst = f"{alias}.v"
        if path.metadata is not None:
            return f"({inst} -> {self.p(path.metadata)})"
        whens = " ".join(f"WHEN '{t}' THEN {inst} -> '{m}'" for t, m in _PG_MEMBER_CASE)
        if path.compound is None or path.compound == ("*",):
            language = f"{inst} -> 'languageMap'"
        elif len(path.compound) == 1:
            language = f"{inst} -> 'languageMap' -> {self.p(path.compound[0])}"
        else:
            language = "NULL::jsonb"
        if path.compound is None:
            value = (f"CASE WHEN ({inst} -> 'value' -> '@value') IS NOT NULL THEN {inst} -> 'value' -> '@value' "
                     f"ELSE {inst} -> 'value' END")
            member = f"(CASE {type_expr} {whens} ELSE {value} END)"
        else:
            member = f"(CASE {type_expr} {whens} ELSE {inst} -> 'value' END)"
            jsonpath = "strict $" + "".join("." + json.dumps(k) for k in path.compound)
            member = f"jsonb_path_query_first({member}, {self.p(jsonpath)}::jsonpath, silent => true)"
        return f"(CASE {type_expr} WHEN 'LanguageProperty' THEN {language} ELSE {member} END)"

    def has_target(self, path: AttributePath, alias: str) -> str:
        type_expr = self.type_expr(alias)
        if self.pg:
            return f"{self.target_pg(path, alias, type_expr)} IS NOT NULL"
        return f"json_type({alias}.value, {self.target_path_sqlite(path, alias, type_expr)}) IS NOT NULL"

    def type_expr(self, alias: str) -> str:
        if self.pg:
            return f"COALESCE({alias}.v ->> 'type', 'Property')"
        return f"COALESCE(json_extract({alias}.value, '$.type'), 'Property')"

    def any_element(self, path: AttributePath, alias: str, type_expr: str,
                    element_predicate: Callable[[str, str, str], str]) -> str:
        """Some element of the instance's target satisfies ``element_predicate(type_sql, atom_sql, json_sql)``.

        Parameters are bound in the order the SQL text is built, so every piece is rendered left to right.
        """
        if self.pg:
            if path.metadata is not None:
                target = self.target_pg(path, alias, type_expr)
                t = self.alias("t")
                pred = element_predicate(f"jsonb_typeof({t}.v)", f"(jsonb_build_array({t}.v) ->> 0)", f"{t}.v")
                return f"EXISTS (SELECT 1 FROM jsonb_path_query({target}, 'lax $[*]') AS {t}(v) WHERE {pred})"
            t_leaf, t = self.alias("t"), self.alias("t")
            leaf_target = self.target_pg(path, alias, type_expr)
            leaf_pred = element_predicate(f"jsonb_typeof({t_leaf}.v)", f"(jsonb_build_array({t_leaf}.v) ->> 0)",
                                          f"{t_leaf}.v")
            target = self.target_pg(path, alias, type_expr)
            pred = element_predicate(f"jsonb_typeof({t}.v)", f"(jsonb_build_array({t}.v) ->> 0)", f"{t}.v")
            return (
                f"(CASE WHEN {type_expr} IN ('LanguageProperty', 'ListRelationship') "
                f"THEN EXISTS (SELECT 1 FROM jsonb_path_query({leaf_target}, {_PG_LEAVES}) AS {t_leaf}(v) "
                f"WHERE {leaf_pred}) "
                f"ELSE EXISTS (SELECT 1 FROM jsonb_path_query({target}, 'lax $[*]') AS {t}(v) WHERE {pred}) END)"
            )
        if path.metadata is not None:
            target = self.target_path_sqlite(path, alias, type_expr)
            t = self.alias("t")
            pred = element_predicate(f"{t}.type", f"{t}.atom", f"{t}.value")
            return f"EXISTS (SELECT 1 FROM json_each({alias}.value, {target}) AS {t} WHERE {pred})"
        leaf_types = "('LanguageProperty', 'ListRelationship')"
        t, t_leaf = self.alias("t"), self.alias("t")
        shape_target = self.target_path_sqlite(path, alias, type_expr)
        target = self.target_path_sqlite(path, alias, type_expr)
        pred = element_predicate(f"{t}.type", f"{t}.atom", f"{t}.value")
        leaf_target = self.target_path_sqlite(path, alias, type_expr)
        leaf_pred = element_predicate(f"{t_leaf}.type", f"{t_leaf}.atom", f"{t_leaf}.value")
        return (
            f"(({type_expr} NOT IN {leaf_types} AND json_type({alias}.value, {shape_target}) <> 'object' "
            f"AND EXISTS (SELECT 1 FROM json_each({alias}.value, {target}) AS {t} WHERE {pred})) "
            f"OR ({type_expr} IN {leaf_types} AND EXISTS (SELECT 1 FROM json_tree({alias}.value, {leaf_target}) "
            f"AS {t_leaf} WHERE {t_leaf}.type NOT IN ('object', 'array') AND {leaf_pred})))"
        )

    # --- element predicates --------------------------------------------------------------------------------------
    def literal_test(self, lit: Literal, op: str, type_sql: str, atom: str, json_sql: str) -> str:
        """``element op literal`` for one element, false when the data types differ."""
        sql_op = "=" if op == "==" else op
        if self.pg:
            if lit.kind == "boolean":
                return f"{json_sql} = {self.p('true' if lit.value else 'false')}::jsonb"
            if lit.kind == "number":
                return (f"(CASE WHEN {type_sql} = 'number' THEN ({json_sql})::numeric {sql_op} "
                        f"{self.p(Decimal(lit.text))}::numeric ELSE false END)")
            if lit.is_textual:
                return (f"(CASE WHEN {type_sql} = 'string' THEN {atom} COLLATE \"C\" {sql_op} "
                        f"{self.p(lit.value)}::text ELSE false END)")
            return (f"(CASE WHEN {type_sql} = 'string' THEN ngsild_temporal_key({self.p(lit.kind)}, {atom}) "
                    f"COLLATE \"C\" {sql_op} {self.p(lit.value)}::text ELSE false END)")
        if lit.kind == "boolean":
            return f"{type_sql} = '{'true' if lit.value else 'false'}'"
        if lit.kind == "number":
            return f"({type_sql} IN ('integer', 'real') AND {atom} {sql_op} {self.p(lit.value)})"
        if lit.is_textual:
            return f"({type_sql} = 'text' AND {atom} {sql_op} {self.p(lit.value)})"
        return f"({type_sql} = 'text' AND ngsild_temporal_key({self.p(lit.kind)}, {atom}) {sql_op} {self.p(lit.value)})"

    def equality_test(self, term: Comparison, type_expr: str, type_sql: str, atom: str, json_sql: str) -> str:
        value = term.value
        if isinstance(value, Range):
            return (f"({self.literal_test(value.low, '>=', type_sql, atom, json_sql)} AND "
                    f"{self.literal_test(value.high, '<=', type_sql, atom, json_sql)})")
        literals = value if isinstance(value, tuple) else (value,)
        tests = [self.literal_test(lit, "==", type_sql, atom, json_sql) for lit in literals]
        if term.vocab_values:
            string_type = "'string'" if self.pg else "'text'"
            in_list = ", ".join(self.p(v) for v in term.vocab_values)
            tests.append(f"({type_expr} = 'VocabProperty' AND {type_sql} = {string_type} AND {atom} IN ({in_list}))")
        return "(" + " OR ".join(tests) + ")"

    def comparison(self, term: Comparison, alias: str, type_expr: str) -> str:
        path = term.path
        if term.op == "==":
            return self.any_element(path, alias, type_expr,
                                    lambda ty, atom, js: self.equality_test(term, type_expr, ty, atom, js))
        if term.op == "!=":
            present = self.has_target(path, alias)
            hit = self.any_element(path, alias, type_expr,
                                   lambda ty, atom, js: self.equality_test(term, type_expr, ty, atom, js))
            return f"({present} AND NOT {hit})"
        assert isinstance(term.value, Literal)
        literal = term.value
        test = self.any_element(path, alias, type_expr,
                                lambda ty, atom, js: self.literal_test(literal, term.op, ty, atom, js))
        if path.metadata is None:
            return f"({type_expr} NOT IN ('Relationship', 'ListRelationship') AND {test})"
        return test

    def pattern(self, term: Pattern, alias: str, type_expr: str) -> str:
        path = term.path
        string_type = "'string'" if self.pg else "'text'"

        def is_string(ty: str, atom: str, js: str) -> str:
            return f"{ty} = {string_type}"

        def matching(ty: str, atom: str, js: str) -> str:
            if self.pg:
                return f"(CASE WHEN {ty} = 'string' THEN {atom} ~ {self.p(term.regex)} ELSE false END)"
            return f"({ty} = 'text' AND ngsild_regexp({self.p(term.regex)}, {atom}))"

        if term.negated:
            sql = (f"({self.any_element(path, alias, type_expr, is_string)} AND NOT "
                   f"{self.any_element(path, alias, type_expr, matching)})")
        else:
            sql = self.any_element(path, alias, type_expr, matching)
        if path.metadata is None:
            return f"({type_expr} NOT IN ('Relationship', 'ListRelationship') AND {sql})"
        return sql

    def text_prefilter(self, term: Comparison) -> str | None:
        """SQLite only: a necessary condition for ``==`` on strings that costs one substring search per row.

        A stored JSON string appears in the document's text as its JSON encoding; for printable ASCII without quote
        or backslash every JSON serializer writes the same ``"..."``, so ``instr(doc, '"value"') > 0`` can only drop
        rows that cannot match — and skips the JSON walk for the (many) rows that do not contain the value at all.
        """
        if self.pg or term.op != "==" or isinstance(term.value, Range):
            return None
        literals = term.value if isinstance(term.value, tuple) else (term.value,)
        if not all(lit.is_textual for lit in literals):
            return None
        needles = [lit.value for lit in literals] + list(term.vocab_values)
        if not all(_plain_ascii(n) for n in needles):
            return None
        tests = " OR ".join(f"instr({self.target.doc}, {self.p(json.dumps(n))}) > 0" for n in needles)
        return f"({tests})"

    # --- the attribute value index -------------------------------------------------------------------------------
    def indexed_comparison(self, term: Comparison) -> str | None:
        table = self.target.value_index
        if table is None or not term.path.is_top_level_value or term.op == "!=":
            return None
        value = term.value
        literals = (value.low, value.high) if isinstance(value, Range) else value if isinstance(value, tuple) else (
            value,)
        if any(lit.is_temporal for lit in literals):
            return None
        kinds = {("s" if lit.is_textual else "b" if lit.kind == "boolean" else "n") for lit in literals}
        attr = self.p(term.path.attribute)
        conditions: list[str] = []
        true = "true" if self.pg else "1"
        false = "false" if self.pg else "0"
        if isinstance(value, Range):
            column = "txt" if value.low.is_textual else "num"
            kind = "s" if value.low.is_textual else "n"
            conditions.append(f"(kind = '{kind}' AND {column} BETWEEN {self.p(self.index_value(value.low))} "
                              f"AND {self.p(self.index_value(value.high))})")
        elif term.op == "==":
            for kind in sorted(kinds):
                group = [lit for lit in literals if
                         ("s" if lit.is_textual else "b" if lit.kind == "boolean" else "n") == kind]
                column = "txt" if kind == "s" else "num"
                values = ", ".join(self.p(self.index_value(lit)) for lit in group)
                if kind == "s" and term.vocab_values:
                    vocab = ", ".join(self.p(v) for v in term.vocab_values)
                    conditions.append(f"(kind = 's' AND (txt IN ({values}) OR (vocab = {true} AND txt IN ({vocab}))))")
                else:
                    conditions.append(f"(kind = '{kind}' AND {column} IN ({values}))")
        else:
            (lit,) = literals
            column = "txt" if lit.is_textual else "num"
            kind = "s" if lit.is_textual else "n"
            conditions.append(f"(kind = '{kind}' AND rel = {false} AND {column} {term.op} "
                              f"{self.p(self.index_value(lit))})")
        where = " OR ".join(conditions)
        return (f"{self.target.row_key} IN (SELECT tenant, entity_id FROM {table} "
                f"WHERE attr = {attr} AND ({where}))")

    @staticmethod
    def index_value(lit: Literal) -> Any:
        if lit.kind == "boolean":
            return 1.0 if lit.value else 0.0
        if lit.kind == "number":
            return float(lit.value)
        return lit.value


class _Bound:
    """An SQL expression with one bound parameter that binds it afresh each time it is written into SQL text.

    The element tests (``literal_test`` and the closures of :meth:`_Builder.direct`) write their ``type_sql``/``atom``
    arguments into f-strings once or several times (a range writes them twice); parameters are positional, so each
    occurrence needs its own placeholder, appended in text order — which is what formatting this object does.
    ``template`` holds one ``?`` (SQLite) or ``{}`` (PostgreSQL) where the parameter goes.
    """

    __slots__ = ("builder", "is_path", "template", "value")

    def __init__(self, builder: _Builder, template: str, value: Any, is_path: bool = False) -> None:
        self.builder = builder
        self.template = template
        self.value = value
        self.is_path = is_path  # a SQLite JSON path: :meth:`_Builder.path` writes it

    def __format__(self, spec: str) -> str:
        marker = "{}" if self.builder.pg else "?"
        head, _, tail = self.template.partition(marker)
        return head + (self.builder.path(self.value) if self.is_path else self.builder.p(self.value)) + tail

    def __str__(self) -> str:  # pragma: no cover - only f-string formatting is meant to be used
        raise TypeError("_Bound must be formatted into an f-string, where it binds its parameter")


def _plain_ascii(text: str) -> bool:
    return all(" " <= ch <= "~" and ch not in '"\\' for ch in text)


def translate(node: Node, target: SqlTarget) -> SqlCondition:
    """The SQL condition (in ``target``'s dialect, parameters bound) selecting what ``node`` matches.

    Translations are cached per (AST, target) — both are immutable — and each call gets its own parameter list.
    """
    sql, params = _translate_cached(node, target)
    return SqlCondition(sql=sql, params=list(params))


@lru_cache(maxsize=4096)
def _translate_cached(node: Node, target: SqlTarget) -> tuple[str, tuple[Any, ...]]:
    builder = _Builder(target)
    sql = builder.node(node)
    return sql, tuple(builder.params)
