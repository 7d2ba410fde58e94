"""The write path's change feed: what each committed write changed, for the subscription matcher (clause 5.8.6
"notification behaviour": entity created/updated/deleted, attribute created/updated/deleted).

:class:`ObservedStore` wraps the broker's :class:`~sleutelbos.broker.store.EntityStore`; every service operation
already runs in one ``store.transaction`` (or, for one entity, ``update_entity``, whose change function is
watched the same way) and reads the entities it changes (``fetch``/``existing``) before it writes
them (``upsert``/``delete``) and their history rows. The wrapper watches those calls and, only once the transaction
has committed, hands the list of :class:`Change` to a listener — synchronously and cheaply (the listener only puts
work on queues), so that notifying never blocks or fails a write. When no subscription exists for the tenant the
wrapper steps aside and the write path is exactly the core's.

Left out: the previous state of an entity replaced without being read (batch upsert in replace mode) — its
attributes count as updated and ``showChanges`` has no ``previousValue`` for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from sleutelbos.broker.entity import Entity, now_iso
from sleutelbos.broker.store import EntityChange, EntityFilter, EntityStore, HistoryRow, StoreTransaction


@dataclass(slots=True)
class Change:
    """One entity's change in one committed write."""

    tenant: str
    entity_id: str
    entity: Entity | None
    previous: Entity | None = None
    created: bool = False
    deleted: bool = False
    attrs: dict[str, str] = field(default_factory=dict)  # IRI → attributeCreated/attributeUpdated/attributeDeleted
    at: str = ""


class ChangeListener(Protocol):
    def observes(self, tenant: str) -> bool:
        """Whether any change-driven subscription exists for the tenant (else the write path is untouched)."""

    def wants_previous(self, tenant: str) -> bool:
        """Whether a subscription needs previous values (``showChanges``): then reads are copied before writes."""

    def publish(self, changes: list[Change]) -> None:
        """Called after commit with the changes; must not block."""


class _ObservedTransaction(StoreTransaction):
    """Forwards to the store's transaction and records what it read and wrote (``tx`` is None when it only records:
    ``ObservedStore.update_entity``)."""

    def __init__(self, tx: StoreTransaction | None, tenant: str, copy_previous: bool) -> None:
        self.tx = tx
        self.tenant = tenant
        self.copy_previous = copy_previous
        self.existed: set[str] = set()
        self.previous: dict[str, Entity] = {}
        self.previous_keys: dict[str, set[str]] = {}
        self.written: dict[str, Entity] = {}
        self.deleted: dict[str, Entity | None] = {}
        self.attr_rows: dict[str, dict[str, str]] = {}

    def __getattr__(self, name: str) -> Any:  # store-specific members (``conn``) stay reachable
        return getattr(self.tx, name)

    async def fetch(self, ids: Sequence[str]) -> dict[str, Entity]:
        assert self.tx is not None
        found = await self.tx.fetch(ids)
        self.read(found)
        return found

    def read(self, found: dict[str, Entity]) -> None:
        """Record entities as read, before any change to them."""
        for entity_id, entity in found.items():
            self.existed.add(entity_id)
            self.previous_keys.setdefault(entity_id, set(entity))
            if self.copy_previous and entity_id not in self.previous:
                self.previous[entity_id] = orjson.loads(orjson.dumps(entity))

    async def existing(self, ids: Sequence[str]) -> dict[str, str]:
        assert self.tx is not None
        found = await self.tx.existing(ids)
        self.existed.update(found)
        return found

    async def upsert(self, entities: Sequence[Entity]) -> None:
        assert self.tx is not None
        await self.tx.upsert(entities)
        self.upserted(entities)

    def upserted(self, entities: Sequence[Entity]) -> None:
        for entity in entities:
            self.written[entity["id"]] = entity
            self.deleted.pop(entity["id"], None)

    async def delete(self, ids: Sequence[str]) -> None:
        assert self.tx is not None
        missing = [i for i in ids if i not in self.previous]
        before = await self.tx.fetch(missing) if missing else {}
        await self.tx.delete(ids)
        for entity_id in ids:
            self.deleted[entity_id] = self.previous.get(entity_id) or before.get(entity_id)
            self.written.pop(entity_id, None)

    async def delete_by_filter(self, entity_filter: EntityFilter) -> list[str]:
        assert self.tx is not None
        ids = await self.tx.delete_by_filter(entity_filter)
        for entity_id in ids:
            self.deleted[entity_id] = None
        return ids

    async def history(self, rows: Sequence[HistoryRow]) -> None:
        assert self.tx is not None
        await self.tx.history(rows)
        self.historied(rows)

    def historied(self, rows: Sequence[HistoryRow]) -> None:
        """Record the attributes each history row says were created, updated or deleted."""
        for row in rows:
            if row.deleted or not row.instances:
                continue
            kinds = self.attr_rows.setdefault(row.entity_id, {})
            for attr, instances in row.instances.items():
                # a written instance has a "type"; only a deletion's markers lack it (checked first: cheap)
                if instances and "type" not in instances[0] and all("deletedAt" in i and "type" not in i
                                                                    for i in instances):
                    kinds[attr] = "attributeDeleted"
                    continue
                had = attr in self.previous_keys.get(row.entity_id, ())
                if row.entity_id not in self.previous_keys and row.entity_id in self.existed:
                    had = True  # replaced without being read: count as an update
                kinds.setdefault(attr, "attributeUpdated" if had else "attributeCreated")

    def changes(self) -> list[Change]:
        now = now_iso()
        out: list[Change] = []
        for entity_id, entity in self.written.items():
            out.append(Change(self.tenant, entity_id, entity, self.previous.get(entity_id),
                              created=entity_id not in self.existed, attrs=self.attr_rows.get(entity_id, {}),
                              at=entity.get("modifiedAt", now)))
        for entity_id, before in self.deleted.items():
            out.append(Change(self.tenant, entity_id, None, before, deleted=True, at=now))
        return out


class ObservedStore:
    """The broker's store with a change feed (see module docstring); every other member is the inner store's."""

    def __init__(self, inner: EntityStore, listener: ChangeListener) -> None:
        self.inner = inner
        self.listener = listener

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @asynccontextmanager
    async def transaction(self, tenant: str) -> AsyncIterator[StoreTransaction]:
        if not self.listener.observes(tenant):
            async with self.inner.transaction(tenant) as tx:
                yield tx
            return
        async with self.inner.transaction(tenant) as tx:
            observed = _ObservedTransaction(tx, tenant, self.listener.wants_previous(tenant))
            yield observed
        self.listener.publish(observed.changes())

    async def update_entity(self, tenant: str, entity_id: str, change: EntityChange) -> bool:
        """A single-entity update the inner store's own way (PostgreSQL's is optimistic, decision 0514), its
        read and writes recorded as an observed transaction records them (``read``, ``upserted``, ``historied``):
        the same :class:`Change`, published once it is written. The store may apply ``change`` several times, each
        time to a fresh read; only the last one is written, so each try starts a fresh record."""
        if not self.listener.observes(tenant):
            return await self.inner.update_entity(tenant, entity_id, change)
        copy_previous = self.listener.wants_previous(tenant)
        record: _ObservedTransaction | None = None

        def observed(entity: Entity) -> HistoryRow | None:
            nonlocal record
            record = _ObservedTransaction(None, tenant, copy_previous)
            record.read({entity_id: entity})
            row = change(entity)
            if row is not None:
                record.upserted([entity])
                record.historied([row])
            return row

        if not await self.inner.update_entity(tenant, entity_id, observed):
            return False
        assert record is not None
        self.listener.publish(record.changes())
        return True
