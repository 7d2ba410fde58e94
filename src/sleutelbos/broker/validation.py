"""Validation and expansion of incoming NGSI-LD entities and attribute fragments (ETSI GS CIM 009 v1.8, clauses 4.5,
4.6, 4.7, 5.2 and 5.5.4) into the expanded normalized form of :mod:`sleutelbos.broker.entity`.

This is the write path's hot loop, so it is one pass over the request's JSON with one dict lookup per attribute name
(:meth:`CompiledContext.expand_term`) and checks that cost little: the id is a URI, every attribute has a known
``type`` and the value member that type requires, ``datasetId`` is a URI, ``observedAt`` is an ISO 8601 date-time,
GeoProperty values are GeoJSON geometries (RFC 7946 §3.1: the right nesting of positions, closed linear rings),
attribute names carry none of the characters clause 4.6.2 forbids. Anything wrong raises :class:`BadRequestData`
naming the attribute and the rule.

Left out on purpose: input in the concise or keyValues form (an attribute must say its ``type``); ``@value``/
``@type`` typed literals are stored as given.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

from sleutelbos.broker.context import CompiledContext
from sleutelbos.broker.entity import ATTRIBUTE_TYPES, VALUE_MEMBER, AttributeInstance, Entity
from sleutelbos.broker.errors import BadRequestData

_URI_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")
_FORBIDDEN_NAME_RE: Final = re.compile(r"[<>\"'=;()\s\x00-\x1f\x7f]")
_DATETIME_RE: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$"
)
NGSI_LD_NULL: Final = "urn:ngsi-ld:null"
MAX_DEPTH: Final = 6
_GEO_TYPES: Final = frozenset(
    {"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon", "GeometryCollection"}
)
#: Instance members a client may send besides the value member and sub-attributes.
_CLIENT_MEMBERS: Final = frozenset({"type", "observedAt", "unitCode", "datasetId", "objectType", "lang"})
_SYSTEM_MEMBERS: Final = frozenset({"createdAt", "modifiedAt", "deletedAt", "instanceId"})
_ENTITY_SKIPPED: Final = frozenset({"@context", "createdAt", "modifiedAt", "deletedAt"})
_ALL_VALUE_MEMBERS: Final = frozenset(VALUE_MEMBER.values())

_checked_names: set[str] = set()


def is_uri(value: Any) -> bool:
    """RFC 3986 absolute URI (scheme ``:`` rest), as clause 4.5.1 requires of entity ids."""
    return isinstance(value, str) and len(value) < 2048 and _URI_RE.match(value) is not None


def check_entity_id(value: Any) -> str:
    if not is_uri(value):
        raise BadRequestData(f"entity id must be a URI (RFC 3986), got {value!r}")
    return value


def check_name(name: str) -> None:
    """Clause 4.6.2: attribute and type names carry no ``< > " ' = ; ( )``, whitespace or control characters."""
    if name in _checked_names:
        return
    if not name or len(name) > 1024 or _FORBIDDEN_NAME_RE.search(name):
        raise BadRequestData(f"invalid attribute or type name {name!r} (clause 4.6.2 forbids <>\"'=;() and spaces)")
    if len(_checked_names) < 100_000:
        _checked_names.add(name)


_checked_datetimes: set[str] = set()


def check_datetime(value: Any, what: str) -> str:
    """ISO 8601 date-time; the strings already seen are remembered (a batch of readings shares a few timestamps)."""
    if type(value) is str and value in _checked_datetimes:
        return value  # type: ignore[no-any-return]
    if not isinstance(value, str) or _DATETIME_RE.match(value) is None:
        raise BadRequestData(f"{what} must be an ISO 8601 date-time (e.g. 2026-01-01T00:00:00Z), got {value!r}")
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRequestData(f"{what} is not a valid date-time: {value!r}") from exc
    if len(_checked_datetimes) > 10_000:
        _checked_datetimes.clear()
    _checked_datetimes.add(value)
    return value


def expand_types(raw: Any, ctx: CompiledContext) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) and t for t in raw):
        raise BadRequestData(f"entity type must be a non-empty string or list of strings, got {raw!r}")
    out: list[str] = []
    for t in raw:
        check_name(t)
        iri = ctx.expand_term(t)
        if iri not in out:
            out.append(iri)
    return out


def check_scope(raw: Any) -> list[str]:
    scopes = [raw] if isinstance(raw, str) else raw
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s.startswith("/") for s in scopes):
        raise BadRequestData(f"scope must be a string or list of strings starting with '/', got {raw!r}")
    return scopes


# --- the compiled fast path --------------------------------------------------------------------------------------
# A fleet sends the same entity shape a million times: ``{"id", "type", <the same attribute names>}`` with each
# attribute a plain Property ``{type, value, observedAt?, unitCode?}``. For such a shape the names are checked and
# expanded once per (context, key tuple) — the *plan*, kept on the CompiledContext — and each entity then costs a
# URI match on its id and a few type checks per attribute. Anything the plan does not cover (another shape, a
# sub-attribute, a datasetId, a value that fails a check) returns None and goes down the generic path below, which
# applies the same rules and raises the same errors: the fast path only ever accepts what the generic path accepts,
# with the same result.
_PLAN_LIMIT: Final = 4096
_FRAGMENT: Final = "\x00fragment"  # plan-key marker; a control character cannot be an attribute name (clause 4.6.2)
_NOT_PLANNABLE: Final = ()


def _plan(ctx: CompiledContext, key: tuple[str, ...], names: Any) -> tuple[tuple[str, str], ...]:
    """``(name, IRI)`` of each attribute of a shape, or ``()`` when the shape is not for the fast path."""
    plan = ctx.plans.get(key)
    if plan is not None:
        return plan  # type: ignore[no-any-return]
    try:
        for name in names:
            check_name(name)
        plan = tuple((name, ctx.expand_term(name)) for name in names)
    except BadRequestData:
        plan = _NOT_PLANNABLE
    if len(ctx.plans) < _PLAN_LIMIT:
        ctx.plans[key] = plan
    return plan


def _plain_property(raw: Any, now: str) -> AttributeInstance | None:
    """The instance of a plain Property ``{type, value, observedAt?, unitCode?}``, or None (generic path)."""
    if type(raw) is not dict:
        return None
    if len(raw) == 4 and raw.keys() == _PLAIN_PROPERTY:  # a meter reading: one dict display, no branches
        value = raw["value"]
        observed = raw["observedAt"]
        unit = raw["unitCode"]
        if (raw["type"] == "Property" and value is not None and type(observed) is str
                and observed in _checked_datetimes and type(unit) is str and unit and type(value) is not str):
            return {"type": "Property", "value": value, "observedAt": observed, "unitCode": unit,
                    "createdAt": now, "modifiedAt": now}
    if raw.get("type") != "Property" or not raw.keys() <= _PLAIN_PROPERTY:
        return None
    value = raw.get("value")
    if value is None or value == NGSI_LD_NULL:
        return None
    out: AttributeInstance = {"type": "Property", "value": value}
    observed = raw.get("observedAt")
    if observed is not None:
        if type(observed) is not str or observed not in _checked_datetimes:
            try:
                check_datetime(observed, "observedAt")
            except BadRequestData:
                return None
        out["observedAt"] = observed
    unit = raw.get("unitCode")
    if unit is not None:
        if type(unit) is not str or not unit:
            return None
        out["unitCode"] = unit
    out["createdAt"] = now
    out["modifiedAt"] = now
    return out


def _fast_entity(body: dict[str, Any], ctx: CompiledContext, now: str) -> Entity | None:
    keys = tuple(body)
    plan = ctx.plans.get(keys)
    if plan is None:
        if "id" not in body or "type" not in body or not _ENTITY_PLAIN_KEYS.isdisjoint(body):
            return None
        plan = _plan(ctx, keys, [k for k in keys if k != "id" and k != "type" and k not in _ENTITY_SKIPPED])
    if not plan:
        return None
    entity_id = body["id"]
    if type(entity_id) is not str or len(entity_id) >= 2048 or _URI_RE.match(entity_id) is None:
        return None
    raw_type = body["type"]
    if type(raw_type) is not str:
        return None
    types = ctx.plans.get(raw_type)
    if types is None:
        try:
            types = expand_types(raw_type, ctx)
        except BadRequestData:
            return None
        if len(ctx.plans) < _PLAN_LIMIT:
            ctx.plans[raw_type] = types
    entity: Entity = {"id": entity_id, "type": list(types), "createdAt": now, "modifiedAt": now}
    return entity if _add_plain_properties(entity, body, plan, now) else None


def _fast_fragment(body: dict[str, Any], ctx: CompiledContext, now: str) -> Entity | None:
    keys = (_FRAGMENT, *body)
    plan = ctx.plans.get(keys)
    if plan is None:
        if not _FRAGMENT_PLAIN_KEYS.isdisjoint(body):
            return None
        plan = _plan(ctx, keys, [k for k in body if k not in _ENTITY_SKIPPED])
    if not plan:
        return None
    out: Entity = {}
    return out if _add_plain_properties(out, body, plan, now) else None


def _add_plain_properties(out: Entity, body: dict[str, Any], plan: tuple[tuple[str, str], ...], now: str) -> bool:
    """Each planned attribute of ``body`` into ``out`` under its IRI; False at the first one that is not a plain
    Property (the caller then takes the generic path)."""
    for name, iri in plan:
        instance = _plain_property(body[name], now)
        if instance is None:
            return False
        out[iri] = [instance]
    return True


# keys that send an entity / a fragment down the generic path (they need more than an attribute plan)
_ENTITY_PLAIN_KEYS: Final = frozenset({"@id", "@type", "scope"})
_FRAGMENT_PLAIN_KEYS: Final = frozenset({"id", "@id", "type", "@type", "scope"})


def expand_entity(body: Any, ctx: CompiledContext, now: str, *, require_type: bool = True) -> Entity:
    """A whole entity from a client (create, replace, batch) → expanded normalized form with system timestamps."""
    if type(body) is dict:
        fast = _fast_entity(body, ctx, now)
        if fast is not None:
            return fast
    if not isinstance(body, dict):
        raise BadRequestData(f"an entity must be a JSON object, got {type(body).__name__}")
    entity_id = body.get("id", body.get("@id"))
    if entity_id is None:
        raise BadRequestData("entity has no id")
    entity: Entity = {"id": check_entity_id(entity_id)}
    raw_type = body.get("type", body.get("@type"))
    if raw_type is None:
        if require_type:
            raise BadRequestData(f"entity {entity_id} has no type")
    else:
        entity["type"] = expand_types(raw_type, ctx)
    entity["createdAt"] = now
    entity["modifiedAt"] = now
    for name, raw in body.items():
        if name in ("id", "@id", "type", "@type") or name in _ENTITY_SKIPPED:
            continue
        if name == "scope":
            entity["scope"] = check_scope(raw)
            continue
        check_name(name)
        entity[ctx.expand_term(name)] = expand_attribute(name, raw, ctx, now)
    return entity


def expand_fragment(body: Any, ctx: CompiledContext, now: str, *, allow_null: bool = False) -> Entity:
    """Attributes to append, update or merge (``/attrs``, merge-patch): ``{iri: [instances]}``; with ``allow_null``
    (merge-patch, clause 5.6.17) an attribute whose value is ``null``/``urn:ngsi-ld:null`` maps to ``None``
    (delete it). ``id``/``type``/``scope`` are kept when present (merge-patch may change type and scope)."""
    if type(body) is dict:
        fast = _fast_fragment(body, ctx, now)
        if fast is not None:
            return fast
    if not isinstance(body, dict):
        raise BadRequestData(f"the attributes must be a JSON object, got {type(body).__name__}")
    out: Entity = {}
    for name, raw in body.items():
        if name in _ENTITY_SKIPPED:
            continue
        if name in ("id", "@id"):
            out["id"] = check_entity_id(raw)
            continue
        if name in ("type", "@type"):
            out["type"] = expand_types(raw, ctx)
            continue
        if name == "scope":
            out["scope"] = None if allow_null and raw in (None, NGSI_LD_NULL) else check_scope(raw)
            continue
        check_name(name)
        iri = ctx.expand_term(name)
        if allow_null and (raw is None or raw == NGSI_LD_NULL or _null_valued(raw)):
            out[iri] = None
            continue
        out[iri] = expand_attribute(name, raw, ctx, now)
    return out


def _null_valued(raw: Any) -> bool:
    """A merge-patch attribute whose value member is null/NGSI-LD null (clause 5.6.17: delete it)."""
    if not isinstance(raw, dict):
        return False
    kind = raw.get("type", "Property")
    member = VALUE_MEMBER.get(kind, "value") if type(kind) is str else "value"
    return member in raw and (raw[member] is None or raw[member] == NGSI_LD_NULL)


def expand_attribute(name: str, raw: Any, ctx: CompiledContext, now: str, depth: int = 0) -> list[AttributeInstance]:
    """One attribute (an object, or a list of objects with distinct ``datasetId``s) → list of instances."""
    if type(raw) is dict:
        return [expand_instance(name, raw, ctx, now, depth)]
    if isinstance(raw, list) and raw:
        instances = [expand_instance(name, item, ctx, now, depth) for item in raw]
        seen: set[str | None] = set()
        for inst in instances:
            ds = inst.get("datasetId")
            if ds in seen:
                raise BadRequestData(f"attribute {name!r} has two instances with datasetId {ds!r}")
            seen.add(ds)
        return instances
    raise BadRequestData(
        f"attribute {name!r} must be an object with a type (normalized form), got {type(raw).__name__}")


_PLAIN_PROPERTY: Final = frozenset({"type", "value", "observedAt", "unitCode"})


def expand_instance(name: str, raw: Any, ctx: CompiledContext, now: str, depth: int = 0) -> AttributeInstance:
    if type(raw) is not dict:
        raise BadRequestData(f"attribute {name!r}: each instance must be a JSON object")
    kind = raw.get("type")
    if kind == "Property" and raw.keys() <= _PLAIN_PROPERTY and raw.get("value") is not None:
        # the fast path of a meter reading: value, observedAt, unitCode — same rules as below, fewer branches
        out: AttributeInstance = {"type": "Property", "value": raw["value"]}
        observed = raw.get("observedAt")
        if observed is not None:
            out["observedAt"] = (observed if type(observed) is str and observed in _checked_datetimes
                                 else check_datetime(observed, f"attribute {name!r}: observedAt"))
        unit = raw.get("unitCode")
        if unit is not None:
            if type(unit) is not str or not unit:
                raise BadRequestData(f"attribute {name!r}: unitCode must be a non-empty string")
            out["unitCode"] = unit
        out["createdAt"] = now
        out["modifiedAt"] = now
        return out
    if kind is None:
        raise BadRequestData(f"attribute {name!r} has no type (Property, Relationship, GeoProperty, ...)")
    if type(kind) is not str or kind not in ATTRIBUTE_TYPES:
        kinds = ", ".join(sorted(ATTRIBUTE_TYPES))
        raise BadRequestData(f"attribute {name!r} has unknown type {kind!r}; one of {kinds}")
    member = VALUE_MEMBER[kind]
    if member not in raw:
        raise BadRequestData(f"attribute {name!r} of type {kind} needs a {member!r} member")
    out = {"type": kind}
    for key, value in raw.items():
        if key == member:
            out[member] = _check_value(name, kind, value, ctx)
        elif key == "type":
            continue
        elif key == "observedAt":
            out["observedAt"] = (value if type(value) is str and value in _checked_datetimes
                                 else check_datetime(value, f"attribute {name!r}: observedAt"))
        elif key == "unitCode":
            if not isinstance(value, str) or not value:
                raise BadRequestData(f"attribute {name!r}: unitCode must be a non-empty string")
            out["unitCode"] = value
        elif key == "datasetId":
            if not is_uri(value):
                raise BadRequestData(f"attribute {name!r}: datasetId must be a URI, got {value!r}")
            out["datasetId"] = value
        elif key == "objectType":
            if kind not in ("Relationship", "ListRelationship"):
                raise BadRequestData(f"attribute {name!r}: objectType applies to relationships only")
            out["objectType"] = expand_types(value, ctx)
        elif key == "lang":
            if not isinstance(value, str):
                raise BadRequestData(f"attribute {name!r}: lang must be a string")
            out["lang"] = value
        elif key in _SYSTEM_MEMBERS:
            continue  # system-generated; a client's value is ignored (clause 4.8)
        elif key in _ALL_VALUE_MEMBERS:
            raise BadRequestData(f"attribute {name!r} of type {kind} must not carry a {key!r} member")
        else:
            if depth >= MAX_DEPTH:
                raise BadRequestData(f"attribute {name!r}: sub-attributes nested deeper than {MAX_DEPTH}")
            check_name(key)
            out[ctx.expand_term(key)] = expand_attribute(f"{name}.{key}", value, ctx, now, depth + 1)
    out["createdAt"] = now
    out["modifiedAt"] = now
    return out


def _check_value(name: str, kind: str, value: Any, ctx: CompiledContext) -> Any:
    if kind == "Property":
        if value is None:
            raise BadRequestData(f"attribute {name!r}: value must not be null")
        return value
    if kind == "Relationship":
        objects = value if isinstance(value, list) else [value]
        if not objects or not all(is_uri(o) for o in objects):
            raise BadRequestData(f"relationship {name!r}: object must be a URI (or list of URIs), got {value!r}")
        return value
    if kind == "GeoProperty":
        check_geometry(value, f"GeoProperty {name!r}")
        return value
    if kind == "LanguageProperty":
        if not isinstance(value, dict) or not value or not all(
                isinstance(k, str) and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str)
                                                                                           for s in v)))
                for k, v in value.items()):
            raise BadRequestData(f"LanguageProperty {name!r}: languageMap must map language tags to strings")
        return value
    if kind == "JsonProperty":
        if value is None:
            raise BadRequestData(f"JsonProperty {name!r}: json must not be null")
        return value
    if kind == "ListProperty":
        if not isinstance(value, list):
            raise BadRequestData(f"ListProperty {name!r}: valueList must be an array")
        return value
    if kind == "ListRelationship":
        if not isinstance(value, list) or not all(
                is_uri(o) or (isinstance(o, dict) and is_uri(o.get("object"))) for o in value):
            raise BadRequestData(f"ListRelationship {name!r}: objectList must be an array of URIs")
        return value
    # VocabProperty: vocab terms are @type:@vocab in the core context, so they are expanded (clause 4.5.20)
    terms = value if isinstance(value, list) else [value]
    if not terms or not all(isinstance(t, str) and t for t in terms):
        raise BadRequestData(f"VocabProperty {name!r}: vocab must be a string or list of strings")
    expanded = [ctx.expand_term(t) for t in terms]
    return expanded if isinstance(value, list) else expanded[0]


# --- GeoJSON (RFC 7946 §3.1) ---------------------------------------------------------------------------------

def _position(p: Any) -> bool:
    return (isinstance(p, list) and 2 <= len(p) <= 3 and all(type(c) in (int, float) for c in p)
            and -180 <= p[0] <= 180 and -90 <= p[1] <= 90)


def _positions(ps: Any, minimum: int) -> bool:
    return isinstance(ps, list) and len(ps) >= minimum and all(_position(p) for p in ps)


def _ring(ps: Any) -> bool:
    return _positions(ps, 4) and ps[0] == ps[-1]


def _polygon(rings: Any) -> bool:
    return isinstance(rings, list) and len(rings) >= 1 and all(_ring(r) for r in rings)


def check_geometry(value: Any, what: str = "geometry") -> None:
    """Raise BadRequestData unless ``value`` is a GeoJSON geometry object with well-formed coordinates."""
    if not isinstance(value, dict) or value.get("type") not in _GEO_TYPES:
        raise BadRequestData(f"{what}: value must be a GeoJSON geometry ({', '.join(sorted(_GEO_TYPES))})")
    kind = value["type"]
    if kind == "GeometryCollection":
        geometries = value.get("geometries")
        if not isinstance(geometries, list):
            raise BadRequestData(f"{what}: GeometryCollection needs a geometries array")
        for g in geometries:
            check_geometry(g, what)
        return
    c = value.get("coordinates")
    ok = {
        "Point": lambda: _position(c),
        "MultiPoint": lambda: _positions(c, 1),
        "LineString": lambda: _positions(c, 2),
        "MultiLineString": lambda: isinstance(c, list) and len(c) >= 1 and all(_positions(x, 2) for x in c),
        "Polygon": lambda: _polygon(c),
        "MultiPolygon": lambda: isinstance(c, list) and len(c) >= 1 and all(_polygon(x) for x in c),
    }[kind]()
    if not ok:
        raise BadRequestData(
            f"{what}: coordinates are not a valid GeoJSON {kind} (RFC 7946 §3.1: [lon, lat] positions in range,"
            " linear rings of ≥4 positions, first = last)")
