"""The per-attribute materialisation of the core's history (docs/decisions/0600): every attribute instance of every
``broker_entity_history`` row becomes one ``broker_temporal_instances`` row, so that temporal queries are index range
scans per ``(entity, attribute, time)`` and aggregation is plain SQL ``GROUP BY``.

It runs off the write path — the core keeps writing one history row per entity change (decision 0502) — and every
temporal read catches up first, so a client reads its own writes; a background task catches up a few times a second.
Each step's progress mark and the rows it inserts commit in one transaction, so a crash repeats nothing and skips
nothing. The steps do not compete with the write path (docs/decisions/0630):

* SQLite (a database file): the step runs on a thread of its own with its own ``sqlite3`` connection — the module
  releases the GIL while SQLite executes, so the SQL (taking the JSON apart, inserting, maintaining two indexes) runs
  on another core than the event loop. The batch's bounds are read, and its instances taken apart into a temporary
  table of that connection, in a read transaction (WAL: no lock; the temporary table is the connection's own,
  decision 0508); the write — copying the staged rows and moving the cursor — takes the temporal tables' writer
  lock, which the event loop awaits as an ``asyncio`` lock (writers queue, the loop keeps serving), and is a single
  ``executescript`` call so that the thread comes back for the GIL once per step, not once per row, while the
  writers wait. The instances and the cursor are in a database file of their own (docs/decisions/0710), attached
  to the step's connection: the write step takes that file's writer lock and ``BrokerDatabase.temporal_lock``, never
  the store's, so the entity writes do not wait for it nor it for them. The single writer of the store's file
  orders the history, so ``seq`` is the cursor. A shared in-memory database (no path) keeps one database and runs
  the step on the store's writer connection under the store's lock.
* PostgreSQL: sequence values are handed out in order but committed out of order, so ``seq`` alone cannot be a cursor
  without waiting for the writers in flight (formerly ``LOCK TABLE ... IN SHARE MODE``, which every write then waited
  for). Every history row records its transaction (``xid``, default ``pg_current_xact_id()``) and the cursor keeps
  the snapshot of the last step: a step, in a REPEATABLE READ transaction on the temporal pool's connection, takes
  the rows it can see (committed) that the last step's snapshot could not (``NOT pg_visible_in_snapshot``), and
  stores its own snapshot. By induction every committed row is taken exactly once, whatever the commit order, and
  nobody waits for anybody. The ``xid`` index range scanned starts at the last snapshot's ``xmin``; a long-running
  transaction elsewhere holds that back, so steps re-scan (and skip) the rows since it began until it ends.
  History rows from before the ``xid`` column (NULL) are followed by ``seq`` — all were committed before it existed.

Instances recorded as deleted (``deletedAt``) and whole-entity deletions are not instances and are not materialised.
The history rows are taken apart in SQL (SQLite ``json_each``, PostgreSQL ``jsonb_each``/``jsonb_array_elements``):
the instances whose ``observedAt`` is in the stored form, or in whole seconds or milliseconds in UTC (what meters
send; padded in SQL), go from the history to the instances in one ``INSERT ... SELECT``; only the others come back to
Python for ``instant()`` (docs/decisions/0605, 0630, 0508).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from sleutelbos.broker.database import BrokerDatabase, numbered
from sleutelbos.broker.temporal.history import KEEP_SEQUENCE
from sleutelbos.broker.temporal.instants import instant

log = logging.getLogger("sleutelbos.broker.temporal")

_CANONICAL: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
T = TypeVar("T")

# One row per instance of the selected history rows, in history and document order, without the markers of deleted
# attributes (``deletedAt`` and no ``type``).
_SQLITE_INSTANCES = (
    " FROM broker_entity_history h, json_each(CAST(h.instances AS TEXT)) a, json_each(a.value) i"
    " WHERE h.seq > ? AND h.seq <= ? AND h.instances IS NOT NULL AND a.type = 'array'"
    " AND (json_type(i.value, '$.deletedAt') IS NULL OR json_type(i.value, '$.type') IS NOT NULL)")
_SQLITE_COLUMNS = ("SELECT h.seq, h.tenant, h.entity_id, a.key, json_extract(i.value, '$.datasetId'),"
                   " json_extract(i.value, '$.observedAt'), h.modified_at, i.value")
_SQLITE_ORDER = " ORDER BY h.seq, a.id, i.id"
_COLUMNS = "history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at, instance"
# The step's instances are first staged in a temporary table of the step's own connection (``temp`` is a database of
# that connection alone: writing it takes no lock on the broker's file), in the read step, without the writer lock:
# taking the history JSON apart is most of a step's SQL, and the writers do not wait for it. One ``INSERT ... SELECT``
# (SQLite's C code, GIL released) stages every instance with its ``observedAt`` as sent, in one pass over the JSON
# (docs/decisions/0631: a second explode for the other forms and a GLOB per form on ``json_extract`` cost more than
# the explode itself).
_CREATE_STAGING_SQLITE = "CREATE TEMP TABLE IF NOT EXISTS broker_temporal_staging (" + _COLUMNS + ")"
_CLEAR_STAGING_SQLITE = "DELETE FROM temp.broker_temporal_staging"
_STAGE_SQLITE = ("INSERT INTO temp.broker_temporal_staging (" + _COLUMNS + ") "
                 + _SQLITE_COLUMNS + _SQLITE_INSTANCES + _SQLITE_ORDER)
# The observedAt forms that SQL brings to the stored form ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` itself, in SQLite's C code
# (GLOB: no Python): the stored form, whole seconds ``...SSZ`` and milliseconds ``...SS.fffZ`` in UTC — what meters
# and most clients send (the broker keeps a client's observedAt as sent in the instance). These strings passed
# ``validation.check_datetime`` (``datetime.fromisoformat``) on the way in, so the digits are a valid date-time and
# padding the fraction is exactly what ``instants.instant`` makes of them. The staged rows in another form (offsets,
# other precisions; none the broker writes itself) are found on the staging table's plain text column — no JSON —
# and brought to the stored form by ``instant()`` in Python, in the read step.
_DIGITS_TO_SECONDS = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
_STAGED_STORED_FORM = (
    f"(observed_at IS NULL OR (typeof(observed_at) = 'text'"
    f" AND (observed_at GLOB '{_DIGITS_TO_SECONDS}.[0-9][0-9][0-9][0-9][0-9][0-9]Z'"
    f" OR observed_at GLOB '{_DIGITS_TO_SECONDS}Z'"
    f" OR observed_at GLOB '{_DIGITS_TO_SECONDS}.[0-9][0-9][0-9]Z')))")
# They are taken out and staged again after the others — as the stored forms' rows went in first before (decision
# 0630) and still do on PostgreSQL, so that instance ids, the tie-break of equal instants, come out the same.
_STAGED_OTHER_FORMS = ("DELETE FROM temp.broker_temporal_staging WHERE NOT "  # noqa: S608 - constants
                       + _STAGED_STORED_FORM + " RETURNING rowid, " + _COLUMNS)
_RESTAGE_SQLITE = ("INSERT INTO temp.broker_temporal_staging (" + _COLUMNS  # noqa: S608 - constants
                   + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
# the stored form of a staged observedAt (by length: 20 or 24 characters are the whole seconds and milliseconds forms
# that passed _STAGED_STORED_FORM; every other staged value is in the stored form or NULL by then)
_STORED_OBSERVED_SQLITE = (
    "CASE length(observed_at) WHEN 20 THEN substr(observed_at, 1, 19) || '.000000Z'"
    " WHEN 24 THEN substr(observed_at, 1, 23) || '000Z' ELSE observed_at END")
# The write step, under the temporal lock: copy the staged rows, move the cursor, commit — one ``executescript`` (one
# return to Python for the GIL). Rows of a history row deleted since it was staged (``DELETE /temporal/entities``
# between the two steps) are left out: the history row is the truth.
# ``BEGIN`` (deferred), not ``BEGIN IMMEDIATE``, which would take the write lock of every attached database — the
# store's file too: the INSERT is the transaction's first statement, and takes the write lock of the file it writes
# (the temporal file; the store's file is only read, in a WAL snapshot) when it starts.
_MATERIALISE_SQLITE_SCRIPT = (
    "BEGIN; INSERT INTO broker_temporal_instances (history_seq, tenant, entity_id, attr, dataset_id,"  # noqa: S608
    " observed_at, modified_at, instance) SELECT history_seq, tenant, entity_id, attr, dataset_id, "
    + _STORED_OBSERVED_SQLITE + ", modified_at, instance FROM temp.broker_temporal_staging s"
    " WHERE EXISTS (SELECT 1 FROM broker_entity_history h WHERE h.seq = s.history_seq) ORDER BY s.rowid;"
    " UPDATE broker_temporal_cursor SET seq = <hi> WHERE name = 'history'; COMMIT;")


_EXPLODE_POSTGRES = (
    "SELECT h.seq, h.tenant, h.entity_id, a.key, i.value->>'datasetId', i.value->>'observedAt', h.modified_at,"
    " i.value::text"
    " FROM broker_entity_history h, jsonb_each(h.instances) WITH ORDINALITY a(key, value, n),"
    " jsonb_array_elements(a.value) WITH ORDINALITY i(value, n)"
    " WHERE <rows> AND h.instances IS NOT NULL AND jsonb_typeof(a.value) = 'array'"
    " AND (NOT jsonb_exists(i.value, 'deletedAt') OR jsonb_exists(i.value, 'type'))"
    " ORDER BY h.seq, a.n, i.n")


# Rows committed since the last step's snapshot ($1), and the legacy rows (no xid) past the seq cursor ($1, $2).
_NEW_ROWS = ("h.xid >= pg_snapshot_xmin($1::text::pg_snapshot)"
             " AND NOT pg_visible_in_snapshot(h.xid, $1::text::pg_snapshot)")
# The new rows' instances go from the history to the instances in one statement when their observedAt is already in
# the stored form (what the broker writes): no row per instance through the broker's process and back. The others
# (none the broker writes itself) come back for ``instant()``.
# (as _STAGED_STORED_FORM: the stored form, whole seconds and milliseconds in UTC are brought to the stored form in SQL)
_STORED_FORM_SQL = r"(x.obs IS NULL OR x.obs ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6}|\.\d{3}|)Z$')"
_STORED_OBSERVED_SQL = ("CASE length(x.obs) WHEN 20 THEN left(x.obs, 19) || '.000000Z'"
                        " WHEN 24 THEN left(x.obs, 23) || '000Z' ELSE x.obs END")
_MATERIALISE_POSTGRES_NEW = (
    "WITH x AS MATERIALIZED (SELECT h.seq, h.tenant, h.entity_id, a.key, i.value->>'datasetId' AS ds,"
    " i.value->>'observedAt' AS obs, h.modified_at, i.value AS inst, a.n AS an, i.n AS ino"
    " FROM broker_entity_history h, jsonb_each(h.instances) WITH ORDINALITY a(key, value, n),"
    " jsonb_array_elements(a.value) WITH ORDINALITY i(value, n)"
    " WHERE <rows> AND h.instances IS NOT NULL AND jsonb_typeof(a.value) = 'array'"
    " AND (NOT jsonb_exists(i.value, 'deletedAt') OR jsonb_exists(i.value, 'type'))),"
    " ins AS (INSERT INTO broker_temporal_instances (history_seq, tenant, entity_id, attr, dataset_id, observed_at,"
    " modified_at, instance) SELECT x.seq, x.tenant, x.entity_id, x.key, x.ds, <observed>, x.modified_at, x.inst"
    " FROM x WHERE <stored> ORDER BY x.seq, x.an, x.ino)"
    " SELECT x.seq, x.tenant, x.entity_id, x.key, x.ds, x.obs, x.modified_at, x.inst::text FROM x"
    " WHERE NOT <stored> ORDER BY x.seq, x.an, x.ino"
).replace("<rows>", _NEW_ROWS).replace("<stored>", _STORED_FORM_SQL).replace("<observed>", _STORED_OBSERVED_SQL)
_EXPLODE_POSTGRES_LEGACY = _EXPLODE_POSTGRES.replace("<rows>", "h.xid IS NULL AND h.seq > $1 AND h.seq <= $2")
# scalar subqueries, not a join: their values are index keys of the xid index (one short index look per partition)
_PENDING_POSTGRES = (
    "SELECT EXISTS (SELECT 1 FROM broker_entity_history h"
    " WHERE h.xid >= pg_snapshot_xmin((SELECT snap::pg_snapshot FROM broker_temporal_cursor WHERE name = 'history'))"
    " AND NOT pg_visible_in_snapshot(h.xid,"
    " (SELECT snap::pg_snapshot FROM broker_temporal_cursor WHERE name = 'history')))")
_LEGACY_BOUNDS = (
    "SELECT (SELECT seq FROM broker_temporal_cursor WHERE name = 'history'), MAX(seq), COUNT(*) FROM"
    " (SELECT seq FROM broker_entity_history WHERE xid IS NULL AND seq >"
    " (SELECT seq FROM broker_temporal_cursor WHERE name = 'history') ORDER BY seq LIMIT $1) s")


def _stored_instant(value: str | None) -> str | None:
    return value if value is None or _CANONICAL.fullmatch(value) else instant(value)


def _instance_rows(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [(r[0], r[1], r[2], r[3], r[4], _stored_instant(r[5]), r[6], r[7]) for r in rows]


INSERT = ("INSERT INTO broker_temporal_instances (history_seq, tenant, entity_id, attr, dataset_id, observed_at,"
          " modified_at, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_CURSOR = "SELECT seq FROM broker_temporal_cursor WHERE name = 'history'"


class HistoryMaterialiser:
    def __init__(self, db: BrokerDatabase, batch: int = 500, interval_s: float = 0.25) -> None:
        self.db = db
        self.batch = batch
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._legacy_done = False
        # SQLite database file: the step's own connection, used only on the step's own thread
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def prepare(self) -> None:
        """Before the broker serves (SQLite database file): the history's ``seq`` beyond the cursor.

        The cursor (in the temporal file) and the history (in the store's file) are committed by two files. With
        ``synchronous=NORMAL`` a power loss or an OS crash — not a process crash: a commit is in the OS's page cache
        before it returns — can keep a materialiser step in the temporal file and lose the history rows it took in
        the store's file. The cursor is then past the largest ``seq``, and SQLite would hand those ``seq`` out again
        to new history rows that the cursor is already past. A keeper row at the cursor's ``seq`` (no instances)
        makes the next history row's ``seq`` larger than the cursor (docs/decisions/0710)."""
        if not self.db.temporal_apart:
            return
        cursor = await self.db.fetchval(_CURSOR)
        if cursor:
            async with self.db.transaction() as tx:
                if await tx.execute(KEEP_SEQUENCE, [int(cursor), int(cursor)]):
                    log.warning("temporal cursor %s was past the history's last seq (the store's file lost commits"
                                " the temporal file kept): a keeper row holds that seq", cursor)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="temporal materialiser")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._lock:  # a catch-up in flight finishes on the thread before its connection closes
            if self._thread is not None:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
                self._thread.shutdown(wait=True)
                self._thread = None

    async def _follow(self) -> None:
        while True:
            try:
                await self.catch_up()
            except Exception:
                log.exception("temporal materialisation step failed")
            await asyncio.sleep(self.interval_s)

    async def catch_up(self) -> int:
        """Materialise every history row committed so far; returns how many history rows were read (on PostgreSQL,
        how many statements did: the new rows' count is not brought back)."""
        async with self._lock:
            if self.db.dialect == "postgresql":
                return await self._catch_up_postgres()
            return await self._catch_up_sqlite()

    # --- SQLite -------------------------------------------------------------------------------------------------
    async def _on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the step's thread with the step's connection (created there on first use)."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="temporal-materialiser")

        def run() -> T:
            if self._conn is None:  # the temporal file attached (docs/decisions/0710)
                self._conn = self.db.store._connect(check_same_thread=False, temporal=True)
                self._conn.execute("PRAGMA temp_store=MEMORY")  # the staging table (below) in memory, not a file
            return fn(self._conn)

        return await asyncio.get_running_loop().run_in_executor(self._thread, run)

    async def _catch_up_sqlite(self) -> int:
        store = self.db.store
        in_memory = store.path is None
        total = 0
        if not in_memory:
            # a first look on the loop with the reader connection (microseconds): when nothing is new, a temporal
            # read does not pay the hand-off to the step's thread and back
            cursor, latest = (await self.db.fetch(
                "SELECT (SELECT seq FROM broker_temporal_cursor WHERE name = 'history'),"
                " (SELECT MAX(seq) FROM broker_entity_history)"))[0]
            if latest is None or latest <= cursor:
                return 0
        while True:
            if in_memory:  # a shared in-memory database: the writer connection, under the writer lock
                async with store._lock:
                    found = self._read_step(store._writer)
                    if found[2]:
                        self._write_step(*found, store._writer)
            else:
                found = await self._on_thread(self._read_step)
                if found[2]:
                    # the temporal file's writers queue on the asyncio lock; the loop stays free, and the entity
                    # writers, on the store's lock and file, do not wait at all
                    async with self.db.temporal_lock:
                        await self._on_thread(functools.partial(self._write_step, *found))
            total += found[2]
            if found[2] < self.batch:
                return total
            await asyncio.sleep(0)

    def _read_step(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """The next batch's bounds, its instances staged in the connection's temporary table (the stored-form ones
        by SQL, the others through ``instant()``), in one read transaction of the broker's file (WAL: no writer
        lock; the temporary table is the connection's own)."""
        conn.execute(_CREATE_STAGING_SQLITE)
        conn.execute(_CLEAR_STAGING_SQLITE)  # a failed write step's leftovers
        conn.execute("BEGIN")
        try:
            cursor = conn.execute(_CURSOR).fetchone()[0]
            upper, count = conn.execute(
                "SELECT MAX(seq), COUNT(*) FROM (SELECT seq FROM broker_entity_history WHERE seq > ? ORDER BY seq"
                " LIMIT ?) s", (cursor, self.batch)).fetchone()
            if count:
                conn.execute(_STAGE_SQLITE, (cursor, upper))
                other = sorted(conn.execute(_STAGED_OTHER_FORMS).fetchall())  # RETURNING's order is unspecified
                if other:
                    conn.executemany(_RESTAGE_SQLITE, _instance_rows([row[1:] for row in other]))
        finally:
            conn.execute("COMMIT")
        return int(cursor), int(upper or 0), int(count)

    @staticmethod
    def _write_step(cursor: int, upper: int, count: int, conn: sqlite3.Connection) -> None:
        """Copy the staged instances of the history rows in (cursor, upper] and move the cursor in one write
        transaction of the file that holds both (the caller holds the temporal lock, and only this materialiser
        moves the cursor). The instances of history rows deleted since they were staged are left out: the check
        reads the store's file in this transaction's snapshot, and ``DELETE /temporal/entities`` deletes the
        history rows while holding the temporal lock (``AttributeHistory.delete_entity``), so that snapshot is
        either before that delete began or after it ended.

        One ``executescript`` call: the writers wait for this step, and every return from SQLite to Python on this
        thread has to take the GIL back from the event loop (up to the interpreter's switch interval), so the step
        makes one call. ``upper`` is an integer."""
        try:
            conn.executescript(_MATERIALISE_SQLITE_SCRIPT.replace("<hi>", str(int(upper))))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # --- PostgreSQL ---------------------------------------------------------------------------------------------
    async def _catch_up_postgres(self) -> int:
        total = 0
        if not self._legacy_done:
            total += await self._legacy_postgres()
            self._legacy_done = True
        if not await self.db.fetchval(_PENDING_POSTGRES):  # one index probe when nothing is new
            return total
        async with self.db.connection() as conn, conn.transaction(isolation="repeatable_read"):
            # A plan for this step's snapshot, not the read pool's generic one (decision 0633): with the snapshot a
            # parameter the planner cannot see that the xid range is the last fraction of a second, and the generic
            # plan scans the whole history partition (in parallel) on every step. SET takes no snapshot.
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            # the first statement that reads fixes the transaction's snapshot: the one recorded is the one the rows
            # are read in
            snap, prev = await conn.fetchrow(
                "SELECT pg_current_snapshot()::text, snap FROM broker_temporal_cursor WHERE name = 'history'")
            rest = _instance_rows(await conn.fetch(_MATERIALISE_POSTGRES_NEW, prev))
            if rest:
                await conn.executemany(numbered(INSERT), rest)
            await conn.execute("UPDATE broker_temporal_cursor SET snap = $1 WHERE name = 'history'", snap)
        return total + 1

    async def _legacy_postgres(self) -> int:
        """History rows written before the ``xid`` column (all committed before it existed), by ``seq``."""
        total = 0
        while True:
            async with self.db.connection() as conn, conn.transaction():
                cursor, upper, count = await conn.fetchrow(_LEGACY_BOUNDS, self.batch)
                if not count:
                    return total
                out = _instance_rows(await conn.fetch(_EXPLODE_POSTGRES_LEGACY, cursor, upper))
                if out:
                    await conn.executemany(numbered(INSERT), out)
                await conn.execute("UPDATE broker_temporal_cursor SET seq = $1 WHERE name = 'history'", int(upper))
            total += int(count)
