"""Subscription operations (ETSI GS CIM 009 v1.8, clauses 5.8.1 create, 5.8.2 update, 5.8.3 retrieve, 5.8.4 query,
5.8.5 delete) and the matcher that turns committed changes into notifications (clause 5.8.6).

The subscriptions of every tenant are held in memory (loaded at start, kept in step with the store on each
change), so that matching a change is a few dict lookups and predicate calls in the write path's ``publish`` — the
sending itself is the dispatcher's, off the write path.

Which change fires which subscription (clause 5.2.12 ``notificationTrigger``; default attributeCreated and
attributeUpdated): an entity's creation is ``entityCreated`` (or ``attributeCreated`` for each watched attribute it
has), its deletion ``entityDeleted``, a change of an attribute ``attributeCreated``/``attributeUpdated``/
``attributeDeleted`` (or ``entityUpdated``), restricted to ``watchedAttributes`` when given; the entity must then be
one the subscription selects (``entities``, ``q``, ``geoQ`` — evaluated on the entity after the change, or before
it for a deletion). Periodic subscriptions (``timeInterval``) send the selected entities every interval instead.
Paused (``isActive: false``) and expired subscriptions send nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.entity import now_iso
from sleutelbos.broker.errors import BadRequestData, ResourceNotFound
from sleutelbos.broker.notifications.changes import Change
from sleutelbos.broker.notifications.content import Item
from sleutelbos.broker.notifications.dispatcher import Dispatcher
from sleutelbos.broker.store import EntityFilter
from sleutelbos.broker.subscriptions.model import Subscription, merge_patch, parse_subscription
from sleutelbos.broker.subscriptions.store import SubscriptionStore

log = logging.getLogger("sleutelbos.broker.subscriptions")
_ATTRIBUTE_ORDER = ("attributeUpdated", "attributeCreated", "attributeDeleted")


class SubscriptionService:
    def __init__(self, store: SubscriptionStore, dispatcher: Dispatcher, contexts: ContextStore,
                 entities: Any, max_per_tenant: int = 10_000) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.contexts = contexts
        self.entities = entities
        self.max_per_tenant = max_per_tenant
        self.subs: dict[str, dict[str, Subscription]] = {}
        self._plans: dict[str, _TenantPlan] = {}
        self._periodic: dict[tuple[str, str], asyncio.Task[None]] = {}

    # --- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        for stored in await self.store.load():
            try:
                ctx = await self.contexts.compile(stored.doc.get("@context"))
                sub = parse_subscription(stored.tenant, stored.doc, ctx, stored.doc.get("@context"), creating=False)
            except Exception:
                log.exception("stored subscription could not be loaded", extra={"subscription": stored.doc.get("id")})
                continue
            sub.created_at, sub.modified_at = stored.created_at, stored.modified_at
            sub.times_sent, sub.times_failed = stored.times_sent, stored.times_failed
            sub.last_notification, sub.last_success = stored.last_notification, stored.last_success
            sub.last_failure = stored.last_failure
            self._install(sub)

    async def stop(self) -> None:
        for task in self._periodic.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._periodic.clear()

    def _install(self, sub: Subscription) -> None:
        self.subs.setdefault(sub.tenant, {})[sub.id] = sub
        self._plans.pop(sub.tenant, None)
        self.dispatcher.attach(sub)
        key = (sub.tenant, sub.id)
        old = self._periodic.pop(key, None)
        if old is not None:
            old.cancel()
        if sub.time_interval is not None:
            self._periodic[key] = asyncio.create_task(self._periodic_loop(sub), name=f"periodic {sub.id}")

    # --- operations ------------------------------------------------------------------------------------------
    async def create(self, tenant: str, body: Any, ctx: Any, context: Any) -> str:
        sub = parse_subscription(tenant, body, ctx, context)
        if len(self.subs.get(tenant, {})) >= self.max_per_tenant:
            raise BadRequestData(f"a tenant holds at most {self.max_per_tenant} subscriptions")
        now = now_iso()
        doc = {**sub.doc, "@context": context} if context is not None else dict(sub.doc)
        await self.store.insert(tenant, sub.id, doc, now)
        sub.created_at = sub.modified_at = now
        self._install(sub)
        return sub.id

    def get(self, tenant: str, sub_id: str) -> Subscription:
        sub = self.subs.get(tenant, {}).get(sub_id)
        if sub is None:
            raise ResourceNotFound(f"subscription {sub_id} not found")
        return sub

    def list(self, tenant: str) -> list[Subscription]:
        return sorted(self.subs.get(tenant, {}).values(), key=lambda s: (s.created_at, s.id))

    async def update(self, tenant: str, sub_id: str, fragment: Any) -> None:
        old = self.get(tenant, sub_id)
        doc = merge_patch(old.doc, fragment)
        sub = parse_subscription(tenant, doc, old.ctx, old.context, creating=False)
        for attr in ("created_at", "times_sent", "times_failed", "last_notification", "last_success",
                     "last_failure"):
            setattr(sub, attr, getattr(old, attr))
        sub.modified_at = now_iso()
        stored = {**sub.doc, "@context": old.context} if old.context is not None else dict(sub.doc)
        await self.store.update(tenant, sub_id, stored, sub.modified_at)
        self._install(sub)

    async def delete(self, tenant: str, sub_id: str) -> None:
        self.get(tenant, sub_id)
        await self.store.delete(tenant, sub_id)
        del self.subs[tenant][sub_id]
        self._plans.pop(tenant, None)
        task = self._periodic.pop((tenant, sub_id), None)
        if task is not None:
            task.cancel()
        await self.dispatcher.detach(tenant, sub_id)

    # --- the change listener (called by the write path) ------------------------------------------------------
    def _plan(self, tenant: str) -> _TenantPlan:
        plan = self._plans.get(tenant)
        if plan is None:
            plan = self._plans[tenant] = _TenantPlan(self.subs.get(tenant, {}).values())
        return plan

    def observes(self, tenant: str) -> bool:
        return bool(self._plan(tenant).active)

    def wants_previous(self, tenant: str) -> bool:
        return self._plan(tenant).wants_previous

    def publish(self, changes: list[Change]) -> None:
        """Match one committed transaction's changes and hand each subscription its items in one call.

        The changes of a transaction mostly look alike (a batch of meters of one type, the same attributes updated),
        and which subscriptions a change can fire, and why, depends only on its *shape*: tenant, entity types,
        created/deleted and the kinds of its attribute changes. So the candidates (the tenant's plan, indexed by
        entity type), their trigger reason and their expiry are worked out once per shape and transaction; per change
        only the shape's key is built and, for subscriptions with an id, idPattern, ``q`` or ``geoQ``, ``selects``
        called. One :class:`Item` per change and reason is shared by the subscriptions it goes to (decision 0610)."""
        if not changes:
            return
        now = now_iso()
        out: dict[int, tuple[Subscription, list[Item]]] = {}
        routes: dict[tuple[Any, ...], list[tuple[Subscription, str, bool]]] = {}
        for change in changes:
            state = change.previous if change.deleted else change.entity
            if state is None:
                continue
            types = state.get("type", ())
            shape = (change.tenant, types if isinstance(types, str) else tuple(types), change.created,
                     change.deleted, tuple(change.attrs.items()))
            route = routes.get(shape)
            if route is None:
                route = routes[shape] = self._route(change, shape[1], now)
            if not route:
                continue
            items: dict[str, Item] = {}
            for sub, reason, check in route:
                if check and not sub.selects(state):
                    continue
                item = items.get(reason)
                if item is None:
                    previous = change.previous
                    item = items[reason] = Item(
                        change.entity_id, change.entity, previous, reason, change.at or now,
                        tuple(previous.get("type", ())) if change.deleted and previous else (),
                        next(iter(items.values())).rendered if items else None)
                entry = out.get(id(sub))
                if entry is None:
                    out[id(sub)] = (sub, [item])
                else:
                    entry[1].append(item)
        if out:
            self.dispatcher.offer_all(list(out.values()))

    def _route(self, change: Change, types: Any, now: str) -> list[tuple[Subscription, str, bool]]:
        """For a change of this shape: each subscription it fires (not expired), the trigger reason, and whether
        ``selects`` must still be asked per entity."""
        route = []
        for sub in self._plan(change.tenant).candidates(types):
            reason = self._reason(sub, change)
            if reason is not None and not sub.expired(now):
                route.append((sub, reason, not sub.selects_by_type))
        return route

    @staticmethod
    def _reason(sub: Subscription, change: Change) -> str | None:
        triggers = sub.triggers
        if change.deleted:
            return "entityDeleted" if "entityDeleted" in triggers else None
        attrs = change.attrs if sub.watched is None else {k: v for k, v in change.attrs.items() if k in sub.watched}
        if change.created and "entityCreated" in triggers and (sub.watched is None or attrs):
            return "entityCreated"
        kinds = set(attrs.values())
        for kind in _ATTRIBUTE_ORDER:
            if kind in kinds and kind in triggers:
                return kind
        if attrs and not change.created and "entityUpdated" in triggers:
            return "entityUpdated"
        return None

    # --- periodic notification (timeInterval) ----------------------------------------------------------------
    async def _periodic_loop(self, sub: Subscription) -> None:
        while True:
            try:
                if sub.is_active and not sub.expired():
                    now = now_iso()
                    for entity in await self._select(sub):
                        self.dispatcher.offer(sub, Item(entity["id"], entity, None, "", now))
            except Exception:
                log.exception("periodic notification failed", extra={"subscription": sub.id})
            await asyncio.sleep(sub.time_interval or 60.0)

    async def _select(self, sub: Subscription, limit: int = 1000) -> list[dict[str, Any]]:
        filters = []
        for selector in sub.entities:
            f = EntityFilter(type_groups=[[selector.type]], limit=limit)
            if selector.id is not None:
                f.ids = [selector.id]
            elif selector.id_pattern is not None:
                f.id_pattern = selector.id_pattern.pattern
            filters.append(f)
        if not filters and sub.watched:
            filters.append(EntityFilter(attrs=sorted(sub.watched), limit=limit))
        seen: dict[str, dict[str, Any]] = {}
        for f in filters:
            entities, _ = await self.entities.query(sub.tenant, f)
            for entity in entities:
                if entity["id"] not in seen and sub.selects(entity):
                    seen[entity["id"]] = entity
        return list(seen.values())


class _TenantPlan:
    """A tenant's change-driven subscriptions indexed for matching: by every entity type a subscription's
    ``entities`` name, plus those without ``entities`` (``watchedAttributes`` only) that any entity can match.
    Rebuilt whenever a subscription of the tenant is created, updated or deleted."""

    def __init__(self, subs: Any) -> None:
        self.active: list[Subscription] = [s for s in subs if s.is_active and s.time_interval is None]
        self.wants_previous = any(s.show_changes for s in self.active)
        self.by_type: dict[str, list[Subscription]] = {}
        self.any_type: list[Subscription] = []
        for sub in self.active:
            if not sub.entities:
                self.any_type.append(sub)
                continue
            for selected in dict.fromkeys(e.type for e in sub.entities):
                self.by_type.setdefault(selected, []).append(sub)

    def candidates(self, types: Any) -> list[Subscription]:
        """The subscriptions that may select an entity of these types (each once, in creation order)."""
        if isinstance(types, str):
            types = (types,)
        found: list[Subscription] = []
        for t in types:
            found.extend(self.by_type.get(t, ()))
        if self.any_type:
            found.extend(self.any_type)
        if len(types) > 1 or (self.any_type and found):
            found = list({id(s): s for s in found}.values())
        return found
