"""Direct SQL access to the broker's database for the subscription and temporal tables (issue 3).

The entity store (``store/``) owns the schema and the write path of entities; subscriptions, pending notifications and
the temporal queries need statements of their own on the same database. :class:`BrokerDatabase` gives them one small
interface over both engines: statements are written with ``?`` placeholders and numbered ``$n`` for PostgreSQL.

* PostgreSQL: the entity store's own ``asyncpg`` pool (its public ``pool``), so one set of connections serves both.
* SQLite: two connections of its own on the same file (WAL lets them read while the store writes; a write waits on
  SQLite's lock under ``busy_timeout``), with the same ``regexp`` and query functions registered.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from sleutelbos.broker.query.sql import register_aiosqlite_functions

_PLACEHOLDER = re.compile(r"\?")


def numbered(sql: str) -> str:
    """``?`` → ``$1, $2, ...`` (the statements given here contain no other ``?``)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


class BrokerDatabase:
    """Statements on the broker's database (see module docstring)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.dialect: str = store.dialect
        self._reader: aiosqlite.Connection | None = None
        self._writer: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self.dialect == "sqlite":
            path: Path | None = self.store.path
            self._writer = await self._connect(path)
            self._reader = await self._connect(path) if path is not None else self._writer

    async def _connect(self, path: Path | None) -> aiosqlite.Connection:
        target = str(path) if path else "file:sleutelbos-broker?mode=memory&cache=shared"
        conn = await aiosqlite.connect(target, isolation_level=None, uri=path is None)
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.execute(f"PRAGMA synchronous={self.store.synchronous}")
        await conn.create_function("regexp", 2, _regexp, deterministic=True)
        await register_aiosqlite_functions(conn)
        return conn

    async def close(self) -> None:
        if self._reader is not None and self._reader is not self._writer:
            await self._reader.close()
        if self._writer is not None:
            await self._writer.close()
        self._reader = self._writer = None

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.dialect == "postgresql":
            rows = await self.store.pool.fetch(numbered(sql), *params)
            return [tuple(r) for r in rows]
        assert self._reader is not None
        async with self._reader.execute(sql, list(params)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self.fetch(sql, params)
        return rows[0][0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; returns the number of rows it changed."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        if self.dialect == "postgresql":
            async with self.store.pool.acquire() as conn, conn.transaction():
                yield Transaction(self.dialect, conn)
            return
        assert self._writer is not None
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self.dialect, self._writer)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")


class Transaction:
    def __init__(self, dialect: str, conn: Any) -> None:
        self.dialect = dialect
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if self.dialect == "postgresql":
            status = await self.conn.execute(numbered(sql), *params)
            tail = status.rsplit(" ", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        cur = await self.conn.execute(sql, list(params))
        count = cur.rowcount
        await cur.close()
        return int(count)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            await self.conn.executemany(numbered(sql), [tuple(r) for r in rows])
        else:
            await self.conn.executemany(sql, [list(r) for r in rows])

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.dialect == "postgresql":
            return [tuple(r) for r in await self.conn.fetch(numbered(sql), *params)]
        async with self.conn.execute(sql, list(params)) as cur:
            return [tuple(r) for r in await cur.fetchall()]


def _regexp(pattern: str, value: Any) -> bool:
    return value is not None and re.search(pattern, str(value)) is not None
