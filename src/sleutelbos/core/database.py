"""Database URLs and versioned schema migrations, shared by every component's store.

SQLite (``aiosqlite``) is the embedded default and PostgreSQL (``asyncpg``) the scaled one. Each component owns
its tables and its list of migrations; this module only records which versions a database has, so that a data
directory written by an older version opens and is brought forward, and never applies a migration twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from sleutelbos.core.errors import ConfigurationError

_CREATE_SQLITE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,"
    " PRIMARY KEY (component, version))"
)
_CREATE_PG = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
    " PRIMARY KEY (component, version))"
)


@dataclass(frozen=True)
class DatabaseUrl:
    kind: Literal["sqlite", "postgresql"]
    url: str
    path: Path | None = None  # SQLite file, or None for ":memory:"

    @property
    def dsn(self) -> str:
        """asyncpg wants ``postgresql://``; accept the ``postgres://`` and ``postgresql+asyncpg://`` spellings."""
        parts = urlsplit(self.url)
        return parts._replace(scheme="postgresql").geturl()


def parse_database_url(url: str) -> DatabaseUrl:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "sqlite":
        raw = url.split(":", 1)[1]
        raw = raw[3:] if raw.startswith("///") else raw.lstrip("/")
        if raw in ("", ":memory:"):
            return DatabaseUrl("sqlite", url, None)
        return DatabaseUrl("sqlite", url, Path(raw))
    if scheme in ("postgresql", "postgres"):
        return DatabaseUrl("postgresql", url)
    raise ConfigurationError(f"unsupported database URL scheme {parts.scheme!r}: use sqlite:///path or postgresql://")


async def migrate_sqlite(
    conn: Any, component: str, migrations: Sequence[str], journal_mode: str | None = None
) -> int:
    """Apply ``migrations[v-1]`` for every version v not yet recorded; returns the schema version now in force.

    ``conn`` is an ``aiosqlite.Connection``. Each migration runs in its own transaction with its record.
    ``journal_mode`` (e.g. ``"WAL"``) is set under the same lock: on a fresh file, two processes switching it at once
    can get SQLITE_BUSY without SQLite's busy wait.
    """
    async with conn.execute("PRAGMA database_list") as cur:  # names the file; takes no database lock
        main = await cur.fetchone()
    async with _file_lock(f"{main[2]}-migrations.lock" if main and main[2] else None):
        if journal_mode is not None:
            await conn.execute(f"PRAGMA journal_mode = {_ident(journal_mode)}")
        await conn.execute(_CREATE_SQLITE)
        await conn.commit()
        async with conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?", (component,)
        ) as cur:
            row = await cur.fetchone()
        current = int(row[0])
        for version in range(current + 1, len(migrations) + 1):
            script = migrations[version - 1]
            await conn.executescript(
                "BEGIN;\n"  # noqa: S608 - component is validated by _ident, version is an int
                + script
                + f"\n;INSERT INTO schema_migrations (component, version) VALUES ('{_ident(component)}', {version});"  # noqa: S608
                + "\nCOMMIT;"
            )
    return max(current, len(migrations))


@contextlib.asynccontextmanager
async def _file_lock(path: str | None) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``path`` (none for an in-memory database) held while migrations are read and
    applied: several worker processes opening one SQLite file at once (``serve policy --workers N``) would otherwise
    all read "version 0" and the later ones fail on ``CREATE TABLE`` — SQLite's own locks cover one statement or
    transaction, not the read-then-migrate sequence."""
    if path is None:
        yield
        return
    with open(path, "a") as handle:  # noqa: ASYNC230 - opening a lock file does not block
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


async def migrate_postgres(conn: Any, component: str, migrations: Sequence[str]) -> int:
    """Same as :func:`migrate_sqlite` for an ``asyncpg`` connection, serialised by an advisory lock so that
    several workers starting at once do not race."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sleutelbos.migrations'))")
        await conn.execute(_CREATE_PG)
        current = await conn.fetchval(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1", component
        )
        for version in range(current + 1, len(migrations) + 1):
            await conn.execute(migrations[version - 1])
            await conn.execute(
                "INSERT INTO schema_migrations (component, version) VALUES ($1, $2)", component, version
            )
    return max(int(current), len(migrations))


def _ident(name: str) -> str:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigurationError(f"invalid component name {name!r}")
    return name


async def keep_session_state(conn: Any) -> None:
    """An ``asyncpg`` pool's ``reset`` for stores whose connections carry no session state (no ``SET``, ``LISTEN``,
    session advisory lock or cursor outside a transaction; settings given at connect time are not undone by
    ``RESET ALL`` anyway). asyncpg's default reset sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release — a round trip per statement or transaction, as costly as a single update's or a
    proof's own query (decisions 0105, 0507, 0554). asyncpg still rolls back a transaction left open before this."""
