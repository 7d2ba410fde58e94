"""Temporal operations (ETSI GS CIM 009 v1.8): create or update the temporal representation of an entity (5.6.11),
add attributes (5.6.12), delete an attribute's history (5.6.13), modify (5.6.14) or delete (5.6.15) one instance,
delete the temporal entity (5.6.16); retrieve (5.7.3) and query (5.7.4) temporal evolution.

Writes of new instances go through the entity store's transaction (the core's write path), so they land in the same
history table, in the same transaction as the entity they belong to, and reach the subscription matcher; an entity
that does not exist yet is created with the latest instance of each attribute as its current value. Modifying or
deleting past instances is a statement on the history itself.

Entity selection for queries (type, id, idPattern, q, geo) is evaluated on the entities' current state (the core's
query over ``broker_entities``); attributes are those the entity has now, or the ones named in ``attrs``.
Truncation (clause 6.3.x "Content-Range"): at most ``broker_temporal_page_size`` instances per attribute; when more
match, all attributes are cut at the same instant, ``truncated`` is reported with the range actually covered, and the
client asks for the next range from there.

On PostgreSQL the service also keeps the monthly partitions of the history ahead of time and, with
``broker_temporal_retention_days``, drops the partitions wholly older than the retention (:mod:`.partitions`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sleutelbos.broker.context import CompiledContext
from sleutelbos.broker.database import BrokerDatabase
from sleutelbos.broker.entity import Entity, attributes, now_iso
from sleutelbos.broker.errors import BadRequestData, NonexistentTenant, ResourceNotFound
from sleutelbos.broker.store import DEFAULT_TENANT, EntityFilter, HistoryRow
from sleutelbos.broker.temporal import representation
from sleutelbos.broker.temporal.chunks import ChunkedHistory, HistoryFlusher
from sleutelbos.broker.temporal.history import AttributeHistory, InstanceRow, Slice
from sleutelbos.broker.temporal.instants import instant, parse_instant
from sleutelbos.broker.temporal.materialise import HistoryMaterialiser
from sleutelbos.broker.temporal.partitions import HistoryPartitions
from sleutelbos.broker.temporal.query import TemporalQuery
from sleutelbos.broker.validation import check_entity_id, check_name, expand_instance, expand_types
from sleutelbos.core.tasks import cancel_and_wait

log = logging.getLogger("sleutelbos.broker.temporal")


@dataclass
class TemporalAnswer:
    entities: list[dict[str, Any]]
    content_range: str | None = None
    count: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def expand_temporal(body: Any, ctx: CompiledContext, now: str, *, need_id: bool = True) -> Entity:
    """A temporal entity from a client (clause 5.6.11): every attribute is an instance or an array of instances,
    any number per datasetId (they are points in time)."""
    if not isinstance(body, dict):
        raise BadRequestData("a temporal entity must be a JSON object")
    out: Entity = {}
    for name, raw in body.items():
        if name in ("@context",):
            continue
        if name in ("id", "@id"):
            out["id"] = check_entity_id(raw)
        elif name in ("type", "@type"):
            out["type"] = expand_types(raw, ctx)
        elif name in ("createdAt", "modifiedAt", "scope"):
            continue
        else:
            check_name(name)
            items = raw if isinstance(raw, list) else [raw]
            if not items:
                raise BadRequestData(f"attribute {name!r} has no instances")
            out[ctx.expand_term(name)] = [expand_instance(name, item, ctx, now) for item in items]
    if need_id and "id" not in out:
        raise BadRequestData("a temporal entity needs an id")
    return out


def _latest(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per datasetId, the instance with the latest observedAt (the last given when none has one)."""
    best: dict[str | None, dict[str, Any]] = {}
    for inst in instances:
        ds = inst.get("datasetId")
        old = best.get(ds)
        if old is None or (instant(inst.get("observedAt")) or "") >= (instant(old.get("observedAt")) or ""):
            best[ds] = inst
    return list(best.values())


class TemporalService:
    def __init__(self, db: BrokerDatabase, store: Any, settings: Any) -> None:
        self.db = db
        self.store = store
        self.page_size: int = settings.broker_temporal_page_size
        # SQLite: the history in head and chunks (docs/decisions/0720), the flusher in the materialiser's place;
        # PostgreSQL: the per-instance materialisation of the history (0600, 0630)
        self.history: AttributeHistory
        self.materialiser: HistoryMaterialiser | HistoryFlusher
        if db.dialect == "sqlite":
            self.history = ChunkedHistory(db)
            self.materialiser = HistoryFlusher(db, settings.broker_temporal_bucket_seconds,
                                               settings.broker_temporal_head_rows,
                                               settings.broker_temporal_retention_days)
        else:
            self.history = AttributeHistory(db)
            self.materialiser = HistoryMaterialiser(db)
        self.partitions = HistoryPartitions(db, settings.broker_temporal_retention_days)
        self._maintenance: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.materialiser.prepare()
        self.materialiser.start()
        if self.db.dialect == "postgresql":
            await self.partitions.maintain()
            self._maintenance = asyncio.create_task(self._maintain_daily(), name="history partitions")

    async def stop(self) -> None:
        await self.materialiser.stop()
        await cancel_and_wait(self._maintenance)

    async def _maintain_daily(self) -> None:
        while True:
            await asyncio.sleep(24 * 3600)
            try:
                await self.partitions.maintain()
            except Exception:
                log.exception("history partition maintenance failed")

    async def _require_tenant(self, tenant: str) -> None:
        if tenant != DEFAULT_TENANT and not await self.store.tenant_exists(tenant):
            raise NonexistentTenant(f"tenant {tenant!r} does not exist")

    # --- writes -----------------------------------------------------------------------------------------------
    async def create_or_add(self, tenant: str, temporal: Entity, now: str) -> bool:
        """5.6.11: True if the entity was created (201), False if instances were added to an existing one (204)."""
        entity_id = temporal["id"]
        async with self.store.transaction(tenant) as tx:
            found = await tx.fetch([entity_id])
            entity = found.get(entity_id)
            created = entity is None
            if created:
                if "type" not in temporal:
                    raise BadRequestData(f"temporal entity {entity_id} has no type")
                entity = {"id": entity_id, "type": temporal["type"], "createdAt": now, "modifiedAt": now}
            elif "type" in temporal:
                entity["type"] = list(dict.fromkeys([*entity["type"], *temporal["type"]]))
            rows = self._merge(entity, temporal, now)
            await tx.upsert([entity])
            await tx.history(rows)
        return created

    async def add_attributes(self, tenant: str, entity_id: str, fragment: Entity, now: str) -> None:
        """5.6.12: add instances to an existing entity's history."""
        await self._require_tenant(tenant)
        async with self.store.transaction(tenant) as tx:
            entity = (await tx.fetch([entity_id])).get(entity_id)
            if entity is None:
                raise ResourceNotFound(f"entity {entity_id} not found")
            rows = self._merge(entity, fragment, now)
            await tx.upsert([entity])
            await tx.history(rows)

    @staticmethod
    def _merge(entity: Entity, temporal: Entity, now: str) -> list[HistoryRow]:
        """One history row with every instance (decision 0502); the current value moves to an instance only if it
        is not older."""
        written = {iri: instances for iri, instances in attributes(temporal)}
        rows = [HistoryRow(entity["id"], now, written)] if written else []
        for iri, instances in written.items():
            current = {i.get("datasetId"): i for i in entity.get(iri, [])}
            for inst in _latest(instances):
                old = current.get(inst.get("datasetId"))
                if old is None or (instant(inst.get("observedAt")) or "") >= (instant(old.get("observedAt")) or ""):
                    current[inst.get("datasetId")] = inst
            entity[iri] = list(current.values())
        entity["modifiedAt"] = now
        return rows

    async def modify_instance(self, tenant: str, entity_id: str, attr: str, key: str, patch: dict[str, Any]) -> None:
        """5.6.14: the instance's members are replaced by the fragment's (its type and value member included)."""
        await self._require_tenant(tenant)
        await self.materialiser.catch_up()
        row = await self.history.get_instance(tenant, entity_id, attr, key)
        if row is None:
            raise ResourceNotFound(f"entity {entity_id} has no instance {key} of {attr}")
        merged = {**row.instance, **patch, "modifiedAt": now_iso()}
        if not await self.history.replace_instance(tenant, entity_id, attr, key, merged,
                                                   instant(merged.get("observedAt"))):
            raise ResourceNotFound(f"entity {entity_id} has no instance {key} of {attr}")

    async def delete_instance(self, tenant: str, entity_id: str, attr: str, key: str) -> None:
        await self._require_tenant(tenant)
        await self.materialiser.catch_up()
        if not await self.history.delete_instance(tenant, entity_id, attr, key):
            raise ResourceNotFound(f"entity {entity_id} has no instance {key} of {attr}")

    async def delete_attribute(self, tenant: str, entity_id: str, attr: str, dataset_id: str | None,
                               delete_all: bool) -> None:
        await self._require_tenant(tenant)
        await self.materialiser.catch_up()
        if not await self.history.delete_attribute(tenant, entity_id, attr, dataset_id, delete_all):
            raise ResourceNotFound(f"entity {entity_id} has no history of {attr}")

    async def delete_entity(self, tenant: str, entity_id: str, core_delete: Any) -> None:
        """5.6.16: the entity and its whole history."""
        await self._require_tenant(tenant)
        await self.materialiser.catch_up()
        existed = await self.store.get(tenant, entity_id) is not None
        if existed:
            await core_delete(tenant, entity_id)
        removed = await self.history.delete_entity(tenant, entity_id)
        if not existed and not removed:
            raise ResourceNotFound(f"entity {entity_id} not found")

    # --- reads ------------------------------------------------------------------------------------------------
    async def retrieve(self, tenant: str, entity_id: str, q: TemporalQuery, ctx: CompiledContext) -> TemporalAnswer:
        await self._require_tenant(tenant)
        # The catch-up (usually one look at the history's sequence) and the entity read are independent round
        # trips: run them side by side so a read waits for one, not two.
        _, entity = await asyncio.gather(self.materialiser.catch_up(), self.store.get(tenant, entity_id))
        if entity is None and not await self.history.has_history(tenant, entity_id):
            raise ResourceNotFound(f"entity {entity_id} not found")
        if entity is None:
            entity = {"id": entity_id, "type": []}
            names = q.attrs or await self.history.attributes(tenant, entity_id)
        else:
            names = q.attrs or [iri for iri, _ in attributes(entity)]
        answer = await self._answer(tenant, [(entity, names)], q, ctx)
        return answer

    async def query(self, tenant: str, entity_filter: EntityFilter, q: TemporalQuery,
                    ctx: CompiledContext) -> TemporalAnswer:
        await self._require_tenant(tenant)
        _, (entities, count) = await asyncio.gather(self.materialiser.catch_up(),
                                                    self.store.query(tenant, entity_filter))
        selected = [(e, q.attrs or [iri for iri, _ in attributes(e)]) for e in entities]
        answer = await self._answer(tenant, selected, q, ctx)
        answer.count = count
        return answer

    async def _answer(self, tenant: str, selected: list[tuple[Entity, list[str]]], q: TemporalQuery,
                      ctx: CompiledContext) -> TemporalAnswer:
        if q.aggregation is not None:
            return TemporalAnswer([await self._aggregated(tenant, e, names, q, ctx) for e, names in selected])
        slices: list[tuple[Entity, list[tuple[str, Slice]]]] = []
        for entity, names in selected:
            per_attr = [(name, await self.history.instances(tenant, entity["id"], name, q, self.page_size))
                        for name in names]
            slices.append((entity, per_attr))
        content_range = self._cut(slices, q)
        out = []
        for entity, per_attr in slices:
            doc = representation.header(entity["id"], entity.get("type", []), ctx)
            for name, piece in per_attr:
                if not piece.rows:
                    continue
                if q.temporal_values:
                    doc[ctx.compact_iri(name)] = representation.simplified(piece.rows, q.time_column)
                else:
                    doc[ctx.compact_iri(name)] = representation.normalized(name, piece.rows, ctx, q.sys_attrs)
            out.append(doc)
        return TemporalAnswer(out, content_range)

    def _cut(self, slices: list[tuple[Entity, list[tuple[str, Slice]]]], q: TemporalQuery) -> str | None:
        """Cut every attribute at the same instant when any was truncated; the Content-Range of what is left."""
        col = q.time_column
        truncated = [piece for _, per_attr in slices for _, piece in per_attr if piece.truncated and piece.rows]
        if not truncated:
            return None
        descending = q.last_n is not None
        if descending:
            cutoff = max(piece.rows[0].time(col) or "" for piece in truncated)
        else:
            cutoff = min(piece.rows[-1].time(col) or "" for piece in truncated)
        times: list[str] = []
        for _, per_attr in slices:
            for _, piece in per_attr:
                if descending:
                    piece.rows = [r for r in piece.rows if (r.time(col) or "") >= cutoff]
                else:
                    piece.rows = [r for r in piece.rows if (r.time(col) or "") <= cutoff]
                times += [r.time(col) or "" for r in piece.rows]
        if not times:
            return None
        size = str(q.last_n) if q.last_n is not None else "*"
        if descending:
            return f"date-time {max(times)}-{cutoff}/{size}"
        return f"date-time {min(times)}-{cutoff}/{size}"

    async def _aggregated(self, tenant: str, entity: Entity, names: list[str], q: TemporalQuery,
                          ctx: CompiledContext) -> dict[str, Any]:
        assert q.aggregation is not None
        doc = representation.header(entity["id"], entity.get("type", []), ctx)
        for name in names:
            start, end = q.range_from, q.range_to
            if start is None or end is None:
                low, high = await self.history.bounds(tenant, entity["id"], name, q)
                if low is None:
                    continue
                start = start or parse_instant(low)
                end = end or parse_instant(high) + timedelta(microseconds=1)  # type: ignore[arg-type]
            periods = q.aggregation.periods(start, end)
            rows = await self.history.aggregate(tenant, entity["id"], name, periods, q.aggregation.methods,
                                                q.time_column, q.aggregation.fixed_seconds)
            if not rows:
                continue
            current = entity.get(name)
            kind = current[0].get("type", "Property") if current else "Property"
            doc[ctx.compact_iri(name)] = representation.aggregated(kind, q.aggregation.methods, rows)
        return doc


__all__ = ["InstanceRow", "TemporalAnswer", "TemporalService", "expand_temporal"]
