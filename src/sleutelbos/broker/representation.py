"""Rendering an expanded entity for a response, and reading concise input (ETSI GS CIM 009 v1.8/v1.9).

Output (:func:`render`), from the expanded normalized form of :mod:`sleutelbos.broker.entity`:

* ``normalized`` (clauses 4.5.2.2, 4.5.3.2): every attribute an object with its ``type`` and value member; several
  instances (``datasetId``) an array;
* ``concise`` (clauses 4.5.2.3, 4.5.3.3 and the LanguageProperty/List*/Json/Vocab counterparts): ``type`` dropped; a
  Property or GeoProperty with no sub-attributes and no metadata is its bare value (unless that value is an object
  with a ``type`` member, or an array of objects — those would read back as normalized/instances, so they keep
  ``{"value": ...}``); every other kind keeps its value member (``object``, ``languageMap``, ``valueList``, ...);
* ``keyValues`` alias ``simplified`` (clause 4.5.4): each attribute its value — a Relationship its object, a
  LanguageProperty ``{"languageMap": ...}``, a JsonProperty ``{"json": ...}``, a VocabProperty ``{"vocab": ...}``;
  several instances ``{"dataset": {"@none" | datasetId: value}}``;
* ``sysAttrs`` (clause 4.8): ``createdAt``/``modifiedAt`` at every level, only when asked (never in keyValues);
* ``lang`` (clause 4.15): ``en``, ``fr-CH,fr;q=0.9,*;q=0.5``, ``*``: each LanguageProperty becomes a Property whose
  value is the string in the best language (RFC 4647 lookup: ``fr-CH`` falls back to ``fr``; no match → ``@none`` or
  any language) with a ``lang`` member saying which;
* projection: ``pick``/``omit`` (clause 4.21) and ``attrs`` hold expanded IRIs (plus ``id``/``type``), ``dataset_id``
  keeps only those instances (``urn:ngsi-ld:default`` names the default instance);
* compaction: attribute names, entity types, ``vocab`` values and ``objectType`` become terms of the caller's
  CompiledContext (dict lookups); values are never touched.

:func:`response_context` decides where the @context goes: in the body for ``application/ld+json``, in a ``Link``
header for ``application/json`` (clause 6.3.5).

Input (:func:`expand_concise_entity`, :func:`expand_concise_attribute`): a concise (or mixed) payload rewritten as the
normalized compact payload the validation accepts — used only where the client asked for concise input; concise or
keyValues bodies are never silently taken as normalized. Left out: the GeoJSON representation (clause 4.5.17) and
linked-entity retrieval (4.5.23).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Final

import orjson

from sleutelbos.broker.context import CORE_CONTEXT_URL, CompiledContext
from sleutelbos.broker.entity import INSTANCE_MEMBERS, VALUE_MEMBER, Entity

FORMS: Final = ("normalized", "concise", "keyValues", "simplified")
DEFAULT_DATASET: Final = "urn:ngsi-ld:default"
_SYS: Final = frozenset({"createdAt", "modifiedAt"})
_HIDDEN: Final = frozenset({"deletedAt", "instanceId"})
_GEOJSON_TYPES: Final = frozenset({"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
                                   "GeometryCollection"})
_VALUE_MEMBERS: Final = {member: kind for kind, member in VALUE_MEMBER.items() if kind != "GeoProperty"}
_COPIED_MEMBERS: Final = INSTANCE_MEMBERS - {"vocab", "objectType"}
"""Instance members that a normalized rendering without ``lang`` copies as they are (or drops, see _HIDDEN/_SYS)."""
_HIDDEN_OR_SYS: Final = _HIDDEN | _SYS


# --- language negotiation (clause 4.15) -----------------------------------------------------------------------------

def parse_lang(lang: str) -> list[str]:
    """``fr-CH,fr;q=0.9,en;q=0.8,*;q=0.5`` → ``["fr-CH", "fr", "en", "*"]`` (ordered by quality, stable)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(lang.split(",")):
        tag, _, params = part.strip().strip('"').partition(";")
        tag = tag.strip()
        if not tag:
            continue
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(language_map: dict[str, Any], preferences: list[str]) -> str | None:
    """The key of ``language_map`` to show for these preferences (RFC 4647 lookup; default: ``@none`` or the first)."""
    if not language_map:
        return None
    lowered = {key.lower(): key for key in language_map}
    for tag in preferences:
        if tag == "*":
            break
        candidate = tag.lower()
        while candidate:
            if candidate in lowered:
                return lowered[candidate]
            candidate = candidate.rpartition("-")[0]
    return "@none" if "@none" in language_map else next(iter(language_map))


# --- output --------------------------------------------------------------------------------------------------------

class _Renderer:
    __slots__ = ("ctx", "form", "lang", "sys_attrs")

    def __init__(self, ctx: CompiledContext, form: str, sys_attrs: bool, lang: list[str] | None) -> None:
        self.ctx = ctx
        self.form = "keyValues" if form == "simplified" else form
        self.sys_attrs = sys_attrs and self.form != "keyValues"
        self.lang = lang

    def compact_vocab(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.ctx.compact_iri(v) if isinstance(v, str) else v for v in value]
        return self.ctx.compact_iri(value) if isinstance(value, str) else value

    def attribute(self, instances: list[dict[str, Any]]) -> Any:
        if self.form == "keyValues":
            if len(instances) == 1 and "datasetId" not in instances[0]:
                return self.key_value(instances[0])
            return {"dataset": {i.get("datasetId", "@none"): self.key_value(i) for i in instances}}
        # In an array of instances every instance stays an object, or it would read back as an array value.
        rendered = [self.instance(i, bare_allowed=len(instances) == 1) for i in instances]
        return rendered[0] if len(rendered) == 1 else rendered

    def key_value(self, inst: dict[str, Any]) -> Any:
        kind = inst.get("type", "Property")
        member = VALUE_MEMBER.get(kind, "value")
        value = inst.get(member)
        if kind == "LanguageProperty":
            if self.lang is not None and isinstance(value, dict):
                chosen = choose_language(value, self.lang)
                return value.get(chosen) if chosen is not None else None
            return {"languageMap": value}
        if kind == "JsonProperty":
            return {"json": value}
        if kind == "VocabProperty":
            return {"vocab": self.compact_vocab(value)}
        if kind == "ListRelationship" and isinstance(value, list):
            return [v.get("object") if isinstance(v, dict) else v for v in value]
        return value

    def instance(self, inst: dict[str, Any], bare_allowed: bool = True) -> Any:
        if self.form == "normalized" and self.lang is None and inst.keys() <= _COPIED_MEMBERS:
            # The common instance (a value, observedAt, unitCode, ... and no sub-attribute): normalized output is the
            # instance minus its hidden members, which the loop below would produce key by key. Notifications render
            # every notified entity through here (decision 0615).
            dropped = _HIDDEN if self.sys_attrs else _HIDDEN_OR_SYS
            return {key: value for key, value in inst.items() if key not in dropped}
        kind = inst.get("type", "Property")
        out: dict[str, Any] = {}
        has_more = False
        for key, value in inst.items():
            if key in _HIDDEN or (key in _SYS and not self.sys_attrs):
                continue
            if key in INSTANCE_MEMBERS:
                if key == "type":
                    out["type"] = kind
                elif key == "vocab":
                    out["vocab"] = self.compact_vocab(value)
                elif key == "objectType":
                    compacted = self.compact_vocab(value)
                    out["objectType"] = compacted[0] if isinstance(compacted, list) and len(compacted) == 1 \
                        else compacted
                else:
                    out[key] = value
                if key not in ("type", VALUE_MEMBER.get(kind, "value")):
                    has_more = True
            else:
                out[self.ctx.compact_iri(key)] = self.attribute(value)
                has_more = True
        if kind == "LanguageProperty" and self.lang is not None and isinstance(out.get("languageMap"), dict):
            language_map = out.pop("languageMap")
            chosen = choose_language(language_map, self.lang)
            out["type"] = "Property"
            out["value"] = language_map.get(chosen) if chosen is not None else None
            out["lang"] = chosen
            kind, has_more = "Property", True
        if self.form != "concise":
            return out
        out.pop("type", None)
        if kind == "Property" and _is_geojson(out.get("value")):
            out["type"] = "Property"  # a GeoJSON-shaped value would otherwise read back as a GeoProperty
            return out
        if bare_allowed and kind in ("Property", "GeoProperty") and not has_more and "value" in out:
            value = out["value"]
            typed_object = isinstance(value, dict) and ("type" in value and kind == "Property")
            objects_array = isinstance(value, list) and any(isinstance(v, dict) for v in value)
            if not typed_object and not objects_array:
                return value
        return out


def render(entity: Entity, ctx: CompiledContext, *, form: str = "normalized", sys_attrs: bool = False,
           pick: set[str] | frozenset[str] | None = None, omit: set[str] | None = None,
           attrs: Iterable[str] | None = None,
           lang: str | None = None, dataset_id: list[str] | None = None) -> dict[str, Any]:
    """The entity as the client asked for it (see the module docstring); ``entity`` is not modified."""
    if form not in FORMS:
        raise ValueError(f"unknown representation {form!r}")
    renderer = _Renderer(ctx, form, sys_attrs, parse_lang(lang) if lang else None)
    keep = set(attrs) if attrs is not None else None
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if pick is not None and key not in pick and key != "id":
            continue
        if omit is not None and key in omit:
            continue
        if key == "id":
            out["id"] = value
        elif key == "type":
            types = [ctx.compact_iri(t) for t in value]
            out["type"] = types[0] if len(types) == 1 else types
        elif key in _SYS:
            if renderer.sys_attrs:
                out[key] = value
        elif key == "scope":
            out["scope"] = value[0] if isinstance(value, list) and len(value) == 1 else value
        elif key in _HIDDEN:
            continue
        else:
            if keep is not None and key not in keep:
                continue
            instances = value
            if dataset_id is not None:
                instances = [i for i in value if i.get("datasetId", DEFAULT_DATASET) in dataset_id]
            if instances:
                out[ctx.compact_iri(key)] = renderer.attribute(instances)
    return out


class RenderShape:
    """One way of rendering entities — the caller's compiled @context plus every render option of a request — with a
    cache of rendered entities keyed by their stored JSON text.

    A request renders each entity of its page from the JSON text the store holds (``store.query_documents``). The
    rendering is a pure function of that text and of this shape, so the bytes are cached per ``(text, shape)``:
    repeated reads of entities that have not changed (dashboards, paging clients, monitoring) skip the JSON parse
    and the compaction. Keying by the whole text, not by id and ``modifiedAt``, makes a stale hit impossible: an
    entity that changed in any way has another text. Shapes are interned (:func:`render_shape`), so the cache key
    hashes one string and compares the shape by identity.

    ``body_context`` is the ``@context`` to put into each entity (``application/ld+json``), or None.
    """

    __slots__ = ("attrs", "body_context", "ctx", "dataset_id", "form", "lang", "omit", "pick", "sys_attrs")

    def __init__(self, ctx: CompiledContext, form: str, sys_attrs: bool, pick: frozenset[str] | None,
                 omit: frozenset[str] | None, attrs: frozenset[str] | None, lang: str | None,
                 dataset_id: tuple[str, ...] | None, body_context: Any) -> None:
        self.ctx = ctx
        self.form = form
        self.sys_attrs = sys_attrs
        self.pick = pick
        self.omit = omit
        self.attrs = attrs
        self.lang = lang
        self.dataset_id = dataset_id
        self.body_context = body_context

    def render_entity(self, entity: Entity) -> dict[str, Any]:
        data = render(entity, self.ctx, form=self.form, sys_attrs=self.sys_attrs,
                      pick=set(self.pick) if self.pick is not None else None,
                      omit=set(self.omit) if self.omit is not None else None, attrs=self.attrs, lang=self.lang,
                      dataset_id=list(self.dataset_id) if self.dataset_id is not None else None)
        if self.body_context is not None:
            data = {**data, "@context": self.body_context}
        return data

    def render_document(self, document: str) -> bytes:
        """The entity stored as ``document``, rendered and serialized (cached; see the class docstring)."""
        return _render_document(document, self)


#: Rendered entities kept (per text and shape). A normalized meter renders to ~0.5-1 KB and its key holds the ~1 KB
#: stored text, so the bound is ~15-20 MB.
RENDER_CACHE_SIZE: Final = 8192
_SHAPES: dict[tuple[Any, ...], RenderShape] = {}
_MAX_SHAPES: Final = 1024


@lru_cache(maxsize=RENDER_CACHE_SIZE)
def _render_document(document: str, shape: RenderShape) -> bytes:
    return orjson.dumps(shape.render_entity(orjson.loads(document)))


def render_shape(ctx: CompiledContext, *, form: str = "normalized", sys_attrs: bool = False,
                 pick: Iterable[str] | None = None, omit: Iterable[str] | None = None,
                 attrs: Iterable[str] | None = None, lang: str | None = None,
                 dataset_id: Iterable[str] | None = None, body_context: Any = None) -> RenderShape:
    """The interned :class:`RenderShape` for these options (same arguments as :func:`render`, plus the
    ``@context`` to embed). The context is compared by identity: a compiled context is immutable."""
    if form not in FORMS:
        raise ValueError(f"unknown representation {form!r}")
    frozen = (frozenset(pick) if pick is not None else None, frozenset(omit) if omit is not None else None,
              frozenset(attrs) if attrs is not None else None)
    datasets = tuple(dataset_id) if dataset_id is not None else None
    body_key = orjson.dumps(body_context) if body_context is not None else None
    key = (id(ctx), form, sys_attrs, *frozen, lang, datasets, body_key)
    shape = _SHAPES.get(key)
    if shape is None or shape.ctx is not ctx:
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()  # old shapes stay valid keys of the render cache; they just stop being found
        shape = RenderShape(ctx, form, sys_attrs, *frozen, lang, datasets, body_context)
        _SHAPES[key] = shape
    return shape


def response_context(ctx: CompiledContext, media_type: str) -> tuple[Any | None, str | None]:
    """``(@context for the body, URL for the Link header)``: ``application/ld+json`` carries the caller's @context in
    the body; ``application/json`` carries none and points at it with a Link header (clause 6.3.5) — which needs a
    single URL, so an inline context falls back to the core context URL (the caller already has its own context)."""
    given = ctx.context if ctx.context is not None else CORE_CONTEXT_URL
    if media_type == "application/ld+json":
        return given, None
    if isinstance(given, str):
        return None, given
    if isinstance(given, list) and len(given) == 1 and isinstance(given[0], str):
        return None, given[0]
    return None, CORE_CONTEXT_URL


# --- input: concise → normalized ----------------------------------------------------------------------------------

def _is_geojson(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in _GEOJSON_TYPES and (
        "coordinates" in value or "geometries" in value)


def expand_concise_attribute(value: Any) -> Any:
    """One attribute in concise form (clause 4.5.2.3 and siblings) → its normalized compact form.

    A JSON array of objects is a list of instances; an object with a ``type`` naming an NGSI-LD attribute type is
    normalized already (its sub-attributes may still be concise); an object with a value member (``value``,
    ``object``, ``languageMap``, ``valueList``, ``objectList``, ``json``, ``vocab``) gets the type that member implies
    (``GeoProperty`` for a GeoJSON ``value``); a bare GeoJSON geometry is a GeoProperty; anything else is the value of
    a Property.
    """
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value) and not any(
            _is_geojson(v) for v in value):
        return [_expand_instance(v) for v in value]
    if isinstance(value, dict):
        return _expand_instance(value)
    return {"type": "Property", "value": value}


def _expand_instance(value: dict[str, Any]) -> dict[str, Any]:
    if _is_geojson(value):
        return {"type": "GeoProperty", "value": value}
    kind = value.get("type")
    if kind not in VALUE_MEMBER:
        member = next((m for m in _VALUE_MEMBERS if m in value), None)
        if member is None:
            return {"type": "Property", "value": value}
        kind = _VALUE_MEMBERS[member]
        if member == "value" and _is_geojson(value["value"]):
            kind = "GeoProperty"
    out: dict[str, Any] = {"type": kind}
    for key, item in value.items():
        if key == "type":
            continue
        if key in INSTANCE_MEMBERS or key.startswith("@"):
            out[key] = item
        else:
            out[key] = expand_concise_attribute(item)
    return out


def expand_concise_entity(payload: dict[str, Any]) -> dict[str, Any]:
    """A concise entity payload → the normalized payload (``id``, ``type``, ``@context``, ``scope`` kept as given)."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key in ("id", "type", "@context", "scope", "createdAt", "modifiedAt") or key.startswith("@"):
            out[key] = value
        else:
            out[key] = expand_concise_attribute(value)
    return out
