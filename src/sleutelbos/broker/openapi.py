"""The OpenAPI 3.0 description of the broker's API, served at ``/ngsi-ld/v1/openapi.json``.

Hand-written after ETSI GS CIM 009 v1.8 clause 6 (and the shape of ETSI's own OpenAPI in the NGSI-LD repository),
restricted to what this broker implements, with the parameters it accepts — the API rejects any other parameter —
so that a fuzzer (schemathesis, in the tests) can exercise every operation from it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

_JSON_TYPES = ("application/json", "application/ld+json")


def _q(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
            "description": description}


_TENANT = {"name": "NGSILD-Tenant", "in": "header", "required": False,
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}}
_ENTITY_ID = _path("entityId", "Entity id (a URI)")
_ATTR_ID = _path("attrId", "Attribute name")
_STR = {"type": "string"}
_BOOL = {"type": "string", "enum": ["true", "false"]}
_OPTIONS_RENDER = _q("options", {"type": "string", "enum": ["keyValues", "concise", "normalized", "sysAttrs",
                                                             "sysAttrs,keyValues"]})


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}


def _body(schema_ref: str, required: bool = True, merge_patch: bool = False) -> dict[str, Any]:
    types = (*_JSON_TYPES, "application/merge-patch+json") if merge_patch else _JSON_TYPES
    return {"required": required,
            "content": {t: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}} for t in types}}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {t: {"schema": schema} for t in _JSON_TYPES}
    return out


_ERRORS = {"400": _problem("Bad request"), "404": _problem("Not found"), "406": _problem("Not acceptable"),
           "415": _problem("Unsupported media type"), "413": _problem("Payload too large"),
           "409": _problem("Already exists"), "503": _problem("LdContextNotAvailable"),
           "403": _problem("Too many results / too complex")}


def _op(op_id: str, summary: str, params: list[dict[str, Any]], responses: dict[str, Any],
        body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "parameters": [_TENANT, *params],
                          "responses": {**responses, **_ERRORS}}
    if body is not None:
        op["requestBody"] = body
    return op


_QUERY_PARAMS = [
    _q("type", _STR, "Entity type selection (, | OR; ; AND)"), _q("id", _STR), _q("idPattern", _STR),
    _q("attrs", _STR), _q("pick", _STR), _q("omit", _STR), _q("q", _STR, "NGSI-LD query language"),
    _q("georel", _STR), _q("geometry", {"type": "string", "enum": ["Point", "LineString", "Polygon", "MultiPoint",
                                                                   "MultiLineString", "MultiPolygon"]}),
    _q("coordinates", _STR), _q("geoproperty", _STR),
    _q("limit", {"type": "integer", "minimum": 0, "maximum": 1000}),
    _q("offset", {"type": "integer", "minimum": 0}), _q("count", _BOOL), _OPTIONS_RENDER, _q("lang", _STR),
    _q("datasetId", _STR),
]

_SCHEMAS: dict[str, Any] = {
    "ProblemDetails": {"type": "object", "required": ["type"],
                       "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                      "status": {"type": "integer"}, "detail": {"type": "string"}}},
    "Attribute": {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "enum": ["Property", "Relationship", "GeoProperty", "LanguageProperty",
                                            "JsonProperty", "ListProperty", "ListRelationship", "VocabProperty"]},
        "value": {}, "object": {}, "languageMap": {"type": "object"}, "json": {}, "valueList": {"type": "array"},
        "objectList": {"type": "array"}, "vocab": {}, "observedAt": {"type": "string", "format": "date-time"},
        "unitCode": {"type": "string"}, "datasetId": {"type": "string", "format": "uri"}},
        "additionalProperties": True},
    "Entity": {"type": "object", "required": ["id", "type"], "properties": {
        "id": {"type": "string", "format": "uri"},
        "type": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "scope": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "@context": {}},
        "additionalProperties": {"$ref": "#/components/schemas/Attribute"}},
    "EntityFragment": {"type": "object", "properties": {"@context": {}},
                       "additionalProperties": {"$ref": "#/components/schemas/Attribute"}},
    "EntityList": {"type": "array", "items": {"$ref": "#/components/schemas/Entity"}},
    "EntityIdList": {"type": "array", "items": {"type": "string", "format": "uri"}},
    "BatchOperationResult": {"type": "object", "properties": {
        "success": {"type": "array", "items": {"type": "string"}},
        "errors": {"type": "array", "items": {"type": "object"}}}},
    "Query": {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "enum": ["Query"]},
        "entities": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "idPattern": {"type": "string"}, "type": {"type": "string"}}}},
        "attrs": {"type": "array", "items": {"type": "string"}}, "q": {"type": "string"},
        "geoQ": {"type": "object"}, "@context": {}}},
    "ContextDocument": {"type": "object", "required": ["@context"], "properties": {"@context": {}},
                        "additionalProperties": False},
}


@cache
def openapi_document() -> dict[str, Any]:
    batch = {"201": _ok("Created", {"$ref": "#/components/schemas/EntityIdList"}), "204": _ok("Done"),
             "207": _ok("Partial success", {"$ref": "#/components/schemas/BatchOperationResult"})}
    paths: dict[str, Any] = {
        "/ngsi-ld/v1/entities": {
            "post": _op("createEntity", "Create entity", [], {"201": _ok("Created")}, _body("Entity")),
            "get": _op("queryEntity", "Query entities", _QUERY_PARAMS,
                       {"200": _ok("Entities", {"$ref": "#/components/schemas/EntityList"})}),
            "delete": _op("purgeEntities", "Purge entities of a type",
                          [_q("type", _STR), _q("q", _STR), _q("id", _STR), _q("idPattern", _STR)],
                          {"204": _ok("Purged")}),
        },
        "/ngsi-ld/v1/entities/{entityId}": {
            "get": _op("retrieveEntity", "Retrieve entity",
                       [_ENTITY_ID, _q("attrs", _STR), _q("pick", _STR), _q("omit", _STR), _OPTIONS_RENDER,
                        _q("lang", _STR), _q("datasetId", _STR)],
                       {"200": _ok("Entity", {"$ref": "#/components/schemas/Entity"})}),
            "put": _op("replaceEntity", "Replace entity", [_ENTITY_ID], {"204": _ok("Replaced")},
                       _body("EntityFragment")),
            "patch": _op("mergeEntity", "Merge entity", [_ENTITY_ID], {"204": _ok("Merged")},
                         _body("EntityFragment", merge_patch=True)),
            "delete": _op("deleteEntity", "Delete entity", [_ENTITY_ID], {"204": _ok("Deleted")}),
        },
        "/ngsi-ld/v1/entities/{entityId}/attrs": {
            "post": _op("appendAttrs", "Append attributes",
                        [_ENTITY_ID, _q("options", {"type": "string", "enum": ["noOverwrite"]})],
                        {"204": _ok("Appended"), "207": _ok("Partly appended", {"type": "object"})},
                        _body("EntityFragment")),
            "patch": _op("updateAttrs", "Update attributes", [_ENTITY_ID],
                         {"204": _ok("Updated"), "207": _ok("Partly updated", {"type": "object"})},
                         _body("EntityFragment")),
        },
        "/ngsi-ld/v1/entities/{entityId}/attrs/{attrId}": {
            "patch": _op("partialAttrUpdate", "Partial attribute update", [_ENTITY_ID, _ATTR_ID],
                         {"204": _ok("Updated")}, _body("Attribute")),
            "put": _op("replaceAttr", "Replace attribute", [_ENTITY_ID, _ATTR_ID], {"204": _ok("Replaced")},
                       _body("Attribute")),
            "delete": _op("deleteAttr", "Delete attribute",
                          [_ENTITY_ID, _ATTR_ID, _q("datasetId", _STR), _q("deleteAll", _BOOL)],
                          {"204": _ok("Deleted")}),
        },
        "/ngsi-ld/v1/entityOperations/create": {
            "post": _op("batchCreate", "Batch create", [], batch, _body("EntityList"))},
        "/ngsi-ld/v1/entityOperations/upsert": {
            "post": _op("batchUpsert", "Batch upsert",
                        [_q("options", {"type": "string", "enum": ["replace", "update"]})], batch,
                        _body("EntityList"))},
        "/ngsi-ld/v1/entityOperations/update": {
            "post": _op("batchUpdate", "Batch update",
                        [_q("options", {"type": "string", "enum": ["noOverwrite"]})], batch, _body("EntityList"))},
        "/ngsi-ld/v1/entityOperations/merge": {
            "post": _op("batchMerge", "Batch merge", [], batch, _body("EntityList"))},
        "/ngsi-ld/v1/entityOperations/delete": {
            "post": _op("batchDelete", "Batch delete", [], batch, _body("EntityIdList"))},
        "/ngsi-ld/v1/entityOperations/query": {
            "post": _op("batchQuery", "Query entities (POST)",
                        [_q("limit", {"type": "integer", "minimum": 0, "maximum": 1000}),
                         _q("offset", {"type": "integer", "minimum": 0}), _q("count", _BOOL), _OPTIONS_RENDER],
                        {"200": _ok("Entities", {"$ref": "#/components/schemas/EntityList"})}, _body("Query"))},
        "/ngsi-ld/v1/types": {
            "get": _op("retrieveEntityTypes", "Entity types", [_q("details", _BOOL)], {"200": _ok("Types", {})})},
        "/ngsi-ld/v1/types/{type}": {
            "get": _op("retrieveEntityTypeInfo", "Entity type information", [_path("type", "Entity type")],
                       {"200": _ok("Type information", {"type": "object"})})},
        "/ngsi-ld/v1/attributes": {
            "get": _op("retrieveAttrTypes", "Attributes", [_q("details", _BOOL)], {"200": _ok("Attributes", {})})},
        "/ngsi-ld/v1/attributes/{attrId}": {
            "get": _op("retrieveAttrTypeInfo", "Attribute information", [_ATTR_ID],
                       {"200": _ok("Attribute information", {"type": "object"})})},
        "/ngsi-ld/v1/jsonldContexts": {
            "get": _op("listContexts", "List @contexts",
                       [_q("details", _BOOL), _q("kind", {"type": "string",
                                                           "enum": ["Hosted", "Cached", "ImplicitlyCreated"]})],
                       {"200": _ok("Contexts", {"type": "array"})}),
            "post": _op("addContext", "Add a hosted @context", [], {"201": _ok("Added")}, _body("ContextDocument")),
        },
        "/ngsi-ld/v1/jsonldContexts/{contextId}": {
            "get": _op("serveContext", "Serve an @context", [_path("contextId", "Context id"), _q("details", _BOOL)],
                       {"200": _ok("Context", {"type": "object"})}),
            "delete": _op("deleteContext", "Delete an @context",
                          [_path("contextId", "Context id"), _q("reload", _BOOL)], {"204": _ok("Deleted")}),
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "sleutelbos NGSI-LD context broker", "version": "1.8",
                 "description": "ETSI GS CIM 009 v1.8 API subset: entities, batch operations, query, discovery, "
                                "@context management."},
        "paths": paths,
        "components": {"schemas": _SCHEMAS},
    }
