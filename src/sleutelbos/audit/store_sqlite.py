"""The embedded store: SQLite (see :mod:`sleutelbos.audit.store` for the layout).

Durability: WAL journal with ``synchronous=FULL`` — a commit returns after the WAL is fsynced, so an acknowledged
append survives a crash or power loss.

Threads (docs/decisions/0103-sqlite-writer-thread-and-multi-row-insert.md): every write runs on one dedicated
thread with a plain ``sqlite3`` connection, one hand-off per batch (``BEGIN IMMEDIATE``, the tree-size move, the
rows, ``COMMIT`` in one job). The rows go in as multi-row ``INSERT … VALUES (…), (…)`` statements, so SQLite runs
a whole chunk in one call with the GIL released; ``executemany`` would take the GIL back for every row and, with
the event loop busy on the other core, wait for it each time. Scans (entry ranges, search, checkpoints) run on a
second thread and connection, so they are not queued behind a commit. Primary-key lookups — the O(log n) rows of
a proof, one entry, the tree size — run on a third connection directly on the event loop: such a lookup is tens of
microseconds of C in SQLite's page cache, less than any thread hand-off (docs/decisions/0101).

Search (docs/decisions/0104-sqlite-search-index-off-the-commit-path.md): an index on ``(actor, idx)`` inserts at
as many places in its B-tree as there are distinct actors in a batch, which made every append pay three random
B-tree inserts (more than the row itself, and growing with the table). So the actor, action and target postings
live in ``WITHOUT ROWID`` tables filled *after* the commit, in large sorted runs (every ``index_lag`` entries, or
``index_delay_s`` after the last append); ``audit_search_state.indexed`` says how far they go. A search reads the
postings below that mark and scans the few entries above it, in one statement (one snapshot), so its answer is
always complete and exact. The time index stays on the entries table: log times only grow, so it is appended to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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

log = logging.getLogger("sleutelbos.audit")

T = TypeVar("T")

SEARCH_FIELDS = ("target", "actor", "action")  # also the order in which a search picks the postings it walks

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
    """,
    # 2: search postings off the commit path (docs/decisions/0104). The postings of existing entries are filled by
    # the store when it opens (indexed starts at 0), in chunks, like any other unindexed tail.
    """
    DROP INDEX audit_entries_actor;
    DROP INDEX audit_entries_action;
    DROP INDEX audit_entries_target;
    CREATE TABLE audit_search_actor (actor TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (actor, idx))
        WITHOUT ROWID;
    CREATE TABLE audit_search_action (action TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (action, idx))
        WITHOUT ROWID;
    CREATE TABLE audit_search_target (target TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (target, idx))
        WITHOUT ROWID;
    CREATE TABLE audit_search_state (id INTEGER PRIMARY KEY CHECK (id = 1), indexed INTEGER NOT NULL);
    INSERT INTO audit_search_state (id, indexed) VALUES (1, 0);
    """,
]

_ENTRY_COLUMNS = "idx, time, actor, action, target, decision, entry, leaf_hash, subtrees"
_ROW_PARAMS = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Multi-row INSERT chunk sizes: a batch is cut into chunks of these sizes, largest first, so that only these few
# statements are ever compiled (they stay in the connection's statement cache) and a batch of 1000 rows is ~12 calls.
_CHUNKS = (256, 32, 4, 1)
_INDEX_RETRY_S = 5.0  # after a failed postings run, appends do not start another one for this long
_INDEX_CHUNK = 65_536  # entries per postings transaction when catching up (bounds how long one holds the writer)


def _insert_sql(rows: int) -> str:
    return f"INSERT INTO audit_entries ({_ENTRY_COLUMNS}) VALUES " + ", ".join([_ROW_PARAMS] * rows)  # noqa: S608


_INSERTS = {n: _insert_sql(n) for n in _CHUNKS}


def _entry(row: Any) -> StoredEntry:
    return StoredEntry(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]), bytes(row[7]), bytes(row[8]))


class _MigrationConnection:
    """Just enough of an ``aiosqlite`` connection for :func:`sleutelbos.core.database.migrate_sqlite`, over the
    store's writer thread and plain connection."""

    def __init__(self, store: SqliteAuditStore) -> None:
        self._store = store

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _MigrationCursor:
        return _MigrationCursor(self._store, sql, params)

    async def commit(self) -> None:
        await self._store._on_writer(self._store._wconn.commit)

    async def executescript(self, script: str) -> None:
        await self._store._on_writer(self._store._wconn.executescript, script)


class _MigrationCursor:
    def __init__(self, store: SqliteAuditStore, sql: str, params: Sequence[Any]) -> None:
        self._store, self._sql, self._params = store, sql, params
        self._rows: list[Any] = []

    async def _run(self) -> _MigrationCursor:
        conn = self._store._wconn
        self._rows = await self._store._on_writer(lambda: conn.execute(self._sql, self._params).fetchall())
        return self

    def __await__(self) -> Generator[Any, None, _MigrationCursor]:
        return self._run().__await__()

    async def __aenter__(self) -> _MigrationCursor:
        return await self._run()

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None


class SqliteAuditStore:
    kind = "sqlite"

    def __init__(self, path: Path | None, *, index_lag: int = 8192, index_delay_s: float = 0.2) -> None:
        """``index_lag``: entries appended before the search postings are brought up to date in one sorted run
        (a search scans at most about that many unindexed entries); ``index_delay_s``: how soon after the last
        append the postings catch up when appends stop."""
        self.path = path
        self.index_lag = index_lag
        self.index_delay_s = index_delay_s
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._lookup: sqlite3.Connection | None = None
        self._size = 0  # tree size as of the last commit through this store
        self._indexed = 0  # entries below this index have their search postings
        self._index_timer: asyncio.TimerHandle | None = None
        self._index_retry_at = 0.0
        self._closing = False
        self._index_task: asyncio.Task[None] | None = None

    # --- threads and connections ----------------------------------------------------------------------

    @property
    def _wconn(self) -> sqlite3.Connection:
        if self._w is None:
            raise AuditStoreError("audit store is not open")
        return self._w

    @property
    def _rconn(self) -> sqlite3.Connection:
        if self._r is None:
            raise AuditStoreError("audit store is not open")
        return self._r

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        if self._writer is None:
            raise AuditStoreError("audit store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def _on_reader(self, fn: Callable[..., T], *args: Any) -> T:
        if self._reader is None:
            raise AuditStoreError("audit store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path) if self.path else ":memory:", isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    async def open(self) -> None:
        try:
            await self._open()
        except BaseException:
            await self.close()  # no threads or connections left behind by a store that did not open
            raise

    async def _open(self) -> None:
        self._closing = False
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="audit-sqlite-writer")
        self._w = await self._on_writer(self._connect)
        await self._on_writer(self._configure_writer)
        await migrate_sqlite(_MigrationConnection(self), COMPONENT, MIGRATIONS)
        if self.path is None:  # one in-memory database: everything on the writer's connection
            self._reader, self._r = self._writer, self._w
        else:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="audit-sqlite-reader")
            self._r = await self._on_reader(self._connect)
            self._lookup = self._connect()
            self._lookup.execute("PRAGMA query_only = ON")
        self._size, self._indexed = await self._on_writer(self._state_sync)
        if self._indexed < self._size:  # a crash before the postings caught up, or a log from before migration 2
            self._index_task = asyncio.create_task(self._index(), name="audit-search-postings")

    def _configure_writer(self) -> None:
        w = self._wconn
        w.execute("PRAGMA journal_mode = WAL")
        w.execute("PRAGMA synchronous = FULL")

    async def close(self) -> None:
        if self._index_timer is not None:
            self._index_timer.cancel()
            self._index_timer = None
        self._closing = True  # a long catch-up (after migration 2) stops after its current chunk, resumes at open
        if self._index_task is not None:
            with contextlib.suppress(Exception):
                await self._index_task
            self._index_task = None
        if self._writer is not None and self._w is not None and 0 < self._size - self._indexed <= _INDEX_CHUNK:
            await self._index()  # a tail of one chunk at most: leave the postings complete for the next open
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None
        if self._reader is not None and self._reader is not self._writer:
            if self._r is not None:
                await self._on_reader(self._r.close)
            self._reader.shutdown()
        if self._writer is not None:
            if self._w is not None:
                await self._on_writer(self._w.close)
            self._writer.shutdown()
        self._reader = self._writer = None
        self._r = self._w = None

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A scan, on the reader's thread."""
        return await self._on_reader(lambda: self._rconn.execute(sql, params).fetchall())

    async def _lookup_rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Primary-key lookups: synchronously on the event loop (see the module docstring)."""
        if self._lookup is None:
            return await self._fetchall(sql, params)
        return self._lookup.execute(sql, params).fetchall()

    # --- writes (on the writer's thread) --------------------------------------------------------------

    def _state_sync(self) -> tuple[int, int]:
        w = self._wconn
        size = int(w.execute("SELECT tree_size FROM audit_log_state WHERE id = 1").fetchone()[0])
        indexed = int(w.execute("SELECT indexed FROM audit_search_state WHERE id = 1").fetchone()[0])
        return size, indexed

    def _append_sync(self, old_size: int, new_size: int, params: list[Any]) -> None:
        w = self._wconn
        w.execute("BEGIN IMMEDIATE")
        try:
            cur = w.execute(
                "UPDATE audit_log_state SET tree_size = ? WHERE id = 1 AND tree_size = ?", (new_size, old_size)
            )
            if cur.rowcount != 1:
                raise StoreConflict
            remaining, pos = new_size - old_size, 0
            for chunk in _CHUNKS:
                width = chunk * 9
                sql = _INSERTS[chunk]
                while remaining >= chunk:
                    w.execute(sql, params[pos : pos + width])
                    pos += width
                    remaining -= chunk
            w.execute("COMMIT")
        except BaseException:
            if w.in_transaction:
                w.execute("ROLLBACK")
            raise

    def _index_sync(self) -> tuple[int, int]:
        """Add the search postings of the next (at most ``_INDEX_CHUNK``) unindexed entries in one transaction;
        returns (indexed, tree size)."""
        w = self._wconn
        w.execute("BEGIN IMMEDIATE")
        try:
            size = int(w.execute("SELECT tree_size FROM audit_log_state WHERE id = 1").fetchone()[0])
            indexed = int(w.execute("SELECT indexed FROM audit_search_state WHERE id = 1").fetchone()[0])
            upto = min(size, indexed + _INDEX_CHUNK)
            if indexed < upto:
                for field in SEARCH_FIELDS:  # sorted runs: each posting lands next to the previous one
                    w.execute(
                        f"INSERT INTO audit_search_{field} ({field}, idx) SELECT {field}, idx "  # noqa: S608
                        f"FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY {field}, idx",
                        (indexed, upto),
                    )
                w.execute("UPDATE audit_search_state SET indexed = ? WHERE id = 1", (upto,))
            w.execute("COMMIT")
        except BaseException:
            if w.in_transaction:
                w.execute("ROLLBACK")
            raise
        return max(indexed, upto), size

    async def _index(self) -> None:
        """Catch the postings up, one chunk per writer job so that appends interleave with a long catch-up."""
        try:
            while True:
                indexed, size = await self._on_writer(self._index_sync)
                self._indexed = indexed
                if indexed >= size or self._closing:
                    return
        except Exception as exc:  # searches stay exact (they scan the unindexed tail); retried a while later
            log.error("audit search postings not updated", extra={"error": repr(exc)})
            self._index_retry_at = asyncio.get_running_loop().time() + _INDEX_RETRY_S

    def _index_soon(self) -> None:
        """After a commit: bring the postings up to date now if ``index_lag`` entries wait, else shortly after the
        appends stop. Never in the caller's way: the postings job queues on the writer's thread after the commit."""
        if self._index_task is not None and not self._index_task.done():
            return
        if self._index_retry_at and asyncio.get_running_loop().time() < self._index_retry_at:
            return  # the last run failed (disk full, I/O error): not again on every append
        if self._size - self._indexed >= self.index_lag:
            if self._index_timer is not None:
                self._index_timer.cancel()
                self._index_timer = None
            self._index_task = asyncio.create_task(self._index(), name="audit-search-postings")
        elif self._index_timer is None and self._size > self._indexed:

            def fire() -> None:
                self._index_timer = None
                if self._writer is not None and (self._index_task is None or self._index_task.done()):
                    self._index_task = asyncio.create_task(self._index(), name="audit-search-postings")

            self._index_timer = asyncio.get_running_loop().call_later(self.index_delay_s, fire)

    async def load_tree(self) -> tuple[int, list[bytes]]:
        def load() -> tuple[int, list[bytes]]:
            w = self._wconn
            w.execute("BEGIN")
            try:
                size = int(w.execute("SELECT tree_size FROM audit_log_state WHERE id = 1").fetchone()[0])
                subtrees = Frontier.subtrees_for(size)
                hashes = self._subtree_hashes_sync(w, subtrees)
            finally:
                w.execute("COMMIT")
            return size, [hashes[st] for st in subtrees]

        size, hashes = await self._on_writer(load)
        self._size = size
        return size, hashes

    async def append(
        self, old_size: int, entries: Sequence[Entry], leaf_hashes: Sequence[bytes], subtrees: Sequence[bytes]
    ) -> None:
        if not (len(entries) == len(leaf_hashes) == len(subtrees)):
            raise ValueError("entries, leaf hashes and subtree hashes differ in number")
        params: list[Any] = []
        extend = params.extend
        for i, (e, h, st) in enumerate(zip(entries, leaf_hashes, subtrees, strict=True), old_size):
            extend((i, e.time, e.actor, e.action, e.target, e.decision, e.data, h, st))
        new_size = old_size + len(entries)
        await self._on_writer(self._append_sync, old_size, new_size, params)
        self._size = new_size
        self._index_soon()

    async def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        await self._on_writer(
            self._wconn.execute,
            "INSERT INTO audit_checkpoints (tree_size, root_hash, note, vkey, issued_at) VALUES (?, ?, ?, ?, ?)",
            (checkpoint.tree_size, checkpoint.root_hash, checkpoint.note, checkpoint.vkey, checkpoint.issued_at),
        )

    # --- reads ----------------------------------------------------------------------------------------

    async def tree_size(self) -> int:
        rows = await self._lookup_rows("SELECT tree_size FROM audit_log_state WHERE id = 1")
        return int(rows[0][0])

    async def entry(self, index: int) -> StoredEntry | None:
        rows = await self._lookup_rows(f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE idx = ?", (index,))  # noqa: S608
        return _entry(rows[0]) if rows else None

    async def entries(self, start: int, end: int) -> list[StoredEntry]:
        rows = await self._fetchall(
            f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx",  # noqa: S608
            (start, end),
        )
        return [_entry(r) for r in rows]

    @staticmethod
    def _subtree_hashes_sync(conn: sqlite3.Connection, subtrees: Sequence[Subtree]) -> dict[Subtree, bytes]:
        wanted = rows_for(subtrees)
        rows: dict[int, tuple[bytes, bytes]] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT idx, leaf_hash, subtrees FROM audit_entries WHERE idx IN ({marks})"  # noqa: S608
            for idx, h, st in conn.execute(sql, chunk).fetchall():
                rows[idx] = (bytes(h), bytes(st))
        return pick_subtrees(subtrees, rows)

    async def subtree_hashes(self, subtrees: Sequence[Subtree]) -> dict[Subtree, bytes]:
        if self._lookup is not None:
            return self._subtree_hashes_sync(self._lookup, subtrees)
        return await self._on_reader(self._subtree_hashes_sync, self._rconn, subtrees)

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
        sql, params = search_sql(query)
        return [_entry(r) for r in await self._fetchall(sql, params)]


def search_sql(query: SearchQuery) -> tuple[str, list[Any]]:
    """One statement — one snapshot — for a search: the postings below ``audit_search_state.indexed`` joined to
    their entries, then the entries above it scanned directly (at most about ``index_lag`` of them)."""
    # Conditions on the entry row's own columns (alias e).
    conds: list[tuple[str, str, list[Any]]] = []  # (field, SQL on e, params)
    for field, value in (("target", query.target), ("actor", query.actor)):
        if value is not None:
            conds.append((field, f"e.{field} = ?", [value]))
    if query.action is not None:
        bounds = action_bounds(query.action)
        if bounds:
            conds.append(("action", "e.action >= ? AND e.action < ?", list(bounds)))
        else:
            conds.append(("action", "e.action = ?", [query.action]))
    times: list[tuple[str, list[Any]]] = []
    if query.since is not None:
        times.append(("e.time >= ?", [query.since]))
    if query.until is not None:
        times.append(("e.time < ?", [query.until]))
    cols = ", ".join(f"e.{c.strip()}" for c in _ENTRY_COLUMNS.split(","))

    if not conds:  # by time (or nothing): the entries table's own indexes
        where = ["e.idx > ?", *(c for c, _ in times)]
        params: list[Any] = [query.after, *(p for _, ps in times for p in ps), query.limit]
        return f"SELECT {cols} FROM audit_entries e WHERE {' AND '.join(where)} ORDER BY e.idx LIMIT ?", params  # noqa: S608

    # Part 1, the postings: walk the most selective field's postings in index order (target, then actor, then
    # action); the other conditions are checked on the joined entry row.
    lead, lead_sql, lead_params = conds[0]
    lead_where = lead_sql.replace("e.", "d.") + " AND d.idx > ?"
    rest = [(c, p) for _, c, p in conds[1:]] + times
    part1 = (
        f"SELECT {cols} FROM audit_search_{lead} d JOIN audit_entries e ON e.idx = d.idx "  # noqa: S608
        f"WHERE {' AND '.join([lead_where, *(c for c, _ in rest)])} ORDER BY d.idx LIMIT ?"
    )
    params1 = [*lead_params, query.after, *(p for _, ps in rest for p in ps), query.limit]
    # Part 2, the unindexed tail: entries at or above the postings' mark, filtered on their columns.
    tail = [c for _, c, _ in conds] + [c for c, _ in times]
    part2 = (
        f"SELECT {cols} FROM audit_entries e WHERE e.idx >= (SELECT indexed FROM audit_search_state WHERE id = 1) "  # noqa: S608
        f"AND e.idx > ? AND {' AND '.join(tail)} ORDER BY e.idx LIMIT ?"
    )
    params2 = [query.after, *(p for _, _, ps in conds for p in ps), *(p for _, ps in times for p in ps), query.limit]
    sql = f"SELECT * FROM ({part1}) UNION ALL SELECT * FROM ({part2}) ORDER BY 1 LIMIT ?"  # noqa: S608
    return sql, [*params1, *params2, query.limit]
