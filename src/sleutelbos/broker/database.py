"""Direct SQL access to the broker's database for the subscription and temporal tables (issue 3).

The entity store (``store/``) owns the schema and the write path of entities; subscriptions, pending notifications and
the temporal queries need statements of their own on the same database. :class:`BrokerDatabase` gives them one small
interface over both engines: statements are written with ``?`` placeholders and numbered ``$n`` for PostgreSQL.

* Writes run inside the entity store's own write transaction (``store.transaction``; its ``conn``), so they are
  serialised with the core's writes by the same lock — on SQLite, whose store runs ``sqlite3`` on the event loop's
  thread, a second writer connection could otherwise wait on SQLite's file lock while blocking the loop.
* Reads: on PostgreSQL a small ``asyncpg`` pool of our own whose sessions use ``plan_cache_mode =
  force_generic_plan`` (docs/decisions/0604); on SQLite a reader connection of our own made the way the store makes
  its own (WAL: readers never wait for the writer), with the temporal file attached.
* SQLite database files keep the temporal tables in a second file (docs/decisions/0710): writes of those tables
  (instance modification and deletion from the API) go through :meth:`BrokerDatabase.temporal_transaction` — a
  connection of our own with that file attached and :attr:`BrokerDatabase.temporal_lock`, the lock the temporal
  flusher's write step takes too — and never take the store's writer lock. Elsewhere (PostgreSQL, the shared
  in-memory SQLite database) a temporal transaction is the store's write transaction, as before.

Why generic plans: every read here is one statement of fixed shape on a partitioned table (``broker_temporal_instances``
has a partition per month, a dozen with the months prepared ahead). PostgreSQL's default plan cache keeps planning
such a statement afresh for its parameters (a custom plan) because the generic plan's estimate is not cheaper — and
planning over a dozen partitions costs 2-3 ms, five times the execution of a one-meter day (0.5 ms). The partition
key is ``modified_at``, which these statements rarely bound, so a custom plan prunes nothing a generic plan would
not; where they do bound it, PostgreSQL prunes at executor start-up with the parameters. The core's store keeps its
own pool and the server default for its statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sleutelbos.broker.store import DEFAULT_TENANT
from sleutelbos.broker.store.group_commit import WriterLock

_PLACEHOLDER = re.compile(r"\?")


def numbered(sql: str) -> str:
    """``?`` → ``$1, $2, ...`` (the statements given here contain no other ``?``)."""
    counter = iter(range(1, 100_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


class BrokerDatabase:
    """Statements on the broker's database (see module docstring)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.dialect: str = store.dialect
        self._reader: sqlite3.Connection | None = None
        self._read_pool: Any = None
        #: SQLite database file: the temporal tables are in a file of their own, with a writer of their own
        self.temporal_apart: bool = self.dialect == "sqlite" and getattr(store, "path", None) is not None
        self._temporal_writer: sqlite3.Connection | None = None
        self._temporal_lock: asyncio.Lock | None = None

    @property
    def temporal_lock(self) -> asyncio.Lock | WriterLock:
        """Held by every writer of the temporal tables on SQLite (the flusher's write step and the API's
        temporal transactions): the temporal file's own when the tables are in it, else the store's writer lock.
        Writers queue on it on the event loop rather than in SQLite's busy handler."""
        if self.temporal_apart:
            if self._temporal_lock is None:
                self._temporal_lock = asyncio.Lock()
            return self._temporal_lock
        lock: WriterLock = self.store._lock  # commits the writer's open group when taken
        return lock

    async def open(self) -> None:
        if self.dialect == "sqlite":
            # the store's own connection recipe (pragmas, functions), with the temporal file attached
            self._reader = self.store._connect(temporal=True)
            if self.temporal_apart:
                self._temporal_writer = self.store._connect(temporal=True)
        else:
            import asyncpg

            self._read_pool = await asyncpg.create_pool(
                self.store.dsn, min_size=1, max_size=4, server_settings={"plan_cache_mode": "force_generic_plan"})

    async def close(self) -> None:
        for conn in (self._reader, self._temporal_writer):
            if conn is not None:
                conn.close()
        self._reader = self._temporal_writer = None
        if self._read_pool is not None:
            await self._read_pool.close()
            self._read_pool = None

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.dialect == "postgresql":
            pool = self._read_pool if self._read_pool is not None else self.store.pool
            rows = await pool.fetch(numbered(sql), *params)
            return [tuple(r) for r in rows]
        assert self._reader is not None
        return [tuple(r) for r in self._reader.execute(sql, list(params)).fetchall()]

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self.fetch(sql, params)
        return rows[0][0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; returns the number of rows it changed."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """PostgreSQL: a connection of our own pool, for work that must not hold one of the core's connections or its
        locks (the temporal materialiser's steps, docs/decisions/0630)."""
        assert self._read_pool is not None
        async with self._read_pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.store.transaction(DEFAULT_TENANT) as store_tx:
            yield Transaction(self.dialect, store_tx.conn)

    @asynccontextmanager
    async def temporal_transaction(self, *, lock_held: bool = False) -> AsyncIterator[Transaction]:
        """A write transaction of the temporal tables only. SQLite database file: the temporal writer connection
        under :attr:`temporal_lock` (``lock_held``: the caller holds it already), committed in the temporal file
        alone; elsewhere the store's write transaction.

        ``BEGIN`` (deferred), not ``BEGIN IMMEDIATE``: IMMEDIATE takes the write lock of every attached database,
        the store's file included; a deferred transaction takes the write lock of the file its first write statement
        writes — the temporal file. Nobody else writes that file without the lock (the flusher's write step holds
        it too), so that statement never waits in SQLite's busy handler on the event loop."""
        if not self.temporal_apart:
            async with self.transaction() as tx:
                yield tx
            return
        conn = self._temporal_writer
        assert conn is not None
        async with contextlib.AsyncExitStack() as stack:
            if not lock_held:
                await stack.enter_async_context(self.temporal_lock)
            conn.execute("BEGIN")
            try:
                yield Transaction(self.dialect, conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    async def temporal_execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement on the temporal tables in its own :meth:`temporal_transaction`; the rows it changed."""
        async with self.temporal_transaction() as tx:
            return await tx.execute(sql, params)


class Transaction:
    def __init__(self, dialect: str, conn: Any) -> None:
        self.dialect = dialect
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if self.dialect == "postgresql":
            status = await self.conn.execute(numbered(sql), *params)
            tail = status.rsplit(" ", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        return int(self.conn.execute(sql, list(params)).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            await self.conn.executemany(numbered(sql), [tuple(r) for r in rows])
        else:
            self.conn.executemany(sql, [list(r) for r in rows])

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.dialect == "postgresql":
            return [tuple(r) for r in await self.conn.fetch(numbered(sql), *params)]
        return [tuple(r) for r in self.conn.execute(sql, list(params)).fetchall()]
