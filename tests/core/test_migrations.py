import aiosqlite
import asyncpg

from sleutelbos.core.database import migrate_postgres, migrate_sqlite

MIGRATIONS = [
    "CREATE TABLE thing (id INTEGER PRIMARY KEY, name TEXT)",
    "ALTER TABLE thing ADD COLUMN colour TEXT",
]


async def test_sqlite_migrations_apply_once_and_resume(tmp_path) -> None:
    path = tmp_path / "m.sqlite"
    async with aiosqlite.connect(path) as conn:
        assert await migrate_sqlite(conn, "demo", MIGRATIONS[:1]) == 1
    async with aiosqlite.connect(path) as conn:  # an older data directory opens and moves forward
        assert await migrate_sqlite(conn, "demo", MIGRATIONS) == 2
        assert await migrate_sqlite(conn, "demo", MIGRATIONS) == 2
        await conn.execute("INSERT INTO thing (name, colour) VALUES ('a', 'b')")


async def test_postgres_migrations_apply_once(pg_database_url: str) -> None:
    conn = await asyncpg.connect(pg_database_url)
    try:
        assert await migrate_postgres(conn, "demo", MIGRATIONS[:1]) == 1
        assert await migrate_postgres(conn, "demo", MIGRATIONS) == 2
        assert await migrate_postgres(conn, "demo", MIGRATIONS) == 2
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE component='demo'") == 2
    finally:
        await conn.close()
