"""The PostgreSQL store's read connections (``store.pg_readers``, decision 0556), on a real server: bounded, FIFO
beyond the bound, a connection kept after an SQL error and dropped after anything that may have broken it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from sleutelbos.broker.store.pg_readers import ReadConnections

pytestmark = pytest.mark.postgres


def test_bounded_reused_and_shared_fairly(pg_admin_dsn: str) -> None:
    async def main() -> None:
        opened = 0

        async def connect() -> asyncpg.Connection:
            nonlocal opened
            opened += 1
            return await asyncpg.connect(pg_admin_dsn)

        readers = ReadConnections(connect, max_size=2)
        busy = 0
        peak = 0

        async def one(i: int) -> int:
            nonlocal busy, peak
            async with readers.use() as conn:
                busy += 1
                peak = max(peak, busy)
                value = await conn.fetchval("SELECT $1::int FROM pg_sleep(0.01)", i)
                busy -= 1
                return int(value)

        assert await asyncio.gather(*(one(i) for i in range(20))) == list(range(20))
        assert peak == 2 and opened == 2
        await readers.close()
        with pytest.raises(RuntimeError):
            await readers.acquire()

    asyncio.run(main())


def test_sql_error_keeps_the_connection_other_failures_drop_it(pg_admin_dsn: str) -> None:
    async def main() -> None:
        opened: list[asyncpg.Connection] = []

        async def connect() -> asyncpg.Connection:
            conn = await asyncpg.connect(pg_admin_dsn)
            opened.append(conn)
            return conn

        readers = ReadConnections(connect, max_size=1)
        with pytest.raises(asyncpg.PostgresError):
            async with readers.use() as conn:
                await conn.fetchval("SELECT 1/0")
        async with readers.use() as conn:
            assert await conn.fetchval("SELECT 2") == 2
        assert len(opened) == 1

        # a request cancelled while its statement runs: that connection is not handed out again
        async def slow() -> None:
            async with readers.use() as conn:
                await conn.fetchval("SELECT pg_sleep(5)")

        task = asyncio.ensure_future(slow())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert opened[0].is_closed()
        async with readers.use() as conn:
            assert await conn.fetchval("SELECT 3") == 3
        assert len(opened) == 2

        # a connection closed under the set (server restart, idle kill) is replaced, not handed out
        await opened[1].close()
        async with readers.use() as conn:
            assert await conn.fetchval("SELECT 4") == 4
        assert len(opened) == 3
        await readers.close()

    asyncio.run(main())


def test_a_waiter_cancelled_while_queued_does_not_lose_the_connection(pg_admin_dsn: str) -> None:
    async def main() -> None:
        readers = ReadConnections(lambda: asyncpg.connect(pg_admin_dsn), max_size=1)
        holder = await readers.acquire()
        waiter = asyncio.ensure_future(readers.acquire())
        await asyncio.sleep(0.05)
        waiter.cancel()
        readers.release(holder)
        with pytest.raises(asyncio.CancelledError):
            await waiter
        async with readers.use() as conn:  # the connection went back to the set, not to the cancelled waiter
            assert await asyncio.wait_for(conn.fetchval("SELECT 5"), 5) == 5
        await readers.close()

    asyncio.run(main())


def test_room_given_to_a_cancelled_waiter_passes_to_the_next(pg_admin_dsn: str) -> None:
    """A broken connection frees room for one waiter; if that waiter is cancelled before it runs, the room must go
    to the next waiter instead of being lost until some other release."""

    async def main() -> None:
        readers = ReadConnections(lambda: asyncpg.connect(pg_admin_dsn), max_size=1)
        held = await readers.acquire()
        first = asyncio.create_task(readers.acquire())
        second = asyncio.create_task(readers.acquire())
        await asyncio.sleep(0)  # both queued
        readers.release(held, broken=True)  # room for one: handed to ``first``
        first.cancel()
        conn = await asyncio.wait_for(second, timeout=5)
        assert await conn.fetchval("SELECT 1") == 1
        readers.release(conn)
        await readers.close()

    asyncio.run(main())
