"""The broker's storage interface, and the schema both stores share.

Schema (SQLite and PostgreSQL; versioned through ``sleutelbos.core.database`` as component ``broker``; tables are
prefixed ``broker_`` because one database may be shared by several components):

``broker_tenants(name PK, created_at)``
    One row per NGSI-LD tenant (clause 4.14); the default tenant is ``""`` and always exists.
``broker_entities(tenant, id, type, types, created_at, modified_at, doc, geo_minx, geo_miny, geo_maxx, geo_maxy)``
    One row per entity, primary key ``(tenant, id)``. ``doc`` is the whole entity in the expanded normalized form of
    :mod:`sleutelbos.broker.entity` (JSON text in SQLite, ``jsonb`` in PostgreSQL). ``type`` is the first expanded type
    and ``types`` all of them (JSON array text in SQLite, ``text[]`` in PostgreSQL); ``geo_*`` is the bounding box of
    the default instance of ``location``, a pre-filter for geo-queries. Indexes: ``(tenant, id)`` unique and
    ``(tenant, type, id)``; entities with several types also have rows in ``broker_entity_extra_types(tenant, type,
    id)`` for their further types, so that a type query is an index range scan in id order that LIMIT stops early.
    A ``q`` translated to SQL addresses the document as ``e.doc`` (see ``sleutelbos.broker.query``).
``broker_entity_history(seq, tenant, entity_id, modified_at, deleted, instances)``
    Append-only history: one row per change of an entity, holding every attribute instance the change wrote
    (``{attribute IRI: [instances]}``, each with its ``observedAt``/``modifiedAt``; a deleted instance carries
    ``deletedAt``), written in the same transaction as the entity row, so that the temporal API (issue 3) is built on
    the same store. ``deleted`` = 1 marks the deletion of the whole entity. One row per change rather than per
    instance: a 1,000-meter batch of 4 readings is 1,000 history rows, not 4,000 (docs/decisions/0502).
``broker_jsonld_contexts(local_id PK, url, document, created_at)``
    Hosted @contexts of ``/jsonldContexts`` (clause 5.13).

Writes go through :class:`StoreTransaction`: read what the operation needs (``fetch``/``existing``), then write rows
and history — one transaction per request or per batch, committed before the client is answered. A read-modify-write
of one entity goes through :meth:`EntityStore.update_entity` instead, which a store may run without an explicit
transaction (PostgreSQL: optimistically, decision 0514); the default runs it in :meth:`EntityStore.transaction`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from sleutelbos.broker.entity import LOCATION, Entity

DEFAULT_TENANT = ""


class HistoryRow(NamedTuple):
    """One line of ``broker_entity_history``: one change of one entity (a NamedTuple: a batch makes a thousand).

    ``instances``: ``{attribute IRI: [instances written]}`` in the entity's expanded form; a deleted instance is
    ``{"datasetId"?: ..., "deletedAt": time}``. ``deleted``: the whole entity was deleted (``instances`` is None).
    """

    entity_id: str
    modified_at: str
    instances: dict[str, Any] | None
    deleted: bool = False


@dataclass
class SqlCondition:
    """A WHERE fragment in the store's dialect, with positional parameters.

    SQLite uses ``?``; PostgreSQL fragments use ``{}`` placeholders that the store numbers (``$n``) when it assembles
    the statement, so that fragments from several sources (type, id, q) combine without renumbering by hand.
    """

    sql: str
    params: list[Any] = field(default_factory=list)


@dataclass
class EntityFilter:
    """What a query selects (clause 5.7.2 / 6.4.3.2); all given parts must hold.

    ``type_groups``: OR of AND-groups of expanded types (``A,B`` → ``[[A],[B]]``; ``(A;B)`` → ``[[A,B]]``).
    ``sql``: extra conditions already in the store's dialect (q translated by the query package).
    ``post``: predicates evaluated in Python on candidates (q parts with no SQL form, exact geometry tests).
    ``attrs``: entities must have at least one of these attributes (clause 4.9: attrs also selects entities).
    ``bbox``: (minx, miny, maxx, maxy) pre-filter on the bounding box of ``location``.
    """

    type_groups: list[list[str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    id_pattern: str | None = None
    attrs: list[str] = field(default_factory=list)
    sql: list[SqlCondition] = field(default_factory=list)
    post: list[Any] = field(default_factory=list)
    bbox: tuple[float, float, float, float] | None = None
    limit: int = 20
    offset: int = 0
    count: bool = False


def location_bbox(entity: Entity) -> tuple[float | None, float | None, float | None, float | None]:
    """Bounding box of the default ``location`` instance (for the ``geo_*`` columns); Nones when absent."""
    for instance in entity.get(LOCATION, ()):
        if instance.get("datasetId") is None:
            coords = _flatten(instance.get("value", {}).get("coordinates") if isinstance(instance.get("value"),
                                                                                          dict) else None)
            if coords:
                xs = [c[0] for c in coords]
                ys = [c[1] for c in coords]
                return min(xs), min(ys), max(xs), max(ys)
    return None, None, None, None


def _flatten(coords: Any) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []

    def walk(node: Any) -> None:
        if isinstance(node, list) and node and isinstance(node[0], int | float):
            if len(node) >= 2:
                out.append((float(node[0]), float(node[1])))
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(coords)
    return out


#: A single-entity read-modify-write (:meth:`EntityStore.update_entity`): given the stored entity (a fresh copy the
#: function may change in place), the history row of the change, or ``None`` to write nothing. It may raise (an
#: ``NgsiLdError``: nothing is written). A store may call it more than once, each time on a fresh copy, so it must
#: not depend on what an earlier call did: its result is a function of the entity it is given.
EntityChange = Callable[[Entity], HistoryRow | None]


async def update_in_transaction(store: Any, tenant: str, entity_id: str, change: EntityChange) -> bool:
    """:meth:`EntityStore.update_entity` in one ``store.transaction``: the read locks the row where the database
    can (``fetch``), the entity and its history row are written together. Any object with ``transaction`` will do
    (the change feed's ``ObservedStore`` runs it on its observed transactions)."""
    async with store.transaction(tenant) as tx:
        found = await tx.fetch([entity_id])
        entity = found.get(entity_id)
        if entity is None:
            return False
        row = change(entity)
        if row is not None:
            await tx.upsert([entity])
            await tx.history([row])
    return True


class StoreTransaction(abc.ABC):
    """One write transaction on one tenant."""

    @abc.abstractmethod
    async def fetch(self, ids: Sequence[str]) -> dict[str, Entity]:
        """The stored entities among ``ids`` (locked for update where the database supports it)."""

    @abc.abstractmethod
    async def existing(self, ids: Sequence[str]) -> dict[str, str]:
        """``id → createdAt`` of the stored entities among ``ids`` (cheaper than ``fetch``)."""

    @abc.abstractmethod
    async def upsert(self, entities: Sequence[Entity]) -> None:
        """Write whole entities (insert or replace), one ``executemany``."""

    @abc.abstractmethod
    async def delete(self, ids: Sequence[str]) -> None: ...

    @abc.abstractmethod
    async def delete_by_filter(self, entity_filter: EntityFilter) -> list[str]:
        """Purge (``DELETE /entities?type=``): delete what the filter selects; returns the deleted ids."""

    @abc.abstractmethod
    async def history(self, rows: Sequence[HistoryRow]) -> None:
        """Append to ``broker_entity_history``."""


class EntityStore(abc.ABC):
    """Persistence of entities per tenant; SQLite and PostgreSQL implement it."""

    dialect: str
    #: SQL expression of the entity row's scalar column (``query.sql.scalar_values``) when the store keeps one, for
    #: ``SqlTarget(scalars=...)``; ``None`` otherwise (decision 0555).
    q_scalars: str | None = None

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def tenants(self) -> list[str]: ...

    async def tenant_exists(self, tenant: str) -> bool:
        return tenant in await self.tenants()

    @abc.abstractmethod
    def transaction(self, tenant: str) -> AbstractAsyncContextManager[StoreTransaction]:
        """A write transaction; creates the tenant on first write (clause 4.14: tenants are created implicitly)."""

    async def update_entity(self, tenant: str, entity_id: str, change: EntityChange) -> bool:
        """Read entity ``entity_id``, apply ``change`` to it and write the result with its history row, atomically
        and durably, as if no other write ran in between (no lost update); ``False`` when the entity does not exist
        (``change`` is not called). This default runs it in one :meth:`transaction`."""
        return await update_in_transaction(self, tenant, entity_id, change)

    @abc.abstractmethod
    async def get(self, tenant: str, entity_id: str) -> Entity | None: ...

    @abc.abstractmethod
    async def query(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[Entity], int | None]:
        """Entities the filter selects, ordered by id, paginated; and the total count when asked."""

    async def query_documents(self, tenant: str, entity_filter: EntityFilter) -> tuple[list[str], int | None]:
        """As :meth:`query`, but each entity as the JSON text the store holds (the read path renders from it).

        The stores return their column as it is, without parsing it: the API's render cache is keyed by that text,
        so that a page of entities already rendered for the same request shape costs no JSON parse at all. This
        default serves stores that keep no text.
        """
        entities, count = await self.query(tenant, entity_filter)
        return [orjson.dumps(e).decode() for e in entities], count

    async def get_document(self, tenant: str, entity_id: str) -> str | None:
        """As :meth:`get`, but the entity's stored JSON text (see :meth:`query_documents`)."""
        entity = await self.get(tenant, entity_id)
        return None if entity is None else orjson.dumps(entity).decode()

    @abc.abstractmethod
    def scan(self, tenant: str, entity_filter: EntityFilter) -> AsyncIterator[Entity]:
        """Every entity the SQL part of the filter selects (no pagination, no ``post``): discovery and purge."""

    @abc.abstractmethod
    async def history_count(self, tenant: str, entity_id: str | None = None) -> int: ...

    @abc.abstractmethod
    async def hosted_contexts(self) -> list[tuple[str, str, Any, str]]:
        """``(local_id, url, document, created_at)`` of every hosted @context."""

    @abc.abstractmethod
    async def save_hosted_context(self, local_id: str, url: str, document: Any, created_at: str) -> None: ...

    @abc.abstractmethod
    async def delete_hosted_context(self, local_id: str) -> None: ...


def id_pattern_ok(pattern: str) -> str:
    """Validate an ``idPattern`` regex (clause 4.9) — raise BadRequestData if it does not compile."""
    import re

    from sleutelbos.broker.errors import BadRequestData

    try:
        re.compile(pattern)
    except re.error as exc:
        raise BadRequestData(f"idPattern is not a valid regular expression: {exc}") from exc
    return pattern
