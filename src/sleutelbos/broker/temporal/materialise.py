"""The per-attribute materialisation of the core's history on PostgreSQL (docs/decisions/0600): every attribute
instance of every ``broker_entity_history`` row becomes one ``broker_temporal_instances`` row, so that temporal queries
are index range scans per ``(entity, attribute, time)`` and aggregation is plain SQL ``GROUP BY``. (SQLite keeps its
history in a head and buckets of chunks instead, :mod:`.chunks`, decision 0720.)

It runs off the write path — the core keeps writing one history row per entity change (decision 0502) — and every
temporal read catches up first, so a client reads its own writes; a background task catches up a few times a second.
Each step's progress mark and the rows it inserts commit in one transaction, so a crash repeats nothing and skips
nothing.

Sequence values are handed out in order but committed out of order, so ``seq`` alone cannot be a cursor without
waiting for the writers in flight (formerly ``LOCK TABLE ... IN SHARE MODE``, which every write then waited for).
Every history row records its transaction (``xid``, default ``pg_current_xact_id()``) and the cursor keeps the
snapshot of the last step: a step, in a REPEATABLE READ transaction on the temporal pool's connection, takes the rows
it can see (committed) that the last step's snapshot could not (``NOT pg_visible_in_snapshot``), and stores its own
snapshot. By induction every committed row is taken exactly once, whatever the commit order, and nobody waits for
anybody (docs/decisions/0630). The ``xid`` index range scanned starts at the last snapshot's ``xmin``; a long-running
transaction elsewhere holds that back, so steps re-scan (and skip) the rows since it began until it ends. History
rows from before the ``xid`` column (NULL) are followed by ``seq`` — all were committed before it existed.

Instances recorded as deleted (``deletedAt``) and whole-entity deletions are not instances and are not materialised.
The history rows are taken apart in SQL (``jsonb_each``/``jsonb_array_elements``): the instances whose ``observedAt``
is in the stored form, or in whole seconds or milliseconds in UTC (what meters send; padded in SQL), go from the
history to the instances in one ``INSERT ... SELECT``; only the others come back to Python for ``instant()``
(docs/decisions/0605, 0508).
"""

from __future__ import annotations

import re
from typing import Any, Final

from sleutelbos.broker.database import BrokerDatabase, numbered
from sleutelbos.broker.temporal.background import BackgroundStep
from sleutelbos.broker.temporal.instants import instant

_CANONICAL: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


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
# (the stored form, whole seconds and milliseconds in UTC are brought to the stored form in SQL)
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


class HistoryMaterialiser(BackgroundStep):
    name = "temporal materialiser"

    def __init__(self, db: BrokerDatabase, batch: int = 500, interval_s: float = 0.25) -> None:
        super().__init__(interval_s)
        self.db = db
        self.batch = batch
        self._legacy_done = False

    async def prepare(self) -> None:
        """Nothing to prepare before the broker serves (the SQLite flusher has something, :mod:`.chunks`)."""

    async def _tick(self) -> None:
        await self.catch_up()

    async def catch_up(self) -> int:
        """Materialise every history row committed so far; returns how many history rows were read (on PostgreSQL,
        how many statements did: the new rows' count is not brought back)."""
        async with self._lock:
            return await self._catch_up_postgres()

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
