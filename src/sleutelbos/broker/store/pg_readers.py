"""The PostgreSQL store's read connections: a lean hand-out of asyncpg connections for single autocommit SELECTs.

Why not ``asyncpg.Pool`` (decision 0556): measured on this machine, ``pool.fetchval`` cost ~180-220 µs of client CPU
per call against ~80-100 µs for the same ``fetchval`` on a connection held directly — the pool's ``acquire`` and
``release`` go through ``asyncio.timeout``, ``shield``, ``ensure_future`` and per-connection inactivity callbacks,
which is more than the query itself. A single ``GET /entities/{id}`` on PostgreSQL spent most of its broker CPU there.
The read path needs none of it: each use is one statement in autocommit mode (no transaction, no session state —
the reason decision 0554 already skipped the pool's reset query), so a connection goes back as it came. The
optimistic single-entity update (decision 0514) uses them the same way: its read, then its one autocommit write
statement, each a use of its own.

:class:`ReadConnections` keeps idle connections in a list, opens new ones on demand up to ``max_size`` and queues
callers beyond that in FIFO order. A connection that failed in any way other than a server-side SQL error
(``asyncpg.PostgresError``, after which an autocommit connection is ready again) — a dropped socket, a timeout, a
cancelled request whose statement may still be running — is closed and dropped, and the next caller opens a fresh
one, so a broken connection is never handed out twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import asyncpg

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class ReadConnections:
    """Up to ``max_size`` connections for single statements; ``async with readers.use() as conn: ...``."""

    def __init__(self, connect: Connect, max_size: int) -> None:
        self._connect = connect
        self.max_size = max_size
        self._idle: list[asyncpg.Connection] = []
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = collections.deque()
        self._open = 0  # connections in use, idle, or being opened
        self._closed = False

    def use(self) -> _Use:
        return _Use(self)

    async def acquire(self) -> asyncpg.Connection:
        if self._closed:
            raise RuntimeError("the store's read connections are closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._open -= 1
        if self._open < self.max_size:
            self._open += 1
            try:
                return await self._connect()
            except BaseException:
                self._open -= 1
                self._wake_one(None)  # a waiter may open a connection in this one's place
                raise
        waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is not None:
                    self.release(handed)  # handed over just as this caller was cancelled: pass it on
                else:
                    self._wake_one(None)  # room for a connection was given to this caller: pass the room on
            raise
        return conn if conn is not None else await self.acquire()

    def release(self, conn: asyncpg.Connection, broken: bool = False) -> None:
        if broken or self._closed or conn.is_closed():
            self._open -= 1
            conn.terminate()
            self._wake_one(None)  # room for a new connection: the first waiter opens one
            return
        if not self._wake_one(conn):
            self._idle.append(conn)

    def _wake_one(self, conn: asyncpg.Connection | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
        self._open -= len(idle)
        self._wake_one(None)
        while self._waiters:
            self._wake_one(None)


class _Use:
    """``async with readers.use() as conn``: the connection back on exit, or dropped if it may be unusable."""

    __slots__ = ("conn", "readers")

    def __init__(self, readers: ReadConnections) -> None:
        self.readers = readers
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> Any:
        self.conn = await self.readers.acquire()
        return self.conn

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        conn, self.conn = self.conn, None
        assert conn is not None
        broken = exc is not None and not isinstance(exc, asyncpg.PostgresError)
        self.readers.release(conn, broken=broken)
        return False
