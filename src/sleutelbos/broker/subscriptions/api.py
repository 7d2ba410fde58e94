"""HTTP binding of subscriptions (ETSI GS CIM 009 v1.8, clauses 6.10 and 6.11): ``/ngsi-ld/v1/subscriptions`` and
``/ngsi-ld/v1/subscriptions/{subscriptionId}``. Thin handlers on the core API's request plumbing (tenant, @context,
content types, ProblemDetails errors); the rules live in :mod:`.model` and :mod:`.service`.
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sleutelbos.broker.api import BASE, BrokerApi, _bool, _int, _params
from sleutelbos.broker.errors import TooManyResults
from sleutelbos.broker.subscriptions.service import SubscriptionService

MAX_LIMIT = 1000


class SubscriptionApi:
    def __init__(self, core: BrokerApi, service: SubscriptionService) -> None:
        self.core = core
        self.service = service

    def routes(self) -> list[Route]:
        route = self.core._route
        return [
            route("/subscriptions", {"POST": self.post, "GET": self.query}),
            route("/subscriptions/{subscriptionId:path}", {"GET": self.retrieve, "PATCH": self.patch,
                                                           "DELETE": self.delete}),
        ]

    async def post(self, request: Request) -> Response:
        """Clause 6.10.3.1: 201 with Location; 409 AlreadyExists for a known id; 400 with the reason otherwise."""
        _params(request, set())
        body, body_ctx, from_body = await self.core._body(request)
        rc = await self.core._context(request, body_ctx, from_body)
        context = body_ctx if from_body else rc.context_url
        if isinstance(body, dict) and "jsonldContext" in body and context is None:
            context = body["jsonldContext"]
            rc.ctx = await self.core.contexts.compile(context)
        sub_id = await self.service.create(rc.tenant, body, rc.ctx, context)
        return Response(status_code=201, headers={"Location": f"{BASE}/subscriptions/{sub_id}"})

    async def query(self, request: Request) -> Response:
        """Clause 6.10.3.2: the tenant's subscriptions, paginated (``limit``/``offset``/``count``)."""
        params = _params(request, {"limit", "offset", "count"})
        rc = await self.core._context(request)
        limit, offset = _int(params, "limit", 20), _int(params, "offset", 0)
        if limit > MAX_LIMIT:
            raise TooManyResults(f"limit {limit} is over the maximum of {MAX_LIMIT}")
        subs = self.service.list(rc.tenant)
        headers = {"NGSILD-Results-Count": str(len(subs))} if _bool(params, "count") else {}
        return self.core._respond(rc, [s.render() for s in subs[offset:offset + limit]], headers=headers)

    async def retrieve(self, request: Request) -> Response:
        _params(request, set())
        rc = await self.core._context(request)
        return self.core._respond(rc, self.service.get(rc.tenant, _sub_id(request)).render())

    async def patch(self, request: Request) -> Response:
        """Clause 6.11.3.2: merge the fragment; 204."""
        _params(request, set())
        body, body_ctx, from_body = await self.core._body(request, allow_merge_patch=True)
        rc = await self.core._context(request, body_ctx, from_body)
        await self.service.update(rc.tenant, _sub_id(request), body)
        return Response(status_code=204)

    async def delete(self, request: Request) -> Response:
        _params(request, set())
        rc = await self.core._context(request)
        await self.service.delete(rc.tenant, _sub_id(request))
        return Response(status_code=204)


def _sub_id(request: Request) -> str:
    return unquote(request.path_params["subscriptionId"])
