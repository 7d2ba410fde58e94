"""Persistence of the PAP: domains, the versions of their policies, and each domain's root policy reference.

Two stores with one interface: SQLite (``aiosqlite``, the embedded default) and PostgreSQL (``asyncpg``, the scaled
one). Every change to a domain's policies bumps its ``revision`` in the same transaction, and a change names the
revision it was computed against: if another worker changed the domain in between, the write is refused
(:class:`StaleRevision`) instead of silently replacing a policy set that was never validated as a whole. Workers
compare revisions to know when to recompile (see :class:`sleutelbos.policy.service.PolicyService`).

Only validated policies reach this module; it stores the XML exactly as it was posted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiosqlite
import asyncpg

from sleutelbos.core.database import migrate_postgres, migrate_sqlite, parse_database_url
from sleutelbos.core.errors import SleutelbosError

COMPONENT = "policy"

_MIGRATIONS_SQLITE = (
    """
    CREATE TABLE policy_domains (
        domain_id TEXT PRIMARY KEY,
        external_id TEXT,
        description TEXT,
        root_policy_id TEXT,
        root_policy_version TEXT,
        revision INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX policy_domains_external_id ON policy_domains (external_id) WHERE external_id IS NOT NULL;
    CREATE TABLE policy_documents (
        domain_id TEXT NOT NULL REFERENCES policy_domains (domain_id) ON DELETE CASCADE,
        policy_id TEXT NOT NULL,
        version TEXT NOT NULL,
        kind TEXT NOT NULL,
        document BLOB NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (domain_id, policy_id, version)
    );
    """,
)

_MIGRATIONS_POSTGRES = (
    """
    CREATE TABLE policy_domains (
        domain_id TEXT PRIMARY KEY,
        external_id TEXT,
        description TEXT,
        root_policy_id TEXT,
        root_policy_version TEXT,
        revision BIGINT NOT NULL DEFAULT 0,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE UNIQUE INDEX policy_domains_external_id ON policy_domains (external_id) WHERE external_id IS NOT NULL;
    CREATE TABLE policy_documents (
        domain_id TEXT NOT NULL REFERENCES policy_domains (domain_id) ON DELETE CASCADE,
        policy_id TEXT NOT NULL,
        version TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('Policy', 'PolicySet')),
        document BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (domain_id, policy_id, version)
    );
    """,
)


class StoreConflict(SleutelbosError):
    """The change collides with what is stored: an externalId or a policy version that already exists."""


class StaleRevision(SleutelbosError):
    """The domain changed since the caller read it; the caller must re-read and re-validate."""


@dataclass(frozen=True)
class Domain:
    domain_id: str
    external_id: str | None
    description: str | None
    root_policy_id: str | None
    root_policy_version: str | None  # None: the latest stored version of root_policy_id
    revision: int
    updated_at: datetime


@dataclass(frozen=True)
class StoredPolicy:
    policy_id: str
    version: str
    kind: str  # "Policy" or "PolicySet"
    document: bytes


class PolicyStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_domain(self, domain: Domain, initial: Sequence[StoredPolicy]) -> None: ...

    async def get_domain(self, domain_id: str) -> Domain | None: ...

    async def list_domains(self, external_id: str | None = None) -> list[Domain]: ...

    async def revisions(self) -> dict[str, int]: ...

    async def delete_domain(self, domain_id: str) -> bool: ...

    async def set_properties(self, domain_id: str, external_id: str | None, description: str | None,
                             expected_revision: int) -> None: ...

    async def policies(self, domain_id: str) -> list[StoredPolicy]: ...

    async def add_policy(self, domain_id: str, policy: StoredPolicy, expected_revision: int) -> None: ...

    async def delete_policies(self, domain_id: str, policy_id: str, versions: Sequence[str],
                              expected_revision: int) -> None: ...

    async def set_root(self, domain_id: str, policy_id: str, version: str | None, expected_revision: int) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


def open_store(url: str) -> PolicyStore:
    """The store for a database URL (``sqlite:///path``, ``sqlite://:memory:`` or ``postgresql://…``)."""
    parsed = parse_database_url(url)
    if parsed.kind == "sqlite":
        return SqlitePolicyStore(str(parsed.path) if parsed.path else ":memory:")
    return PostgresPolicyStore(parsed.dsn)


# --- SQLite ---------------------------------------------------------------------------------------------------


class SqlitePolicyStore:
    """The embedded store: one SQLite file and one connection, on which a lock serialises every statement (so that
    a read never sees another coroutine's transaction half done)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._path != ":memory:":
            from pathlib import Path

            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = await aiosqlite.connect(self._path)
        await self._conn.execute("PRAGMA foreign_keys = ON")
        # WAL set under the migration lock: `serve policy --workers N` opens one fresh file from N processes at once
        await migrate_sqlite(self._conn, COMPONENT, _MIGRATIONS_SQLITE, journal_mode="WAL")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("the policy store is not open")
        return self._conn

    @staticmethod
    def _domain(row: Any) -> Domain:
        return Domain(row[0], row[1], row[2], row[3], row[4], int(row[5]), datetime.fromisoformat(row[6]))

    _DOMAIN_COLUMNS = (
        "domain_id, external_id, description, root_policy_id, root_policy_version, revision, updated_at"
    )

    async def create_domain(self, domain: Domain, initial: Sequence[StoredPolicy]) -> None:
        async with self._lock:
            try:
                await self.conn.execute("BEGIN")
                await self.conn.execute(
                    f"INSERT INTO policy_domains ({self._DOMAIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                    (domain.domain_id, domain.external_id, domain.description, domain.root_policy_id,
                     domain.root_policy_version, domain.revision, domain.updated_at.isoformat()),
                )
                for policy in initial:
                    await self._insert_policy(domain.domain_id, policy)
                await self.conn.commit()
            except aiosqlite.IntegrityError as exc:
                await self.conn.rollback()
                raise StoreConflict(f"externalId {domain.external_id!r} is already used by another domain") from exc
            except BaseException:
                await self.conn.rollback()
                raise

    async def get_domain(self, domain_id: str) -> Domain | None:
        async with self._lock, self.conn.execute(
            f"SELECT {self._DOMAIN_COLUMNS} FROM policy_domains WHERE domain_id = ?", (domain_id,)  # noqa: S608
        ) as cur:
            row = await cur.fetchone()
        return self._domain(row) if row else None

    async def list_domains(self, external_id: str | None = None) -> list[Domain]:
        if external_id is None:
            sql, args = f"SELECT {self._DOMAIN_COLUMNS} FROM policy_domains ORDER BY domain_id", ()  # noqa: S608
        else:
            sql = f"SELECT {self._DOMAIN_COLUMNS} FROM policy_domains WHERE external_id = ?"  # noqa: S608
            args = (external_id,)  # type: ignore[assignment]
        async with self._lock, self.conn.execute(sql, args) as cur:
            return [self._domain(row) for row in await cur.fetchall()]

    async def revisions(self) -> dict[str, int]:
        async with self._lock, self.conn.execute("SELECT domain_id, revision FROM policy_domains") as cur:
            return {row[0]: int(row[1]) for row in await cur.fetchall()}

    async def delete_domain(self, domain_id: str) -> bool:
        async with self._lock:
            await self.conn.execute("DELETE FROM policy_documents WHERE domain_id = ?", (domain_id,))
            cur = await self.conn.execute("DELETE FROM policy_domains WHERE domain_id = ?", (domain_id,))
            await self.conn.commit()
            return cur.rowcount > 0

    async def _bump(self, domain_id: str, expected_revision: int, extra_sql: str = "", extra: tuple = ()) -> None:
        cur = await self.conn.execute(
            f"UPDATE policy_domains SET revision = revision + 1, updated_at = ?{extra_sql} "  # noqa: S608
            "WHERE domain_id = ? AND revision = ?",
            (_now().isoformat(), *extra, domain_id, expected_revision),
        )
        if cur.rowcount != 1:
            raise StaleRevision(f"domain {domain_id} changed while this change was being validated")

    async def set_properties(self, domain_id: str, external_id: str | None, description: str | None,
                             expected_revision: int) -> None:
        async with self._lock:
            try:
                await self.conn.execute("BEGIN")
                await self._bump(domain_id, expected_revision, ", external_id = ?, description = ?",
                                 (external_id, description))
                await self.conn.commit()
            except aiosqlite.IntegrityError as exc:
                await self.conn.rollback()
                raise StoreConflict(f"externalId {external_id!r} is already used by another domain") from exc
            except BaseException:
                await self.conn.rollback()
                raise

    async def policies(self, domain_id: str) -> list[StoredPolicy]:
        async with self._lock, self.conn.execute(
            "SELECT policy_id, version, kind, document FROM policy_documents WHERE domain_id = ? "
            "ORDER BY policy_id, created_at", (domain_id,)
        ) as cur:
            return [StoredPolicy(r[0], r[1], r[2], bytes(r[3])) for r in await cur.fetchall()]

    async def _insert_policy(self, domain_id: str, policy: StoredPolicy) -> None:
        await self.conn.execute(
            "INSERT INTO policy_documents (domain_id, policy_id, version, kind, document, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (domain_id, policy.policy_id, policy.version, policy.kind, policy.document, _now().isoformat()),
        )

    async def add_policy(self, domain_id: str, policy: StoredPolicy, expected_revision: int) -> None:
        async with self._lock:
            try:
                await self.conn.execute("BEGIN")
                await self._bump(domain_id, expected_revision)
                await self._insert_policy(domain_id, policy)
                await self.conn.commit()
            except aiosqlite.IntegrityError as exc:
                await self.conn.rollback()
                raise StoreConflict(f"policy {policy.policy_id!r} version {policy.version} already exists") from exc
            except BaseException:
                await self.conn.rollback()
                raise

    async def delete_policies(self, domain_id: str, policy_id: str, versions: Sequence[str],
                              expected_revision: int) -> None:
        async with self._lock:
            try:
                await self.conn.execute("BEGIN")
                await self._bump(domain_id, expected_revision)
                await self.conn.executemany(
                    "DELETE FROM policy_documents WHERE domain_id = ? AND policy_id = ? AND version = ?",
                    [(domain_id, policy_id, v) for v in versions],
                )
                await self.conn.commit()
            except BaseException:
                await self.conn.rollback()
                raise

    async def set_root(self, domain_id: str, policy_id: str, version: str | None, expected_revision: int) -> None:
        async with self._lock:
            try:
                await self.conn.execute("BEGIN")
                await self._bump(domain_id, expected_revision, ", root_policy_id = ?, root_policy_version = ?",
                                 (policy_id, version))
                await self.conn.commit()
            except BaseException:
                await self.conn.rollback()
                raise


# --- PostgreSQL -----------------------------------------------------------------------------------------------


class PostgresPolicyStore:
    """The scaled store: a pool shared by the worker's requests; several workers may share the database."""

    _DOMAIN_COLUMNS = SqlitePolicyStore._DOMAIN_COLUMNS

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4)
        async with self._pool.acquire() as conn:
            await migrate_postgres(conn, COMPONENT, _MIGRATIONS_POSTGRES)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the policy store is not open")
        return self._pool

    @staticmethod
    def _domain(row: Any) -> Domain:
        return Domain(row[0], row[1], row[2], row[3], row[4], int(row[5]), row[6])

    async def create_domain(self, domain: Domain, initial: Sequence[StoredPolicy]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    f"INSERT INTO policy_domains ({self._DOMAIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",  # noqa: S608
                    domain.domain_id, domain.external_id, domain.description, domain.root_policy_id,
                    domain.root_policy_version, domain.revision, domain.updated_at,
                )
            except asyncpg.UniqueViolationError as exc:
                raise StoreConflict(f"externalId {domain.external_id!r} is already used by another domain") from exc
            for policy in initial:
                await self._insert_policy(conn, domain.domain_id, policy)

    async def get_domain(self, domain_id: str) -> Domain | None:
        row = await self.pool.fetchrow(
            f"SELECT {self._DOMAIN_COLUMNS} FROM policy_domains WHERE domain_id = $1", domain_id  # noqa: S608
        )
        return self._domain(row) if row else None

    async def list_domains(self, external_id: str | None = None) -> list[Domain]:
        if external_id is None:
            rows = await self.pool.fetch(
                f"SELECT {self._DOMAIN_COLUMNS} FROM policy_domains ORDER BY domain_id"  # noqa: S608
            )
        else:
            rows = await self.pool.fetch(
                f"SELECT {self._DOMAIN_COLUMNS} FROM policy_domains WHERE external_id = $1",  # noqa: S608
                external_id,
            )
        return [self._domain(row) for row in rows]

    async def revisions(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT domain_id, revision FROM policy_domains")
        return {row[0]: int(row[1]) for row in rows}

    async def delete_domain(self, domain_id: str) -> bool:
        result = await self.pool.execute("DELETE FROM policy_domains WHERE domain_id = $1", domain_id)
        return bool(result.endswith(" 1"))

    @staticmethod
    async def _bump(conn: Any, domain_id: str, expected_revision: int, extra_sql: str = "",
                    extra: tuple = ()) -> None:
        result = await conn.execute(
            f"UPDATE policy_domains SET revision = revision + 1, updated_at = $1{extra_sql} "  # noqa: S608
            f"WHERE domain_id = ${len(extra) + 2} AND revision = ${len(extra) + 3}",
            _now(), *extra, domain_id, expected_revision,
        )
        if not result.endswith(" 1"):
            raise StaleRevision(f"domain {domain_id} changed while this change was being validated")

    async def set_properties(self, domain_id: str, external_id: str | None, description: str | None,
                             expected_revision: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await self._bump(conn, domain_id, expected_revision, ", external_id = $2, description = $3",
                                 (external_id, description))
            except asyncpg.UniqueViolationError as exc:
                raise StoreConflict(f"externalId {external_id!r} is already used by another domain") from exc

    async def policies(self, domain_id: str) -> list[StoredPolicy]:
        rows = await self.pool.fetch(
            "SELECT policy_id, version, kind, document FROM policy_documents WHERE domain_id = $1 "
            "ORDER BY policy_id, created_at", domain_id,
        )
        return [StoredPolicy(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    @staticmethod
    async def _insert_policy(conn: Any, domain_id: str, policy: StoredPolicy) -> None:
        try:
            await conn.execute(
                "INSERT INTO policy_documents (domain_id, policy_id, version, kind, document, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                domain_id, policy.policy_id, policy.version, policy.kind, policy.document, _now(),
            )
        except asyncpg.UniqueViolationError as exc:
            raise StoreConflict(f"policy {policy.policy_id!r} version {policy.version} already exists") from exc

    async def add_policy(self, domain_id: str, policy: StoredPolicy, expected_revision: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._bump(conn, domain_id, expected_revision)
            await self._insert_policy(conn, domain_id, policy)

    async def delete_policies(self, domain_id: str, policy_id: str, versions: Sequence[str],
                              expected_revision: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._bump(conn, domain_id, expected_revision)
            await conn.execute(
                "DELETE FROM policy_documents WHERE domain_id = $1 AND policy_id = $2 AND version = ANY($3::text[])",
                domain_id, policy_id, list(versions),
            )

    async def set_root(self, domain_id: str, policy_id: str, version: str | None, expected_revision: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._bump(conn, domain_id, expected_revision, ", root_policy_id = $2, root_policy_version = $3",
                             (policy_id, version))
