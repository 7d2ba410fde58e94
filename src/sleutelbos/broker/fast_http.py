"""The broker's hot requests answered by the HTTP protocol, without the ASGI cycle around them.

``GET /ngsi-ld/v1/entities``, ``GET /ngsi-ld/v1/entities/{id}`` and ``PATCH /ngsi-ld/v1/entities/{id}/attrs``
already skip Starlette's router (decisions 0553 and 0750, :mod:`.hotpaths`). What remained around their endpoints on
every request was uvicorn's ASGI cycle: the ``receive``/``send`` callables and their message dicts, the response's
two ``send`` awaits with a header check each, uvicorn's proxy-headers middleware, and Starlette's application and
error middleware. That is ~12 µs of the ~245 µs of broker CPU a query cost over HTTP, and ~16 µs of a
(render-cached) single GET's ~93 µs (decision 0750). It is not the largest part of a request, but it is one these
requests do not need.

:class:`BrokerHttpProtocol`, a subclass of the bounded httptools protocol every server runs
(:mod:`sleutelbos.core.http_bounds`), starts the *same endpoint function* for those requests in place of uvicorn's
ASGI task. The ``Response`` it returns is written in one write. Everything about the connection stays uvicorn's:
- the parser;
- the request cycle object: keep-alive, the request body and ``Expect: 100-continue`` (a PATCH reads its body through
  the cycle's ``receive``), pipelined requests queued behind the one being answered, graceful shutdown, flow control;
- the default ``date``/``server`` headers and the header checks.

It is used only where it cannot change what a client gets or skip a check:

* the application must be, layer by layer, uvicorn's proxy-headers middleware, then a Starlette application whose
  *outermost* middleware is the broker's :class:`.hotpaths.BrokerHotPaths`, and nothing else
  (:func:`find_hot_paths`). Then on the ASGI path the same requests reach the same endpoints with only Starlette's
  error middleware in between. Any other layer, a policy enforcement point put in front of the broker say, and every
  request takes the ASGI path;
* the request must be one the hot paths take themselves (no ``root_path``, the methods and paths of
  :meth:`.hotpaths.BrokerHotPaths.route`). It must carry no ``X-Forwarded-*`` header: the proxy-headers middleware
  would rewrite the scheme or client, so such requests take the ASGI path, where it does;
* an unexpected exception is uvicorn's 500, as on the ASGI path (the endpoints answer every error they know as an
  ETSI ProblemDetails themselves). A response that is not a whole body (a streaming one) is sent through the cycle's
  ASGI ``send``.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from sleutelbos.broker.asgi import LeanRequest
from sleutelbos.broker.hotpaths import BrokerHotPaths, Endpoint
from sleutelbos.core.http_bounds import BoundedHttpToolsProtocol

log = logging.getLogger("sleutelbos.broker")

_NOT_FOUND: Any = object()


def find_hot_paths(app: Any) -> BrokerHotPaths | None:
    """The broker's hot paths if ``app`` (uvicorn's loaded application) is exactly the layers the module docstring
    names; ``None`` otherwise. Built from the Starlette application's middleware declaration (its stack is built
    lazily, on the first request), with the same endpoints the middleware gets."""
    while isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    if not isinstance(app, Starlette) or not app.user_middleware:
        return None
    outermost = app.user_middleware[0]
    if outermost.cls is not BrokerHotPaths or outermost.args:
        return None
    return BrokerHotPaths(app=None, **outermost.kwargs)  # type: ignore[arg-type]  # only its routing is used


class BrokerHttpProtocol(BoundedHttpToolsProtocol):
    """See the module docstring. Select it with ``uvicorn.Config(http=...)`` (through
    :func:`sleutelbos.core.http_bounds.bounded_protocol`, which sets the bounds); with any other application it is
    the bounded protocol."""

    _hot_paths: Any = _NOT_FOUND  # per class: found once, on the first connection (the application is loaded then)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        endpoint = self._fast_endpoint(cycle.scope) if app is self.app else None
        if endpoint is None:  # also uvicorn's 503 for the concurrency limit (``app`` is then another one)
            super()._start_asgi_task(cycle, app)
            return
        task = self.loop.create_task(_answer(cycle, endpoint))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _fast_endpoint(self, scope: dict[str, Any]) -> Endpoint | None:
        hot_paths = type(self)._hot_paths
        if hot_paths is _NOT_FOUND:
            hot_paths = type(self)._hot_paths = find_hot_paths(self.app)
        if hot_paths is None or scope["root_path"]:
            return None
        endpoint, params = hot_paths.route(scope["method"], scope["path"])
        if endpoint is None:
            return None
        for name, _ in scope["headers"]:
            if name.startswith(b"x-forwarded-"):
                return None
        scope["path_params"] = params
        return endpoint


async def _answer(cycle: RequestResponseCycle, endpoint: Endpoint) -> None:
    """uvicorn's ``run_asgi`` for an endpoint that returns a whole ``Response``."""
    try:
        response = await endpoint(LeanRequest(cycle.scope, cycle.receive))
        if not isinstance(getattr(response, "body", None), bytes):  # not a whole body: the ASGI way
            await response(cycle.scope, cycle.receive, cycle.send)
            return
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if not cycle.disconnected:
            _write(cycle, response)
    except BaseException as exc:
        log.error("Exception in the broker's hot path", exc_info=exc)
        if not cycle.response_started:
            await cycle.send_500_response()
        else:
            cycle.transport.close()
    finally:
        cycle.on_response = lambda: None


def _write(cycle: RequestResponseCycle, response: Response) -> None:
    """What uvicorn's ``send`` does for a response start and its one, last body message, in one write (never for
    ``HEAD``; Starlette's ``Response`` declares its length, or has none for a 204)."""
    status = response.status_code
    content = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        content += (name, b": ", value, b"\r\n")
    closes = False
    for name, value in response.raw_headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            raise RuntimeError("Invalid HTTP header.")
        name = name.lower()
        if name == b"connection" and b"close" in [token.lower().strip() for token in value.split(b",")]:
            cycle.keep_alive = False
            closes = True
        content += (name, b": ", value, b"\r\n")
    keep_alive = cycle.keep_alive
    if not keep_alive and not closes:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", response.body)
    cycle.response_started = True  # only now: a header refused above is still uvicorn's 500
    cycle.waiting_for_100_continue = False
    if cycle.access_log:  # as uvicorn logs it
        cycle.access_logger.info('%s - "%s %s HTTP/%s" %d', get_client_addr(cycle.scope), cycle.scope["method"],
                                 get_path_with_query_string(cycle.scope), cycle.scope["http_version"], status)
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not keep_alive:
        cycle.transport.close()
    cycle.on_response()
