"""One small async SQL surface over SQLite (``aiosqlite``) and PostgreSQL (``asyncpg``).

The identity store writes its SQL once, with ``?`` placeholders; for PostgreSQL they are rewritten to ``$n``. Each
engine brings its own transaction discipline: SQLite has one connection guarded by a lock (``BEGIN IMMEDIATE`` so
that a read-modify-write such as a refresh-token rotation cannot interleave), PostgreSQL a pool whose transactions
run at READ COMMITTED with row locks taken by ``SELECT … FOR UPDATE`` where the store asks for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import aiosqlite
import asyncpg

from sleutelbos.core.database import migrate_postgres, migrate_sqlite, parse_database_url

_PLACEHOLDER = re.compile(r"\?")


class Executor(Protocol):
    dialect: str

    async def execute(self, sql: str, *args: Any) -> int: ...

    async def fetchone(self, sql: str, *args: Any) -> tuple[Any, ...] | None: ...

    async def fetchall(self, sql: str, *args: Any) -> list[tuple[Any, ...]]: ...


class Database(Executor, Protocol):
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Executor]: ...

    async def close(self) -> None: ...


def _pg_sql(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str, component: str, migrations: Sequence[str]) -> SqliteDatabase:
        conn = await aiosqlite.connect(path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        await migrate_sqlite(conn, component, migrations)
        return cls(conn)

    async def _execute(self, sql: str, args: Sequence[Any]) -> int:
        cur = await self._conn.execute(sql, args)
        count = cur.rowcount
        await cur.close()
        return count

    async def _fetchone(self, sql: str, args: Sequence[Any]) -> tuple[Any, ...] | None:
        async with self._conn.execute(sql, args) as cur:
            row = await cur.fetchone()
        return tuple(row) if row is not None else None

    async def _fetchall(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._conn.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [tuple(r) for r in rows]

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await self._execute(sql, args)

    async def fetchone(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        async with self._lock:
            return await self._fetchone(sql, args)

    async def fetchall(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        async with self._lock:
            return await self._fetchall(sql, args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            tx = _SqliteTx(self)
            try:
                yield tx
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def close(self) -> None:
        await self._conn.close()


class _SqliteTx:
    dialect = "sqlite"

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._db._execute(sql.replace(" FOR UPDATE", ""), args)

    async def fetchone(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        return await self._db._fetchone(sql.replace(" FOR UPDATE", ""), args)

    async def fetchall(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self._db._fetchall(sql.replace(" FOR UPDATE", ""), args)


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, component: str, migrations: Sequence[str]) -> PostgresDatabase:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate_postgres(conn, component, migrations)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
        return cls(pool)

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._pool.execute(_pg_sql(sql), *args)
        return _rowcount(status)

    async def fetchone(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        row = await self._pool.fetchrow(_pg_sql(sql), *args)
        return tuple(row) if row is not None else None

    async def fetchall(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._pool.fetch(_pg_sql(sql), *args)]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgTx(conn)

    async def close(self) -> None:
        await self._pool.close()


class _PgTx:
    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._conn.execute(_pg_sql(sql), *args))

    async def fetchone(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        row = await self._conn.fetchrow(_pg_sql(sql), *args)
        return tuple(row) if row is not None else None

    async def fetchall(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._conn.fetch(_pg_sql(sql), *args)]


def _rowcount(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def open_database(url: str, component: str, migrations: dict[str, Sequence[str]]) -> Database:
    """Open ``url`` and bring its schema forward with the dialect's list from ``migrations``."""
    parsed = parse_database_url(url)
    if parsed.kind == "sqlite":
        if parsed.path is not None:
            parsed.path.parent.mkdir(parents=True, exist_ok=True)
        return await SqliteDatabase.open(str(parsed.path or ":memory:"), component, migrations["sqlite"])
    return await PostgresDatabase.open(parsed.dsn, component, migrations["postgresql"])
