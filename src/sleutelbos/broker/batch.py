"""The batch operations create, upsert, update and merge (clause 5.6.7-5.6.10, 5.6.20) from a parsed body to the
service: each entity expanded with the request's @context (or its own, in ``application/ld+json``), the ones that
fail recorded in the :class:`BatchResult` and the rest applied.

A function of the service and the body rather than an HTTP handler, because two places run it: the HTTP layer, and a
batch worker process that takes the body apart on a core of its own (``batch_workers``, decision 0730)."""

from __future__ import annotations

from typing import Any, Final

from sleutelbos.broker.context import CompiledContext
from sleutelbos.broker.entity import Entity
from sleutelbos.broker.errors import BadRequestData, NgsiLdError
from sleutelbos.broker.service import BatchResult, BrokerService
from sleutelbos.broker.validation import expand_entity, expand_fragment

#: the batch operations that take entities (``whole``) or fragments; delete takes ids and stays with the HTTP layer
OPERATIONS: Final = ("create", "upsert", "update", "merge")


async def expand_batch(service: BrokerService, ctx: CompiledContext, body: list[Any], result: BatchResult,
                       whole: bool, now: str, allow_null: bool = False) -> list[Entity]:
    """Each member expanded; one that fails is recorded in ``result`` and left out."""
    out: list[Entity] = []
    for item in body:
        entity_id = item.get("id", item.get("@id")) if isinstance(item, dict) else None
        try:
            item_ctx = ctx
            if isinstance(item, dict) and "@context" in item and item["@context"] != ctx.context:
                item_ctx = await service.contexts.compile(item["@context"])
            if whole:
                out.append(expand_entity(item, item_ctx, now))
            else:
                if not isinstance(item, dict) or "id" not in item:
                    raise BadRequestData("each entity in the batch needs an id")
                fragment = expand_fragment(item, item_ctx, now, allow_null=allow_null)
                fragment["modifiedAt"] = now
                out.append(fragment)
        except NgsiLdError as error:
            result.fail(entity_id if entity_id is not None else "", error)
    return out


async def apply_batch(service: BrokerService, op: str, tenant: str, ctx: CompiledContext, body: Any,
                      options: set[str], now: str, result: BatchResult) -> None:
    """Batch ``op`` (one of :data:`OPERATIONS`) of ``body``, a parsed JSON array."""
    items = await expand_op(service, op, ctx, body, result, now)
    await apply_expanded(service, op, tenant, items, options, result)


async def expand_op(service: BrokerService, op: str, ctx: CompiledContext, body: Any, result: BatchResult,
                    now: str) -> list[Entity]:
    """The entities (create, upsert) or fragments (update, merge) of a batch body."""
    if not isinstance(body, list):
        raise BadRequestData("a batch operation's body must be a JSON array")
    return await expand_batch(service, ctx, body, result, op in ("create", "upsert"), now, allow_null=op == "merge")


async def apply_expanded(service: BrokerService, op: str, tenant: str, items: list[Entity], options: set[str],
                         result: BatchResult) -> None:
    """The service's batch ``op`` on entities (or fragments) already expanded."""
    if op not in OPERATIONS:
        raise ValueError(f"unknown batch operation {op!r}")
    if not items:
        return
    if op == "create":
        await service.batch_create(tenant, items, result)
    elif op == "upsert":
        await service.batch_upsert(tenant, items, result, update="update" in options)
    elif op == "update":
        await service.batch_update(tenant, items, result, "noOverwrite" in options)
    else:
        await service.batch_merge(tenant, items, result)
