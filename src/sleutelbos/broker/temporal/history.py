"""SQL over the materialised attribute history (PostgreSQL's ``broker_temporal_instances``, :mod:`.materialise`; on
SQLite the same statements over the head and chunks, :mod:`.chunks`) for the
temporal API: instance ranges, lastN, aggregation per period — all computed in the database (SQLite or
PostgreSQL), never by loading the instances into Python — and the modification
of single instances (clauses 5.6.12-5.6.16).

Each statement addresses one ``(tenant, entity_id, attr)`` and a time range on the indexed ``observed_at`` or
``modified_at`` column, so it is an index range scan; aggregation joins the instances with a small ``VALUES`` table of
periods (computed in Python, calendar-aware: ``P1M`` periods are real months) and groups by period.

An instance's ``instanceId`` is ``urn:ngsi-ld:Instance:<seq>`` where ``seq`` is the row's sequence number (on
PostgreSQL; on SQLite the history is kept in chunks, :mod:`.chunks`, whose instance ids name the history row, the
attribute's rank in it and the instance's place in the attribute: ``urn:ngsi-ld:Instance:<seq>-<rank>-<index>``).

Every read statement names ``broker_temporal_instances``; :meth:`AttributeHistory._source` may define a common table
expression of that name (with the table's columns) for the one entity and attribute a statement reads, which is how
the SQLite chunks are read by the same statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from sleutelbos.broker.database import BrokerDatabase
from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.temporal.query import TemporalQuery

INSTANCE_PREFIX: Final = "urn:ngsi-ld:Instance:"
_INSTANCE_RE: Final = re.compile(r"^urn:ngsi-ld:Instance:(\d{1,18}(?:-\d{1,9}-\d{1,9})?)$")


# A history row that holds a ``seq`` and nothing else (SQLite): no tenant, no entity (``''`` is no entity id), no
# instances (the flush takes nothing from it), inserted only when no row has that ``seq`` or a larger one.
KEEP_SEQUENCE = ("INSERT INTO broker_entity_history (seq, tenant, entity_id, modified_at, deleted, instances)"
                 " SELECT ?, '', '', '', 1, NULL WHERE NOT EXISTS (SELECT 1 FROM broker_entity_history WHERE seq >= ?)")


def instance_id(key: int | str) -> str:
    return f"{INSTANCE_PREFIX}{key}"


def instance_key(raw: str) -> str:
    """The part of an ``instanceId`` after the prefix (a number, or three numbers joined by ``-``); BadRequestData if
    the id has neither form. Which of the two names an instance is the history's to say (not found otherwise)."""
    match = _INSTANCE_RE.match(raw)
    if match is None:
        raise BadRequestData(f"instanceId must look like {INSTANCE_PREFIX}<number> or"
                             f" {INSTANCE_PREFIX}<number>-<number>-<number>, got {raw!r}")
    return match.group(1)


@dataclass(frozen=True)
class InstanceRow:
    key: int | str  # what follows the prefix in the instance's id
    dataset_id: str | None
    observed_at: str | None
    modified_at: str
    instance: dict[str, Any]

    def time(self, column: str) -> str | None:
        return self.observed_at if column == "observed_at" else self.modified_at


@dataclass
class Slice:
    """The instances of one attribute in time order, and whether more matched than were returned."""

    rows: list[InstanceRow]
    truncated: bool


def _json(value: Any) -> Any:
    return value if isinstance(value, dict | list) or value is None else orjson.loads(value)


class AttributeHistory:
    #: the column a read selects as the instance's key (``instanceId`` without its prefix)
    key_column = "seq"

    def __init__(self, db: BrokerDatabase) -> None:
        self.db = db
        self.pg = db.dialect == "postgresql"

    def _not_deleted(self) -> str:
        return "NOT deleted" if self.pg else "deleted = 0"

    def _source(self, tenant: str, entity_id: str, attr: str, column: str, low: str | None,
                high: str | None, buckets: Any = None) -> tuple[str, list[Any]]:
        """A common table expression ``broker_temporal_instances AS (...)`` (and its parameters) in place of the table,
        for a read of one entity's attribute whose ``column`` times lie in ``[low, high)`` (None: unbounded) — or
        in the given ``buckets`` of chunks — or ``("", [])`` to read the table itself."""
        return "", []

    def _with(self, source: tuple[str, list[Any]], *more: str) -> str:
        ctes = [c for c in (source[0], *more) if c]
        return f"WITH {', '.join(ctes)} " if ctes else ""

    def _key(self, value: Any) -> int | str:
        return int(value)

    def _time_filter(self, q: TemporalQuery, col: str) -> tuple[str, list[Any]]:
        if q.timerel == "before":
            return f" AND {col} < ?", [q.time_at]
        if q.timerel == "after":
            return f" AND {col} > ?", [q.time_at]
        if q.timerel == "between":
            return f" AND {col} >= ? AND {col} < ?", [q.time_at, q.end_time_at]
        return f" AND {col} IS NOT NULL", []

    @staticmethod
    def _range(q: TemporalQuery) -> tuple[str | None, str | None]:
        if q.timerel == "before":
            return None, q.time_at
        if q.timerel == "after":
            return q.time_at, None
        if q.timerel == "between":
            return q.time_at, q.end_time_at
        return None, None

    async def instances(self, tenant: str, entity_id: str, attr: str, q: TemporalQuery, limit: int) -> Slice:
        """Up to ``limit`` instances in time order: the first ones, or with ``lastN`` the last N (≤ limit)."""
        return await self._instances(tenant, entity_id, attr, q, limit)

    async def _instances(self, tenant: str, entity_id: str, attr: str, q: TemporalQuery, limit: int,
                         buckets: Any = None) -> Slice:
        col = q.time_column
        where, params = self._time_filter(q, col)
        descending = q.last_n is not None
        take = min(q.last_n, limit) if q.last_n is not None else limit
        source = self._source(tenant, entity_id, attr, col, *self._range(q), buckets=buckets)
        sql = (f"{self._with(source)}SELECT {self.key_column}, dataset_id, observed_at, modified_at, instance"  # noqa: S608
               f" FROM broker_temporal_instances"
               f" WHERE tenant = ? AND entity_id = ? AND attr = ? AND {self._not_deleted()}{where}"
               f" ORDER BY {col} {'DESC' if descending else 'ASC'}, seq {'DESC' if descending else 'ASC'} LIMIT ?")
        rows = await self.db.fetch(sql, [*source[1], tenant, entity_id, attr, *params, take + 1])
        truncated = len(rows) > take
        rows = rows[:take]
        if descending:
            rows.reverse()
            truncated = truncated and (q.last_n or 0) > take
        return Slice([InstanceRow(self._key(r[0]), r[1], r[2], r[3], _json(r[4])) for r in rows], truncated)

    async def attributes(self, tenant: str, entity_id: str) -> list[str]:
        """Every attribute with history for the entity (used when the entity is gone and ``attrs`` not given)."""
        rows = await self.db.fetch(
            "SELECT DISTINCT attr FROM broker_temporal_instances WHERE tenant = ? AND entity_id = ? AND attr <> ''",
            [tenant, entity_id])
        return sorted(r[0] for r in rows)

    async def has_history(self, tenant: str, entity_id: str) -> bool:
        return bool(await self.db.fetch(
            "SELECT 1 FROM broker_temporal_instances WHERE tenant = ? AND entity_id = ? LIMIT 1", [tenant, entity_id]))

    async def bounds(self, tenant: str, entity_id: str, attr: str, q: TemporalQuery) -> tuple[str | None, str | None]:
        col = q.time_column
        where, params = self._time_filter(q, col)
        source = self._source(tenant, entity_id, attr, col, *self._range(q))
        rows = await self.db.fetch(
            f"{self._with(source)}SELECT MIN({col}), MAX({col}) FROM broker_temporal_instances"  # noqa: S608
            f" WHERE tenant = ? AND entity_id = ? AND attr = ? AND {self._not_deleted()}{where}",
            [*source[1], tenant, entity_id, attr, *params])
        return (rows[0][0], rows[0][1]) if rows else (None, None)

    def _value_exprs(self) -> tuple[str, str]:
        """The numeric value (NULL when not a number) and the text used by distinctCount, of instance row ``i``."""
        if self.pg:
            return ("(CASE WHEN jsonb_typeof(i.instance->'value') = 'number' THEN (i.instance->>'value')::float8 END)",
                    "COALESCE(i.instance->'value', i.instance->'object')::text")
        return ("(CASE WHEN json_type(i.instance, '$.value') IN ('integer', 'real')"
                " THEN json_extract(i.instance, '$.value') END)",
                "COALESCE(json_extract(i.instance, '$.value'), json_extract(i.instance, '$.object'))")

    def _aggregate_exprs(self, methods: list[str], num: str | None = None, text: str | None = None) -> list[str]:
        """The aggregate per method over ``num``/``text`` (by default the value expressions of instance row ``i``)."""
        default_num, default_text = self._value_exprs()
        num, text = num or default_num, text or default_text
        std = f"stddev_pop({num})" if self.pg else f"sqrt(max(avg({num} * {num}) - avg({num}) * avg({num}), 0.0))"
        exprs = {"totalCount": "COUNT(*)", "distinctCount": f"COUNT(DISTINCT {text})", "sum": f"SUM({num})",
                 "avg": f"AVG({num})", "min": f"MIN({num})", "max": f"MAX({num})", "stddev": std,
                 "sumsq": f"SUM({num} * {num})"}
        return [exprs[m] for m in methods]

    async def aggregate(self, tenant: str, entity_id: str, attr: str, periods: list[tuple[str, str]],
                        methods: list[str], column: str,
                        fixed_s: float | None = None) -> list[tuple[str, str, list[Any]]]:
        """``[(from, to, [value per method]), ...]`` for the periods that hold instances, in period order.

        Periods of a fixed length (``fixed_s`` seconds: days, hours, minutes) are one index range scan grouped by
        the period number computed in SQL; calendar periods (months, years) join a ``VALUES`` table of periods."""
        if not periods:
            return []
        source = self._source(tenant, entity_id, attr, column, periods[0][0], periods[-1][1])
        if fixed_s is not None:
            return await self._aggregate_fixed(tenant, entity_id, attr, periods, methods, column, fixed_s, source)
        if self.pg:
            values = ", ".join("(?::int, ?::text COLLATE \"C\", ?::text COLLATE \"C\")" if i == 0 else "(?, ?, ?)"
                               for i in range(len(periods)))
        else:
            values = ", ".join("(?, ?, ?)" for _ in periods)
        params: list[Any] = []
        for n, (start, end) in enumerate(periods):
            params += [n, start, end]
        exprs = ", ".join(self._aggregate_exprs(methods))
        sql = (f"{self._with(source, f'p(idx, ps, pe) AS (VALUES {values})')}"  # noqa: S608 - names from here
               f"SELECT p.idx, p.ps, p.pe, {exprs} FROM p JOIN broker_temporal_instances i"
               f" ON i.tenant = ? AND i.entity_id = ? AND i.attr = ? AND i.{column} >= p.ps AND i.{column} < p.pe"
               f" AND {'NOT i.deleted' if self.pg else 'i.deleted = 0'}"
               f" GROUP BY p.idx, p.ps, p.pe ORDER BY p.idx")
        rows = await self.db.fetch(sql, [*source[1], *params, tenant, entity_id, attr])
        return [(r[1], r[2], list(r[3:])) for r in rows]

    async def _aggregate_fixed(self, tenant: str, entity_id: str, attr: str, periods: list[tuple[str, str]],
                               methods: list[str], column: str, seconds: float,
                               source: tuple[str, list[Any]]) -> list[tuple[str, str, list[Any]]]:
        start, end = periods[0][0], periods[-1][1]
        if self.pg:
            bucket = f"floor(extract(epoch from (i.{column}::timestamptz - ?::text::timestamptz)) / ?::float8)::int"
        else:
            bucket = f"CAST((julianday(i.{column}) - julianday(?)) * 86400.0 / ? + 1e-7 AS INTEGER)"
        where = (f"i.tenant = ? AND i.entity_id = ? AND i.attr = ? AND i.{column} >= ? AND i.{column} < ?"
                 f" AND {'NOT i.deleted' if self.pg else 'i.deleted = 0'}")
        if self.pg:
            # The value is extracted from the JSON once per row in a subquery kept apart by OFFSET 0 (flattened,
            # PostgreSQL would extract it again for every aggregate that names it: 17 ms instead of 28 ms for a
            # month of 96 readings a day).
            num, text = self._value_exprs()
            needs_text = "distinctCount" in methods
            exprs = ", ".join(self._aggregate_exprs(methods, "s.v", "s.t"))
            sql = (f"SELECT s.b, {exprs} FROM (SELECT {bucket} AS b, {num} AS v"  # noqa: S608 - names from here
                   f"{f', {text} AS t' if needs_text else ''} FROM broker_temporal_instances i WHERE {where}"
                   f" OFFSET 0) s GROUP BY s.b ORDER BY s.b")
        else:
            exprs = ", ".join(self._aggregate_exprs(methods))
            sql = (f"{self._with(source)}SELECT {bucket} AS b, {exprs} FROM broker_temporal_instances i"  # noqa: S608
                   f" WHERE {where} GROUP BY b ORDER BY b")
        rows = await self.db.fetch(sql, [*source[1], start, seconds, tenant, entity_id, attr, start, end])
        out = []
        for row in rows:
            n = int(row[0])
            if 0 <= n < len(periods):
                out.append((periods[n][0], periods[n][1], list(row[1:])))
        return out

    # --- modification (clauses 5.6.13-5.6.16) -----------------------------------------------------------------
    async def get_instance(self, tenant: str, entity_id: str, attr: str, key: str) -> InstanceRow | None:
        if not key.isdigit():  # the other form names an instance of the SQLite chunks
            return None
        seq = int(key)
        rows = await self.db.fetch(
            "SELECT seq, dataset_id, observed_at, modified_at, instance FROM broker_temporal_instances"  # noqa: S608
            f" WHERE seq = ? AND tenant = ? AND entity_id = ? AND attr = ? AND {self._not_deleted()}",
            [seq, tenant, entity_id, attr])
        return InstanceRow(int(rows[0][0]), rows[0][1], rows[0][2], rows[0][3], _json(rows[0][4])) if rows else None

    # The modifications below change the temporal tables only (the history is not rewritten, decision 0600): on a
    # SQLite database file they are transactions of the temporal file alone (``temporal_execute``), under the
    # temporal file's lock, not the store's (docs/decisions/0710).
    async def replace_instance(self, tenant: str, entity_id: str, attr: str, key: str, instance: dict[str, Any],
                               observed_at: str | None) -> int:
        if not key.isdigit():
            return 0
        return await self.db.temporal_execute(
            "UPDATE broker_temporal_instances SET instance = ?, observed_at = ? WHERE seq = ? AND tenant = ?"
            " AND entity_id = ? AND attr = ?",
            [orjson.dumps(instance).decode(), observed_at, int(key), tenant, entity_id, attr])

    async def delete_instance(self, tenant: str, entity_id: str, attr: str, key: str) -> int:
        if not key.isdigit():
            return 0
        return await self.db.temporal_execute(
            "DELETE FROM broker_temporal_instances WHERE seq = ? AND tenant = ? AND entity_id = ? AND attr = ?",
            [int(key), tenant, entity_id, attr])

    async def delete_attribute(self, tenant: str, entity_id: str, attr: str, dataset_id: str | None,
                               delete_all: bool) -> int:
        sql = "DELETE FROM broker_temporal_instances WHERE tenant = ? AND entity_id = ? AND attr = ?"
        params: list[Any] = [tenant, entity_id, attr]
        if not delete_all:
            sql += " AND dataset_id IS NULL" if dataset_id is None else " AND dataset_id = ?"
            params += [] if dataset_id is None else [dataset_id]
        return await self.db.temporal_execute(sql, params)

    async def delete_entity(self, tenant: str, entity_id: str) -> int:
        """The entity's instances and its rows of the core's history (clause 5.6.16 deletes the temporal evolution),
        in one transaction (PostgreSQL; SQLite's two files: :class:`.chunks.ChunkedHistory`)."""
        async with self.db.transaction() as tx:
            removed = await tx.execute("DELETE FROM broker_temporal_instances WHERE tenant = ? AND entity_id = ?",
                                       [tenant, entity_id])
            return removed + await self._delete_history_rows(tx, tenant, entity_id)

    async def _delete_history_rows(self, tx: Any, tenant: str, entity_id: str) -> int:
        """The entity's history rows. On SQLite the history's ``seq`` is a rowid — the next row gets the largest
        one + 1 — and the flush cursor is a ``seq``: deleting the rows with the largest ``seq`` would hand those
        numbers out again, to rows the cursor may already be past, which would never be seen. So when the deleted
        rows include the largest ``seq``, a keeper row takes its place (``KEEP_SEQUENCE``).
        PostgreSQL's sequence never goes back."""
        top = None if self.pg else (await tx.fetch("SELECT MAX(seq) FROM broker_entity_history"))[0][0]
        removed = await tx.execute("DELETE FROM broker_entity_history WHERE tenant = ? AND entity_id = ?",
                                   [tenant, entity_id])
        if top is not None:
            await tx.execute(KEEP_SEQUENCE, [top, top])
        return removed
