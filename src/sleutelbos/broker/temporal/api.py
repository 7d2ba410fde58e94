"""HTTP binding of the temporal API (ETSI GS CIM 009 v1.8, clauses 6.18-6.24) under ``/ngsi-ld/v1/temporal``:

* ``/temporal/entities``: ``POST`` create or add (201/204), ``GET`` query;
* ``/temporal/entities/{entityId}``: ``GET`` retrieve, ``DELETE``;
* ``/temporal/entities/{entityId}/attrs``: ``POST`` add instances;
* ``/temporal/entities/{entityId}/attrs/{attrId}``: ``POST`` add instances of one attribute, ``DELETE``
  (``datasetId``, ``deleteAll``);
* ``/temporal/entities/{entityId}/attrs/{attrId}/{instanceId}``: ``PATCH``, ``DELETE``;
* ``/temporal/entityOperations/query``: ``POST`` a Query (clause 5.2.23) with ``temporalQ``.

A truncated answer is ``206 Partial Content`` with ``Content-Range: date-time <from>-<to>/<size>``.
Uses the core API's request plumbing (tenant, @context, content types, ProblemDetails).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sleutelbos.broker.api import (
    BASE,
    MAX_LIMIT,
    BrokerApi,
    RequestContext,
    _bool,
    _filter,
    _int,
    _options,
    _params,
    _split,
)
from sleutelbos.broker.entity import now_iso
from sleutelbos.broker.errors import BadRequestData, TooManyResults
from sleutelbos.broker.temporal.history import instance_key
from sleutelbos.broker.temporal.query import TemporalQuery, parse_temporal_query
from sleutelbos.broker.temporal.service import TemporalAnswer, TemporalService, expand_temporal
from sleutelbos.broker.validation import check_name, expand_instance

_QUERY_PARAMS = {"type", "id", "idPattern", "attrs", "q", "georel", "geometry", "coordinates", "geoproperty",
                 "timerel", "timeAt", "endTimeAt", "timeproperty", "lastN", "options", "aggrMethods",
                 "aggrPeriodDuration", "limit", "offset", "count", "lang"}
_OPTIONS = {"temporalValues", "aggregatedValues", "sysAttrs", "count"}


class TemporalApi:
    def __init__(self, core: BrokerApi, service: TemporalService) -> None:
        self.core = core
        self.service = service

    def routes(self) -> list[Route]:
        route = self.core._route
        return [
            route("/temporal/entities", {"POST": self.post_entities, "GET": self.get_entities}),
            route("/temporal/entityOperations/query", {"POST": self.post_query}),
            route("/temporal/entities/{entityId:path}/attrs/{attrId}/{instanceId}",
                  {"PATCH": self.patch_instance, "DELETE": self.delete_instance}),
            route("/temporal/entities/{entityId:path}/attrs/{attrId}", {"POST": self.post_attr,
                                                                        "DELETE": self.delete_attr}),
            route("/temporal/entities/{entityId:path}/attrs", {"POST": self.post_attrs}),
            route("/temporal/entities/{entityId:path}", {"GET": self.get_entity, "DELETE": self.delete_entity}),
        ]

    # --- writes -----------------------------------------------------------------------------------------------
    async def post_entities(self, request: Request) -> Response:
        _params(request, set())
        body, body_ctx, from_body = await self.core._body(request)
        rc = await self.core._context(request, body_ctx, from_body)
        temporal = expand_temporal(body, rc.ctx, now_iso())
        created = await self.service.create_or_add(rc.tenant, temporal, now_iso())
        if created:
            return Response(status_code=201, headers={"Location": f"{BASE}/temporal/entities/{temporal['id']}"})
        return Response(status_code=204)

    async def post_attrs(self, request: Request) -> Response:
        _params(request, set())
        body, body_ctx, from_body = await self.core._body(request)
        rc = await self.core._context(request, body_ctx, from_body)
        fragment = expand_temporal(body, rc.ctx, now_iso(), need_id=False)
        fragment.pop("id", None)
        fragment.pop("type", None)
        await self.service.add_attributes(rc.tenant, _entity_id(request), fragment, now_iso())
        return Response(status_code=204)

    async def post_attr(self, request: Request) -> Response:
        _params(request, set())
        body, body_ctx, from_body = await self.core._body(request)
        rc = await self.core._context(request, body_ctx, from_body)
        name = request.path_params["attrId"]
        check_name(name)
        items = body if isinstance(body, list) else [body]
        if not items:
            raise BadRequestData("no instances given")
        now = now_iso()
        fragment = {rc.ctx.expand_term(name): [expand_instance(name, i, rc.ctx, now) for i in items]}
        await self.service.add_attributes(rc.tenant, _entity_id(request), fragment, now)
        return Response(status_code=204)

    async def patch_instance(self, request: Request) -> Response:
        _params(request, set())
        body, body_ctx, from_body = await self.core._body(request)
        rc = await self.core._context(request, body_ctx, from_body)
        name = request.path_params["attrId"]
        check_name(name)
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in ("@context", "instanceId")}
        patch = expand_instance(name, body, rc.ctx, now_iso())
        patch.pop("createdAt", None)
        key = instance_key(unquote(request.path_params["instanceId"]))
        await self.service.modify_instance(rc.tenant, _entity_id(request), rc.ctx.expand_term(name), key, patch)
        return Response(status_code=204)

    async def delete_instance(self, request: Request) -> Response:
        _params(request, set())
        rc = await self.core._context(request)
        name = request.path_params["attrId"]
        check_name(name)
        key = instance_key(unquote(request.path_params["instanceId"]))
        await self.service.delete_instance(rc.tenant, _entity_id(request), rc.ctx.expand_term(name), key)
        return Response(status_code=204)

    async def delete_attr(self, request: Request) -> Response:
        params = _params(request, {"datasetId", "deleteAll"})
        rc = await self.core._context(request)
        name = request.path_params["attrId"]
        check_name(name)
        await self.service.delete_attribute(rc.tenant, _entity_id(request), rc.ctx.expand_term(name),
                                            params.get("datasetId"), _bool(params, "deleteAll"))
        return Response(status_code=204)

    async def delete_entity(self, request: Request) -> Response:
        _params(request, set())
        rc = await self.core._context(request)
        await self.service.delete_entity(rc.tenant, _entity_id(request), self.core.service.delete)
        return Response(status_code=204)

    # --- reads ------------------------------------------------------------------------------------------------
    def _temporal_query(self, rc: RequestContext, params: dict[str, Any]) -> TemporalQuery:
        options = _options(params, _OPTIONS)
        q = parse_temporal_query(params, options)
        attrs = _split(params.get("attrs"))
        for name in attrs:
            check_name(name)
        q.attrs = [rc.ctx.expand_term(n) for n in attrs] or None
        q.extra["count"] = "count" in options or _bool(params, "count")
        return q

    async def get_entity(self, request: Request) -> Response:
        params = _params(request, {"attrs", "timerel", "timeAt", "endTimeAt", "timeproperty", "lastN", "options",
                                   "aggrMethods", "aggrPeriodDuration", "lang"})
        rc = await self.core._context(request)
        q = self._temporal_query(rc, params)
        answer = await self.service.retrieve(rc.tenant, _entity_id(request), q, rc.ctx)
        return self._answer(rc, answer, single=True)

    async def get_entities(self, request: Request) -> Response:
        params = _params(request, _QUERY_PARAMS)
        rc = await self.core._context(request)
        return await self._query(rc, params)

    async def post_query(self, request: Request) -> Response:
        """Clause 6.24: the Query's ``entities``, ``attrs``, ``q``, ``geoQ``, ``temporalQ`` as in ``GET``."""
        url_params = _params(request, {"limit", "offset", "count", "options", "aggrMethods", "aggrPeriodDuration",
                                       "lastN"})
        body, body_ctx, from_body = await self.core._body(request)
        rc = await self.core._context(request, body_ctx, from_body)
        if not isinstance(body, dict) or body.get("type") != "Query":
            raise BadRequestData("the body must be a Query object (type 'Query', clause 5.2.23)")
        params: dict[str, Any] = dict(url_params)
        entities = body.get("entities")
        if entities is not None:
            if not isinstance(entities, list) or len(entities) != 1 or not isinstance(entities[0], dict):
                raise BadRequestData("entities must be a list of one entity selector here")
            for key in ("id", "idPattern", "type"):
                if entities[0].get(key) is not None:
                    params[key] = entities[0][key]
        if body.get("attrs") is not None:
            if not isinstance(body["attrs"], list):
                raise BadRequestData("attrs must be a list of attribute names")
            params["attrs"] = ",".join(body["attrs"])
        if body.get("q") is not None:
            params["q"] = body["q"]
        temporal = body.get("temporalQ") or {}
        if not isinstance(temporal, dict):
            raise BadRequestData("temporalQ must be an object (clause 5.2.21)")
        for key in ("timerel", "timeAt", "endTimeAt", "timeproperty", "lastN"):
            if temporal.get(key) is not None:
                params[key] = str(temporal[key])
        geo = body.get("geoQ")
        if isinstance(geo, dict):
            for key in ("georel", "geometry", "geoproperty"):
                if geo.get(key) is not None:
                    params[key] = geo[key]
            coords = geo.get("coordinates")
            if coords is not None:
                import orjson

                params["coordinates"] = coords if isinstance(coords, str) else orjson.dumps(coords).decode()
        return await self._query(rc, params)

    async def _query(self, rc: RequestContext, params: dict[str, Any]) -> Response:
        if not any(params.get(k) for k in ("type", "attrs", "q", "georel", "id", "idPattern")):
            raise BadRequestData("a temporal query needs at least one of type, attrs, q, id or a geo-query")
        q = self._temporal_query(rc, params)
        entity_filter = _filter(params, rc.ctx, self.core.service.store.dialect)
        entity_filter.limit = _int(params, "limit", 20)
        entity_filter.offset = _int(params, "offset", 0)
        entity_filter.count = bool(q.extra.get("count"))
        if entity_filter.limit > MAX_LIMIT:
            raise TooManyResults(f"limit {entity_filter.limit} is over the maximum of {MAX_LIMIT}")
        answer = await self.service.query(rc.tenant, entity_filter, q, rc.ctx)
        return self._answer(rc, answer, single=False)

    def _answer(self, rc: RequestContext, answer: TemporalAnswer, single: bool) -> Response:
        headers: dict[str, str] = {}
        status = 200
        if answer.content_range is not None:
            status = 206
            headers["Content-Range"] = answer.content_range
        if answer.count is not None:
            headers["NGSILD-Results-Count"] = str(answer.count)
        data: Any = answer.entities[0] if single else answer.entities
        return self.core._respond(rc, data, status=status, headers=headers)


def _entity_id(request: Request) -> str:
    return unquote(request.path_params["entityId"])
