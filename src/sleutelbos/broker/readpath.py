"""The broker's read requests — ``GET /ngsi-ld/v1/entities`` and ``GET /ngsi-ld/v1/entities/{id}`` — handed to their
endpoints before Starlette's router (docs/decisions/0553).

These two requests are most of a dashboard's or an integration's traffic, and each costs only a few hundred
microseconds of CPU in the broker itself; Starlette's exception middleware and its router (which tries ~25 route
patterns, the subscription and temporal routes first) added a noticeable share of that. This ASGI middleware
recognises the two paths with a string comparison and calls the *same* endpoint functions the routes call
(:attr:`BrokerApi.endpoints`), with the same :class:`~.asgi.LeanRequest` the routes give them (0504), so the
handlers, their ETSI errors and their responses are exactly those of the routed path. Everything else — other methods,
other paths, a path the router would give to another route (``/entities/{id}/attrs...``) or a mounted application
(``root_path``) — goes to the wrapped application unchanged.

It is installed as a Starlette middleware by the stack (``BrokerComponent.middleware``), so it sits inside
Starlette's ``ServerErrorMiddleware`` like any route; the endpoints catch every exception themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sleutelbos.broker.api import BASE
from sleutelbos.broker.asgi import LeanRequest

Endpoint = Callable[[LeanRequest], Awaitable[Response]]

_ENTITIES: Final = BASE + "/entities"
_ENTITY_PREFIX: Final = _ENTITIES + "/"


class BrokerReadPath:
    """ASGI middleware: the two read paths straight to their endpoints (see the module docstring)."""

    def __init__(self, app: ASGIApp, entities: Endpoint, entity: Endpoint) -> None:
        self.app = app
        self.entities = entities
        self.entity = entity

    def route(self, path: str) -> tuple[Endpoint | None, dict[str, Any]]:
        """The endpoint of a ``GET`` on ``path`` (without ``root_path``) with its path parameters, or ``None`` for
        a path the router must decide (the protocol's fast path, :mod:`.fast_http`, asks the same question)."""
        if path == _ENTITIES:
            return self.entities, {}
        if path.startswith(_ENTITY_PREFIX):
            entity_id = path[len(_ENTITY_PREFIX):]
            # the router tries /entities/{id}/attrs[/{attr}] first: leave anything that could be one to it
            if entity_id and "/attrs" not in entity_id:
                return self.entity, {"entityId": entity_id}
        return None, {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            endpoint, params = self.route(scope["path"])
            if endpoint is not None:
                scope["path_params"] = params
                response = await endpoint(LeanRequest(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
