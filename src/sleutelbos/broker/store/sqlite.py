"""SQLite store (aiosqlite): the embedded default.

Durability (docs/decisions/0501-sqlite-durability.md): WAL journal, ``synchronous=NORMAL`` by default. A commit in WAL
mode ``write()``s the transaction's frames to the ``-wal`` file before ``COMMIT`` returns, so the data sits in the
kernel's page cache when the client gets its answer; ``kill -9`` of the broker cannot take it back (only a power loss or
kernel crash could lose the last commits, which ``broker_sqlite_synchronous=FULL`` — an ``fsync`` per commit — closes).

One write connection guarded by an ``asyncio.Lock`` (SQLite has one writer anyway; ``BEGIN IMMEDIATE`` takes the
write lock at the start so a read-modify-write cannot interleave), and one read connection that WAL lets read while
the writer writes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from sleutelbos.broker.entity import Entity, now_iso
from sleutelbos.broker.query.sql import register_aiosqlite_functions
from sleutelbos.broker.store.base import (
    DEFAULT_TENANT,
    EntityFilter,
    EntityStore,
    HistoryRow,
    StoreTransaction,
    location_bbox,
)
from sleutelbos.broker.temporal.instants import instant
from sleutelbos.broker.temporal.schema import SQLITE_MIGRATIONS
from sleutelbos.core.database import migrate_sqlite

MIGRATIONS: list[str] = [
    """
    CREATE TABLE broker_tenants (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
    CREATE TABLE broker_entities (
        tenant TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, types TEXT NOT NULL,
        created_at TEXT NOT NULL, modified_at TEXT NOT NULL, doc TEXT NOT NULL,
        geo_minx REAL, geo_miny REAL, geo_maxx REAL, geo_maxy REAL,
        PRIMARY KEY (tenant, id)
    ) WITHOUT ROWID;
    CREATE INDEX broker_entities_type ON broker_entities (tenant, type, id);
    CREATE TABLE broker_attribute_instances (
        seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, attr TEXT NOT NULL,
        dataset_id TEXT, observed_at TEXT, modified_at TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
        instance TEXT
    );
    CREATE TABLE broker_jsonld_contexts (local_id TEXT PRIMARY KEY, url TEXT NOT NULL, document TEXT NOT NULL,
                                  created_at TEXT NOT NULL);
    """,
    # --- issue 3 (subscriptions, notifications, temporal): appended, see broker.temporal.schema ---
    *SQLITE_MIGRATIONS,
]

_UPSERT = (
    "INSERT INTO broker_entities (tenant, id, type, types, created_at, modified_at, doc, geo_minx, geo_miny, geo_maxx,"
    " geo_maxy) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (tenant, id) DO UPDATE SET type=excluded.type,"
    " types=excluded.types, created_at=excluded.created_at, modified_at=excluded.modified_at, doc=excluded.doc,"
    " geo_minx=excluded.geo_minx, geo_miny=excluded.geo_miny, geo_maxx=excluded.geo_maxx, geo_maxy=excluded.geo_maxy"
)
_HISTORY = (
    "INSERT INTO broker_attribute_instances (tenant, entity_id, attr, dataset_id, observed_at, modified_at, deleted,"
    " instance) VALUES (?,?,?,?,?,?,?,?)"
)
_CHUNK = 500  # stay under SQLite's default 999 host parameters per statement


def _regexp(pattern: str, value: Any) -> bool:
    return value is not None and re.search(pattern, str(value)) is not None


def entity_row(tenant: str, entity: Entity) -> tuple[Any, ...]:
    types = entity["type"]
    return (tenant, entity["id"], types[0], orjson.dumps(types).decode(), entity["createdAt"],
            entity["modifiedAt"], orjson.dumps(entity).decode(), *location_bbox(entity))


def history_row(tenant: str, row: HistoryRow) -> tuple[Any, ...]:
    return (tenant, row.entity_id, row.attr, row.dataset_id, instant(row.observed_at), row.modified_at,
            int(row.deleted),
            None if row.instance is None else orjson.dumps(row.instance).decode())


def where_sqlite(tenant: str, f: EntityFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (``e`` = entities) for the SQL part of a filter."""
    clauses = ["e.tenant = ?"]
    params: list[Any] = [tenant]
    if f.type_groups:
        ors = []
        for group in f.type_groups:
            ands = []
            for t in group:
                ands.append("(e.type = ? OR (e.types LIKE '%\",\"%' AND EXISTS (SELECT 1 FROM json_each(e.types) j"
                            " WHERE j.value = ?)))")
                params += [t, t]
            ors.append("(" + " AND ".join(ands) + ")")
        clauses.append("(" + " OR ".join(ors) + ")")
    if f.ids:
        clauses.append(f"e.id IN ({','.join('?' * len(f.ids))})")
        params += f.ids
    if f.id_pattern:
        clauses.append("regexp(?, e.id)")
        params.append(f.id_pattern)
    if f.attrs:
        clauses.append("(" + " OR ".join("json_type(e.doc, ?) IS NOT NULL" for _ in f.attrs) + ")")
        params += [json_path(a) for a in f.attrs]
    if f.bbox is not None:
        minx, miny, maxx, maxy = f.bbox
        clauses.append("e.geo_minx IS NOT NULL AND e.geo_maxx >= ? AND e.geo_minx <= ? AND e.geo_maxy >= ?"
                       " AND e.geo_miny <= ?")
        params += [minx, maxx, miny, maxy]
    for cond in f.sql:
        clauses.append(f"({cond.sql})")
        params += cond.params
    return " AND ".join(clauses), params


def json_path(iri: str) -> str:
    """A SQLite JSON path to a top-level member named by an IRI (quoted: IRIs contain ``.`` and ``:``)."""
    return '$."' + iri.replace('"', '\\"') + '"'


class _SqliteTransaction(StoreTransaction):
    def __init__(self, conn: aiosqlite.Connection, tenant: str) -> None:
        self.conn = conn
        self.tenant = tenant

    async def fetch(self, ids: Sequence[str]) -> dict[str, Entity]:
        out: dict[str, Entity] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = list(ids[i:i + _CHUNK])
            sql = f"SELECT id, doc FROM broker_entities WHERE tenant = ? AND id IN ({','.join('?' * len(chunk))})"  # noqa: S608
            async with self.conn.execute(sql, [self.tenant, *chunk]) as cur:
                for entity_id, doc in await cur.fetchall():
                    out[entity_id] = orjson.loads(doc)
        return out

    async def existing(self, ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = list(ids[i:i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, created_at FROM broker_entities WHERE tenant = ? AND id IN ({marks})"  # noqa: S608
            async with self.conn.execute(sql, [self.tenant, *chunk]) as cur:
                out.update(await cur.fetchall())
        return out

    async def upsert(self, entities: Sequence[Entity]) -> None:
        await self.conn.executemany(_UPSERT, [entity_row(self.tenant, e) for e in entities])

    async def delete(self, ids: Sequence[str]) -> None:
        await self.conn.executemany("DELETE FROM broker_entities WHERE tenant = ? AND id = ?",
                                    [(self.tenant, i) for i in ids])

    async def delete_by_filter(self, entity_filter: EntityFilter) -> list[str]:
        where, params = where_sqlite(self.tenant, entity_filter)
        async with self.conn.execute(f"SELECT e.id FROM broker_entities e WHERE {where}", params) as cur:  # noqa: S608
            ids = [r[0] for r in await cur.fetchall()]
        await self.delete(ids)
        return ids

    async def history(self, rows: Sequence[HistoryRow]) -> None:
        if rows:
            await self.conn.executemany(_HISTORY, [history_row(self.tenant, r) for r in rows])


class SqliteEntityStore(EntityStore):
    dialect = "sqlite"

    def __init__(self, path: Path | None, synchronous: str = "NORMAL") -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be NORMAL, FULL or EXTRA")
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock: Any = None
        self._tenants: set[str] = {DEFAULT_TENANT}

    async def _connect(self) -> aiosqlite.Connection:
        target = str(self.path) if self.path else "file:sleutelbos-broker?mode=memory&cache=shared"
        conn = await aiosqlite.connect(target, isolation_level=None, uri=self.path is None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={self.synchronous}")
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.create_function("regexp", 2, _regexp, deterministic=True)
        await register_aiosqlite_functions(conn)
        return conn

    async def open(self) -> None:
        import asyncio

        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = asyncio.Lock()
        self._writer = await self._connect()
        await migrate_sqlite(self._writer, "broker", MIGRATIONS)
        self._reader = await self._connect() if self.path is not None else self._writer
        async with self._writer.execute("SELECT name FROM broker_tenants") as cur:
            self._tenants |= {r[0] for r in await cur.fetchall()}

    async def close(self) -> None:
        if self._reader is not None and self._reader is not self._writer:
            await self._reader.close()
        if self._writer is not None:
            await self._writer.close()
        self._reader = self._writer = None

    async def tenants(self) -> list[str]:
        return sorted(self._tenants)

    @asynccontextmanager
    async def transaction(self, tenant: str) -> AsyncIterator[StoreTransaction]:
        assert self._writer is not None and self._lock is not None
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                if tenant not in self._tenants:
                    await self._writer.execute(
                        "INSERT INTO broker_tenants (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                        (tenant, now_iso()))
                yield _SqliteTransaction(self._writer, tenant)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")
            self._tenants.add(tenant)

    async def get(self, tenant: str, entity_id: str) -> Entity | None:
        assert self._reader is not None
        async with self._reader.execute("SELECT doc FROM broker_entities WHERE tenant = ? AND id = ?",
                                        (tenant, entity_id)) as cur:
            row = await cur.fetchone()
        return None if row is None else orjson.loads(row[0])

    async def query(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[Entity], int | None]:
        assert self._reader is not None
        where, params = where_sqlite(tenant, entity_filter)
        count: int | None = None
        if entity_filter.post:
            matched = [e async for e in self.scan(tenant, entity_filter) if all(p(e) for p in entity_filter.post)]
            if entity_filter.count:
                count = len(matched)
            return matched[entity_filter.offset:entity_filter.offset + entity_filter.limit], count
        if entity_filter.count:
            async with self._reader.execute(f"SELECT COUNT(*) FROM broker_entities e WHERE {where}", params) as cur:  # noqa: S608
                count = (await cur.fetchone())[0]  # type: ignore[index]
        if entity_filter.limit == 0:
            return [], count
        sql = f"SELECT e.doc FROM broker_entities e WHERE {where} ORDER BY e.id LIMIT ? OFFSET ?"  # noqa: S608
        async with self._reader.execute(sql, [*params, entity_filter.limit, entity_filter.offset]) as cur:
            rows = await cur.fetchall()
        return [orjson.loads(r[0]) for r in rows], count

    async def scan(self, tenant: str, entity_filter: EntityFilter) -> AsyncIterator[Entity]:
        assert self._reader is not None
        where, params = where_sqlite(tenant, entity_filter)
        sql = f"SELECT e.doc FROM broker_entities e WHERE {where} ORDER BY e.id"  # noqa: S608
        async with self._reader.execute(sql, params) as cur:
            async for row in cur:
                yield orjson.loads(row[0])

    async def history_count(self, tenant: str, entity_id: str | None = None) -> int:
        assert self._reader is not None
        sql = "SELECT COUNT(*) FROM broker_attribute_instances WHERE tenant = ?"
        params: list[Any] = [tenant]
        if entity_id is not None:
            sql += " AND entity_id = ?"
            params.append(entity_id)
        async with self._reader.execute(sql, params) as cur:
            return int((await cur.fetchone())[0])  # type: ignore[index]

    async def hosted_contexts(self) -> list[tuple[str, str, Any, str]]:
        assert self._reader is not None
        sql = "SELECT local_id, url, document, created_at FROM broker_jsonld_contexts"
        async with self._reader.execute(sql) as cur:
            return [(r[0], r[1], orjson.loads(r[2]), r[3]) for r in await cur.fetchall()]

    async def save_hosted_context(self, local_id: str, url: str, document: Any, created_at: str) -> None:
        assert self._writer is not None and self._lock is not None
        async with self._lock:
            await self._writer.execute("INSERT INTO broker_jsonld_contexts VALUES (?,?,?,?)",
                                       (local_id, url, orjson.dumps(document).decode(), created_at))

    async def delete_hosted_context(self, local_id: str) -> None:
        assert self._writer is not None and self._lock is not None
        async with self._lock:
            await self._writer.execute("DELETE FROM broker_jsonld_contexts WHERE local_id = ?", (local_id,))
