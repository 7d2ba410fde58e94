"""The broker's operations on entities (ETSI GS CIM 009 v1.8, clause 5.6 "Context Information Provision" and 5.7
"Consumption"), independent of HTTP: each takes already-expanded input and a tenant, runs in one store transaction,
and appends one history row per attribute instance written (the temporal API of issue 3 reads them).

Implemented: create (5.6.1), update attributes (5.6.2), append attributes (5.6.3, ``noOverwrite``), partial attribute
update (5.6.4), delete attribute (5.6.5, ``datasetId``/``deleteAll``), delete entity (5.6.6), batch create/upsert/
update/delete/merge (5.6.7-5.6.10, 5.6.20) with per-entity results, replace entity (5.6.18) and attribute (5.6.19),
merge entity (5.6.17, NGSI-LD null deletes), purge (5.6.21), retrieve (5.7.1), query (5.7.2), and the discovery of
types and attributes (5.7.5-5.7.10).

Left out: distributed operations (registrations, forwarding); ``@expiresAt``; entity-level ``lang`` on write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.entity import (
    ENTITY_MEMBERS,
    INSTANCE_MEMBERS,
    VALUE_MEMBER,
    AttributeInstance,
    Entity,
    attributes,
    now_iso,
)
from sleutelbos.broker.errors import (
    AlreadyExists,
    BadRequestData,
    NgsiLdError,
    NonexistentTenant,
    ResourceNotFound,
)
from sleutelbos.broker.store import (
    DEFAULT_TENANT,
    EntityChange,
    EntityFilter,
    EntityStore,
    HistoryRow,
)


@dataclass
class BatchResult:
    """Clause 5.2.16 BatchOperationResult: ids that succeeded and per-entity errors."""

    success: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    def fail(self, entity_id: Any, error: NgsiLdError) -> None:
        self.errors.append({"entityId": entity_id if isinstance(entity_id, str) else str(entity_id),
                            "error": error.problem()})

    def body(self) -> dict[str, Any]:
        return {"success": self.success, "errors": self.errors}


@dataclass
class UpdateResult:
    """Clause 5.2.18 UpdateResult: attribute IRIs updated, and those not updated with a reason."""

    updated: list[str] = field(default_factory=list)
    not_updated: list[tuple[str, str]] = field(default_factory=list)


def change(entity_id: str, now: str, attrs: Iterable[tuple[str, list[AttributeInstance]]]) -> HistoryRow:
    """The history row of one change: the instances it wrote, keyed by attribute IRI."""
    return HistoryRow(entity_id, now, dict(attrs))


def creation(entity: Entity) -> HistoryRow:
    """The history row of a whole entity written (create, replace): all its attributes."""
    return HistoryRow(entity["id"], entity["modifiedAt"],
                      {k: v for k, v in entity.items() if k not in ENTITY_MEMBERS})


def deletion(entity_id: str, now: str, attr: str, instances: Iterable[AttributeInstance]) -> HistoryRow:
    """The history row of deleted attribute instances (each recorded with its datasetId and ``deletedAt``)."""
    gone = [{**({"datasetId": i["datasetId"]} if "datasetId" in i else {}), "deletedAt": now} for i in instances]
    return HistoryRow(entity_id, now, {attr: gone})


def entity_deletion(entity_id: str, now: str) -> HistoryRow:
    return HistoryRow(entity_id, now, None, deleted=True)


def merge_instance(old: AttributeInstance, new: AttributeInstance, now: str) -> AttributeInstance:
    """Merge-patch of one instance (clause 5.6.17 / 5.6.4): new members win, sub-attributes merge by IRI, old
    createdAt is kept."""
    merged = dict(old)
    for key, value in new.items():
        if key in ("createdAt",):
            continue
        if key not in INSTANCE_MEMBERS and key in old and isinstance(value, list):
            sub_old = {i.get("datasetId"): i for i in old[key]}
            for inst in value:
                prev = sub_old.get(inst.get("datasetId"))
                sub_old[inst.get("datasetId")] = merge_instance(prev, inst, now) if prev else inst
            merged[key] = list(sub_old.values())
        else:
            merged[key] = value
    if new.get("type") and new["type"] != old.get("type"):
        for member in set(VALUE_MEMBER.values()) - {VALUE_MEMBER[new["type"]]}:
            merged.pop(member, None)
    merged["modifiedAt"] = now
    return merged


def _replace_instances(existing: list[AttributeInstance] | None, new: list[AttributeInstance],
                       now: str) -> tuple[list[AttributeInstance], list[AttributeInstance]]:
    """Put each new instance in place of the one with its datasetId, keeping createdAt of the one it replaces:
    ``(the attribute's instances, the instances written)``. ``new`` is left as it is (an instance that takes an
    older createdAt is a copy), so that a store may apply the same change again to a fresh read (decision 0514)."""
    by_ds = {i.get("datasetId"): i for i in existing or []}
    written: list[AttributeInstance] = []
    for inst in new:
        old = by_ds.get(inst.get("datasetId"))
        if old is not None:
            inst = {**inst, "createdAt": old.get("createdAt", now)}
        by_ds[inst.get("datasetId")] = inst
        written.append(inst)
    return list(by_ds.values()), written


class BrokerService:
    """NGSI-LD entity operations on one :class:`EntityStore`; HTTP lives in ``api``."""

    def __init__(self, store: EntityStore, contexts: ContextStore, max_batch: int = 10_000) -> None:
        self.store = store
        self.contexts = contexts
        self.max_batch = max_batch

    async def start(self) -> None:
        from sleutelbos.broker.context import CachedContext

        await self.store.open()
        hosted = await self.store.hosted_contexts()
        self.contexts.load_hosted([CachedContext(url=url, document=doc, kind="Hosted", created_at=created,
                                                 local_id=lid) for lid, url, doc, created in hosted])

        async def persist(entry: CachedContext) -> None:
            await self.store.save_hosted_context(entry.local_id or "", entry.url, entry.document, entry.created_at)

        self.contexts.persist_hosted = persist
        self.contexts.forget_hosted = self.store.delete_hosted_context

    async def stop(self) -> None:
        await self.store.close()

    # --- tenants ---------------------------------------------------------------------------------------
    async def require_tenant(self, tenant: str) -> None:
        """Reads on a tenant that was never written answer 404 NonexistentTenant (clause 4.14)."""
        if tenant != DEFAULT_TENANT and not await self.store.tenant_exists(tenant):
            raise NonexistentTenant(f"tenant {tenant!r} does not exist")

    # --- single entity ---------------------------------------------------------------------------------
    async def create(self, tenant: str, entity: Entity) -> str:
        async with self.store.transaction(tenant) as tx:
            if await tx.existing([entity["id"]]):
                raise AlreadyExists(f"entity {entity['id']} already exists")
            await tx.upsert([entity])
            await tx.history([change(entity["id"], entity["modifiedAt"], attributes(entity))])
        return entity["id"]

    async def get(self, tenant: str, entity_id: str) -> Entity:
        await self.require_tenant(tenant)
        entity = await self.store.get(tenant, entity_id)
        if entity is None:
            raise ResourceNotFound(f"entity {entity_id} not found")
        return entity

    async def get_document(self, tenant: str, entity_id: str) -> str:
        """As :meth:`get`, the stored JSON text (the API renders it through its cache, see ``api.RenderCache``)."""
        await self.require_tenant(tenant)
        doc = await self.store.get_document(tenant, entity_id)
        if doc is None:
            raise ResourceNotFound(f"entity {entity_id} not found")
        return doc

    async def _update_one(self, tenant: str, entity_id: str, change: EntityChange) -> None:
        """A read-modify-write of one entity through the store (``EntityStore.update_entity``, decision 0514):
        ``change`` may run more than once, each time on a fresh read, and only the last run's result is written."""
        if not await self.store.update_entity(tenant, entity_id, change):
            raise ResourceNotFound(f"entity {entity_id} not found")

    async def replace(self, tenant: str, entity_id: str, entity: Entity) -> None:
        """PUT /entities/{id} (5.6.18): all attributes replaced; id must match; type may change."""
        if entity.get("id", entity_id) != entity_id:
            raise BadRequestData(f"the body's id {entity['id']} differs from {entity_id}")
        await self.require_tenant(tenant)
        keep_type = "type" not in entity
        entity["id"] = entity_id

        def put(stored: Entity) -> HistoryRow:
            new = {**entity, "createdAt": stored["createdAt"]}
            if keep_type:
                new["type"] = stored["type"]
            stored.clear()
            stored.update(new)
            return change(entity_id, new["modifiedAt"], attributes(new))

        await self._update_one(tenant, entity_id, put)

    async def merge(self, tenant: str, entity_id: str, fragment: Entity, now: str) -> None:
        """PATCH /entities/{id} (5.6.17 merge entity)."""
        if fragment.get("id", entity_id) != entity_id:
            raise BadRequestData(f"the body's id {fragment['id']} differs from {entity_id}")
        await self.require_tenant(tenant)
        await self._update_one(tenant, entity_id, lambda entity: self._merge_into(entity, fragment, now))

    def _merge_into(self, entity: Entity, fragment: Entity, now: str) -> HistoryRow:
        written: dict[str, Any] = {}
        for key, new in fragment.items():
            if key == "id":
                continue
            if key == "type":
                entity["type"] = list(dict.fromkeys([*entity["type"], *new]))
                continue
            if key == "scope":
                if new is None:
                    entity.pop("scope", None)
                else:
                    entity["scope"] = new
                continue
            if new is None:
                if key in entity:
                    written[key] = deletion(entity["id"], now, key, entity.pop(key)).instances[key]  # type: ignore[index]
                continue
            by_ds = {i.get("datasetId"): i for i in entity.get(key, [])}
            for inst in new:
                old = by_ds.get(inst.get("datasetId"))
                merged = merge_instance(old, inst, now) if old else inst
                by_ds[inst.get("datasetId")] = merged
                written.setdefault(key, []).append(merged)
            entity[key] = list(by_ds.values())
        entity["modifiedAt"] = now
        return HistoryRow(entity["id"], now, written)

    async def delete(self, tenant: str, entity_id: str) -> None:
        await self.require_tenant(tenant)
        now = now_iso()
        async with self.store.transaction(tenant) as tx:
            if not await tx.existing([entity_id]):
                raise ResourceNotFound(f"entity {entity_id} not found")
            await tx.delete([entity_id])
            await tx.history([entity_deletion(entity_id, now)])

    async def append_attrs(self, tenant: str, entity_id: str, fragment: Entity, now: str,
                           no_overwrite: bool = False) -> UpdateResult:
        """POST /entities/{id}/attrs (5.6.3): add attributes, overwrite existing ones unless ``noOverwrite``."""
        await self.require_tenant(tenant)
        result = UpdateResult()

        def append(entity: Entity) -> HistoryRow:
            nonlocal result
            result = UpdateResult()
            written: dict[str, Any] = {}
            for key, instances in fragment.items():
                if key in ENTITY_MEMBERS:
                    if key == "type":
                        entity["type"] = list(dict.fromkeys([*entity["type"], *instances]))
                    elif key == "scope":
                        entity["scope"] = instances
                    continue
                if no_overwrite:
                    have = {i.get("datasetId") for i in entity.get(key, [])}
                    fresh = [i for i in instances if i.get("datasetId") not in have]
                    if len(fresh) < len(instances):
                        result.not_updated.append((key, "attribute exists and noOverwrite was asked"))
                    if not fresh:
                        continue
                    instances = fresh
                entity[key], written[key] = _replace_instances(entity.get(key), instances, now)
                result.updated.append(key)
            entity["modifiedAt"] = now
            return HistoryRow(entity_id, now, written)

        await self._update_one(tenant, entity_id, append)
        return result

    async def update_attrs(self, tenant: str, entity_id: str, fragment: Entity, now: str) -> UpdateResult:
        """PATCH /entities/{id}/attrs (5.6.2): replace attributes that exist; report the others as not updated."""
        await self.require_tenant(tenant)
        result = UpdateResult()

        def update(entity: Entity) -> HistoryRow | None:
            nonlocal result
            result = UpdateResult()
            written: dict[str, Any] = {}
            for key, instances in fragment.items():
                if key in ENTITY_MEMBERS:
                    continue
                have = {i.get("datasetId") for i in entity.get(key, [])}
                known = [i for i in instances if i.get("datasetId") in have]
                if len(known) < len(instances):
                    result.not_updated.append((key, "attribute (or this datasetId) does not exist"))
                if not known:
                    continue
                entity[key], written[key] = _replace_instances(entity.get(key), known, now)
                result.updated.append(key)
            if not written:
                return None
            entity["modifiedAt"] = now
            return HistoryRow(entity_id, now, written)

        await self._update_one(tenant, entity_id, update)
        return result

    async def patch_attr(self, tenant: str, entity_id: str, attr: str, patch: AttributeInstance, now: str) -> None:
        """PATCH /entities/{id}/attrs/{attr} (5.6.4 partial attribute update): merge into the instance with the
        patch's datasetId."""
        await self.require_tenant(tenant)

        def merge(entity: Entity) -> HistoryRow:
            dataset_id = patch.get("datasetId")
            instances = entity.get(attr, [])
            for i, old in enumerate(instances):
                if old.get("datasetId") == dataset_id:
                    merged = merge_instance(old, patch, now)
                    instances[i] = merged
                    break
            else:
                raise ResourceNotFound(f"entity {entity_id} has no attribute {attr}"
                                       + (f" with datasetId {dataset_id}" if dataset_id else ""))
            entity["modifiedAt"] = now
            return HistoryRow(entity_id, now, {attr: [merged]})

        await self._update_one(tenant, entity_id, merge)

    async def replace_attr(self, tenant: str, entity_id: str, attr: str, instances: list[AttributeInstance],
                           now: str) -> None:
        """PUT /entities/{id}/attrs/{attr} (5.6.19): the attribute (instance per datasetId) must exist."""
        await self.require_tenant(tenant)

        def replace(entity: Entity) -> HistoryRow:
            if attr not in entity:
                raise ResourceNotFound(f"entity {entity_id} has no attribute {attr}")
            entity[attr], written = _replace_instances(entity[attr], instances, now)
            entity["modifiedAt"] = now
            return HistoryRow(entity_id, now, {attr: written})

        await self._update_one(tenant, entity_id, replace)

    async def delete_attr(self, tenant: str, entity_id: str, attr: str, dataset_id: str | None = None,
                          delete_all: bool = False) -> None:
        """DELETE /entities/{id}/attrs/{attr} (5.6.5): the default instance, one datasetId, or all instances."""
        await self.require_tenant(tenant)
        now = now_iso()

        def delete(entity: Entity) -> HistoryRow:
            instances = entity.get(attr)
            if not instances:
                raise ResourceNotFound(f"entity {entity_id} has no attribute {attr}")
            if delete_all:
                removed = instances
                del entity[attr]
            else:
                removed = [i for i in instances if i.get("datasetId") == dataset_id]
                if not removed:
                    raise ResourceNotFound(f"entity {entity_id} has no instance of {attr}"
                                           + (f" with datasetId {dataset_id}" if dataset_id else " without datasetId"))
                kept = [i for i in instances if i.get("datasetId") != dataset_id]
                if kept:
                    entity[attr] = kept
                else:
                    del entity[attr]
            entity["modifiedAt"] = now
            return deletion(entity_id, now, attr, removed)

        await self._update_one(tenant, entity_id, delete)

    async def purge(self, tenant: str, entity_filter: EntityFilter) -> list[str]:
        """DELETE /entities?type=... (5.6.21 purge entities)."""
        await self.require_tenant(tenant)
        now = now_iso()
        async with self.store.transaction(tenant) as tx:
            if entity_filter.post:
                ids = [e["id"] async for e in self.store.scan(tenant, entity_filter)
                       if all(p(e) for p in entity_filter.post)]
                await tx.delete(ids)
            else:
                ids = await tx.delete_by_filter(entity_filter)
            await tx.history([entity_deletion(i, now) for i in ids])
        return ids

    # --- batch -----------------------------------------------------------------------------------------
    def _check_batch(self, items: Sequence[Any]) -> None:
        if len(items) > self.max_batch:
            raise BadRequestData(f"a batch holds at most {self.max_batch} entities, got {len(items)}")

    async def batch_create(self, tenant: str, entities: list[Entity], result: BatchResult) -> BatchResult:
        """5.6.7: create each; one already existing (or repeated in the batch) fails alone with AlreadyExists."""
        self._check_batch(entities)
        async with self.store.transaction(tenant) as tx:
            existing = await tx.existing([e["id"] for e in entities])
            fresh: dict[str, Entity] = {}
            for e in entities:
                if e["id"] in existing or e["id"] in fresh:
                    result.fail(e["id"], AlreadyExists(f"entity {e['id']} already exists"))
                else:
                    fresh[e["id"]] = e
            if fresh:
                await tx.upsert(list(fresh.values()))
                await tx.history([creation(e) for e in fresh.values()])
        result.success += list(fresh)
        result.created += list(fresh)
        return result

    async def batch_upsert(self, tenant: str, entities: list[Entity], result: BatchResult,
                           update: bool = False) -> BatchResult:
        """5.6.8: create or replace (default) / update (``options=update``: attributes merged in)."""
        self._check_batch(entities)
        by_id: dict[str, Entity] = {}
        for e in entities:
            prev = by_id.get(e["id"])
            if prev is not None:  # the same id twice in one batch: the later one is merged into the earlier
                for key, value in attributes(e):
                    prev[key], _ = _replace_instances(prev.get(key), value, e["modifiedAt"])
            else:
                by_id[e["id"]] = e
        async with self.store.transaction(tenant) as tx:
            rows: list[HistoryRow] = []
            if update:
                stored = await tx.fetch(list(by_id))
                for entity_id, e in by_id.items():
                    old = stored.get(entity_id)
                    if old is None:
                        result.created.append(entity_id)
                        rows.append(creation(e))
                        continue
                    for key, value in attributes(e):  # e's history row (creation) holds the instances written
                        old[key], e[key] = _replace_instances(old.get(key), value, e["modifiedAt"])
                    rows.append(creation(e))
                    old["type"] = list(dict.fromkeys([*old["type"], *e["type"]]))
                    old["modifiedAt"] = e["modifiedAt"]
                    by_id[entity_id] = old
            else:
                created_at = await tx.existing(list(by_id))
                for entity_id, e in by_id.items():
                    when = created_at.get(entity_id)
                    if when is None:
                        result.created.append(entity_id)
                    else:
                        e["createdAt"] = when
                    rows.append(creation(e))
            await tx.upsert(list(by_id.values()))
            await tx.history(rows)
        result.success += list(by_id)
        return result

    async def batch_update(self, tenant: str, fragments: list[Entity], result: BatchResult,
                           no_overwrite: bool = False) -> BatchResult:
        """5.6.9: append-like update of existing entities; a missing entity fails alone."""

        def update(entity: Entity, f: Entity) -> HistoryRow:
            written: dict[str, Any] = {}
            for key, instances in attributes(f):
                if no_overwrite:
                    have = {i.get("datasetId") for i in entity.get(key, [])}
                    instances = [i for i in instances if i.get("datasetId") not in have]
                    if not instances:
                        continue
                entity[key], written[key] = _replace_instances(entity.get(key), instances, f["modifiedAt"])
            entity["modifiedAt"] = f["modifiedAt"]
            return HistoryRow(f["id"], f["modifiedAt"], written)

        return await self._batch_existing(tenant, fragments, result, update)

    async def batch_merge(self, tenant: str, fragments: list[Entity], result: BatchResult) -> BatchResult:
        """5.6.20: merge-patch each existing entity; a missing entity fails alone."""

        def merge(entity: Entity, f: Entity) -> HistoryRow:
            patch = {k: v for k, v in f.items() if k not in ("createdAt", "modifiedAt")}
            return self._merge_into(entity, patch, f.get("modifiedAt") or now_iso())

        return await self._batch_existing(tenant, fragments, result, merge)

    async def _batch_existing(self, tenant: str, fragments: list[Entity], result: BatchResult,
                              apply: Callable[[Entity, Entity], HistoryRow]) -> BatchResult:
        """Batch update and merge: ``apply`` each fragment to its stored entity (or to the batch's earlier result for
        the same id), in one transaction; a missing entity fails alone with ResourceNotFound."""
        self._check_batch(fragments)
        async with self.store.transaction(tenant) as tx:
            stored = await tx.fetch(list({f["id"] for f in fragments}))
            changed: dict[str, Entity] = {}
            rows: list[HistoryRow] = []
            for f in fragments:
                entity = changed.get(f["id"]) or stored.get(f["id"])
                if entity is None:
                    result.fail(f["id"], ResourceNotFound(f"entity {f['id']} not found"))
                    continue
                rows.append(apply(entity, f))
                changed[f["id"]] = entity
            if changed:
                await tx.upsert(list(changed.values()))
                await tx.history(rows)
        result.success += list(changed)
        return result

    async def batch_delete(self, tenant: str, ids: list[str], result: BatchResult) -> BatchResult:
        """5.6.10: delete each; a missing id fails alone with ResourceNotFound."""
        self._check_batch(ids)
        now = now_iso()
        async with self.store.transaction(tenant) as tx:
            existing = await tx.existing(ids)
            gone = [i for i in dict.fromkeys(ids) if i in existing]
            for i in ids:
                if i not in existing:
                    result.fail(i, ResourceNotFound(f"entity {i} not found"))
            if gone:
                await tx.delete(gone)
                await tx.history([entity_deletion(i, now) for i in gone])
        result.success += gone
        return result

    # --- consumption -----------------------------------------------------------------------------------
    async def query(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[Entity], int | None]:
        await self.require_tenant(tenant)
        return await self.store.query(tenant, entity_filter)

    async def query_documents(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[str], int | None]:
        """As :meth:`query`, each entity as its stored JSON text."""
        await self.require_tenant(tenant)
        return await self.store.query_documents(tenant, entity_filter)

    async def type_summary(self, tenant: str, only: str | None = None) -> dict[str, dict[str, Any]]:
        """For discovery (5.7.5-5.7.8): per expanded type, its entity count and attributes with their kinds."""
        await self.require_tenant(tenant)
        summary: dict[str, dict[str, Any]] = {}
        f = EntityFilter(type_groups=[[only]] if only else [], limit=0)
        async for e in self.store.scan(tenant, f):
            for t in e["type"]:
                info = summary.setdefault(t, {"count": 0, "attrs": {}})
                info["count"] += 1
                for key, instances in attributes(e):
                    kinds = info["attrs"].setdefault(key, set())
                    kinds.update(i.get("type", "Property") for i in instances)
        return summary

    async def attribute_summary(self, tenant: str) -> dict[str, dict[str, Any]]:
        """For attribute discovery (5.7.9-5.7.10): per attribute IRI, count, kinds and the types that have it."""
        await self.require_tenant(tenant)
        summary: dict[str, dict[str, Any]] = {}
        async for e in self.store.scan(tenant, EntityFilter(limit=0)):
            for key, instances in attributes(e):
                info = summary.setdefault(key, {"count": 0, "kinds": set(), "types": set()})
                info["count"] += len(instances)
                info["kinds"].update(i.get("type", "Property") for i in instances)
                info["types"].update(e["type"])
        return summary


