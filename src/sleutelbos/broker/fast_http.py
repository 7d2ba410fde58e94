"""The broker's two read requests answered by the HTTP protocol, without the ASGI cycle around them.

``GET /ngsi-ld/v1/entities`` and ``GET /ngsi-ld/v1/entities/{id}`` already skip Starlette's router (decision 0553,
:mod:`.readpath`). What remained around their endpoints on every request was uvicorn's ASGI cycle: the
``receive``/``send`` callables and their message dicts, the response's two ``send`` awaits with a header check each,
uvicorn's proxy-headers middleware and Starlette's application and error middleware: ~12 µs of the ~245 µs of broker
CPU a query cost over HTTP, ~16 µs of a (render-cached) single GET's ~93 µs (decision 0750). It is not the largest
part of a read, but it is one a read does not need. :class:`BrokerHttpProtocol`, a subclass of
the bounded httptools protocol every server runs (:mod:`sleutelbos.core.http_bounds`), starts the *same endpoint
function* for those two requests in place of uvicorn's ASGI task, and writes the ``Response`` it returns in one
write. Everything about the connection stays uvicorn's: the parser, the request cycle object (keep-alive, pipelined
requests queued behind the one being answered, graceful shutdown, flow control), the default ``date``/``server``
headers and the header checks.

It is used only where it cannot change what a client gets or skip a check:

* the application must be, layer by layer, uvicorn's proxy-headers middleware, a Starlette application whose
  *outermost* middleware is the broker's :class:`.readpath.BrokerReadPath` — so that on the ASGI path the same
  requests reach the same endpoints with only Starlette's error middleware in between — and nothing else
  (:func:`find_read_path`). Any other layer (a policy enforcement point put in front of the broker, say) and every
  request takes the ASGI path;
* the request must be one the read path itself takes (``GET``, no ``root_path``, the two paths) and carry no
  ``X-Forwarded-*`` header (the proxy-headers middleware would rewrite the scheme or client: such requests take
  the ASGI path, where it does);
* an unexpected exception is uvicorn's 500, as on the ASGI path (the endpoints answer every error they know as an
  ETSI ProblemDetails themselves).
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
from sleutelbos.broker.readpath import BrokerReadPath, Endpoint
from sleutelbos.core.http_bounds import BoundedHttpToolsProtocol

log = logging.getLogger("sleutelbos.broker")

_NOT_FOUND: Any = object()


def find_read_path(app: Any) -> BrokerReadPath | None:
    """The broker's read path if ``app`` (uvicorn's loaded application) is exactly the layers the module docstring
    names; ``None`` otherwise. Built from the Starlette application's middleware declaration (its stack is built
    lazily, on the first request), with the same endpoints the middleware gets."""
    while isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    if not isinstance(app, Starlette) or not app.user_middleware:
        return None
    outermost = app.user_middleware[0]
    if outermost.cls is not BrokerReadPath or outermost.args:
        return None
    return BrokerReadPath(app=None, **outermost.kwargs)  # type: ignore[arg-type]  # only its endpoint choice is used


class BrokerHttpProtocol(BoundedHttpToolsProtocol):
    """See the module docstring. Select it with ``uvicorn.Config(http=...)`` (through
    :func:`sleutelbos.core.http_bounds.bounded_protocol`, which sets the bounds); with any other application it is
    the bounded protocol."""

    _read_path: Any = _NOT_FOUND  # per class: found once, on the first connection (the application is loaded then)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        endpoint = self._fast_endpoint(cycle.scope) if app is self.app else None
        if endpoint is None:  # also uvicorn's 503 for the concurrency limit (``app`` is then another one)
            super()._start_asgi_task(cycle, app)
            return
        task = self.loop.create_task(_answer(cycle, endpoint))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _fast_endpoint(self, scope: dict[str, Any]) -> Endpoint | None:
        read_path = type(self)._read_path
        if read_path is _NOT_FOUND:
            read_path = type(self)._read_path = find_read_path(self.app)
        if read_path is None or scope["method"] != "GET" or scope["root_path"]:
            return None
        endpoint, params = read_path.route(scope["path"])
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
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if not cycle.disconnected:
            _write(cycle, response)
    except BaseException as exc:
        log.error("Exception in the broker's read path", exc_info=exc)
        if not cycle.response_started:
            await cycle.send_500_response()
        else:
            cycle.transport.close()
    finally:
        cycle.on_response = lambda: None


def _write(cycle: RequestResponseCycle, response: Response) -> None:
    """What uvicorn's ``send`` does for a response start and its one, last body message (a GET: never ``HEAD``;
    Starlette's ``Response`` always declares its length), in one write."""
    status = response.status_code
    content = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        content += (name, b": ", value, b"\r\n")
    keep_alive = cycle.keep_alive
    for name, value in response.raw_headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            raise RuntimeError("Invalid HTTP header.")
        if name == b"connection" and b"close" in value.lower():
            keep_alive = cycle.keep_alive = False
        content += (name, b": ", value, b"\r\n")
    if not keep_alive:
        content.append(b"connection: close\r\n")  # also when the response says so: one more is harmless
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
