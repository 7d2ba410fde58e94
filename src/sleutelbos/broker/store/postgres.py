"""PostgreSQL store (asyncpg): the scaled one. Same schema as SQLite (see ``store.base``), with ``jsonb`` documents and
``text[]`` types. No GIN index on ``doc``: the ``q`` translation walks the document with ``jsonb_path_query`` and
``jsonb_each``, which such an index does not serve, and it cost more than half of a batch upsert's time; the
attribute value index of ``query.sql`` is the way to index ``q`` terms.

A write transaction locks the rows it reads (``SELECT ... FOR UPDATE``) so that concurrent read-modify-writes from
several API workers cannot lose an update; the commit is durable before the client is answered (PostgreSQL's
``synchronous_commit`` default). A single-entity update (``update_entity``) is optimistic instead (decision 0514):
the document and its row version (``xmin``) are read on a lean connection, the change is applied in Python, and
one autocommit statement writes the row only if its version is still the one read, with the history row in the same
statement; on a conflict it is read and applied again, and after a few conflicts it takes the locking transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from sleutelbos.broker.entity import Entity, now_iso
from sleutelbos.broker.query.sql import POSTGRES_FUNCTIONS_DDL
from sleutelbos.broker.store.base import (
    DEFAULT_TENANT,
    EntityChange,
    EntityFilter,
    EntityStore,
    HistoryRow,
    StoreTransaction,
    location_bbox,
)
from sleutelbos.broker.store.pg_readers import ReadConnections
from sleutelbos.broker.temporal.schema import POSTGRES_MIGRATIONS
from sleutelbos.core.database import keep_session_state, migrate_postgres

MIGRATIONS: list[str] = [
    """
    CREATE TABLE broker_tenants (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
    CREATE TABLE broker_entities (
        tenant TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, types TEXT[] NOT NULL,
        created_at TEXT NOT NULL, modified_at TEXT NOT NULL, doc JSONB NOT NULL,
        geo_minx DOUBLE PRECISION, geo_miny DOUBLE PRECISION, geo_maxx DOUBLE PRECISION, geo_maxy DOUBLE PRECISION,
        PRIMARY KEY (tenant, id)
    );
    CREATE INDEX broker_entities_type ON broker_entities (tenant, type, id);
    CREATE INDEX broker_entities_geo ON broker_entities (tenant, geo_minx, geo_miny) WHERE geo_minx IS NOT NULL;
    CREATE TABLE broker_entity_history (
        seq BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, modified_at TEXT NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT FALSE, instances JSONB
    );
    CREATE TABLE broker_jsonld_contexts (local_id TEXT PRIMARY KEY, url TEXT NOT NULL, document JSONB NOT NULL,
                                         created_at TEXT NOT NULL);
    """,
    POSTGRES_FUNCTIONS_DDL,
    """
    CREATE TABLE broker_entity_extra_types (tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
                                            PRIMARY KEY (tenant, type, id));
    CREATE INDEX broker_entity_extra_types_id ON broker_entity_extra_types (tenant, id);
    INSERT INTO broker_entity_extra_types
        SELECT tenant, t, id FROM broker_entities, unnest(types[2:]) AS t ON CONFLICT DO NOTHING;
    """,
    # --- issue 3 (subscriptions, notifications, temporal): appended, see broker.temporal.schema ---
    *POSTGRES_MIGRATIONS,
    # Room on every page for the next version of its rows (decision 0701): an entity update that changes no indexed
    # column (a meter's readings: the doc and modified_at) is then a HOT update — the new version on the same page,
    # no new entry in any of the table's indexes. At the default fillfactor of 100 the pages are full and every update
    # moves its row and inserts into all three indexes. Pages written before this migration fill up to 100 % and get
    # the room as their rows move (or at once with VACUUM FULL).
    "ALTER TABLE broker_entities SET (fillfactor = 70)",
    # Identifiers compare byte by byte, whatever the database's default collation (decision 0702): an operator's
    # database created with a language collation (ICU nl-NL, en_US.UTF-8) would otherwise order and index tenants,
    # ids, types and attribute IRIs by that language's rules — another order of entity listings and pages than
    # SQLite's, and up to 1.5× the server CPU per index entry. Indexes on these columns are rebuilt, tables are not.
    """
    ALTER TABLE broker_tenants ALTER COLUMN name TYPE TEXT COLLATE "C";
    ALTER TABLE broker_entities ALTER COLUMN tenant TYPE TEXT COLLATE "C", ALTER COLUMN id TYPE TEXT COLLATE "C",
        ALTER COLUMN type TYPE TEXT COLLATE "C";
    ALTER TABLE broker_entity_extra_types ALTER COLUMN tenant TYPE TEXT COLLATE "C",
        ALTER COLUMN type TYPE TEXT COLLATE "C", ALTER COLUMN id TYPE TEXT COLLATE "C";
    ALTER TABLE broker_entity_history ALTER COLUMN tenant TYPE TEXT COLLATE "C",
        ALTER COLUMN entity_id TYPE TEXT COLLATE "C";
    ALTER TABLE broker_temporal_instances ALTER COLUMN tenant TYPE TEXT COLLATE "C",
        ALTER COLUMN entity_id TYPE TEXT COLLATE "C", ALTER COLUMN attr TYPE TEXT COLLATE "C",
        ALTER COLUMN dataset_id TYPE TEXT COLLATE "C";
    ALTER TABLE broker_subscriptions ALTER COLUMN tenant TYPE TEXT COLLATE "C", ALTER COLUMN id TYPE TEXT COLLATE "C";
    ALTER TABLE broker_notifications_pending ALTER COLUMN tenant TYPE TEXT COLLATE "C",
        ALTER COLUMN subscription_id TYPE TEXT COLLATE "C";
    """,
]

# Every upsert first drops the entity's rows in the further-types side table (a data-modifying CTE of the same
# statement: no extra round trip, and no "does this tenant have any?" query); entities with several types then get
# theirs back. An index probe per entity, where the query it replaces was a round trip per write. The four upserts
# below (one entity or a batch over arrays; with or without the history rows as a second CTE, see _PgTransaction) are
# assembled from the same parts so that they cannot drift apart.
_ENTITY_COLUMNS = (
    " INSERT INTO broker_entities (tenant, id, type, types, created_at, modified_at, doc, geo_minx, geo_miny,"
    " geo_maxx, geo_maxy)"
)
_ON_CONFLICT = (
    " ON CONFLICT (tenant, id) DO UPDATE SET"
    " type=excluded.type, types=excluded.types, created_at=excluded.created_at, modified_at=excluded.modified_at,"
    " doc=excluded.doc, geo_minx=excluded.geo_minx, geo_miny=excluded.geo_miny, geo_maxx=excluded.geo_maxx,"
    " geo_maxy=excluded.geo_maxy"
)
_GONE_ONE = "WITH gone AS (DELETE FROM broker_entity_extra_types WHERE tenant = $1 AND id = $2)"
_GONE_MANY = "WITH gone AS (DELETE FROM broker_entity_extra_types WHERE tenant = $1 AND id = ANY($2::text[]))"
_VALUES_ONE = " VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,$8,$9,$10,$11)"
# A batch is one statement over arrays (unnest), not executemany: one round trip and one plan for 1,000 rows.
_VALUES_MANY = (
    " SELECT $1, u.id, u.type, string_to_array(u.types, chr(31)), u.created_at, u.modified_at,"
    " u.doc::jsonb, u.minx, u.miny, u.maxx, u.maxy"
    " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::float8[], $9::float8[],"
    " $10::float8[], $11::float8[]) AS u(id, type, types, created_at, modified_at, doc, minx, miny, maxx, maxy)"
)
_HIST_ONE = (
    ", hist AS (INSERT INTO broker_entity_history (tenant, entity_id, modified_at, deleted, instances)"
    " VALUES ($1, $12, $13, $14, $15::jsonb))"
)
_HIST_MANY = (
    ", hist AS (INSERT INTO broker_entity_history (tenant, entity_id, modified_at, deleted, instances)"
    " SELECT $1, h.entity_id, h.modified_at, h.deleted, h.instances::jsonb"
    " FROM unnest($12::text[], $13::text[], $14::bool[], $15::text[]) AS h(entity_id, modified_at, deleted, instances))"
)
_UPSERT = _GONE_ONE + _ENTITY_COLUMNS + _VALUES_ONE + _ON_CONFLICT
_UPSERT_ARRAYS = _GONE_MANY + _ENTITY_COLUMNS + _VALUES_MANY + _ON_CONFLICT
_UPSERT_WITH_HISTORY = _GONE_ONE + _HIST_ONE + _ENTITY_COLUMNS + _VALUES_ONE + _ON_CONFLICT
_UPSERT_ARRAYS_WITH_HISTORY = _GONE_MANY + _HIST_MANY + _ENTITY_COLUMNS + _VALUES_MANY + _ON_CONFLICT
_SEP = "\x1f"
_HISTORY = (
    "INSERT INTO broker_entity_history (tenant, entity_id, modified_at, deleted, instances)"
    " VALUES ($1,$2,$3,$4,$5::jsonb)"
)

_HISTORY_ARRAYS = (
    "INSERT INTO broker_entity_history (tenant, entity_id, modified_at, deleted, instances)"
    " SELECT $1, u.entity_id, u.modified_at, u.deleted, u.instances::jsonb"
    " FROM unnest($2::text[], $3::text[], $4::bool[], $5::text[]) AS u(entity_id, modified_at, deleted, instances)"
)

# The optimistic single-entity update (decision 0514). ``xmin`` is the transaction that wrote the row version read;
# any later write of the row — an update, or a delete and re-create — gives it another. Under READ COMMITTED an UPDATE
# that finds the row changed by a transaction that committed after the statement began (or that it had to wait for)
# re-checks its WHERE on the newest version, so a concurrent write makes it match no row rather than overwrite. The
# history row is inserted from the UPDATE's RETURNING: written exactly when the entity row is, in the same implicit
# transaction. ``type``/``types`` are not set: a change of the types takes the locking path (the further-types side
# table follows the upsert there).
_READ_VERSIONED = "SELECT doc::text, xmin FROM broker_entities WHERE tenant = $1 AND id = $2"
_UPDATE_IF_UNCHANGED = (
    "WITH upd AS (UPDATE broker_entities SET created_at = $3, modified_at = $4, doc = $5::jsonb, geo_minx = $6,"
    " geo_miny = $7, geo_maxx = $8, geo_maxy = $9 WHERE tenant = $1 AND id = $2 AND xmin = $10::xid RETURNING 1),"
    " hist AS (INSERT INTO broker_entity_history (tenant, entity_id, modified_at, deleted, instances)"
    " SELECT $1, $11, $12, $13, $14::jsonb FROM upd)"
    " SELECT count(*) FROM upd"
)


def entity_row(tenant: str, entity: Entity) -> tuple[Any, ...]:
    types = entity["type"]
    return (tenant, entity["id"], types[0], types, entity["createdAt"], entity["modifiedAt"],
            orjson.dumps(entity).decode(), *location_bbox(entity))


class _Params:
    """Numbers ``$n`` placeholders while a statement is assembled."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _has_type(t: str, extra: set[str], p: _Params) -> str:
    """As in the SQLite store: the first-type index alone unless some entity carries ``t`` as a further type."""
    if t in extra:
        first, other = p(t), p(t)
        return f"(e.type = {first} OR e.id IN (SELECT x.id FROM broker_entity_extra_types x WHERE x.tenant = e.tenant AND x.type = {other}))"  # noqa: S608, E501
    return f"e.type = {p(t)}"


async def _extra_types(conn: asyncpg.Connection, tenant: str, f: EntityFilter) -> set[str]:
    wanted = sorted({t for group in f.type_groups for t in group})
    if not wanted:
        return set()
    rows = await conn.fetch("SELECT DISTINCT type FROM broker_entity_extra_types WHERE tenant = $1"
                            " AND type = ANY($2::text[])", tenant, wanted)
    return {r[0] for r in rows}


def where_postgres(tenant: str, f: EntityFilter, p: _Params, extra_types: set[str] | None = None) -> str:
    extra = extra_types or set()
    clauses = [f"e.tenant = {p(tenant)}"]
    if f.type_groups:
        ors = ["(" + " AND ".join(_has_type(t, extra, p) for t in group) + ")" for group in f.type_groups]
        clauses.append("(" + " OR ".join(ors) + ")")
    if f.ids:
        clauses.append(f"e.id = ANY({p(list(f.ids))}::text[])")
    if f.id_pattern:
        clauses.append(f"e.id ~ {p(f.id_pattern)}")
    if f.attrs:
        clauses.append(f"e.doc ?| {p(list(f.attrs))}::text[]")
    if f.bbox is not None:
        minx, miny, maxx, maxy = f.bbox
        clauses.append(f"e.geo_minx IS NOT NULL AND e.geo_maxx >= {p(minx)} AND e.geo_minx <= {p(maxx)}"
                       f" AND e.geo_maxy >= {p(miny)} AND e.geo_miny <= {p(maxy)}")
    for cond in f.sql:
        clauses.append("(" + cond.sql.format(*[p(v) for v in cond.params]) + ")")
    return " AND ".join(clauses)


class _PgTransaction(StoreTransaction):
    """One write transaction on one connection.

    ``upsert`` is held back until the next call: every writer follows it with ``history`` (the service, the
    temporal service, the change feed), and the two then go to PostgreSQL as one statement (``_UPSERT_WITH_HISTORY``,
    data-modifying CTEs) — one round trip less per write, a fifth of a single update's. Any other call, and the end
    of the transaction (``flush``, before COMMIT), writes a held-back upsert first, so the statements' order and what
    each read sees are as if it had been sent at once.
    """

    def __init__(self, conn: asyncpg.Connection, tenant: str) -> None:
        self.conn = conn
        self.tenant = tenant
        self._pending: list[Entity] | None = None

    async def flush(self) -> None:
        """Write a held-back upsert (see class docstring)."""
        pending, self._pending = self._pending, None
        if pending:
            await self._write(pending, None)

    async def fetch(self, ids: Sequence[str]) -> dict[str, Entity]:
        await self.flush()
        rows = await self.conn.fetch(
            "SELECT id, doc::text FROM broker_entities WHERE tenant = $1 AND id = ANY($2::text[]) FOR UPDATE",
            self.tenant, list(ids))
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def existing(self, ids: Sequence[str]) -> dict[str, str]:
        await self.flush()
        rows = await self.conn.fetch(
            "SELECT id, created_at FROM broker_entities WHERE tenant = $1 AND id = ANY($2::text[]) FOR UPDATE",
            self.tenant, list(ids))
        return {r[0]: r[1] for r in rows}

    async def upsert(self, entities: Sequence[Entity]) -> None:
        await self.flush()
        self._pending = list(entities)

    async def _write(self, entities: list[Entity], rows: Sequence[HistoryRow] | None) -> None:
        """The upsert of ``entities``, with ``rows`` (history) in the same statement when given."""
        history: list[Any] = []
        if rows:
            instances = [None if r.instances is None else orjson.dumps(r.instances).decode() for r in rows]
            history = [[r.entity_id for r in rows], [r.modified_at for r in rows], [r.deleted for r in rows],
                       instances]
        if len(entities) == 1 and (rows is None or len(rows) == 1):
            if rows:
                await self.conn.execute(_UPSERT_WITH_HISTORY, *entity_row(self.tenant, entities[0]),
                                        *(column[0] for column in history))
            else:
                await self.conn.execute(_UPSERT, *entity_row(self.tenant, entities[0]))
        elif any(_SEP in t for e in entities for t in e["type"]):
            await self.conn.executemany(_UPSERT, [entity_row(self.tenant, e) for e in entities])
            if rows:
                await self._history(rows)
        else:
            table = [entity_row(self.tenant, e) for e in entities]
            columns = [list(c) for c in zip(*table, strict=True)]
            # each entity's types joined by U+001F (a control character, which no type name may contain, clause
            # 4.6.2) and split in SQL: a ragged text[][] cannot be sent, and this is cheaper than a JSON array per row
            columns[3] = [_SEP.join(t) for t in columns[3]]
            if rows:
                await self.conn.execute(_UPSERT_ARRAYS_WITH_HISTORY, self.tenant, *columns[1:], *history)
            else:
                await self.conn.execute(_UPSERT_ARRAYS, self.tenant, *columns[1:])
        multi = [e for e in entities if len(e["type"]) > 1]
        if multi:
            await self.conn.executemany("INSERT INTO broker_entity_extra_types VALUES ($1, $2, $3)"
                                        " ON CONFLICT DO NOTHING",
                                        [(self.tenant, t, e["id"]) for e in multi for t in e["type"][1:]])

    async def delete(self, ids: Sequence[str]) -> None:
        await self.flush()
        await self.conn.execute("DELETE FROM broker_entities WHERE tenant = $1 AND id = ANY($2::text[])",
                                self.tenant, list(ids))
        await self.conn.execute("DELETE FROM broker_entity_extra_types WHERE tenant = $1 AND id = ANY($2::text[])",
                                self.tenant, list(ids))

    async def delete_by_filter(self, entity_filter: EntityFilter) -> list[str]:
        await self.flush()
        p = _Params()
        where = where_postgres(self.tenant, entity_filter, p,
                               await _extra_types(self.conn, self.tenant, entity_filter))
        rows = await self.conn.fetch(f"DELETE FROM broker_entities e WHERE {where} RETURNING e.id", *p.values)  # noqa: S608
        ids = [r[0] for r in rows]
        await self.conn.execute("DELETE FROM broker_entity_extra_types WHERE tenant = $1 AND id = ANY($2::text[])",
                                self.tenant, ids)
        return ids

    async def history(self, rows: Sequence[HistoryRow]) -> None:
        pending, self._pending = self._pending, None
        if pending:
            await self._write(pending, rows)
        elif rows:
            await self._history(rows)

    async def _history(self, rows: Sequence[HistoryRow]) -> None:
        instances = [None if r.instances is None else orjson.dumps(r.instances).decode() for r in rows]
        if len(rows) == 1:
            r = rows[0]
            await self.conn.execute(_HISTORY, self.tenant, r.entity_id, r.modified_at, r.deleted, instances[0])
        else:
            await self.conn.execute(_HISTORY_ARRAYS, self.tenant, [r.entity_id for r in rows],
                                    [r.modified_at for r in rows], [r.deleted for r in rows], instances)


class PostgresEntityStore(EntityStore):
    dialect = "postgresql"

    #: Connections in the pool at most. A durable commit waits for a WAL flush (~5 ms on this project's machines);
    #: PostgreSQL flushes the commits of all transactions waiting at that moment together, so concurrent single
    #: updates scale with how many transactions are in flight — the pool, not the CPU, bounded them at 10
    #: (decision 0507). Idle connections are closed down to ``min_size``.
    MAX_SIZE = 32
    #: Optimistic tries of a single-entity update before it takes the locking transaction (decision 0514): a row
    #: written that often between a read and an update is contended, and the lock then orders its writers.
    OPTIMISTIC_TRIES = 3

    def __init__(self, dsn: str, min_size: int = 2, max_size: int = MAX_SIZE) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._readers: ReadConnections | None = None
        self._tenants: set[str] = {DEFAULT_TENANT}

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=self.min_size, max_size=self.max_size,
                                               reset=keep_session_state)
        async with self._pool.acquire() as conn:
            await migrate_postgres(conn, "broker", MIGRATIONS)
        # The read path's own connections (docs/decisions/0554, 0556): they only ever run single autocommit
        # SELECTs, which leave no session state, handed out without asyncpg's pool (its acquire/release cost more
        # client CPU than a single GET's query); JIT is off because the q scan's cost estimates would otherwise
        # trigger compilation (~100 ms+) on count=true queries, for plans that run in a millisecond.
        dsn = self.dsn
        self._readers = ReadConnections(lambda: asyncpg.connect(dsn, server_settings={"jit": "off"}), self.max_size)

    async def close(self) -> None:
        if self._readers is not None:
            await self._readers.close()
        if self._pool is not None:
            await self._pool.close()
        self._pool = self._readers = None

    @property
    def readers(self) -> ReadConnections:
        assert self._readers is not None, "store not opened"
        return self._readers

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "store not opened"
        return self._pool

    async def tenants(self) -> list[str]:
        rows = await self.pool.fetch("SELECT name FROM broker_tenants")
        self._tenants |= {r[0] for r in rows}
        return sorted(self._tenants)

    async def tenant_exists(self, tenant: str) -> bool:
        if tenant in self._tenants:
            return True
        return tenant in await self.tenants()

    @asynccontextmanager
    async def transaction(self, tenant: str) -> AsyncIterator[StoreTransaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            if tenant not in self._tenants:
                await conn.execute("INSERT INTO broker_tenants (name, created_at) VALUES ($1, $2)"
                                   " ON CONFLICT DO NOTHING", tenant, now_iso())
            tx = _PgTransaction(conn, tenant)
            yield tx
            await tx.flush()
        self._tenants.add(tenant)

    async def update_entity(self, tenant: str, entity_id: str, change: EntityChange) -> bool:
        """Optimistic read-modify-write (module docstring, decision 0514): two round trips on the lean connections,
        no BEGIN/COMMIT and no pool; the locking transaction after ``OPTIMISTIC_TRIES`` conflicts, or when the change
        touches the entity's types or id, or on a tenant this store has not seen yet."""
        if tenant in self._tenants:
            # two uses of the lean connections, not one held across ``change``: an error it raises (an NgsiLdError)
            # must not count as a broken connection, and the connection is not idle while Python works
            for _ in range(self.OPTIMISTIC_TRIES):
                async with self.readers.use() as conn:
                    found = await conn.fetchrow(_READ_VERSIONED, tenant, entity_id)
                if found is None:
                    return False
                entity = orjson.loads(found[0])
                types = list(entity["type"])
                row = change(entity)
                if row is None:
                    return True
                if entity["type"] != types or entity["id"] != entity_id:
                    break
                _, _, _, _, created_at, modified_at, doc, minx, miny, maxx, maxy = entity_row(tenant, entity)
                instances = None if row.instances is None else orjson.dumps(row.instances).decode()
                async with self.readers.use() as conn:
                    written = await conn.fetchval(_UPDATE_IF_UNCHANGED, tenant, entity_id, created_at, modified_at,
                                                  doc, minx, miny, maxx, maxy, found[1], row.entity_id,
                                                  row.modified_at, row.deleted, instances)
                if written:
                    return True
        return await super().update_entity(tenant, entity_id, change)

    async def get(self, tenant: str, entity_id: str) -> Entity | None:
        doc = await self.get_document(tenant, entity_id)
        return None if doc is None else orjson.loads(doc)

    async def get_document(self, tenant: str, entity_id: str) -> str | None:
        async with self.readers.use() as conn:
            return await conn.fetchval(  # type: ignore[no-any-return]
                "SELECT doc::text FROM broker_entities WHERE tenant = $1 AND id = $2", tenant, entity_id)

    async def query(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[Entity], int | None]:
        if entity_filter.post:
            matched = [e async for e in self.scan(tenant, entity_filter) if all(p(e) for p in entity_filter.post)]
            count = len(matched) if entity_filter.count else None
            return matched[entity_filter.offset:entity_filter.offset + entity_filter.limit], count
        docs, count = await self._query_documents(tenant, entity_filter)
        return [orjson.loads(d) for d in docs], count

    async def query_documents(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[str], int | None]:
        if entity_filter.post:
            return await super().query_documents(tenant, entity_filter)
        return await self._query_documents(tenant, entity_filter)

    async def _query_documents(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[str], int | None]:
        """One statement, one round trip, in the common case.

        The type condition is first written for entities' first types only (an index range scan in id order that
        LIMIT stops early); the same statement — so the same snapshot — says, as an uncorrelated scalar subquery
        (evaluated once), whether any entity of the tenant has one of the wanted types as a further type. Only
        then is the page read again with the side table (tenants whose entities have several types). The count,
        when asked, is another scalar subquery of the same statement. An empty page has no row to carry those two
        answers, so it takes a second, small statement.
        """
        f = entity_filter
        wanted = sorted({t for group in f.type_groups for t in group})
        async with self.readers.use() as conn:
            docs, count, further = await self._page(conn, tenant, f, set(), wanted)
            if further:
                docs, count, _ = await self._page(conn, tenant, f, await _extra_types(conn, tenant, f), [])
        return docs, count

    async def _page(self, conn: asyncpg.Connection, tenant: str, f: EntityFilter, extra: set[str],
                    probe: list[str]) -> tuple[list[str], int | None, bool]:
        """``(documents of the page, count if asked, whether an entity has a type of ``probe`` as further type)``."""
        rows: list[Any] = []
        if f.limit > 0:
            p = _Params()
            where = where_postgres(tenant, f, p, extra)
            answers = self._answers(tenant, f, probe, p, where)
            # LIMIT/OFFSET as literals (validated ints): with parameters there, PostgreSQL cannot cost a generic plan
            # (it assumes a large fraction of the rows) and re-plans every execution — ~0.4 ms of server CPU each
            rows = await conn.fetch(f"SELECT e.doc::text, {answers} FROM broker_entities e WHERE {where}"  # noqa: S608
                                    f" ORDER BY e.id LIMIT {int(f.limit)} OFFSET {int(f.offset)}", *p.values)
        if rows:
            return [r[0] for r in rows], rows[0][2], bool(rows[0][1])
        if not probe and not f.count:
            return [], None, False
        p = _Params()
        where = where_postgres(tenant, f, p, extra) if f.count else ""
        row = await conn.fetchrow(f"SELECT {self._answers(tenant, f, probe, p, where)}", *p.values)
        return [], row[1], bool(row[0])

    @staticmethod
    def _answers(tenant: str, f: EntityFilter, probe: list[str], p: _Params, where: str) -> str:
        """The two scalar subqueries of a page statement: further types exist (for ``probe``); the count."""
        # S608: the SQL is fixed text and the store's own WHERE; every value is a bound parameter
        further = (f"(SELECT EXISTS (SELECT 1 FROM broker_entity_extra_types WHERE tenant = {p(tenant)}"  # noqa: S608
                   f" AND type = ANY({p(probe)}::text[])))") if probe else "false"
        count = f"(SELECT COUNT(*) FROM broker_entities e WHERE {where})" if f.count else "NULL::bigint"  # noqa: S608
        return f"{further}, {count}"

    async def scan(self, tenant: str, entity_filter: EntityFilter) -> AsyncIterator[Entity]:
        p = _Params()
        async with self.pool.acquire() as conn, conn.transaction():
            where = where_postgres(tenant, entity_filter, p, await _extra_types(conn, tenant, entity_filter))
            async for row in conn.cursor(
                f"SELECT e.doc::text FROM broker_entities e WHERE {where} ORDER BY e.id", *p.values  # noqa: S608
            ):
                yield orjson.loads(row[0])

    async def history_count(self, tenant: str, entity_id: str | None = None) -> int:
        if entity_id is None:
            return int(await self.pool.fetchval(
                "SELECT COUNT(*) FROM broker_entity_history WHERE tenant = $1", tenant))
        return int(await self.pool.fetchval(
            "SELECT COUNT(*) FROM broker_entity_history WHERE tenant = $1 AND entity_id = $2", tenant, entity_id))

    async def hosted_contexts(self) -> list[tuple[str, str, Any, str]]:
        rows = await self.pool.fetch("SELECT local_id, url, document::text, created_at FROM broker_jsonld_contexts")
        return [(r[0], r[1], orjson.loads(r[2]), r[3]) for r in rows]

    async def save_hosted_context(self, local_id: str, url: str, document: Any, created_at: str) -> None:
        await self.pool.execute("INSERT INTO broker_jsonld_contexts VALUES ($1,$2,$3::jsonb,$4)",
                                local_id, url, orjson.dumps(document).decode(), created_at)

    async def delete_hosted_context(self, local_id: str) -> None:
        await self.pool.execute("DELETE FROM broker_jsonld_contexts WHERE local_id = $1", local_id)
