"""Compaction of an expanded entity for a response (ETSI GS CIM 009 v1.8, clauses 4.5.x normalized and simplified
representations, 4.8 sysAttrs): the minimal rendering the API needs when the representation layer
(``sleutelbos.broker.representation``, owned by the query/representation work) is not present.

``render(entity, ctx, form=..., sys_attrs=..., pick=..., omit=..., lang=..., dataset_id=...)`` returns the JSON the
client sees: attribute names and types compacted with the caller's @context (dict lookups), one instance shown as an
object and several as an array; ``keyValues`` replaces each attribute by its value; ``concise`` drops
``type`` members (a Property with only a value becomes the value); without ``sysAttrs``, ``createdAt``/``modifiedAt``
are dropped at every level.
"""

from __future__ import annotations

from typing import Any

from sleutelbos.broker.context import CompiledContext
from sleutelbos.broker.entity import INSTANCE_MEMBERS, VALUE_MEMBER, Entity

_SYS = ("createdAt", "modifiedAt")


def _instance(inst: dict[str, Any], ctx: CompiledContext, form: str, sys_attrs: bool, lang: str | None) -> Any:
    kind = inst.get("type", "Property")
    member = VALUE_MEMBER.get(kind, "value")
    if form == "keyValues":
        value = inst.get(member)
        if kind == "LanguageProperty" and lang and isinstance(value, dict):
            return value.get(lang, next(iter(value.values()), None))
        if kind == "VocabProperty":
            return [ctx.compact_iri(v) for v in value] if isinstance(value, list) else ctx.compact_iri(value)
        return value
    out: dict[str, Any] = {}
    concise = form == "concise"
    for key, value in inst.items():
        if concise and key == "type":
            continue  # clause 4.5.x concise: the kind is implied by the value member
        if key in INSTANCE_MEMBERS:
            if not sys_attrs and key in _SYS:
                continue
            if key == "vocab":
                value = [ctx.compact_iri(v) for v in value] if isinstance(value, list) else ctx.compact_iri(value)
            elif key == "objectType":
                value = [ctx.compact_iri(v) for v in value]
                value = value[0] if len(value) == 1 else value
            elif key == "languageMap" and lang:
                chosen = value.get(lang) if isinstance(value, dict) else None
                if chosen is None and isinstance(value, dict) and value:
                    lang_used = next(iter(value))
                    chosen = value[lang_used]
                out["type"] = "Property"
                out["value"] = chosen
                out["lang"] = lang if isinstance(value, dict) and lang in value else None
                continue
            out[key] = value
        else:
            out[ctx.compact_iri(key)] = _attribute(value, ctx, form, sys_attrs, lang)
    if concise and kind == "Property" and set(out) == {"value"} and not isinstance(out["value"], dict):
        return out["value"]  # a Property with nothing but a value is the value itself
    return out


def _attribute(instances: list[dict[str, Any]], ctx: CompiledContext, form: str, sys_attrs: bool,
               lang: str | None) -> Any:
    rendered = [_instance(i, ctx, form, sys_attrs, lang) for i in instances]
    return rendered[0] if len(rendered) == 1 else rendered


def render(entity: Entity, ctx: CompiledContext, *, form: str = "normalized", sys_attrs: bool = False,
           pick: set[str] | None = None, omit: set[str] | None = None, lang: str | None = None,
           dataset_id: list[str] | None = None) -> dict[str, Any]:
    """``pick``/``omit`` hold expanded IRIs (plus ``id``/``type``); ``dataset_id`` keeps only those instances
    (``urn:ngsi-ld:default`` = the default instance)."""
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if pick is not None and key not in pick and key not in ("id",):
            continue
        if omit is not None and key in omit:
            continue
        if key == "id":
            out["id"] = value
        elif key == "type":
            types = [ctx.compact_iri(t) for t in value]
            out["type"] = types[0] if len(types) == 1 else types
        elif key in _SYS:
            if sys_attrs and form != "keyValues":
                out[key] = value
        elif key == "scope":
            out["scope"] = value[0] if len(value) == 1 else value
        elif key == "deletedAt":
            continue
        else:
            instances = value
            if dataset_id is not None:
                instances = [i for i in value if i.get("datasetId", "urn:ngsi-ld:default") in dataset_id]
                if not instances:
                    continue
            out[ctx.compact_iri(key)] = _attribute(instances, ctx, form, sys_attrs, lang)
    return out
