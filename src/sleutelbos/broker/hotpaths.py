"""The broker's hottest requests handed to their endpoints before Starlette's router: the two reads
``GET /ngsi-ld/v1/entities`` and ``GET /ngsi-ld/v1/entities/{id}`` (decision 0553), and a meter's single update
``PATCH /ngsi-ld/v1/entities/{id}/attrs`` (decision 0750).

The reads are most of a dashboard's or an integration's traffic, the PATCH is how a head-end or an IoT agent reports
one meter, and each costs only a few hundred microseconds of CPU in the broker itself. Starlette's exception
middleware and its router (which tries ~25 route patterns, the subscription and temporal routes first) added a
noticeable share of that: ~28 µs of a PATCH's ~205 µs in-process. This ASGI middleware recognises the paths with
string comparisons and calls the *same* endpoint functions the routes call (:attr:`BrokerApi.endpoints`), with the
same :class:`~.asgi.LeanRequest` the routes give them (0504). So the handlers, their ETSI errors and their responses
are exactly those of the routed path. Everything else goes to the wrapped application unchanged: other methods,
other paths, a path the router could give to another route (an id containing ``/attrs``), a mounted application
(``root_path``).

The stack installs it as a Starlette middleware (``BrokerComponent.middleware``), so it sits inside Starlette's
``ServerErrorMiddleware`` like any route; the endpoints catch every exception themselves. Over HTTP,
:mod:`.fast_http` answers the same requests through :meth:`BrokerHotPaths.route` without the ASGI cycle.
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
_ATTRS: Final = "/attrs"
_NOWHERE: Final[tuple[None, dict[str, Any]]] = (None, {})


class BrokerHotPaths:
    """ASGI middleware: the hot requests straight to their endpoints (see the module docstring)."""

    def __init__(self, app: ASGIApp, entities: Endpoint, entity: Endpoint, attrs: Endpoint) -> None:
        self.app = app
        self.entities = entities
        self.entity = entity
        self.attrs = attrs

    def route(self, method: str, path: str) -> tuple[Endpoint | None, dict[str, Any]]:
        """The endpoint of ``method`` on ``path`` (without ``root_path``) with its path parameters, or ``None`` for a
        request the router must decide (the protocol's fast path, :mod:`.fast_http`, asks the same question)."""
        if method == "GET":
            if path == _ENTITIES:
                return self.entities, {}
            if path.startswith(_ENTITY_PREFIX):
                entity_id = path[len(_ENTITY_PREFIX):]
                # the router tries /entities/{id}/attrs[/{attr}] first: leave anything that could be one to it
                if entity_id and _ATTRS not in entity_id:
                    return self.entity, {"entityId": entity_id}
        elif method == "PATCH" and path.startswith(_ENTITY_PREFIX) and path.endswith(_ATTRS):
            entity_id = path[len(_ENTITY_PREFIX):-len(_ATTRS)]
            # with "/attrs" inside the id, /entities/{id}/attrs/{attr} could match too: the router decides
            if entity_id and _ATTRS not in entity_id:
                return self.attrs, {"entityId": entity_id}
        return _NOWHERE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            endpoint, params = self.route(scope["method"], scope["path"])
            if endpoint is not None:
                scope["path_params"] = params
                response = await endpoint(LeanRequest(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
