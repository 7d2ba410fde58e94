"""The Notification data type (ETSI GS CIM 009 v1.8, clause 5.3.1) built for one subscription: ``id``, ``type``
``Notification``, ``subscriptionId``, ``notifiedAt``, ``triggerReason`` and ``data`` — the entities rendered in the
subscription's format (normalized, keyValues, concise — clause 4.5.x) with ``notification.attributes``, ``sysAttrs``,
``lang`` and, with ``showChanges``, each changed attribute's ``previousValue`` (normalized and concise only).

The subscription's @context goes in a ``Link`` header for ``application/json`` and in the body for
``application/ld+json`` (clause 5.8.6 / 6.3.x). A deleted entity is sent as ``{"id", "type", "deletedAt"}``.
"""

from __future__ import annotations

import uuid
from typing import Any

from sleutelbos.broker.context import CORE_CONTEXT_URL, link_header_for
from sleutelbos.broker.entity import VALUE_MEMBER, Entity, attributes, now_iso
from sleutelbos.broker.notifications.delivery import Message
from sleutelbos.broker.representation import render
from sleutelbos.broker.subscriptions.model import Subscription


class Item:
    """One entity to notify about: its state (or None if deleted), what it was before, and why.

    A plain class with ``__slots__`` rather than a frozen dataclass: the matcher makes one per notified change on
    the write path, and a frozen dataclass's ``__init__`` (``object.__setattr__`` per field) cost ~1.5 µs of it
    (decision 0610). One item is shared by every subscription notified of the change for the same reason; treat it
    as read-only."""

    __slots__ = ("at", "entity", "entity_id", "previous", "reason", "rendered", "types")

    def __init__(self, entity_id: str, entity: Entity | None, previous: Entity | None, reason: str, at: str,
                 types: tuple[str, ...] = (), rendered: dict[Any, dict[str, Any]] | None = None) -> None:
        self.entity_id = entity_id
        self.entity = entity
        self.previous = previous
        self.reason = reason
        self.at = at
        self.types = types
        self.rendered: dict[Any, dict[str, Any]] = {} if rendered is None else rendered
        """Renderings shared by every subscription notified of this change with the same parameters."""

    def __repr__(self) -> str:
        return f"Item({self.entity_id!r}, {self.reason!r}, at={self.at!r})"


def render_entity(sub: Subscription, item: Item) -> dict[str, Any]:
    ctx = sub.ctx
    if item.entity is None:
        types = [ctx.compact_iri(t) for t in item.types]
        out: dict[str, Any] = {"id": item.entity_id, "deletedAt": item.at}
        if types:
            out["type"] = types[0] if len(types) == 1 else types
        return out
    key = sub.render_key
    cached = item.rendered.get(key)
    if cached is not None:
        return cached
    out = render(item.entity, ctx, form=sub.format, sys_attrs=sub.sys_attrs, pick=sub.render_pick, lang=sub.lang)
    if sub.show_changes and item.previous is not None and sub.format != "keyValues":
        _previous_values(out, item, sub)
    item.rendered[key] = out
    return out


def _previous_values(out: dict[str, Any], item: Item, sub: Subscription) -> None:
    assert item.entity is not None and item.previous is not None
    for iri, instances in attributes(item.previous):
        if not isinstance(instances, list) or iri not in item.entity:
            continue
        name = sub.ctx.compact_iri(iri)
        rendered = out.get(name)
        if rendered is None:
            continue
        before = {i.get("datasetId"): i for i in instances if isinstance(i, dict)}
        if not isinstance(rendered, dict | list) or (isinstance(rendered, dict) and "value" not in rendered
                                                       and "object" not in rendered and "type" not in rendered):
            rendered = out[name] = {"value": rendered}  # a concise bare value gets its previousValue beside it
        for inst in rendered if isinstance(rendered, list) else [rendered]:
            if not isinstance(inst, dict):
                continue
            old = before.get(inst.get("datasetId"))
            if old is None:
                continue
            member = VALUE_MEMBER.get(old.get("type", "Property"), "value")
            new_member = VALUE_MEMBER.get(inst.get("type", old.get("type", "Property")), "value")
            if old.get(member) != inst.get(new_member):
                key = {"value": "previousValue", "object": "previousObject", "languageMap": "previousLanguageMap",
                       "json": "previousJson", "valueList": "previousValueList", "objectList": "previousObjectList",
                       "vocab": "previousVocab"}.get(member, "previousValue")
                inst[key] = old.get(member)


def build_message(sub: Subscription, items: list[Item]) -> Message:
    reasons = {i.reason for i in items if i.reason}
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        "type": "Notification",
        "subscriptionId": sub.id,
        "notifiedAt": now_iso(),
        "data": [render_entity(sub, i) for i in items],
    }
    if len(reasons) == 1:
        body["triggerReason"] = reasons.pop()
    context_url = sub.context if isinstance(sub.context, str) else None
    headers = {"Content-Type": sub.endpoint.accept}
    if sub.endpoint.accept == "application/ld+json":
        body["@context"] = sub.context if sub.context is not None else CORE_CONTEXT_URL
    else:
        headers["Link"] = link_header_for(context_url or CORE_CONTEXT_URL)
    headers.update(dict(sub.endpoint.receiver_info))
    return Message(body=body, headers=headers)
