"""Temporal representations of an entity (ETSI GS CIM 009 v1.8, clause 4.5.7 normalized temporal, 4.5.8 simplified
``temporalValues``, 4.5.19 ``aggregatedValues``), compacted with the request's @context.

* normalized: each attribute is an array of its instances, each with ``instanceId`` (and ``modifiedAt`` with
  ``sysAttrs``);
* temporalValues: ``{"type": "Property", "values": [[value, time], ...]}`` (``objects`` for relationships,
  ``languageMaps``, ``jsons``, ``valueLists``, ``objectLists``, ``vocabs`` for the other kinds); one per datasetId;
* aggregatedValues: ``{"type": "Property", "<method>": [[value, from, to], ...], ...}``.
"""

from __future__ import annotations

from typing import Any

from sleutelbos.broker.context import CompiledContext
from sleutelbos.broker.entity import VALUE_MEMBER
from sleutelbos.broker.representation import render
from sleutelbos.broker.temporal.history import InstanceRow, instance_id

_PLURAL = {"value": "values", "object": "objects", "languageMap": "languageMaps", "json": "jsons",
           "valueList": "valueLists", "objectList": "objectLists", "vocab": "vocabs"}


def header(entity_id: str, types: list[str], ctx: CompiledContext) -> dict[str, Any]:
    out: dict[str, Any] = {"id": entity_id}
    if types:
        compact = [ctx.compact_iri(t) for t in types]
        out["type"] = compact[0] if len(compact) == 1 else compact
    return out


def normalized(attr: str, rows: list[InstanceRow], ctx: CompiledContext, sys_attrs: bool) -> list[dict[str, Any]]:
    """All instances rendered in one call (the renderer keeps their order)."""
    instances = []
    for row in rows:
        inst = dict(row.instance)
        inst.pop("datasetId", None)  # instances of a temporal attribute may share a datasetId: keep it aside
        inst["modifiedAt"] = row.modified_at
        instances.append(inst)
    rendered = render({"id": "", attr: instances}, ctx, sys_attrs=sys_attrs).get(ctx.compact_iri(attr))
    out = rendered if isinstance(rendered, list) else [rendered]
    for item, row in zip(out, rows, strict=True):
        if row.dataset_id is not None:
            item["datasetId"] = row.dataset_id
        item["instanceId"] = instance_id(row.key)
    return out


def simplified(rows: list[InstanceRow], column: str) -> Any:
    by_dataset: dict[str | None, dict[str, Any]] = {}
    for row in rows:
        kind = row.instance.get("type", "Property")
        member = VALUE_MEMBER.get(kind, "value")
        entry = by_dataset.setdefault(row.dataset_id, {"type": kind, _PLURAL[member]: []})
        shown = row.instance.get("observedAt", row.observed_at) if column == "observed_at" else row.modified_at
        entry.setdefault(_PLURAL[member], []).append([row.instance.get(member), shown])
        if row.dataset_id is not None:
            entry["datasetId"] = row.dataset_id
    values = list(by_dataset.values())
    return values[0] if len(values) == 1 else values


def aggregated(kind: str, methods: list[str], periods: list[tuple[str, str, list[Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    for i, method in enumerate(methods):
        out[method] = [[_number(values[i], method), start, end] for start, end, values in periods]
    return out


def _number(value: Any, method: str) -> Any:
    if value is None:
        return None
    if method in ("totalCount", "distinctCount"):
        return int(value)
    return float(value)
