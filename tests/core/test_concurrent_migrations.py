"""Several processes opening one fresh SQLite file at once (``serve policy --workers N``) must all come up: the
migrations are read and applied under a file lock, so exactly one applies each version and the others see it done."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite

from sleutelbos.core.database import migrate_sqlite

MIGRATIONS = [
    "CREATE TABLE meters (id TEXT PRIMARY KEY);",
    "ALTER TABLE meters ADD COLUMN grp TEXT;",
]


async def _open_and_migrate(path: Path) -> int:
    conn = await aiosqlite.connect(path)
    try:
        return await migrate_sqlite(conn, "test", MIGRATIONS, journal_mode="WAL")
    finally:
        await conn.close()


async def test_concurrent_openers_all_succeed_and_each_version_applies_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    versions = await asyncio.gather(*(_open_and_migrate(path) for _ in range(6)))
    assert versions == [2] * 6
    async with aiosqlite.connect(path) as conn:
        async with conn.execute("SELECT version FROM schema_migrations WHERE component = 'test' ORDER BY 1") as cur:
            assert [row[0] for row in await cur.fetchall()] == [1, 2]
        async with conn.execute("SELECT name FROM pragma_table_info('meters') ORDER BY cid") as cur:
            assert [row[0] for row in await cur.fetchall()] == ["id", "grp"]
        async with conn.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone())[0] == "wal"


async def test_in_memory_database_needs_no_lock_file(tmp_path: Path) -> None:
    async with aiosqlite.connect(":memory:") as conn:
        assert await migrate_sqlite(conn, "test", MIGRATIONS) == 2
