"""SQLite store: the embedded default.

Durability (docs/decisions/0501-sqlite-store.md): WAL journal, ``synchronous=NORMAL`` by default. A commit in WAL
mode ``write()``s the transaction's frames to the ``-wal`` file before ``COMMIT`` returns, so the data is in the
kernel's page cache when the client gets its answer and ``kill -9`` of the broker cannot take it back (tested); only a
power loss or kernel crash could lose the last commits, which ``broker_sqlite_synchronous=FULL`` (an ``fsync`` per
commit) closes.

Calls run on the event loop's thread with the standard ``sqlite3`` module, not through ``aiosqlite``: with WAL and
``synchronous=NORMAL`` a statement costs tens of microseconds and a commit does not ``fsync``, whereas each aiosqlite
call is a hand-off to a worker thread and back (0.1-1 ms on a loaded 2-core machine) — it cut single-update
throughput by an order of magnitude. The one slow operation, the WAL checkpoint (it ``fsync``\\ s), is taken off the
commit path (``wal_autocheckpoint=0``) and run every second in a worker thread on its own connection.
``aiosqlite`` still opens the file once at start for ``core.database.migrate_sqlite``.

Entities live in a rowid table with a ``UNIQUE (tenant, id)`` index, not ``WITHOUT ROWID``: the rows carry a
whole JSON document (~1 KB), and SQLite's own guidance is that WITHOUT ROWID suits small rows — measured, it doubled
the cost of a batch upsert.

Writers are serialised by an ``asyncio.Lock`` and ``BEGIN IMMEDIATE`` (SQLite has one writer anyway), so a
read-modify-write cannot interleave with another; readers use their own connection, which WAL lets read while the
writer writes.

A database file comes with a second one beside it, ``<stem>-temporal<suffix>`` (:func:`temporal_path`), holding
the temporal history's buckets of chunks (docs/decisions/0710, 0720): SQLite has one writer lock per file, and the
temporal writes would take turns with the entity writes on this one. The head of that history is this file's
``broker_entity_history``, each row written with the span of its ``observedAt`` (``observed_span``). The connections
that read the temporal tables ATTACH it as ``temporal`` (``_connect(temporal=True)``); SQLite resolves an unqualified
table name in ``main`` first and then in the attached databases, so the temporal statements are the same text whether
the tables are in the second file or, on the shared in-memory database (which keeps a single database), in ``main``.
The entity writer does not attach it: ``BEGIN IMMEDIATE`` takes the write lock of every attached database. The two
files are one data set: back them up together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite
import orjson

from sleutelbos.broker.entity import Entity, now_iso
from sleutelbos.broker.query.sql import SQLITE_FUNCTIONS, scalar_values
from sleutelbos.broker.store.base import (
    DEFAULT_TENANT,
    EntityFilter,
    EntityStore,
    HistoryRow,
    StoreTransaction,
    location_bbox,
)
from sleutelbos.broker.store.group_commit import GroupCommit, WriterLock, committed
from sleutelbos.broker.store.sqlite_pages import PAGE_SIZES
from sleutelbos.broker.temporal.instants import observed_span, sql_instant
from sleutelbos.broker.temporal.schema import (
    SQLITE_HISTORY_HEAD_INDEX,
    SQLITE_IN_MEMORY_CHUNKS,
    SQLITE_MIGRATIONS,
    SQLITE_TEMPORAL_CHUNKS,
    SQLITE_TEMPORAL_FILE,
    SQLITE_TEMPORAL_FILE_COPY,
    SQLITE_TEMPORAL_KEPT,
    SQLITE_TEMPORAL_MOVED,
)
from sleutelbos.core.database import migrate_sqlite
from sleutelbos.core.tasks import cancel_and_wait

log = logging.getLogger("sleutelbos.broker.store")

MIGRATIONS: list[str] = [
    """
    CREATE TABLE broker_tenants (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
    CREATE TABLE broker_entities (
        tenant TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, types TEXT NOT NULL,
        created_at TEXT NOT NULL, modified_at TEXT NOT NULL, doc TEXT NOT NULL,
        geo_minx REAL, geo_miny REAL, geo_maxx REAL, geo_maxy REAL,
        UNIQUE (tenant, id)
    );
    CREATE INDEX broker_entities_type ON broker_entities (tenant, type, id);
    CREATE TABLE broker_entity_history (
        seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, modified_at TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0, instances TEXT
    );
    CREATE TABLE broker_jsonld_contexts (local_id TEXT PRIMARY KEY, url TEXT NOT NULL, document TEXT NOT NULL,
                                         created_at TEXT NOT NULL);
    """,
    """
    CREATE TABLE broker_entity_extra_types (tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
                                            PRIMARY KEY (tenant, type, id)) WITHOUT ROWID;
    CREATE INDEX broker_entity_extra_types_id ON broker_entity_extra_types (tenant, id);
    INSERT OR IGNORE INTO broker_entity_extra_types
        SELECT e.tenant, j.value, e.id FROM broker_entities e, json_each(e.types) j WHERE j.key > 0;
    """,
    # --- issue 3 (subscriptions, notifications, temporal): appended, see broker.temporal.schema ---
    *SQLITE_MIGRATIONS,
]

#: The scalar column (decision 0555): its own migration component, so that it does not renumber or depend on the
#: list above. Rows written before it have NULL there, which the q translation reads as "ask the document".
SCALARS_MIGRATIONS: list[str] = ["ALTER TABLE broker_entities ADD COLUMN scalars TEXT"]

_UPSERT = (
    "INSERT INTO broker_entities (tenant, id, type, types, created_at, modified_at, doc, geo_minx, geo_miny, geo_maxx,"
    " geo_maxy, scalars) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (tenant, id) DO UPDATE SET type=excluded.type,"
    " types=excluded.types, created_at=excluded.created_at, modified_at=excluded.modified_at, doc=excluded.doc,"
    " geo_minx=excluded.geo_minx, geo_miny=excluded.geo_miny, geo_maxx=excluded.geo_maxx, geo_maxy=excluded.geo_maxy,"
    " scalars=excluded.scalars"
)
_HISTORY = ("INSERT INTO broker_entity_history (tenant, entity_id, modified_at, deleted, instances, observed_lo,"
            " observed_hi) VALUES (?,?,?,?,?,?,?)")
# An update of a stored entity whose types and creation time are what this transaction read: the upsert minus the
# columns that did not change, so that SQLite leaves the (tenant, type, id) index alone (an UPDATE rewrites the index
# entries of every column it assigns, equal or not: ~15 % of a batch upsert's statement time, decision 0516).
_UPDATE_KNOWN = ("UPDATE broker_entities SET modified_at=?, doc=?, geo_minx=?, geo_miny=?, geo_maxx=?, geo_maxy=?,"
                 " scalars=? WHERE tenant=? AND id=?")
_FETCH_ONE = "SELECT doc, type, types, created_at FROM broker_entities WHERE tenant = ? AND id = ?"
_CHUNK = 500  # stay under SQLite's default 999 host parameters per statement


#: The page size of a new store file by default (decision 0760; setting ``broker_sqlite_page_size``; SQLite's own
#: default is 4 KiB). A batch update rewrites a ~2 KB entity row and appends a ~1 KB history row, which the flush later
#: copies and deletes: 16 KiB pages carry the same bytes in a quarter of the pages — fewer B-tree steps, ``pwrite``\ s
#: of WAL frames and checkpoint writes. A single update pays for it (each commit writes whole pages: ~15 % more CPU per
#: PATCH). SQLite fixes the size when the file gets its first table: a file created before keeps its own.
STORE_PAGE_SIZE = 16384
TEMPORAL_PAGE_SIZE = 16384


def temporal_path(path: Path) -> Path:
    """The temporal file of the store's database file ``path``: ``broker.sqlite`` → ``broker-temporal.sqlite``
    (a name of its own, not a ``-wal``/``-shm``-like suffix an operator could take for SQLite's transient files)."""
    return path.with_name(f"{path.stem}-temporal{path.suffix}")


def _regexp(pattern: str, value: Any) -> bool:
    return value is not None and re.search(pattern, str(value)) is not None


def entity_row(tenant: str, entity: Entity) -> tuple[Any, ...]:
    types = entity["type"]
    return (tenant, entity["id"], types[0], orjson.dumps(types).decode(), entity["createdAt"],
            entity["modifiedAt"], orjson.dumps(entity).decode(), *location_bbox(entity), scalar_values(entity))


def history_row(tenant: str, row: HistoryRow) -> tuple[Any, ...]:
    """The row's columns; with the span of its instances' observedAt for the temporal flush (``observed_span``)."""
    return (tenant, row.entity_id, row.modified_at, int(row.deleted),
            None if row.instances is None else orjson.dumps(row.instances).decode(), *observed_span(row.instances))


def _has_type(t: str, extra: set[str], params: list[Any]) -> str:
    """``e`` has type ``t``: its first type, or (only when some entity has ``t`` as a further type) the side table —
    so that the common case stays an index range scan in id order that LIMIT can stop early."""
    if t in extra:
        params += [t, t]
        return ("(e.type = ? OR e.id IN (SELECT x.id FROM broker_entity_extra_types x WHERE x.tenant = e.tenant"
                " AND x.type = ?))")
    params.append(t)
    return "e.type = ?"


def where_sqlite(tenant: str, f: EntityFilter, extra_types: set[str] | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause (``e`` = broker_entities) for the SQL part of a filter."""
    extra = extra_types or set()
    clauses = ["e.tenant = ?"]
    params: list[Any] = [tenant]
    if f.type_groups:
        ors = ["(" + " AND ".join(_has_type(t, extra, params) for t in group) + ")" for group in f.type_groups]
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


class StagedRows:
    """Rows of a batch built before the writer lock (``SqliteEntityStore.staging``): the entity rows with the
    creation times a read without the lock found, and the history rows. A transaction takes a staged entity row only
    where the creation time it settles on is the one the row was built with, and a staged history row only for the
    same entity and modification time; anything else it builds itself, as without staging."""

    __slots__ = ("entities", "history")

    def __init__(self, entities: dict[str, tuple[Any, ...]], history: dict[str, tuple[str, tuple[Any, ...]]]) -> None:
        self.entities = entities
        self.history = history  # entity id → (modifiedAt, row)

    def entity_row(self, tenant: str, entity: Entity) -> tuple[Any, ...]:
        row = self.entities.get(entity["id"])
        if row is not None and row[4] == entity["createdAt"] and row[5] == entity["modifiedAt"]:
            return row
        return entity_row(tenant, entity)

    def history_row(self, tenant: str, row: HistoryRow) -> tuple[Any, ...]:
        staged = self.history.get(row.entity_id)
        if staged is not None and staged[0] == row.modified_at and not row.deleted:
            return staged[1]
        return history_row(tenant, row)


class _SqliteTransaction(StoreTransaction):
    def __init__(self, conn: sqlite3.Connection, tenant: str, extra_types: dict[str, set[str]],
                 shared: bool = False, staged: StagedRows | None = None) -> None:
        self.conn = conn
        self.tenant = tenant
        self.extra_types = extra_types  # the store's cache: tenant → types some entity has as a further type
        # another process writes the file too (batch workers, decision 0730): the cache may lack further types it
        # wrote, so whether the tenant has any is asked of the file (under the writer lock: exact)
        self.shared = shared
        self.staged = staged
        # id → (type, types, created_at) of the stored rows this transaction has read or written: no other writer
        # runs between its first statement and its last (the writer lock; the group's transaction holds the file's),
        # so they are the stored values until this transaction changes them
        self._stored: dict[str, tuple[str, str, str]] = {}

    def _execute(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One row: ``execute`` (a single update's statement, from SQLite's cache); more: ``executemany``."""
        if len(rows) == 1:
            self.conn.execute(sql, rows[0])
        else:
            self.conn.executemany(sql, rows)

    def _in_chunks(self, columns: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), _CHUNK):
            chunk = unique[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {columns} FROM broker_entities WHERE tenant = ? AND id IN ({marks})"  # noqa: S608
            out += self.conn.execute(sql, [self.tenant, *chunk]).fetchall()
        return out

    async def fetch(self, ids: Sequence[str]) -> dict[str, Entity]:
        if len(ids) == 1:  # a single update's read: one prepared statement from SQLite's cache, no IN list to build
            row = self.conn.execute(_FETCH_ONE, (self.tenant, ids[0])).fetchone()
            if row is None:
                return {}
            self._stored[ids[0]] = row[1:]
            return {ids[0]: orjson.loads(row[0])}
        stored = self._stored
        out: dict[str, Entity] = {}
        for r in self._in_chunks("id, doc, type, types, created_at", ids):
            stored[r[0]] = r[2:]
            out[r[0]] = orjson.loads(r[1])
        return out

    async def existing(self, ids: Sequence[str]) -> dict[str, str]:
        stored = self._stored
        out: dict[str, str] = {}
        for r in self._in_chunks("id, type, types, created_at", ids):
            stored[r[0]] = r[1:]
            out[r[0]] = r[3]
        return out

    async def upsert(self, entities: Sequence[Entity]) -> None:
        row_of = entity_row if self.staged is None else self.staged.entity_row
        rows = [row_of(self.tenant, e) for e in entities]
        stored = self._stored
        known: list[tuple[Any, ...]] = []
        other = rows
        if len({r[1] for r in rows}) == len(rows):  # one row per id: the two statements' order is free
            known = [r for r in rows if stored.get(r[1]) == r[2:5]]
            if known:
                other = [r for r in rows if stored.get(r[1]) != r[2:5]]
        if other:
            self._execute(_UPSERT, other)
        if known:
            self._execute(_UPDATE_KNOWN, [(*r[5:], r[0], r[1]) for r in known])
        for r in rows:
            stored[r[1]] = r[2:5]
        multi = [e for e in entities if len(e["type"]) > 1]
        if multi or self.extra_types.get(self.tenant) or (self.shared and self._further_types_stored()):
            self.conn.executemany("DELETE FROM broker_entity_extra_types WHERE tenant = ? AND id = ?",
                                  [(self.tenant, e["id"]) for e in entities])
            self.conn.executemany("INSERT OR IGNORE INTO broker_entity_extra_types VALUES (?, ?, ?)",
                                  [(self.tenant, t, e["id"]) for e in multi for t in e["type"][1:]])
            # only ever grows: a stale entry just sends that type's queries down the (correct) slower path
            self.extra_types.setdefault(self.tenant, set()).update(t for e in multi for t in e["type"][1:])

    def _further_types_stored(self) -> bool:
        return bool(self.conn.execute("SELECT EXISTS (SELECT 1 FROM broker_entity_extra_types WHERE tenant = ?)",
                                      (self.tenant,)).fetchone()[0])

    async def delete(self, ids: Sequence[str]) -> None:
        for i in ids:
            self._stored.pop(i, None)
        pairs = [(self.tenant, i) for i in ids]
        self.conn.executemany("DELETE FROM broker_entities WHERE tenant = ? AND id = ?", pairs)
        self.conn.executemany("DELETE FROM broker_entity_extra_types WHERE tenant = ? AND id = ?", pairs)

    async def delete_by_filter(self, entity_filter: EntityFilter) -> list[str]:
        where, params = where_sqlite(self.tenant, entity_filter, self.extra_types.get(self.tenant))
        ids = [r[0] for r in self.conn.execute(f"SELECT e.id FROM broker_entities e WHERE {where}", params)]  # noqa: S608
        await self.delete(ids)
        return ids

    async def history(self, rows: Sequence[HistoryRow]) -> None:
        if rows:
            row_of = history_row if self.staged is None else self.staged.history_row
            self._execute(_HISTORY, [row_of(self.tenant, r) for r in rows])


#: how long a writer waits for another process's write lock (the connections' ``busy_timeout``)
_BUSY_TIMEOUT_S = 10.0


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")


async def _begin_shared(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE`` when another process may hold the write lock (batch workers, decision 0730), on a writer
    without SQLite's busy wait (``busy_timeout=0``, set at open), which would stop the event loop for as long as that
    process writes: retried after short sleeps that let the loop serve other requests."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    delay = 0.0002
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.005)


class _WriteTransaction:
    """``store.transaction(tenant)``: a member of the writer's group commit (:mod:`.group_commit`) — the writer
    lock, a savepoint inside the group's ``BEGIN IMMEDIATE``, released on success and rolled back on any exception;
    on success the ``async with`` ends once the group has committed. A class rather than ``@asynccontextmanager``: a
    single update pays for every layer here."""

    __slots__ = ("store", "tenant")

    def __init__(self, store: SqliteEntityStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    async def __aenter__(self) -> StoreTransaction:
        store = self.store
        groups = store._groups
        conn = await groups.join(_begin_shared if store.shared else _begin)
        if self.tenant not in store._tenants:
            try:
                conn.execute("INSERT INTO broker_tenants (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                             (self.tenant, now_iso()))
            except BaseException:
                groups.leave(ok=False)
                raise
        return _SqliteTransaction(conn, self.tenant, store._extra_types, store.shared, store._staged)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        store = self.store
        group = store._groups.leave(ok=exc_type is None)
        if exc_type is None and group is not None:
            await committed(group)
            store._tenants.add(self.tenant)
        return False


class SqliteEntityStore(EntityStore):
    dialect = "sqlite"
    q_scalars = "e.scalars"

    def __init__(self, path: Path | None, synchronous: str = "NORMAL", checkpoints: bool = True,
                 page_size: int = STORE_PAGE_SIZE) -> None:
        self.path = path
        #: of the file when this store creates it (``broker_sqlite_page_size``); a file keeps the size it has
        self.page_size = page_size
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be NORMAL, FULL or EXTRA")
        if page_size not in PAGE_SIZES:
            raise ValueError("page_size must be a power of two from 512 to 65536")  # SQLite would ignore it
        #: whether this store runs the file's WAL checkpoints (one store per file does: the broker's, not a batch
        #: worker's)
        self.checkpoints = checkpoints
        #: whether other processes write the file too (batch workers, decision 0730; set before :meth:`open`)
        self.shared = False
        self._staged: StagedRows | None = None
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._checkpointing: asyncio.Future[Any] | None = None
        self._groups = GroupCommit()
        self._tenants: set[str] = {DEFAULT_TENANT}
        self._extra_types: dict[str, set[str]] = {}

    def _target(self) -> tuple[str, bool]:
        if self.path is None:
            return f"file:sleutelbos-broker-{id(self)}?mode=memory&cache=shared", True
        return str(self.path), False

    @property
    def temporal_file(self) -> Path | None:
        """The second database file of the temporal tables (None: the shared in-memory database keeps them)."""
        return None if self.path is None else temporal_path(self.path)

    def _connect(self, check_same_thread: bool = True, temporal: bool = False) -> sqlite3.Connection:
        """A connection with the store's pragmas; ``temporal``: with the temporal file ATTACHed as ``temporal`` (same
        per-database pragmas) — for the connections that read or write the temporal tables, never the entity
        writer's (a no-op on the in-memory database, whose ``main`` holds them)."""
        target, uri = self._target()
        conn = sqlite3.connect(target, isolation_level=None, uri=uri, check_same_thread=check_same_thread)
        conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # per connection, every attached file: the checkpointer's job
        schemas = ["main"]
        if temporal and self.temporal_file is not None:
            conn.execute("ATTACH DATABASE ? AS temporal", (str(self.temporal_file),))
            schemas.append("temporal")
        for schema in schemas:
            conn.execute(f"PRAGMA {schema}.journal_mode=WAL")
            conn.execute(f"PRAGMA {schema}.synchronous={self.synchronous}")
            conn.execute(f"PRAGMA {schema}.cache_size=-65536")  # 64 MiB of page cache per connection and file
            conn.execute(f"PRAGMA {schema}.mmap_size=1073741824")  # read pages through mmap, not a read() per page
        conn.create_function("regexp", 2, _regexp, deterministic=True)
        conn.create_function("ngsild_instant", 1, sql_instant, deterministic=True)  # the temporal reads
        for name, (nargs, fn) in SQLITE_FUNCTIONS.items():
            conn.create_function(name, nargs, fn, deterministic=True)
        return conn

    async def open(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._groups = GroupCommit()  # afresh: its lock and futures belong to the loop that opens the store
        if self.path is None:  # keep the shared in-memory database alive across connections
            self._writer = self._connect()
        target, uri = self._target()
        async with aiosqlite.connect(target, isolation_level=None, uri=uri) as conn:
            await conn.execute(f"PRAGMA page_size={int(self.page_size)}")  # before WAL mode; no-op on a file in use
            await conn.execute("PRAGMA journal_mode=WAL")
            if self.temporal_file is None:
                await migrate_sqlite(conn, "broker", [*MIGRATIONS, SQLITE_TEMPORAL_KEPT, SQLITE_IN_MEMORY_CHUNKS])
            else:
                # the temporal tables' move into their own file (temporal/schema.py): the versions before it, the
                # temporal file's own migration (which copies them while this file still has them), then the drop
                await migrate_sqlite(conn, "broker", MIGRATIONS)
                await self._migrate_temporal_file()
                await migrate_sqlite(conn, "broker", [*MIGRATIONS, SQLITE_TEMPORAL_MOVED, SQLITE_HISTORY_HEAD_INDEX])
            await migrate_sqlite(conn, "broker_scalars", SCALARS_MIGRATIONS)
            async with conn.execute("PRAGMA page_size") as cur:
                pages = (await cur.fetchone() or (self.page_size,))[0]
        if self.path is not None and self.checkpoints and pages != self.page_size:  # once per start: the broker's
            log.info("%s has %d-byte pages, not the %d of broker_sqlite_page_size: `sleutelbos broker page-size --set"
                     " %d` converts it with the broker stopped (decision 0760)", self.path.name, pages, self.page_size,
                     self.page_size)
        if self._writer is None:
            self._writer = self._connect()
        self._groups.conn = self._writer
        self._reader = self._connect()
        self._tenants |= {r[0] for r in self._writer.execute("SELECT name FROM broker_tenants")}
        for tenant, type_ in self._writer.execute("SELECT DISTINCT tenant, type FROM broker_entity_extra_types"):
            self._extra_types.setdefault(tenant, set()).add(type_)
        if self.shared:  # only _WriteTransaction writes through it, and waits for the lock itself (_begin_shared)
            self._writer.execute("PRAGMA busy_timeout=0")
        if self.path is not None and self.checkpoints:
            # both files: PRAGMA wal_checkpoint without a schema checkpoints every attached database
            self._checkpointer = self._connect(check_same_thread=False, temporal=True)
            self._checkpoint_task = asyncio.create_task(self._checkpoint_loop())

    async def _migrate_temporal_file(self) -> None:
        """The temporal file's own migrations (component ``broker_temporal``, recorded in that file), on a connection
        whose main database is the temporal file and which reads the store's file as ``broker``: one transaction of
        one file each, so a crash leaves each file either migrated or not (temporal/schema.py)."""
        assert self.path is not None and self.temporal_file is not None
        async with aiosqlite.connect(str(self.temporal_file), isolation_level=None) as conn:
            # a new file's pages: 16 KiB (a no-op on a file that has tables). The flush appends chunks of kilobytes;
            # every page is a write() to the WAL and another at checkpoint, so fewer, larger pages cost fewer
            # system calls (decision 0720)
            await conn.execute(f"PRAGMA page_size={TEMPORAL_PAGE_SIZE}")
            await conn.execute("ATTACH DATABASE ? AS broker", (str(self.path),))
            old_tables = bool(await self._fetch_one(
                conn, "SELECT EXISTS (SELECT 1 FROM broker.sqlite_master WHERE type = 'table'"
                " AND name = 'broker_temporal_instances')"))
            first = SQLITE_TEMPORAL_FILE_COPY if old_tables else SQLITE_TEMPORAL_FILE
            # one copy of every instance, then their conversion into history chunks (decision 0720), one transaction
            # each — minutes for tens of millions of rows: said when there are instances to copy or to convert
            copying = old_tables and await self._fetch_one(
                conn, "SELECT EXISTS (SELECT 1 FROM broker.broker_temporal_instances) AND NOT EXISTS (SELECT 1 FROM"
                " main.sqlite_master WHERE type = 'table' AND name = 'broker_temporal_instances')")
            converting = copying or (await self._fetch_one(
                conn, "SELECT EXISTS (SELECT 1 FROM main.sqlite_master WHERE type = 'table'"
                " AND name = 'broker_temporal_instances')") and await self._fetch_one(
                conn, "SELECT EXISTS (SELECT 1 FROM main.broker_temporal_instances)"))
            started = time.monotonic()
            if converting:
                log.info("moving the temporal instances of %s into %s as history chunks (once, before the broker"
                         " serves)", self.path.name, self.temporal_file.name)
            await migrate_sqlite(conn, "broker_temporal", [first, SQLITE_TEMPORAL_CHUNKS], journal_mode="WAL")
            if converting:
                log.info("temporal history in %s after %.1f s", self.temporal_file.name, time.monotonic() - started)

    @staticmethod
    async def _fetch_one(conn: aiosqlite.Connection, sql: str) -> Any:
        async with conn.execute(sql) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def _checkpoint_loop(self) -> None:
        assert self._checkpointer is not None
        conn = self._checkpointer
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(sqlite3.Error):
                # shielded and remembered: close() must wait for the thread, not close the connection under it
                self._checkpointing = asyncio.ensure_future(
                    asyncio.to_thread(conn.execute, "PRAGMA wal_checkpoint(PASSIVE)"))
                await asyncio.shield(self._checkpointing)

    async def close(self) -> None:
        await cancel_and_wait(self._checkpoint_task)
        self._checkpoint_task = None
        if self._checkpointing is not None:  # a checkpoint still running in its thread (segfault if closed under it)
            with contextlib.suppress(Exception):
                await self._checkpointing
            self._checkpointing = None
        if self._writer is not None:
            self._groups.commit_now()  # (its members are waiting for it: none is left when the broker stopped)
        for conn in (self._reader, self._checkpointer, self._writer):
            if conn is not None:
                conn.close()
        self._reader = self._writer = self._checkpointer = None

    async def tenants(self) -> list[str]:
        return sorted(self._tenants)

    async def tenant_exists(self, tenant: str) -> bool:
        if tenant in self._tenants:
            return True
        # made by another process (learn() tells of most, not all)
        if self.shared and self._reader is not None and self._reader.execute(
                "SELECT 1 FROM broker_tenants WHERE name = ?", (tenant,)).fetchone():
            self._tenants.add(tenant)
            return True
        return False

    def further_types(self, tenant: str) -> frozenset[str]:
        """The types some entity of the tenant has as a further type, as far as this process knows."""
        return frozenset(self._extra_types.get(tenant, ()))

    def learn(self, tenant: str, further_types: Iterable[str]) -> None:
        """What another process's committed write made: the tenant, and further types (which the query translation
        must know of, ``where_sqlite``)."""
        self._tenants.add(tenant)
        if further_types:
            self._extra_types.setdefault(tenant, set()).update(further_types)

    @contextlib.contextmanager
    def staging(self, tenant: str, entities: Sequence[Entity], rows: Sequence[HistoryRow]) -> Iterator[None]:
        """The next transactions take the rows of ``entities`` (each with the creation time stored now, or its own)
        and of the history ``rows`` as built here, before the writer lock (see :class:`StagedRows`). A batch worker
        (decision 0730) builds them outside the lock so that two workers' writes overlap only in their statements.

        Only for writes of the entities as they are given (batch create; upsert in replace mode, one entity per id):
        a staged row is checked against the creation and modification times, not against the document."""
        assert self._reader is not None
        ids = [e["id"] for e in entities]
        created: dict[str, str] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            sql = ("SELECT id, created_at FROM broker_entities WHERE tenant = ? AND id IN"  # noqa: S608
                   f" ({','.join('?' * len(chunk))})")
            created.update(self._reader.execute(sql, [tenant, *chunk]).fetchall())
        staged_entities: dict[str, tuple[Any, ...]] = {}
        for e in entities:
            when = created.get(e["id"])
            staged_entities[e["id"]] = entity_row(tenant, e if when is None else {**e, "createdAt": when})
        staged_history = {r.entity_id: (r.modified_at, history_row(tenant, r)) for r in rows if not r.deleted}
        self._staged = StagedRows(staged_entities, staged_history)
        try:
            yield
        finally:
            self._staged = None

    @property
    def _lock(self) -> WriterLock:
        """The writer lock for work on the writer connection or the file's write lock other than a write transaction
        (the temporal flusher's steps): taking it commits the open group first (:mod:`.group_commit`)."""
        return self._groups.writer_lock

    def transaction(self, tenant: str) -> AbstractAsyncContextManager[StoreTransaction]:
        assert self._writer is not None
        return _WriteTransaction(self, tenant)

    async def get(self, tenant: str, entity_id: str) -> Entity | None:
        doc = await self.get_document(tenant, entity_id)
        return None if doc is None else orjson.loads(doc)

    async def get_document(self, tenant: str, entity_id: str) -> str | None:
        assert self._reader is not None
        row = self._reader.execute("SELECT doc FROM broker_entities WHERE tenant = ? AND id = ?",
                                   (tenant, entity_id)).fetchone()
        return None if row is None else row[0]  # type: ignore[no-any-return]

    async def query(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[Entity], int | None]:
        f = entity_filter
        if f.post:
            matched = [e async for e in self.scan(tenant, f) if all(p(e) for p in f.post)]
            return matched[f.offset:f.offset + f.limit], len(matched) if f.count else None
        docs, count = self._query_documents(tenant, f)
        return [orjson.loads(d) for d in docs], count

    async def query_documents(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[str], int | None]:
        if entity_filter.post:
            return await super().query_documents(tenant, entity_filter)
        return self._query_documents(tenant, entity_filter)

    def _query_documents(self, tenant: str, f: EntityFilter) -> tuple[list[str], int | None]:
        assert self._reader is not None
        where, params = where_sqlite(tenant, f, self._extra_types.get(tenant))
        count: int | None = None
        if f.count:
            count = self._reader.execute(f"SELECT COUNT(*) FROM broker_entities e WHERE {where}",  # noqa: S608
                                         params).fetchone()[0]
        if f.limit == 0:
            return [], count
        sql = f"SELECT e.doc FROM broker_entities e WHERE {where} ORDER BY e.id LIMIT ? OFFSET ?"  # noqa: S608
        rows = self._reader.execute(sql, [*params, f.limit, f.offset]).fetchall()
        return [r[0] for r in rows], count

    async def scan(self, tenant: str, entity_filter: EntityFilter) -> AsyncIterator[Entity]:
        assert self._reader is not None
        where, params = where_sqlite(tenant, entity_filter, self._extra_types.get(tenant))
        cursor = self._reader.execute(f"SELECT e.doc FROM broker_entities e WHERE {where} ORDER BY e.id",  # noqa: S608
                                      params)
        while True:
            rows = cursor.fetchmany(500)
            if not rows:
                break
            for row in rows:
                yield orjson.loads(row[0])
            await asyncio.sleep(0)  # a long scan lets other requests run between chunks

    async def history_count(self, tenant: str, entity_id: str | None = None) -> int:
        assert self._reader is not None
        sql = "SELECT COUNT(*) FROM broker_entity_history WHERE tenant = ? AND entity_id <> ''"  # no keeper rows
        params: list[Any] = [tenant]
        if entity_id is not None:
            sql += " AND entity_id = ?"
            params.append(entity_id)
        return int(self._reader.execute(sql, params).fetchone()[0])

    async def hosted_contexts(self) -> list[tuple[str, str, Any, str]]:
        assert self._reader is not None
        rows = self._reader.execute("SELECT local_id, url, document, created_at FROM broker_jsonld_contexts")
        return [(r[0], r[1], orjson.loads(r[2]), r[3]) for r in rows]

    async def save_hosted_context(self, local_id: str, url: str, document: Any, created_at: str) -> None:
        # a write transaction like any other: with batch workers on the file it waits for their lock off the loop
        async with self.transaction(DEFAULT_TENANT) as tx:
            tx.conn.execute("INSERT INTO broker_jsonld_contexts VALUES (?,?,?,?)",  # type: ignore[attr-defined]
                            (local_id, url, orjson.dumps(document).decode(), created_at))

    async def delete_hosted_context(self, local_id: str) -> None:
        async with self.transaction(DEFAULT_TENANT) as tx:
            tx.conn.execute("DELETE FROM broker_jsonld_contexts WHERE local_id = ?",  # type: ignore[attr-defined]
                            (local_id,))
