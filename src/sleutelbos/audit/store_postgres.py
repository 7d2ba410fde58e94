"""The scaled store: PostgreSQL through ``asyncpg`` (see :mod:`sleutelbos.audit.store` for the layout).

Durability is PostgreSQL's own (``synchronous_commit`` on, the default): ``COMMIT`` returns after the WAL flush.
The state row's ``UPDATE … WHERE tree_size = $old`` is the first statement of every append, so it also takes the row
lock that serialises writers from several processes; the loser sees the size moved and reloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from sleutelbos.audit.entry import Entry
from sleutelbos.audit.merkle import Frontier, Subtree
from sleutelbos.audit.store import (
    COMPONENT,
    AuditStoreError,
    SearchQuery,
    StoreConflict,
    StoredCheckpoint,
    StoredEntry,
    action_bounds,
    pick_subtrees,
    rows_for,
)
from sleutelbos.core.database import keep_session_state, migrate_postgres

MIGRATIONS = [
    """
    CREATE TABLE audit_entries (
        idx BIGINT PRIMARY KEY,
        time TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        decision TEXT NOT NULL,
        entry BYTEA NOT NULL,
        leaf_hash BYTEA NOT NULL,
        subtrees BYTEA NOT NULL
    );
    CREATE INDEX audit_entries_actor ON audit_entries (actor, idx);
    CREATE INDEX audit_entries_action ON audit_entries (action text_pattern_ops, idx);
    CREATE INDEX audit_entries_target ON audit_entries (target, idx);
    CREATE INDEX audit_entries_time ON audit_entries (time);
    CREATE TABLE audit_log_state (id INTEGER PRIMARY KEY CHECK (id = 1), tree_size BIGINT NOT NULL);
    INSERT INTO audit_log_state (id, tree_size) VALUES (1, 0);
    CREATE TABLE audit_checkpoints (
        tree_size BIGINT PRIMARY KEY,
        root_hash BYTEA NOT NULL,
        note TEXT NOT NULL,
        vkey TEXT NOT NULL,
        issued_at TEXT NOT NULL
    );
    """
]

_ENTRY_COLUMNS = "idx, time, actor, action, target, decision, entry, leaf_hash, subtrees"


def _entry(row: Any) -> StoredEntry:
    return StoredEntry(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]), bytes(row[7]), bytes(row[8]))


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(row[0], bytes(row[1]), row[2], row[3], row[4])


class PostgresAuditStore:
    kind = "postgresql"

    def __init__(self, dsn: str, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self.pool_size, reset=keep_session_state
        )
        async with self._pool.acquire() as conn:
            await migrate_postgres(conn, COMPONENT, MIGRATIONS)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise AuditStoreError("audit store is not open")
        return self._pool

    async def tree_size(self) -> int:
        return int(await self.pool.fetchval("SELECT tree_size FROM audit_log_state WHERE id = 1"))

    async def load_tree(self) -> tuple[int, list[bytes]]:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            size = int(await conn.fetchval("SELECT tree_size FROM audit_log_state WHERE id = 1"))
            subtrees = Frontier.subtrees_for(size)
            hashes = await self._subtree_hashes(conn, subtrees)
        return size, [hashes[st] for st in subtrees]

    async def append(
        self, old_size: int, entries: Sequence[Entry], leaf_hashes: Sequence[bytes], subtrees: Sequence[bytes]
    ) -> None:
        n = len(entries)
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE audit_log_state SET tree_size = $1 WHERE id = 1 AND tree_size = $2", old_size + n, old_size
            )
            if status != "UPDATE 1":
                raise StoreConflict
            await conn.execute(
                "INSERT INTO audit_entries (idx, time, actor, action, target, decision, entry, leaf_hash, subtrees) "
                "SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
                "$7::bytea[], $8::bytea[], $9::bytea[])",
                list(range(old_size, old_size + n)),
                [e.time for e in entries],
                [e.actor for e in entries],
                [e.action for e in entries],
                [e.target for e in entries],
                [e.decision for e in entries],
                [e.data for e in entries],
                list(leaf_hashes),
                list(subtrees),
            )

    async def entry(self, index: int) -> StoredEntry | None:
        row = await self.pool.fetchrow(f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE idx = $1", index)  # noqa: S608
        return _entry(row) if row else None

    async def entries(self, start: int, end: int) -> list[StoredEntry]:
        rows = await self.pool.fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",  # noqa: S608
            start,
            end,
        )
        return [_entry(r) for r in rows]

    async def _subtree_hashes(self, conn: Any, subtrees: Sequence[Subtree]) -> dict[Subtree, bytes]:
        rows = await conn.fetch(
            "SELECT idx, leaf_hash, subtrees FROM audit_entries WHERE idx = ANY($1::bigint[])", rows_for(subtrees)
        )
        return pick_subtrees(subtrees, {r[0]: (bytes(r[1]), bytes(r[2])) for r in rows})

    async def subtree_hashes(self, subtrees: Sequence[Subtree]) -> dict[Subtree, bytes]:
        async with self.pool.acquire() as conn:
            return await self._subtree_hashes(conn, subtrees)

    async def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        await self.pool.execute(
            "INSERT INTO audit_checkpoints (tree_size, root_hash, note, vkey, issued_at) VALUES ($1, $2, $3, $4, $5)",
            checkpoint.tree_size,
            checkpoint.root_hash,
            checkpoint.note,
            checkpoint.vkey,
            checkpoint.issued_at,
        )

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        row = await self.pool.fetchrow(
            "SELECT tree_size, root_hash, note, vkey, issued_at FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1"
        )
        return _checkpoint(row) if row else None

    async def checkpoints(self) -> list[StoredCheckpoint]:
        rows = await self.pool.fetch(
            "SELECT tree_size, root_hash, note, vkey, issued_at FROM audit_checkpoints ORDER BY tree_size"
        )
        return [_checkpoint(r) for r in rows]

    async def search(self, query: SearchQuery) -> list[StoredEntry]:
        where, params = ["idx > $1"], [query.after]

        def add(clause: str, value: Any) -> None:
            params.append(value)
            where.append(clause.replace("?", f"${len(params)}"))

        if query.actor is not None:
            add("actor = ?", query.actor)
        if query.target is not None:
            add("target = ?", query.target)
        if query.action is not None:
            bounds = action_bounds(query.action)
            if bounds:
                add("action LIKE ?", bounds[0].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
            else:
                add("action = ?", query.action)
        if query.since is not None:
            add("time >= ?", query.since)
        if query.until is not None:
            add("time < ?", query.until)
        params.append(query.limit)
        sql = (
            f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE {' AND '.join(where)} "  # noqa: S608
            f"ORDER BY idx LIMIT ${len(params)}"
        )
        return [_entry(r) for r in await self.pool.fetch(sql, *params)]
