"""The NGSI-LD HTTP binding (ETSI GS CIM 009 v1.8, clause 6) under ``/ngsi-ld/v1``: thin Starlette handlers that parse
the request, call :class:`~sleutelbos.broker.service.BrokerService` and render the answer.

HTTP rules implemented here (clause 6.3): ``Content-Type`` must be ``application/json`` (context in a ``Link``
header) or ``application/ld+json`` (``@context`` in the body), else 415; ``Accept`` must allow JSON or JSON-LD, else
406; the body is read up to ``max_body_bytes`` (413 beyond); unknown query parameters and ``options`` values are
rejected; ``NGSILD-Tenant`` selects the tenant (clause 6.3.14); errors are ``application/problem+json``. Query results
carry ``NGSILD-Results-Count`` with ``count=true`` and ``Link`` ``rel="next"``/``"prev"`` pages (clause 6.3.13).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sleutelbos.broker.asgi import LeanEndpoint, LeanRequest, ReadResponse
from sleutelbos.broker.batch import apply_batch
from sleutelbos.broker.body import parse_body
from sleutelbos.broker.context import CORE_CONTEXT_URL, CompiledContext, context_from_link_header, link_header_for
from sleutelbos.broker.entity import now_iso
from sleutelbos.broker.errors import (
    BadRequestData,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NgsiLdError,
    NotAcceptable,
    PayloadTooLarge,
    ResourceNotFound,
    TooManyResults,
    UnsupportedMediaType,
)
from sleutelbos.broker.representation import RenderShape, render_shape
from sleutelbos.broker.service import BatchResult, BrokerService, UpdateResult
from sleutelbos.broker.store import DEFAULT_TENANT, EntityFilter, SqlCondition
from sleutelbos.broker.validation import (
    check_entity_id,
    check_name,
    expand_attribute,
    expand_entity,
    expand_fragment,
    expand_instance,
    is_uri,
)

if TYPE_CHECKING:
    from sleutelbos.broker.batch_workers import BatchWorkers

BASE: Final = "/ngsi-ld/v1"
JSON: Final = "application/json"
JSONLD: Final = "application/ld+json"
MERGE_PATCH: Final = "application/merge-patch+json"
PROBLEM: Final = "application/problem+json"
MAX_LIMIT: Final = 1000
_TENANT_RE: Final = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")

Handler = Callable[[Any], Awaitable[Response]]  # takes a Starlette Request or a LeanRequest (``asgi.RequestLike``)
_ALL_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
log = logging.getLogger("sleutelbos.broker")


def problem_response(error: NgsiLdError) -> Response:
    return Response(orjson.dumps(error.problem()), status_code=error.status, media_type=PROBLEM)


class RequestContext:
    """What every handler needs from the request: tenant, compiled @context, response media type."""

    __slots__ = ("accept", "context_url", "ctx", "tenant")

    def __init__(self, tenant: str, ctx: CompiledContext, context_url: str | None, accept: str) -> None:
        self.tenant = tenant
        self.ctx = ctx
        self.context_url = context_url
        self.accept = accept


def _accept(request: Request) -> str:
    """Clause 6.3.4: JSON or JSON-LD (``*/*`` → JSON); anything else 406."""
    header = request.headers.get("accept")
    if not header:
        return JSON
    return _negotiate(header)


@lru_cache(maxsize=256)
def _negotiate(header: str) -> str:
    """The media type for an ``Accept`` header (memoised: clients send the same few headers again and again)."""
    best: tuple[float, str] | None = None
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        chosen = {JSONLD: JSONLD, JSON: JSON, "*/*": JSON, "application/*": JSON,
                  "application/geo+json": None}.get(media)
        if chosen and (best is None or q > best[0] or (q == best[0] and chosen == JSONLD and best[1] != JSONLD)):
            best = (q, chosen)
    if best is None:
        raise NotAcceptable(f"Accept {header!r} names no media type the broker produces ({JSON}, {JSONLD})")
    return best[1]


class BrokerApi:
    """The route table and request plumbing; holds the service and the settings the HTTP layer needs."""

    def __init__(self, service: BrokerService, max_body_bytes: int, base_url: str) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.base_url = base_url.rstrip("/")
        self.contexts = service.contexts
        #: route path (under BASE) → its endpoint, filled by :meth:`routes`; ``hotpaths.BrokerHotPaths`` calls the
        #: read endpoints from here without Starlette's router
        self.endpoints: dict[str, Handler] = {}
        #: the batch worker processes (SQLite, ``broker_batch_workers``; decision 0730), set by the component
        self.batch_workers: BatchWorkers | None = None

    # --- plumbing ------------------------------------------------------------------------------------------
    async def _context(self, request: Request, body_context: Any = None, from_body: bool = False) -> RequestContext:
        tenant = request.headers.get("ngsild-tenant", DEFAULT_TENANT)
        if tenant and not _TENANT_RE.match(tenant):
            raise BadRequestData(f"NGSILD-Tenant {tenant!r} is not a valid tenant name ([A-Za-z0-9_-], ≤64)")
        accept = _accept(request)
        link = context_from_link_header(request.headers.get("link"))
        if from_body:
            ctx = await self.contexts.compile(body_context)
            url = body_context if isinstance(body_context, str) else None
        else:
            ctx = await self.contexts.compile(link)
            url = link
        return RequestContext(tenant, ctx, url, accept)

    async def _body(self, request: Request, allow_merge_patch: bool = False) -> tuple[Any, Any, bool]:
        """(JSON body, its @context, whether the context came from the body). 415/413/400 on the way."""
        return self._parsed(request, *await self._raw_body(request, allow_merge_patch))

    @staticmethod
    def _parsed(request: Request, raw: bytes, ctype: str) -> tuple[Any, Any, bool]:
        """``body.parse_body`` of a request's bytes, with whether it came with a ``Link`` header."""
        return parse_body(raw, ctype, context_from_link_header(request.headers.get("link")) is not None)

    async def _raw_body(self, request: Request, allow_merge_patch: bool = False) -> tuple[bytes, str]:
        """The body's bytes and its media type, read up to the size limit (415/413 on the way)."""
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        allowed = (JSON, JSONLD, MERGE_PATCH) if allow_merge_patch else (JSON, JSONLD)
        if ctype not in allowed:
            raise UnsupportedMediaType(f"Content-Type must be one of {', '.join(allowed)}, got {ctype or 'none'!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(f"body of {declared} bytes is over the limit of {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"body is over the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks), ctype

    def _respond(self, rc: RequestContext, data: Any, status: int = 200, headers: dict[str, str] | None = None
                 ) -> Response:
        headers = dict(headers or {})
        if rc.accept == JSONLD:
            ctx_value = rc.ctx.context if rc.ctx.context is not None else CORE_CONTEXT_URL
            if isinstance(data, list):
                data = [{**d, "@context": ctx_value} for d in data]
            elif isinstance(data, dict):
                data = {**data, "@context": ctx_value}
        else:
            headers["Link"] = link_header_for(rc.context_url or CORE_CONTEXT_URL)
        return Response(orjson.dumps(data), status_code=status, media_type=rc.accept, headers=headers)

    def _respond_bytes(self, rc: RequestContext, body: bytes, count: int | None = None,
                       links: list[str] | None = None) -> Response:
        """A read's 200 for a body already serialized (with the ``@context`` inside for JSON-LD, which a
        :class:`RenderShape` puts there): the context's ``Link`` header (JSON), then the paging links, and
        ``NGSILD-Results-Count``."""
        link = [link_header_for(rc.context_url or CORE_CONTEXT_URL)] if rc.accept != JSONLD else []
        if links:
            link += links
        return ReadResponse(body, rc.accept, ", ".join(link) if link else None,
                            None if count is None else str(count))

    def _route(self, path: str, handlers: dict[str, Handler]) -> Route:
        """One route per path for every method, so that a wrong method is a 405 ProblemDetails, not plain text.

        The endpoint is a plain ASGI application handing the handlers a :class:`~.asgi.LeanRequest` (decision
        0504: Starlette's Request wrapper cost as much as a single update's own work)."""

        async def endpoint(request: LeanRequest) -> Response:
            handler = handlers.get(request.method)
            try:
                if handler is None:
                    raise MethodNotAllowed(f"{request.method} is not allowed on {BASE}{path}; "
                                           f"allowed: {', '.join(sorted(handlers))}")
                return await handler(request)
            except NgsiLdError as error:
                response = problem_response(error)
                if isinstance(error, MethodNotAllowed):
                    response.headers["Allow"] = ", ".join(sorted(handlers))
                return response
            except Exception as exc:  # the last line of defence: a ProblemDetails body, never a stack trace
                log.exception("unhandled error in %s %s", request.method, path)
                return problem_response(InternalError(f"internal error: {type(exc).__name__}"))

        self.endpoints[path] = endpoint
        return Route(BASE + path, LeanEndpoint(endpoint), methods=list(_ALL_METHODS))

    # --- routes ---------------------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        from sleutelbos.broker.openapi import openapi_document

        async def openapi(request: Request) -> Response:
            return Response(orjson.dumps(openapi_document()), media_type="application/json")

        return [
            Route(BASE + "/openapi.json", openapi, methods=["GET"]),
            self._route("/entities", {"POST": self.entities_post, "GET": self.entities_get,
                                      "DELETE": self.entities_purge}),
            self._route("/entities/{entityId:path}/attrs/{attrId}", {
                "PATCH": self.attr_patch, "PUT": self.attr_put, "DELETE": self.attr_delete}),
            self._route("/entities/{entityId:path}/attrs", {"POST": self.attrs_post, "PATCH": self.attrs_patch}),
            self._route("/entities/{entityId:path}", {"GET": self.entity_get, "PUT": self.entity_put,
                                                      "PATCH": self.entity_patch, "DELETE": self.entity_delete}),
            self._route("/entityOperations/create", {"POST": self.batch_create}),
            self._route("/entityOperations/upsert", {"POST": self.batch_upsert}),
            self._route("/entityOperations/update", {"POST": self.batch_update}),
            self._route("/entityOperations/delete", {"POST": self.batch_delete}),
            self._route("/entityOperations/merge", {"POST": self.batch_merge}),
            self._route("/entityOperations/query", {"POST": self.batch_query}),
            self._route("/types", {"GET": self.types_get}),
            self._route("/types/{type:path}", {"GET": self.type_get}),
            self._route("/attributes", {"GET": self.attributes_get}),
            self._route("/attributes/{attrId:path}", {"GET": self.attribute_get}),
            self._route("/jsonldContexts", {"GET": self.contexts_get, "POST": self.contexts_post}),
            self._route("/jsonldContexts/{contextId:path}", {"GET": self.context_get,
                                                             "DELETE": self.context_delete}),
        ]

    def fallback_routes(self) -> list[BaseRoute]:
        """The catch-all 404 under ``/ngsi-ld/v1``: it goes after every other component's routes."""

        async def unknown(request: Request) -> Response:
            raise ResourceNotFound(f"no such resource: {request.url.path}")

        return [self._route("/{rest:path}", {m: unknown for m in _ALL_METHODS})]

    # --- entities ---------------------------------------------------------------------------------------------
    async def entities_post(self, request: Request) -> Response:
        _params(request, set())
        body, body_ctx, from_body = await self._body(request)
        rc = await self._context(request, body_ctx, from_body)
        entity = expand_entity(body, rc.ctx, now_iso())
        entity_id = await self.service.create(rc.tenant, entity)
        return Response(status_code=201, headers={"Location": f"{BASE}/entities/{entity_id}"})

    async def entity_get(self, request: Request) -> Response:
        params = _params(request, {"attrs", "pick", "omit", "options", "lang", "datasetId", "format", "local"})
        rc = await self._context(request)
        entity_id = _entity_id(request)
        options = _options(params, {"keyValues", "concise", "normalized", "sysAttrs", "simplified"})
        document = await self.service.get_document(rc.tenant, entity_id)
        shape = self._shape(rc, params, options, _projection(params, rc.ctx))
        return self._respond_bytes(rc, shape.render_document(document))

    async def entity_put(self, request: Request) -> Response:
        _params(request, set())
        body, body_ctx, from_body = await self._body(request)
        rc = await self._context(request, body_ctx, from_body)
        entity_id = _entity_id(request)
        if isinstance(body, dict):
            body = {"id": entity_id, **body}
        entity = expand_entity(body, rc.ctx, now_iso(), require_type=False)
        await self.service.replace(rc.tenant, entity_id, entity)
        return Response(status_code=204)

    async def entity_patch(self, request: Request) -> Response:
        _params(request, {"options"})
        body, body_ctx, from_body = await self._body(request, allow_merge_patch=True)
        rc = await self._context(request, body_ctx, from_body)
        entity_id = _entity_id(request)
        now = now_iso()
        fragment = expand_fragment(body, rc.ctx, now, allow_null=True)
        await self.service.merge(rc.tenant, entity_id, fragment, now)
        return Response(status_code=204)

    async def entity_delete(self, request: Request) -> Response:
        _params(request, {"type", "local"})
        rc = await self._context(request)
        await self.service.delete(rc.tenant, _entity_id(request))
        return Response(status_code=204)

    async def attrs_post(self, request: Request) -> Response:
        params = _params(request, {"options"})
        options = _options(params, {"noOverwrite"})
        body, body_ctx, from_body = await self._body(request)
        rc = await self._context(request, body_ctx, from_body)
        entity_id = _entity_id(request)
        now = now_iso()
        fragment = expand_fragment(body, rc.ctx, now)
        fragment.pop("id", None)
        result = await self.service.append_attrs(rc.tenant, entity_id, fragment, now, "noOverwrite" in options)
        return self._update_result(rc, result)

    async def attrs_patch(self, request: Request) -> Response:
        _params(request, {"options"})
        body, body_ctx, from_body = await self._body(request)
        rc = await self._context(request, body_ctx, from_body)
        entity_id = _entity_id(request)
        now = now_iso()
        fragment = expand_fragment(body, rc.ctx, now)
        result = await self.service.update_attrs(rc.tenant, entity_id, fragment, now)
        return self._update_result(rc, result)

    def _update_result(self, rc: RequestContext, result: UpdateResult) -> Response:
        if not result.not_updated:
            return Response(status_code=204)
        return Response(orjson.dumps({
            "updated": [rc.ctx.compact_iri(a) for a in result.updated],
            "notUpdated": [{"attributeName": rc.ctx.compact_iri(a), "reason": r} for a, r in result.not_updated],
        }), status_code=207, media_type=JSON)

    async def attr_patch(self, request: Request) -> Response:
        _params(request, {"options"})
        body, body_ctx, from_body = await self._body(request)
        rc = await self._context(request, body_ctx, from_body)
        entity_id, attr = _entity_id(request), _attr_name(request, rc.ctx)
        if not isinstance(body, dict):
            raise BadRequestData("a partial attribute update is a JSON object")
        now = now_iso()
        patch = dict(body)
        patch.pop("@context", None)
        if "type" not in patch:  # clause 5.6.4: the type may be omitted; take it from the stored instance
            entity = await self.service.get(rc.tenant, entity_id)
            stored = next((i for i in entity.get(attr, []) if i.get("datasetId") == patch.get("datasetId")), None)
            if stored is None:
                raise ResourceNotFound(f"entity {entity_id} has no attribute {request.path_params['attrId']}")
            patch["type"] = stored.get("type", "Property")
        instance = _partial_instance(request.path_params["attrId"], patch, rc.ctx, now)
        await self.service.patch_attr(rc.tenant, entity_id, attr, instance, now)
        return Response(status_code=204)

    async def attr_put(self, request: Request) -> Response:
        _params(request, set())
        body, body_ctx, from_body = await self._body(request)
        rc = await self._context(request, body_ctx, from_body)
        entity_id, attr = _entity_id(request), _attr_name(request, rc.ctx)
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "@context"}
        now = now_iso()
        instances = expand_attribute(request.path_params["attrId"], body, rc.ctx, now)
        await self.service.replace_attr(rc.tenant, entity_id, attr, instances, now)
        return Response(status_code=204)

    async def attr_delete(self, request: Request) -> Response:
        params = _params(request, {"datasetId", "deleteAll"})
        rc = await self._context(request)
        entity_id, attr = _entity_id(request), _attr_name(request, rc.ctx)
        dataset_id = params.get("datasetId")
        if dataset_id is not None and not is_uri(dataset_id):
            raise BadRequestData(f"datasetId must be a URI, got {dataset_id!r}")
        delete_all = _bool(params, "deleteAll")
        await self.service.delete_attr(rc.tenant, entity_id, attr, dataset_id, delete_all)
        return Response(status_code=204)

    async def entities_purge(self, request: Request) -> Response:
        params = _params(request, {"type", "q", "id", "idPattern", "scopeQ", "local"})
        rc = await self._context(request)
        if not params.get("type"):
            raise BadRequestData("purge (DELETE /entities) requires the type parameter")
        store = self.service.store
        entity_filter = _filter(params, rc.ctx, store.dialect, store.q_scalars)
        await self.service.purge(rc.tenant, entity_filter)
        return Response(status_code=204)

    # --- query ----------------------------------------------------------------------------------------------
    _QUERY_PARAMS: Final = frozenset({
        "type", "id", "idPattern", "attrs", "pick", "omit", "q", "georel", "geometry", "coordinates",
        "geoproperty", "limit", "offset", "count", "options", "lang", "datasetId", "scopeQ", "csf", "local",
        "format", "geometryProperty",
    })

    async def entities_get(self, request: Request) -> Response:
        params = _params(request, set(self._QUERY_PARAMS))
        rc = await self._context(request)
        return await self._query(request, rc, params)

    async def batch_query(self, request: Request) -> Response:
        qparams = _params(request, {"limit", "offset", "count", "options", "lang", "local"})
        body, body_ctx, from_body = await self._body(request)
        rc = await self._context(request, body_ctx, from_body)
        if not isinstance(body, dict) or body.get("type") != "Query":
            raise BadRequestData('the body of a query must be a Query object ({"type": "Query", ...})')
        params = dict(qparams)
        entities = body.get("entities") or []
        if not isinstance(entities, list):
            raise BadRequestData("Query.entities must be an array of EntitySelector")
        types = [e.get("type") for e in entities if isinstance(e, dict) and e.get("type")]
        ids = [e.get("id") for e in entities if isinstance(e, dict) and e.get("id")]
        patterns = [e.get("idPattern") for e in entities if isinstance(e, dict) and e.get("idPattern")]
        if types:
            params["type"] = ",".join(types)
        if ids:
            params["id"] = ",".join(ids)
        if patterns:
            params["idPattern"] = "|".join(f"(?:{p})" for p in patterns)
        for key in ("attrs", "pick", "omit"):
            if isinstance(body.get(key), list):
                params[key] = ",".join(body[key])
        if isinstance(body.get("q"), str):
            params["q"] = body["q"]
        geo = body.get("geoQ")
        if isinstance(geo, dict):
            params["georel"] = geo.get("georel", "")
            params["geometry"] = geo.get("geometry", "")
            coords = geo.get("coordinates")
            params["coordinates"] = coords if isinstance(coords, str) else orjson.dumps(coords).decode()
            if geo.get("geoproperty"):
                params["geoproperty"] = geo["geoproperty"]
        if isinstance(body.get("lang"), str):
            params["lang"] = body["lang"]
        return await self._query(request, rc, params)

    async def _query(self, request: Request, rc: RequestContext, params: dict[str, str]) -> Response:
        options = _options(params, {"keyValues", "concise", "normalized", "sysAttrs", "count", "simplified"})
        # clause 5.7.2: a query must be bounded by a selector; an id list or idPattern also selects entities
        has_selector = any(params.get(k) for k in ("type", "attrs", "q", "georel", "id", "idPattern", "scopeQ"))
        if not has_selector:
            raise BadRequestData("a query needs at least one of type, attrs, q, a geo-query, scopeQ, id or idPattern "
                                 "(too wide otherwise)")
        store = self.service.store
        entity_filter = _filter(params, rc.ctx, store.dialect, store.q_scalars)
        entity_filter.limit = _int(params, "limit", 20)
        entity_filter.offset = _int(params, "offset", 0)
        entity_filter.count = _bool(params, "count") or "count" in options
        if entity_filter.limit > MAX_LIMIT:
            raise TooManyResults(f"limit {entity_filter.limit} is over the maximum of {MAX_LIMIT}")
        if entity_filter.limit == 0 and not entity_filter.count:
            raise BadRequestData("limit=0 is only allowed together with count=true")
        documents, count = await self.service.query_documents(rc.tenant, entity_filter)
        shape = self._shape(rc, params, options, _projection(params, rc.ctx))
        # orjson writes a list as "[" + its items joined by "," + "]": the same bytes as dumping the rendered list
        body = b"[" + b",".join([shape.render_document(d) for d in documents]) + b"]"
        links = []
        limit, offset = entity_filter.limit, entity_filter.offset
        if len(documents) == limit and limit > 0 and (count is None or offset + limit < count):
            links.append(f'<{_page_url(request, offset + limit, limit)}>; rel="next"')
        if offset > 0 and limit > 0:
            links.append(f'<{_page_url(request, max(0, offset - limit), limit)}>; rel="prev"')
        return self._respond_bytes(rc, body, count, links)

    def _shape(self, rc: RequestContext, params: dict[str, str], options: set[str],
               projection: tuple[set[str] | None, set[str] | None, set[str] | None]) -> RenderShape:
        """How this request wants entities rendered (form, sysAttrs, projections, lang, datasetId, @context)."""
        fmt = params.get("format")
        if "keyValues" in options or "simplified" in options or fmt in ("keyValues", "simplified"):
            form = "keyValues"
        elif "concise" in options or fmt == "concise":
            form = "concise"
        else:
            form = "normalized"
        datasets = params.get("datasetId")
        pick, omit, attrs = projection
        body_context = None
        if rc.accept == JSONLD:
            body_context = rc.ctx.context if rc.ctx.context is not None else CORE_CONTEXT_URL
        return render_shape(rc.ctx, form=form, sys_attrs="sysAttrs" in options, pick=pick, omit=omit, attrs=attrs,
                            lang=params.get("lang"), dataset_id=datasets.split(",") if datasets else None,
                            body_context=body_context)

    # --- batch ---------------------------------------------------------------------------------------------
    async def _batch(self, request: Request, op: str, options: set[str]) -> tuple[RequestContext, BatchResult]:
        """Batch create/upsert/update/merge: the body taken apart and applied (``batch.apply_batch``) — by a batch
        worker process when the broker has them and the body is ``application/json`` (``batch_workers``, decision
        0730), else here."""
        raw, ctype = await self._raw_body(request)
        now = now_iso()
        if self.batch_workers is not None and ctype == JSON:
            rc = await self._context(request)
            return rc, await self.batch_workers.run(op, rc.tenant, rc.ctx, raw, options, now)
        rc, body = await self._batch_body(request, raw, ctype)
        result = BatchResult()
        await apply_batch(self.service, op, rc.tenant, rc.ctx, body, options, now, result)
        return rc, result

    async def _batch_body(self, request: Request, raw: bytes, ctype: str) -> tuple[RequestContext, list[Any]]:
        """A batch body taken apart here: a JSON array, and the request's context (ld+json: each entity carries its
        own @context; the first one sets the response context)."""
        body, body_ctx, from_body = self._parsed(request, raw, ctype)
        if not isinstance(body, list):
            raise BadRequestData("a batch operation's body must be a JSON array")
        rc = await self._context(request, body_ctx, True) if from_body else await self._context(request)
        return rc, body

    def _batch_response(self, rc: RequestContext, result: BatchResult, ok_status: int,
                        ok_body: Any = None) -> Response:
        if result.errors:
            return Response(orjson.dumps(result.body()), status_code=207, media_type=JSON)
        if ok_body is not None:
            return Response(orjson.dumps(ok_body), status_code=ok_status, media_type=JSON)
        return Response(status_code=ok_status)

    async def batch_create(self, request: Request) -> Response:
        _batch_options(request, set())
        rc, result = await self._batch(request, "create", set())
        return self._batch_response(rc, result, 201, result.success)

    async def batch_upsert(self, request: Request) -> Response:
        options = _batch_options(request, {"replace", "update"})
        if {"replace", "update"} <= options:
            raise BadRequestData("options replace and update exclude each other")
        rc, result = await self._batch(request, "upsert", options)
        if not result.errors and not result.created:
            return Response(status_code=204)
        return self._batch_response(rc, result, 201, result.created)

    async def batch_update(self, request: Request) -> Response:
        options = _batch_options(request, {"noOverwrite"})
        rc, result = await self._batch(request, "update", options)
        return self._batch_response(rc, result, 204)

    async def batch_merge(self, request: Request) -> Response:
        _batch_options(request, set())
        rc, result = await self._batch(request, "merge", set())
        return self._batch_response(rc, result, 204)

    async def batch_delete(self, request: Request) -> Response:
        _batch_options(request, set())
        rc, body = await self._batch_body(request, *await self._raw_body(request))
        result = BatchResult()
        ids: list[str] = []
        for item in body:
            try:
                ids.append(check_entity_id(item))
            except NgsiLdError as error:
                result.fail(item, error)
        if ids:
            await self.service.require_tenant(rc.tenant)
            await self.service.batch_delete(rc.tenant, ids, result)
        return self._batch_response(rc, result, 204)

    # --- discovery (clause 5.7.5-5.7.10) ---------------------------------------------------------------------
    async def types_get(self, request: Request) -> Response:
        params = _params(request, {"details", "local"})
        rc = await self._context(request)
        summary = await self.service.type_summary(rc.tenant)
        if _bool(params, "details"):
            data: Any = [{"id": t, "type": "EntityType", "typeName": rc.ctx.compact_iri(t),
                          "attributeNames": sorted(rc.ctx.compact_iri(a) for a in info["attrs"])}
                         for t, info in sorted(summary.items())]
        else:
            data = {"id": f"urn:ngsi-ld:EntityTypeList:{uuid.uuid4()}", "type": "EntityTypeList",
                    "typeList": sorted(rc.ctx.compact_iri(t) for t in summary)}
        return self._respond(rc, data)

    async def type_get(self, request: Request) -> Response:
        _params(request, {"local"})
        rc = await self._context(request)
        name = request.path_params["type"]
        check_name(name)
        iri = rc.ctx.expand_term(name)
        summary = await self.service.type_summary(rc.tenant, iri)
        info = summary.get(iri)
        if info is None:
            raise ResourceNotFound(f"no entity of type {name}")
        data = {"id": iri, "type": "EntityTypeInfo", "typeName": rc.ctx.compact_iri(iri),
                "entityCount": info["count"],
                "attributeDetails": [{"id": a, "type": "Attribute", "attributeName": rc.ctx.compact_iri(a),
                                      "attributeTypes": sorted(kinds)} for a, kinds in sorted(info["attrs"].items())]}
        return self._respond(rc, data)

    async def attributes_get(self, request: Request) -> Response:
        params = _params(request, {"details", "local"})
        rc = await self._context(request)
        summary = await self.service.attribute_summary(rc.tenant)
        if _bool(params, "details"):
            data: Any = [self._attribute_info(rc, a, info) for a, info in sorted(summary.items())]
        else:
            data = {"id": f"urn:ngsi-ld:AttributeList:{uuid.uuid4()}", "type": "AttributeList",
                    "attributeList": sorted(rc.ctx.compact_iri(a) for a in summary)}
        return self._respond(rc, data)

    async def attribute_get(self, request: Request) -> Response:
        _params(request, {"local"})
        rc = await self._context(request)
        name = request.path_params["attrId"]
        check_name(name)
        iri = rc.ctx.expand_term(name)
        info = (await self.service.attribute_summary(rc.tenant)).get(iri)
        if info is None:
            raise ResourceNotFound(f"no attribute {name}")
        return self._respond(rc, self._attribute_info(rc, iri, info))

    @staticmethod
    def _attribute_info(rc: RequestContext, iri: str, info: dict[str, Any]) -> dict[str, Any]:
        return {"id": iri, "type": "Attribute", "attributeName": rc.ctx.compact_iri(iri),
                "attributeCount": info["count"], "attributeTypes": sorted(info["kinds"]),
                "typeNames": sorted(rc.ctx.compact_iri(t) for t in info["types"])}

    # --- @context management (clause 5.13) -------------------------------------------------------------------
    async def contexts_get(self, request: Request) -> Response:
        params = _params(request, {"details", "kind"})
        _accept(request)
        kind = params.get("kind")
        if kind is not None and kind not in ("Hosted", "Cached", "ImplicitlyCreated"):
            raise BadRequestData("kind must be Hosted, Cached or ImplicitlyCreated")
        entries = self.contexts.list(kind)
        data = [e.info() for e in entries] if _bool(params, "details") else [e.url for e in entries]
        return Response(orjson.dumps(data), media_type=JSON)

    async def contexts_post(self, request: Request) -> Response:
        _params(request, set())
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype not in (JSON, JSONLD):
            raise UnsupportedMediaType(f"Content-Type must be {JSON} or {JSONLD}")
        body = await _read_json(request, self.max_body_bytes)
        entry = await self.contexts.add_hosted(body, self.base_url)
        return Response(status_code=201, headers={"Location": entry.url})

    async def context_get(self, request: Request) -> Response:
        params = _params(request, {"details"})
        entry = self.contexts.get(request.path_params["contextId"])
        if _bool(params, "details"):
            return Response(orjson.dumps(entry.info()), media_type=JSON)
        return Response(orjson.dumps(entry.document), media_type=JSONLD)

    async def context_delete(self, request: Request) -> Response:
        params = _params(request, {"reload"})
        await self.contexts.delete(request.path_params["contextId"], reload=_bool(params, "reload"))
        return Response(status_code=204)


# --- parameter helpers -----------------------------------------------------------------------------------------

def _batch_options(request: Request, allowed: set[str]) -> set[str]:
    """A batch operation's query: ``options`` (of ``allowed``) and ``local``, nothing else."""
    return _options(_params(request, {"options", "local"}), allowed)


async def _read_json(request: Request, limit: int) -> Any:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc


def _params(request: Request, allowed: set[str]) -> dict[str, str]:
    """Query parameters, each at most once; an unknown one is rejected (clause 6.3.2 leaves no room for guesses)."""
    out: dict[str, str] = {}
    for key, value in _query_items(request.scope.get("query_string", b"")):
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise BadRequestData(f"unknown query parameter {key!r}; allowed here: {names}")
        if key in out:
            raise BadRequestData(f"query parameter {key!r} given more than once")
        out[key] = value
    return out


@lru_cache(maxsize=1024)
def _query_items(query_string: bytes) -> tuple[tuple[str, str], ...]:
    """The query string's (name, value) pairs in order, parsed as Starlette's ``request.query_params`` parses them
    (latin-1, ``parse_qsl`` keeping blank values), memoised: polling clients repeat the same query strings."""
    return tuple((str(k), str(v)) for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


def _options(params: dict[str, str], allowed: set[str]) -> set[str]:
    raw = params.get("options")
    if raw is None:
        return set()
    options = {o.strip() for o in raw.split(",") if o.strip()}
    unknown = options - allowed
    if unknown:
        raise BadRequestData(f"unknown option(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    if len(options & {"keyValues", "concise", "normalized", "simplified"}) > 1:
        raise BadRequestData("options keyValues, concise and normalized exclude each other")
    return options


def _int(params: dict[str, str], key: str, default: int) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 9:
        raise BadRequestData(f"{key} must be a non-negative integer, got {raw!r}")
    return int(raw)


def _bool(params: dict[str, str], key: str) -> bool:
    raw = params.get(key)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise BadRequestData(f"{key} must be true or false, got {raw!r}")
    return raw == "true"


def _entity_id(request: Request) -> str:
    return check_entity_id(request.path_params["entityId"])


def _attr_name(request: Request, ctx: CompiledContext) -> str:
    name = request.path_params["attrId"]
    check_name(name)
    return ctx.expand_term(name)


def _partial_instance(name: str, patch: dict[str, Any], ctx: CompiledContext, now: str) -> dict[str, Any]:
    from sleutelbos.broker.entity import VALUE_MEMBER

    kind = patch.get("type", "Property")
    member = VALUE_MEMBER.get(kind, "value") if isinstance(kind, str) else "value"
    if member not in patch:
        # a partial update may carry only metadata or sub-attributes: validate with a placeholder value
        instance = expand_instance(name, {**patch, member: _placeholder(kind)}, ctx, now)
        instance.pop(member, None)
    else:
        instance = expand_instance(name, patch, ctx, now)
    instance.pop("createdAt", None)
    return instance


def _placeholder(kind: Any) -> Any:
    return {"Relationship": "urn:ngsi-ld:placeholder", "GeoProperty": {"type": "Point", "coordinates": [0, 0]},
            "LanguageProperty": {"en": ""}, "ListProperty": [], "ListRelationship": [],
            "VocabProperty": "placeholder"}.get(kind, 0)


def _page_url(request: Request, offset: int, limit: int) -> str:
    # the path as ``request.url.path`` gives it (Starlette escapes these three), without building the whole URL
    # from the Host header on every page: that was ~5 % of a query's CPU
    path = request.scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    return _page_url_for(path, request.scope.get("query_string", b""), offset, limit)


@lru_cache(maxsize=1024)
def _page_url_for(path: str, query_string: bytes, offset: int, limit: int) -> str:
    """The next/previous page's URL: the query string as the client sent it, its ``offset`` and ``limit`` dropped
    and the new ones appended (last, so that they win over any other spelling of those names). Not parsed and
    encoded again: with a query string that varies (other thresholds, other pages), ``QueryParams`` and
    ``urlencode`` were a quarter of a query's CPU in the broker. Memoised for a client paging or polling one query."""
    kept = [part for part in query_string.decode("latin-1").split("&")
            if part and part.split("=", 1)[0] not in ("offset", "limit")]
    return f"{path}?{'&'.join([*kept, f'offset={offset}', f'limit={limit}'])}"


def _split(raw: str | None) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()] if raw else []


def _projection(params: dict[str, str], ctx: CompiledContext
                ) -> tuple[set[str] | None, set[str] | None, set[str] | None]:
    """``pick``, ``omit`` (clause 4.21) and ``attrs`` as expanded IRIs (``id``/``type`` kept as such), expanded once
    per request; ``representation.render`` applies them."""
    pick_raw = _split(params.get("pick")) or None
    omit_raw = _split(params.get("omit")) or None
    attrs_raw = _split(params.get("attrs")) or None
    if pick_raw and omit_raw:
        raise BadRequestData("pick and omit exclude each other")

    def expand(names: list[str] | None) -> set[str] | None:
        if not names:
            return None
        return {n if n in ("id", "type") else ctx.expand_term(_checked(n)) for n in names}

    return expand(pick_raw), expand(omit_raw), expand(attrs_raw)


def _checked(name: str) -> str:
    check_name(name)
    return name


def _filter(params: dict[str, str], ctx: CompiledContext, dialect: str, scalars: str | None = None) -> EntityFilter:
    f = EntityFilter()
    if params.get("type"):
        f.type_groups = [list(group) for group in _type_groups(params["type"], ctx)]
    if params.get("id"):
        f.ids = [check_entity_id(i) for i in _split(params["id"])]
    if params.get("idPattern"):
        from sleutelbos.broker.store.base import id_pattern_ok

        f.id_pattern = id_pattern_ok(params["idPattern"])
    if params.get("attrs"):
        f.attrs = [ctx.expand_term(_checked(a)) for a in _split(params["attrs"])]
    if params.get("q"):
        _add_q(f, params["q"], ctx, dialect, scalars)
    if params.get("scopeQ"):
        from sleutelbos.broker.query.scopeq import parse_scope_query, scope_sql

        f.sql.append(scope_sql(parse_scope_query(params["scopeQ"]), dialect))
    if params.get("csf"):
        raise BadRequestData("csf applies to context source registrations, which this broker does not hold")
    if any(params.get(k) for k in ("georel", "geometry", "coordinates", "geoproperty")):
        _add_geo(f, params, ctx)
    return f


@lru_cache(maxsize=1024)
def _type_groups(text: str, ctx: CompiledContext) -> tuple[tuple[str, ...], ...]:
    """``type`` parsed (memoised per text and compiled context, which is immutable; errors are not cached)."""
    from sleutelbos.broker.query.typeselection import parse_type_selection

    return tuple(tuple(group) for group in parse_type_selection(text, ctx))


def _add_q(f: EntityFilter, q: str, ctx: CompiledContext, dialect: str, scalars: str | None = None) -> None:
    """Parse ``q`` and translate it to SQL over ``e.doc`` (and the store's scalar column, if it keeps one: decision
    0555) with the query package, so that the database filters and pages."""
    sql, params = _q_condition(q, ctx, dialect, scalars)
    f.sql.append(SqlCondition(sql, list(params)))


@lru_cache(maxsize=1024)
def _q_condition(q: str, ctx: CompiledContext, dialect: str, scalars: str | None) -> tuple[str, tuple[Any, ...]]:
    """``q`` as SQL (memoised per query string and compiled context: the parse and the translation are pure, and
    this skips hashing the AST for the translation cache on every request)."""
    from sleutelbos.broker.query.parser import parse_query
    from sleutelbos.broker.query.sql import SqlTarget, translate

    condition = translate(parse_query(q, ctx), SqlTarget(dialect, scalars=scalars))  # type: ignore[arg-type]
    return condition.sql, tuple(condition.params)


def _add_geo(f: EntityFilter, params: dict[str, str], ctx: CompiledContext) -> None:
    from sleutelbos.broker.query.geo import parse_geoquery

    query = parse_geoquery(params.get("georel"), params.get("geometry"), params.get("coordinates"),
                           params.get("geoproperty"), ctx)
    if query is None:
        return
    f.post.append(query.matches)
    if query.bbox is not None:
        f.bbox = query.bbox
