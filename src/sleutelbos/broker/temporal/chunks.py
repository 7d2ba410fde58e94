"""The attribute history on SQLite, in two tiers (docs/decisions/0720): the head and the chunks.

A meter sends once per 15 minutes, so an index keyed by entity takes every reading on a page of its own, and such an
index keeps getting slower as it outgrows the page cache (docs/decisions/0700). Here nothing keyed by entity grows:

* **Head**: the core's history rows (``broker_entity_history``, one per entity change, decision 0502) newer than the
  last flush, read in place through a ``(tenant, entity_id)`` index on a table that stays about one bucket large.
* **Chunks**: every so often (``broker_temporal_bucket_seconds``, or when the head holds
  ``broker_temporal_head_rows``) :class:`HistoryFlusher` moves the head into a new *bucket*: one row per ``(bucket,
  tenant, entity)`` in ``broker_temporal_chunks`` holding that entity's history rows of the bucket as they are,
  ``[[seq, modifiedAt, {attribute IRI: [instances]}], ...]`` — the core's JSON text concatenated, never taken apart —
  written in key order, so the table only ever grows at its end. ``broker_temporal_buckets`` records per bucket the
  last history ``seq`` it holds (the largest is the flush cursor) and the range of ``observedAt`` and ``modifiedAt``
  in it (the first 19 characters, ``YYYY-MM-DDTHH:MM:SS``: a range of those contains every instant it holds), by
  which a read picks its buckets. Once the bucket is committed the flushed history rows are deleted from the head.

Reads take one entity's head rows and its chunks of the buckets whose time range meets the query's, and take the
attribute's instances apart in SQL (``json_each``), as one statement: it is the common table expression
``broker_temporal_instances`` of :class:`ChunkedHistory`, so that the statements of :class:`.history.AttributeHistory`
(ranges, lastN, aggregation per period, computed in SQL) run on it unchanged. One statement also reads both files
consistently: SQLite opens the read of each database of a statement in the order of the database's number — the
store's file (``main``) before the temporal file — and the flush commits the bucket before it deletes the head rows,
so a read sees either the rows in the head, or the bucket (and its cursor, which hides those rows, when the delete
has not come yet).

An instance's id is ``<history seq>-<attribute>-<index>``: the history row, the attribute's rank among the row's
attribute names, and the instance's place in the attribute's array — the same in the head and in a chunk. Modifying or
deleting a past instance rewrites its history row or its chunk (rare); a deleted instance becomes ``null`` in its
array, so the places of the others do not change. The observedAt of an instance is kept as the client sent it and
brought to the stored form (``instants``) in SQL when read: the forms the broker and meters write by text functions,
the others by ``ngsild_instant`` (Python, registered on the store's connections).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import orjson

from sleutelbos.broker.database import BrokerDatabase
from sleutelbos.broker.temporal.background import BackgroundStep
from sleutelbos.broker.temporal.history import KEEP_SEQUENCE, AttributeHistory, InstanceRow, Slice
from sleutelbos.broker.temporal.instants import instant
from sleutelbos.broker.temporal.query import TemporalQuery

log = logging.getLogger("sleutelbos.broker.temporal")
T = TypeVar("T")

CURSOR: Final = "SELECT COALESCE(MAX(seq_hi), 0) FROM broker_temporal_buckets"
_DIGITS: Final = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
# a deleted attribute's marker in the history (``deletedAt`` without ``type``) is no instance
_INSTANCE: Final = ("e.type = 'object' AND (json_type(e.value, '$.deletedAt') IS NULL"
                    " OR json_type(e.value, '$.type') IS NOT NULL)")


def stored_instant_sql(o: str) -> str:
    """SQL for the stored form of the observedAt text ``o``: the stored form, whole seconds and milliseconds in UTC by
    text functions (what the broker and meters write), every other form by ``ngsild_instant`` (``instants.instant``;
    PostgreSQL's materialiser does the same with a regular expression)."""
    return (f"CASE WHEN {o} IS NULL THEN NULL"
            f" WHEN {o} GLOB '{_DIGITS}.[0-9][0-9][0-9][0-9][0-9][0-9]Z' THEN {o}"
            f" WHEN {o} GLOB '{_DIGITS}Z' THEN substr({o}, 1, 19) || '.000000Z'"
            f" WHEN {o} GLOB '{_DIGITS}.[0-9][0-9][0-9]Z' THEN substr({o}, 1, 23) || '000Z'"
            f" ELSE ngsild_instant({o}) END")


# The first 19 characters of an instant's stored form: UTC forms (ending in Z) have them already.
def _second_sql(o: str) -> str:
    return f"CASE WHEN {o} GLOB '{_DIGITS}*Z' THEN substr({o}, 1, 19) ELSE substr(ngsild_instant({o}), 1, 19) END"


# Rows (seq, modified_at, doc) of one entity: the head (newer than the cursor) and the chunks of the chosen buckets.
# (the head's index named: statistics gathered while the head was small must not turn a read into a scan of it)
_HEAD = ("SELECT h.seq AS seq, h.modified_at AS modified_at, h.instances AS doc FROM broker_entity_history h"  # noqa: S608
         " INDEXED BY broker_entity_history_entity"
         " WHERE h.tenant = ? AND h.entity_id = ? AND h.instances IS NOT NULL AND h.seq > (" + CURSOR + ")")
_CHUNKED = ("SELECT j.value ->> 0, j.value ->> 1, j.value -> 2 FROM broker_temporal_chunks c, json_each(c.body) j"
            " WHERE c.bucket IN (SELECT bucket FROM broker_temporal_buckets WHERE <buckets>)"
            " AND c.tenant = ? AND c.entity_id = ?")

# The flush's write step, a slice of entities at a time: the head rows in (cursor, hi] of the next ``limit`` entities
# after the key (tenant, entity_id) as chunks of bucket ``b``, in key order — read in the order of the head's index,
# which is (tenant, entity_id, seq): no sort — each with the span of its observedAt: the rows' own span columns, or
# for rows written before them (NULL) their JSON's (json_tree; a nested "observedAt" member of a JSON value only
# widens the span). '' is a row without observedAt.
_ROW_SPAN = ("(SELECT {agg}(" + _second_sql("t.value") + ") FROM json_tree(h.instances) t"  # noqa: S608 - constants
             " WHERE t.key = 'observedAt' AND t.type = 'text')")
_FLUSH_CHUNKS = (
    "INSERT INTO broker_temporal_chunks (bucket, tenant, entity_id, observed_lo, observed_hi, body)"  # noqa: S608 - constants
    " SELECT ?, h.tenant, h.entity_id,"
    " MIN(NULLIF(COALESCE(h.observed_lo, " + _ROW_SPAN.format(agg="MIN") + "), '')),"
    " MAX(NULLIF(COALESCE(h.observed_hi, " + _ROW_SPAN.format(agg="MAX") + "), '')),"
    " '[' || group_concat('[' || h.seq || ',\"' || h.modified_at || '\",' || h.instances || ']', ',') || ']'"
    " FROM broker_entity_history h INDEXED BY broker_entity_history_entity"
    " WHERE (h.tenant, h.entity_id) > (?, ?) AND h.seq > ? AND h.seq <= ? AND h.instances IS NOT NULL"
    " AND h.entity_id <> '' GROUP BY h.tenant, h.entity_id ORDER BY h.tenant, h.entity_id LIMIT ?"
    " RETURNING tenant, entity_id, observed_lo, observed_hi")
_FLUSH_MODIFIED = ("SELECT substr(MIN(modified_at), 1, 19), substr(MAX(modified_at), 1, 19) FROM broker_entity_history"
                   " WHERE seq > ? AND seq <= ? AND instances IS NOT NULL AND entity_id <> ''")
_FLUSH_SLICE: Final = 2000  # entities per transaction: a short read of the store's file (its WAL can be reset)
# The flushed rows leave the head in slices (each a short write of the store's file under its lock). The largest
# ``seq`` stays as a keeper row (no entity, no instances): SQLite hands out the largest rowid + 1, and the next
# history row must not get a ``seq`` the cursor has passed.
_DROP_SLICE: Final = 20_000  # rows per transaction: ~50-100 ms of the store's lock at a time
# (the range's bounds as numbers: SQLite takes one upper bound of a rowid range, and with the others as filters it
# would scan every flushed row for every slice)
_DROP_FLUSHED = "DELETE FROM broker_entity_history WHERE seq BETWEEN ? AND ?"
_KEEP_LAST = ("UPDATE broker_entity_history SET tenant = '', entity_id = '', deleted = 1, instances = NULL"
              " WHERE seq = (SELECT MAX(seq) FROM broker_entity_history) AND seq <= ? AND entity_id <> ''")


def _bucket_condition(column: str, low: str | None, high: str | None) -> tuple[str, list[Any]]:
    """The buckets whose range of ``column`` (first 19 characters) meets ``[low, high)`` — every caller's upper bound
    is exclusive, so a bound on a whole second (``...:SS.000000Z``, the usual one) leaves out the bucket that starts
    on it."""
    kind = "observed" if column == "observed_at" else "modified"
    where, params = [f"{kind}_lo IS NOT NULL"], []
    if low is not None:
        where.append(f"{kind}_hi >= substr(?, 1, 19)")
        params.append(low)
    if high is not None:
        where.append(f"{kind}_lo {'<' if high.endswith('.000000Z') else '<='} substr(?, 1, 19)")
        params.append(high)
    return " AND ".join(where), params


def _entity_rows(tenant: str, entity_id: str, buckets: tuple[str, list[Any]]) -> tuple[str, list[Any]]:
    sql = f"{_HEAD} UNION ALL {_CHUNKED.replace('<buckets>', buckets[0])}"
    return sql, [tenant, entity_id, *buckets[1], tenant, entity_id]


def _attr_path(attr: str) -> str:
    return '$."' + attr + '"'  # expanded attribute names are IRIs: no double quote in them


def _key(key: str) -> tuple[int, int, int] | None:
    parts = key.split("-")
    return (int(parts[0]), int(parts[1]), int(parts[2])) if len(parts) == 3 else None


def _is_instance(value: Any) -> bool:
    return isinstance(value, dict) and ("deletedAt" not in value or "type" in value)


class ChunkedHistory(AttributeHistory):
    """:class:`AttributeHistory` over the head and the chunks of one entity (SQLite)."""

    key_column = "iid"

    def _source(self, tenant: str, entity_id: str, attr: str, column: str, low: str | None,
                high: str | None, buckets: Any = None) -> tuple[str, list[Any]]:
        """``buckets``: ``(bucket numbers, newest)`` — those buckets and any newer than ``newest`` — instead of the
        buckets whose time range meets ``[low, high)``."""
        if buckets is None:
            chosen = _bucket_condition(column, low, high)
        else:
            listed, newest = buckets
            chosen = (f"(bucket IN ({', '.join(str(int(b)) for b in listed) or 'NULL'}) OR bucket > ?)", [newest])
        rows, params = _entity_rows(tenant, entity_id, chosen)
        cte = (
            "broker_temporal_instances(tenant, entity_id, attr, seq, iid, dataset_id, observed_at, modified_at,"  # noqa: S608
            " deleted, instance) AS (SELECT ?, ?, ?, x.seq * 1000000 + x.idx,"
            " x.seq || '-' || (SELECT COUNT(*) FROM json_each(x.doc) k WHERE k.key < ?) || '-' || x.idx, x.ds, "
            + stored_instant_sql("x.obs") + ", x.modified_at, 0, x.instance FROM"  # noqa: S608 - constants
            " (SELECT r.seq AS seq, r.modified_at AS modified_at, r.doc AS doc, e.key AS idx, e.value AS instance,"
            " json_extract(e.value, '$.datasetId') AS ds, json_extract(e.value, '$.observedAt') AS obs"
            f" FROM ({rows}) r, json_each(r.doc, ?) e WHERE {_INSTANCE}) x)")
        return cte, [tenant, entity_id, attr, attr, *params, _attr_path(attr)]

    def _key(self, value: Any) -> int | str:
        return str(value)

    async def instances(self, tenant: str, entity_id: str, attr: str, q: TemporalQuery, limit: int) -> Slice:
        """``lastN`` reads the newest buckets first — 24, then four times as many, and so on — and stops once the
        buckets not read cannot hold an instance as new as the Nth (their range ends before its second): the last
        readings of a meter with a year of history are a day's chunks, not a year's."""
        if q.last_n is None:
            return await self._instances(tenant, entity_id, attr, q, limit)
        kind = "observed" if q.time_column == "observed_at" else "modified"
        where, params = _bucket_condition(q.time_column, *self._range(q))
        want = min(q.last_n, limit)
        take = 24
        while True:
            # the newest bucket with the candidates, in one statement: a flush that commits before the read below
            # makes a bucket newer than that, which the read then takes too (its rows have left the head's view)
            found_buckets = await self.db.fetch(
                "SELECT m.v, c.bucket, c.hi FROM"  # noqa: S608 - constants
                " (SELECT COALESCE(MAX(bucket), 0) AS v FROM broker_temporal_buckets) m"
                f" LEFT JOIN (SELECT bucket, {kind}_hi AS hi FROM broker_temporal_buckets WHERE {where}"
                f" ORDER BY {kind}_hi DESC, bucket DESC LIMIT ?) c ON 1", [*params, take + 1])
            newest = int(found_buckets[0][0])
            candidates = [(b, hi) for _, b, hi in found_buckets if b is not None]
            found = await self._instances(tenant, entity_id, attr, q, limit,
                                          ([b for b, _ in candidates[:take]], newest))
            if len(candidates) <= take:
                return found
            rest_hi = candidates[take][1]
            if len(found.rows) >= want and (found.rows[0].time(q.time_column) or "")[:19] > rest_hi:
                return found
            take *= 4

    async def attributes(self, tenant: str, entity_id: str) -> list[str]:
        rows_sql, params = _entity_rows(tenant, entity_id, ("1", []))
        rows = await self.db.fetch(
            f"SELECT DISTINCT a.key FROM ({rows_sql}) r, json_each(r.doc) a WHERE a.type = 'array'"  # noqa: S608
            f" AND a.key <> '' AND EXISTS (SELECT 1 FROM json_each(a.value) e WHERE {_INSTANCE})", params)
        return sorted(r[0] for r in rows)

    async def has_history(self, tenant: str, entity_id: str) -> bool:
        return bool(await self.attributes(tenant, entity_id))

    # --- modification (clauses 5.6.13-5.6.16) -----------------------------------------------------------------
    @asynccontextmanager
    async def _rewriting(self) -> AsyncIterator[_Rewrite]:
        """Exclusive of the flusher's write step and other modifications: on a database file the temporal lock
        (the head's rows are written under the store's lock inside it, the chunks under the temporal lock); on the
        shared in-memory database one write transaction of the store (whose lock the flusher takes too)."""
        if self.db.temporal_apart:
            async with self.db.temporal_lock:
                yield _Rewrite(self.db, None)
        else:
            async with self.db.transaction() as tx:
                yield _Rewrite(self.db, tx)

    async def get_instance(self, tenant: str, entity_id: str, attr: str, key: str) -> InstanceRow | None:
        async with self._rewriting() as rw:
            found = await rw.find(tenant, entity_id, attr, key)
        if found is None:
            return None
        _, _, modified_at, inst = found
        return InstanceRow(key, inst.get("datasetId"), instant(inst.get("observedAt")), modified_at, inst)

    async def replace_instance(self, tenant: str, entity_id: str, attr: str, key: str, instance: dict[str, Any],
                               observed_at: str | None) -> int:
        return await self._set_instance(tenant, entity_id, attr, key, instance, observed_at)

    async def delete_instance(self, tenant: str, entity_id: str, attr: str, key: str) -> int:
        return await self._set_instance(tenant, entity_id, attr, key, None, None)  # null: the others keep places

    async def _set_instance(self, tenant: str, entity_id: str, attr: str, key: str, instance: dict[str, Any] | None,
                            observed_at: str | None) -> int:
        """Instance ``key`` replaced by ``instance`` in its history row or chunk; 1, or 0 if there is none."""
        async with self._rewriting() as rw:
            found = await rw.find(tenant, entity_id, attr, key)
            parsed = _key(key)
            if found is None or parsed is None:
                return 0
            place, doc, _, _ = found
            doc[attr][parsed[2]] = instance
            await rw.save(tenant, entity_id, place, observed_at)
        return 1

    async def delete_attribute(self, tenant: str, entity_id: str, attr: str, dataset_id: str | None,
                               delete_all: bool) -> int:
        removed = 0
        async with self._rewriting() as rw:
            for place in await rw.places(tenant, entity_id):
                changed = 0
                for _, _, doc in place.entries:
                    arr = doc.get(attr)
                    if not isinstance(arr, list):
                        continue
                    for i, inst in enumerate(arr):
                        if _is_instance(inst) and (delete_all or inst.get("datasetId") == dataset_id):
                            arr[i] = None
                            changed += 1
                if changed:
                    await rw.save(tenant, entity_id, place, None)
                    removed += changed
        return removed

    async def delete_entity(self, tenant: str, entity_id: str) -> int:
        """The entity's chunks, then its head rows: two files, so two transactions (docs/decisions/0710). A crash
        between them leaves the newest part of the evolution (the head) readable; a repeated ``DELETE`` finds it and
        completes."""
        async with self._rewriting() as rw:
            removed = await rw.delete_chunks(tenant, entity_id)
            return removed + await self._delete_head(rw, tenant, entity_id)

    async def _delete_head(self, rw: _Rewrite, tenant: str, entity_id: str) -> int:
        """The second step of :meth:`delete_entity` (apart so that tests can fail between)."""
        return await rw.delete_head(tenant, entity_id, self._delete_history_rows)


class _Place:
    """Where some of an entity's history rows are: one head row (``bucket`` None) or one chunk, parsed."""

    def __init__(self, bucket: int | None, seq: int | None, entries: list[list[Any]]) -> None:
        self.bucket = bucket
        self.seq = seq
        self.entries = entries  # [[seq, modified_at, doc], ...]


class _Rewrite:
    """The reads and writes of one modification, on the connections :meth:`ChunkedHistory._rewriting` allows."""

    def __init__(self, db: BrokerDatabase, tx: Any) -> None:
        self.db = db
        self.tx = tx

    async def _fetch(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return await (self.tx.fetch(sql, params) if self.tx is not None else self.db.fetch(sql, params))

    async def find(self, tenant: str, entity_id: str, attr: str,
                   key: str) -> tuple[_Place, dict[str, Any], str, dict[str, Any]] | None:
        """The place of instance ``key`` of the entity's ``attr``, its history row's document (to change in place),
        the row's modifiedAt and the instance; None if there is no such instance."""
        parsed = _key(key)
        if parsed is None:
            return None
        seq, rank, idx = parsed
        cursor = (await self._fetch(CURSOR, []))[0][0]
        if seq > cursor:
            rows = await self._fetch("SELECT modified_at, instances FROM broker_entity_history WHERE seq = ?"
                                     " AND tenant = ? AND entity_id = ? AND instances IS NOT NULL",
                                     [seq, tenant, entity_id])
            if not rows:
                return None
            entry = [seq, rows[0][0], orjson.loads(rows[0][1])]
            place = _Place(None, seq, [entry])
        else:
            rows = await self._fetch(
                "SELECT c.bucket, c.body FROM broker_temporal_chunks c WHERE c.bucket = (SELECT MIN(bucket) FROM"
                " broker_temporal_buckets WHERE seq_hi >= ?) AND c.tenant = ? AND c.entity_id = ?",
                [seq, tenant, entity_id])
            if not rows:
                return None
            place = _Place(int(rows[0][0]), None, orjson.loads(rows[0][1]))
            match = [e for e in place.entries if e[0] == seq]
            if not match:
                return None
            entry = match[0]
        doc = entry[2]
        arr = doc.get(attr)
        if not isinstance(arr, list) or idx >= len(arr) or not _is_instance(arr[idx]):
            return None
        if sum(1 for name in doc if name < attr) != rank:
            return None
        return place, doc, entry[1], arr[idx]

    async def places(self, tenant: str, entity_id: str) -> list[_Place]:
        """Every head row and chunk of the entity."""
        cursor = (await self._fetch(CURSOR, []))[0][0]
        out = [_Place(None, int(seq), [[int(seq), modified_at, orjson.loads(doc)]]) for seq, modified_at, doc in
               await self._fetch("SELECT seq, modified_at, instances FROM broker_entity_history WHERE tenant = ?"
                                 " AND entity_id = ? AND instances IS NOT NULL AND seq > ?",
                                 [tenant, entity_id, cursor])]
        out += [_Place(int(bucket), None, orjson.loads(body)) for bucket, body in await self._fetch(
            "SELECT bucket, body FROM broker_temporal_chunks WHERE bucket IN (SELECT bucket FROM"
            " broker_temporal_buckets) AND tenant = ? AND entity_id = ?", [tenant, entity_id])]
        return out

    async def save(self, tenant: str, entity_id: str, place: _Place, observed_at: str | None) -> None:
        """Write a changed place back; a chunk's bucket widens its observedAt range to hold ``observed_at``."""
        if place.bucket is None:
            doc = orjson.dumps(place.entries[0][2]).decode()
            # the span columns cleared: the flush takes the changed row's span from its JSON
            async with self._head_transaction() as tx:
                await tx.execute("UPDATE broker_entity_history SET instances = ?, observed_lo = NULL,"
                                 " observed_hi = NULL WHERE seq = ?", [doc, place.seq])
            return
        body = orjson.dumps(place.entries).decode()
        key = [place.bucket, tenant, entity_id]
        async with self._chunk_transaction() as tx:
            await tx.execute("UPDATE broker_temporal_chunks SET body = ? WHERE bucket = ? AND tenant = ?"
                             " AND entity_id = ?", [body, *key])
            if observed_at is not None:  # the chunk's and its bucket's span widened to hold the new instant
                second = observed_at[:19]
                widen = ("observed_lo = min(COALESCE(observed_lo, ?1), ?1),"
                         " observed_hi = max(COALESCE(observed_hi, ?1), ?1)")
                await tx.execute(f"UPDATE broker_temporal_chunks SET {widen} WHERE bucket = ?2 AND tenant = ?3"  # noqa: S608 - constants
                                 " AND entity_id = ?4", [second, *key])
                await tx.execute(f"UPDATE broker_temporal_buckets SET {widen} WHERE bucket = ?2",  # noqa: S608 - constants
                                 [second, place.bucket])

    async def delete_chunks(self, tenant: str, entity_id: str) -> int:
        """The entity's chunks; the number of history rows they held."""
        rows = await self._fetch("SELECT COALESCE(SUM(json_array_length(body)), 0) FROM broker_temporal_chunks"
                                 " WHERE bucket IN (SELECT bucket FROM broker_temporal_buckets) AND tenant = ?"
                                 " AND entity_id = ?", [tenant, entity_id])
        async with self._chunk_transaction() as tx:
            await tx.execute("DELETE FROM broker_temporal_chunks WHERE bucket IN (SELECT bucket FROM"
                             " broker_temporal_buckets) AND tenant = ? AND entity_id = ?", [tenant, entity_id])
        return int(rows[0][0])

    async def delete_head(self, tenant: str, entity_id: str, delete_rows: Callable[..., Any]) -> int:
        async with self._head_transaction() as tx:
            return int(await delete_rows(tx, tenant, entity_id))

    @asynccontextmanager
    async def _head_transaction(self) -> AsyncIterator[Any]:
        """The store's file: the modification's own transaction (in-memory database), else one of the store's."""
        if self.tx is not None:
            yield self.tx
            return
        async with self.db.transaction() as tx:
            yield tx

    @asynccontextmanager
    async def _chunk_transaction(self) -> AsyncIterator[Any]:
        """The temporal file: the modification's own transaction (in-memory database), else a temporal one (the
        temporal lock is held by :meth:`ChunkedHistory._rewriting`)."""
        if self.tx is not None:
            yield self.tx
            return
        async with self.db.temporal_transaction(lock_held=True) as tx:
            yield tx


class HistoryFlusher(BackgroundStep):
    """Moves the head into chunks (see the module docstring); the SQLite counterpart of the PostgreSQL
    materialiser, with the same ``prepare``/``start``/``stop``/``catch_up``.

    The write step runs on a thread of its own with its own connection (the temporal file attached), as the
    materialiser's did (docs/decisions/0630): SQLite releases the GIL while it sorts and concatenates, so the step
    runs on the other core. It holds the temporal lock (modifications of past instances wait; the entity writes do
    not: they write the store's file, which the step only reads). The flushed rows then leave the head in short
    slices, each under the store's writer lock. ``bucket_s`` 0 flushes at every :meth:`catch_up` (before every
    temporal read and modification), which the tests use to read everything from chunks."""

    name = "temporal flusher"

    def __init__(self, db: BrokerDatabase, bucket_s: float = 3600.0, head_rows: int = 2_000_000,
                 retention_days: int | None = None, interval_s: float = 0.25) -> None:
        super().__init__(interval_s)
        self.db = db
        self.bucket_s = bucket_s
        self.head_rows = head_rows
        self.retention_days = retention_days
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._retention_checked = 0.0

    async def prepare(self) -> None:
        """Before the broker serves. A cursor past the history's largest ``seq`` (database file: the temporal file
        kept a flush whose head rows' commits the store's file lost, see ``HistoryMaterialiser.prepare``) gets a
        keeper row at the cursor, so that new history rows get larger ``seq``. Rows a flush moved but did not yet
        delete from the head (a stop or a crash between the two, or the migration's bucket 1) are deleted."""
        cursor = await self.db.fetchval(CURSOR)
        if cursor and self.db.temporal_apart:
            async with self.db.transaction() as tx:
                if await tx.execute(KEEP_SEQUENCE, [int(cursor), int(cursor)]):
                    log.warning("temporal cursor %s was past the history's last seq (the store's file lost commits"
                                " the temporal file kept): a keeper row holds that seq", cursor)
        if cursor:
            left = await self.db.fetchval("SELECT COUNT(*) FROM broker_entity_history WHERE seq <= ?"
                                          " AND entity_id <> ''", [int(cursor)])
            if left:  # after the migration's bucket 1 (once), or a flush stopped between its two files
                log.info("%s history rows already in buckets leave the head (before the broker serves)", left)
            async with self._lock:
                await self._drop_flushed()

    async def _release(self) -> None:
        if self._thread is not None:
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
            self._thread.shutdown(wait=True)
            self._thread = None

    async def catch_up(self) -> int:
        """Reads see the head as it is: nothing to wait for, unless every read is to find its rows in chunks."""
        return await self.flush() if self.bucket_s == 0 else 0

    async def _tick(self) -> None:
        if await self.due():
            await self.flush()
        await self._apply_retention()

    async def due(self) -> bool:
        """The head's oldest row is a bucket old, or the head holds ``head_rows`` rows."""
        first, last, oldest = (await self.db.fetch(
            "SELECT (SELECT MIN(seq) FROM broker_entity_history WHERE seq > c.v),"
            " (SELECT MAX(seq) FROM broker_entity_history),"
            " (SELECT modified_at FROM broker_entity_history WHERE seq > c.v AND entity_id <> '' ORDER BY seq LIMIT 1)"
            " FROM (SELECT COALESCE(MAX(seq_hi), 0) AS v FROM broker_temporal_buckets) c"))[0]
        if first is None or oldest is None:  # nothing, or only keeper rows
            return False
        if last - first + 1 >= self.head_rows:
            return True
        age = datetime.now(UTC) - datetime.fromisoformat(str(oldest).replace("Z", "+00:00"))
        return age >= timedelta(seconds=self.bucket_s)

    async def flush(self) -> int:
        """Move the whole head into a new bucket; the number of history rows moved."""
        async with self._lock:
            if self.db.store.path is None:  # the shared in-memory database: the store's writer, under its lock
                async with self.db.store._lock:
                    moved = self._write_step(self.db.store._writer)
            else:
                async with self.db.temporal_lock:
                    moved = await self._on_thread(self._write_step)
            if moved:
                await self._drop_flushed()
            return moved

    async def _drop_flushed(self) -> None:
        """The moved rows out of the head, a slice per transaction of the store's file under its writer lock (the
        entity writes wait for one slice at a time)."""
        while True:
            async with self.db.store._lock:
                if self.db.store.path is None:
                    dropped = self._drop_step(self.db.store._writer)
                else:
                    dropped = await self._on_thread(self._drop_step)
            if not dropped:
                return

    async def _on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="temporal-flusher")

        def run() -> T:
            if self._conn is None:
                self._conn = self.db.store._connect(check_same_thread=False, temporal=True)
                self._conn.execute("PRAGMA temp_store=MEMORY")  # the flush's sort in memory, not a file
            return fn(self._conn)

        return await asyncio.get_running_loop().run_in_executor(self._thread, run)

    @staticmethod
    def _write_step(conn: sqlite3.Connection) -> int:
        """The head rows up to the history's largest ``seq`` as chunks of a new bucket, a slice of entities per
        transaction of the temporal file (each reads the store's file in a short snapshot, so that the entity
        writers' WAL does not grow under one long read), then the bucket's row, which makes them visible and moves the
        cursor: reads take chunks of the buckets in ``broker_temporal_buckets`` only. The caller holds the temporal
        lock, so no other writer changes the head rows up to ``hi`` meanwhile (only modifications do, under that
        lock). Chunks of a bucket left without its row by a flush cut short are deleted first."""
        cursor = conn.execute(CURSOR).fetchone()[0]
        hi, count = conn.execute("SELECT MAX(seq), COUNT(*) FROM broker_entity_history WHERE seq > ?",
                                 (cursor,)).fetchone()
        if not count:
            return 0
        bucket = conn.execute("SELECT COALESCE(MAX(bucket), 0) + 1 FROM broker_temporal_buckets").fetchone()[0]
        try:
            conn.execute("DELETE FROM broker_temporal_chunks WHERE bucket >= ?", (bucket,))
            key, low, high = ("", ""), None, None
            while True:
                conn.execute("BEGIN")
                written = conn.execute(_FLUSH_CHUNKS, (bucket, *key, cursor, hi, _FLUSH_SLICE)).fetchall()
                conn.execute("COMMIT")
                if not written:
                    break
                key = max((row[0], row[1]) for row in written)
                lows = [row[2] for row in written if row[2] is not None]
                highs = [row[3] for row in written if row[3] is not None]
                low = min([*lows, *([low] if low else [])], default=None)
                high = max([*highs, *([high] if high else [])], default=None)
                if len(written) < _FLUSH_SLICE:
                    break
            mod_lo, mod_hi = conn.execute(_FLUSH_MODIFIED, (cursor, hi)).fetchone()
            conn.execute("INSERT INTO broker_temporal_buckets (bucket, seq_hi, observed_lo, observed_hi, modified_lo,"
                         " modified_hi) VALUES (?, ?, ?, ?, ?, ?)", (bucket, hi, low, high, mod_lo, mod_hi))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return int(count)

    @staticmethod
    def _drop_step(conn: sqlite3.Connection) -> int:
        """One slice of flushed rows out of the head — a range of ``seq`` (the table's rowid: no index look per row
        to find them) from the oldest row, up to the cursor, never the last row — in one transaction of the store's
        file (the caller holds the store's writer lock).

        The range is read before the transaction, whose first statement writes: a read inside it would pin a snapshot,
        and a commit of another process (batch workers, decision 0730) would then turn the write into an immediate
        ``SQLITE_BUSY`` instead of a wait for the lock. The values stay true meanwhile: the cursor moves only under the
        flusher's lock, the oldest row only by this step or a deletion (a range over rows gone deletes nothing), and
        the newest only grows."""
        cursor = conn.execute(CURSOR).fetchone()[0]
        low, last = conn.execute("SELECT MIN(seq), MAX(seq) FROM broker_entity_history").fetchone()
        conn.execute("BEGIN")
        try:
            dropped = 0
            if low is not None and low <= cursor:
                dropped = conn.execute(_DROP_FLUSHED, (low, min(low + _DROP_SLICE - 1, cursor, last - 1))).rowcount
            conn.execute(_KEEP_LAST, (cursor,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return int(dropped)

    async def _apply_retention(self) -> None:
        """``broker_temporal_retention_days``: the chunks of buckets whose every change was recorded before the
        horizon are deleted (checked hourly); their bucket rows stay, without a range, so the cursor never falls."""
        if self.retention_days is None or time.monotonic() - self._retention_checked < 3600:
            return
        self._retention_checked = time.monotonic()
        horizon = (datetime.now(UTC) - timedelta(days=self.retention_days)).strftime("%Y-%m-%dT%H:%M:%S")
        await self.drop_before(horizon)

    async def drop_before(self, horizon: str) -> int:
        """Delete the chunks of the buckets recorded wholly before ``horizon`` (``YYYY-MM-DDTHH:MM:SS``)."""
        async with self.db.temporal_transaction() as tx:
            buckets = [r[0] for r in await tx.fetch(
                "SELECT bucket FROM broker_temporal_buckets WHERE modified_hi < ? AND modified_lo IS NOT NULL",
                [horizon])]
            for bucket in buckets:
                await tx.execute("DELETE FROM broker_temporal_chunks WHERE bucket = ?", [bucket])
                await tx.execute("UPDATE broker_temporal_buckets SET observed_lo = NULL, observed_hi = NULL,"
                                 " modified_lo = NULL, modified_hi = NULL WHERE bucket = ?", [bucket])
        if buckets:
            log.info("history buckets dropped by retention", extra={"buckets": buckets})
        return len(buckets)
