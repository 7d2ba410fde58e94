"""The embedded store: SQLite through ``aiosqlite`` (see :mod:`sleutelbos.audit.store` for the layout).

Durability: WAL journal with ``synchronous=FULL`` — a commit returns after the WAL is fsynced, so an acknowledged
append survives a crash or power loss. One connection writes (serialised by a lock: a batch is several statements
in one transaction); a second connection reads scans (entry ranges, search, checkpoints), so that they are not
queued behind a commit.

Primary-key lookups — the O(log n) rows of a proof, one entry, the tree size — run on a third, plain ``sqlite3``
connection directly on the event loop: such a lookup is tens of microseconds of C in SQLite's page cache, while
the hand-off to aiosqlite's thread and back costs more than that (100–400 µs measured on a loaded machine), and the
issue's goal is a proof in under 1 ms (see docs/decisions/0101-proof-reads-on-the-event-loop.md).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

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
from sleutelbos.core.database import migrate_sqlite

MIGRATIONS = [
    """
    CREATE TABLE audit_entries (
        idx INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        decision TEXT NOT NULL,
        entry BLOB NOT NULL,
        leaf_hash BLOB NOT NULL,
        subtrees BLOB NOT NULL
    );
    CREATE INDEX audit_entries_actor ON audit_entries (actor, idx);
    CREATE INDEX audit_entries_action ON audit_entries (action, idx);
    CREATE INDEX audit_entries_target ON audit_entries (target, idx);
    CREATE INDEX audit_entries_time ON audit_entries (time);
    CREATE TABLE audit_log_state (id INTEGER PRIMARY KEY CHECK (id = 1), tree_size INTEGER NOT NULL);
    INSERT INTO audit_log_state (id, tree_size) VALUES (1, 0);
    CREATE TABLE audit_checkpoints (
        tree_size INTEGER PRIMARY KEY,
        root_hash BLOB NOT NULL,
        note TEXT NOT NULL,
        vkey TEXT NOT NULL,
        issued_at TEXT NOT NULL
    );
    """
]

_ENTRY_COLUMNS = "idx, time, actor, action, target, decision, entry, leaf_hash, subtrees"
_INSERT_ENTRY = f"INSERT INTO audit_entries ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608


def _entry(row: Any) -> StoredEntry:
    return StoredEntry(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]), bytes(row[7]), bytes(row[8]))


class SqliteAuditStore:
    kind = "sqlite"

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._write: aiosqlite.Connection | None = None
        self._read: aiosqlite.Connection | None = None
        self._lookup: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        target = str(self.path) if self.path else ":memory:"
        conn = await aiosqlite.connect(target, isolation_level=None)
        await conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    async def open(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write = await self._connect()
        await self._write.execute("PRAGMA journal_mode = WAL")
        await self._write.execute("PRAGMA synchronous = FULL")
        await migrate_sqlite(self._write, COMPONENT, MIGRATIONS)
        self._read = await self._connect() if self.path is not None else self._write
        if self.path is not None:
            self._lookup = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._lookup.execute("PRAGMA query_only = ON")

    async def close(self) -> None:
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None
        if self._read is not None and self._read is not self._write:
            await self._read.close()
        if self._write is not None:
            await self._write.close()
        self._read = self._write = None

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._read is None:
            raise AuditStoreError("audit store is not open")
        return self._read

    @property
    def _w(self) -> aiosqlite.Connection:
        if self._write is None:
            raise AuditStoreError("audit store is not open")
        return self._write

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._r.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _lookup_rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Primary-key lookups: synchronously on the event loop (see the module docstring)."""
        if self._lookup is None:
            return await self._fetchall(sql, params)
        return self._lookup.execute(sql, params).fetchall()

    async def tree_size(self) -> int:
        rows = await self._lookup_rows("SELECT tree_size FROM audit_log_state WHERE id = 1")
        return int(rows[0][0])

    async def load_tree(self) -> tuple[int, list[bytes]]:
        async with self._lock:
            async with self._w.execute("SELECT tree_size FROM audit_log_state WHERE id = 1") as cur:
                row = await cur.fetchone()
            size = int(row[0]) if row else 0
            subtrees = Frontier.subtrees_for(size)
            hashes = await self._subtree_hashes(self._w, subtrees)
        return size, [hashes[st] for st in subtrees]

    async def append(
        self, old_size: int, entries: Sequence[Entry], leaf_hashes: Sequence[bytes], subtrees: Sequence[bytes]
    ) -> None:
        rows = [
            (old_size + i, e.time, e.actor, e.action, e.target, e.decision, e.data, h, st)
            for i, (e, h, st) in enumerate(zip(entries, leaf_hashes, subtrees, strict=True))
        ]
        async with self._lock:
            w = self._w
            await w.execute("BEGIN IMMEDIATE")
            try:
                cur = await w.execute(
                    "UPDATE audit_log_state SET tree_size = ? WHERE id = 1 AND tree_size = ?",
                    (old_size + len(rows), old_size),
                )
                if cur.rowcount != 1:
                    raise StoreConflict
                await w.executemany(_INSERT_ENTRY, rows)
                await w.execute("COMMIT")
            except BaseException:
                if w.in_transaction:
                    await w.execute("ROLLBACK")
                raise

    async def entry(self, index: int) -> StoredEntry | None:
        rows = await self._lookup_rows(f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE idx = ?", (index,))  # noqa: S608
        return _entry(rows[0]) if rows else None

    async def entries(self, start: int, end: int) -> list[StoredEntry]:
        rows = await self._fetchall(
            f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx",  # noqa: S608
            (start, end),
        )
        return [_entry(r) for r in rows]

    async def _subtree_hashes(self, conn: aiosqlite.Connection, subtrees: Sequence[Subtree]) -> dict[Subtree, bytes]:
        wanted = rows_for(subtrees)
        rows: dict[int, tuple[bytes, bytes]] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT idx, leaf_hash, subtrees FROM audit_entries WHERE idx IN ({marks})"  # noqa: S608
            if conn is self._write or self._lookup is None:
                async with conn.execute(sql, chunk) as cur:
                    found = await cur.fetchall()
            else:
                found = self._lookup.execute(sql, chunk).fetchall()
            for idx, h, st in found:
                rows[idx] = (bytes(h), bytes(st))
        return pick_subtrees(subtrees, rows)

    async def subtree_hashes(self, subtrees: Sequence[Subtree]) -> dict[Subtree, bytes]:
        return await self._subtree_hashes(self._r, subtrees)

    async def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        async with self._lock:
            await self._w.execute(
                "INSERT INTO audit_checkpoints (tree_size, root_hash, note, vkey, issued_at) VALUES (?, ?, ?, ?, ?)",
                (checkpoint.tree_size, checkpoint.root_hash, checkpoint.note, checkpoint.vkey, checkpoint.issued_at),
            )

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        rows = await self._fetchall(
            "SELECT tree_size, root_hash, note, vkey, issued_at FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1"
        )
        return StoredCheckpoint(rows[0][0], bytes(rows[0][1]), *rows[0][2:]) if rows else None

    async def checkpoints(self) -> list[StoredCheckpoint]:
        rows = await self._fetchall(
            "SELECT tree_size, root_hash, note, vkey, issued_at FROM audit_checkpoints ORDER BY tree_size"
        )
        return [StoredCheckpoint(r[0], bytes(r[1]), *r[2:]) for r in rows]

    async def search(self, query: SearchQuery) -> list[StoredEntry]:
        where, params = ["idx > ?"], [query.after]
        for column, value in (("actor", query.actor), ("target", query.target)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.action is not None:
            bounds = action_bounds(query.action)
            if bounds:
                where.append("action >= ? AND action < ?")
                params.extend(bounds)
            else:
                where.append("action = ?")
                params.append(query.action)
        if query.since is not None:
            where.append("time >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("time < ?")
            params.append(query.until)
        sql = (
            f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY idx LIMIT ?"
        )
        return [_entry(r) for r in await self._fetchall(sql, [*params, query.limit])]
