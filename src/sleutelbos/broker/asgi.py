"""A lean request object for the broker's routes: what the NGSI-LD handlers read from a request, built straight from
the ASGI scope.

Why: a single ``PATCH /entities/{id}/attrs`` spent about as much time in Starlette's ``Request`` machinery (header
and query-string multidicts rebuilt on each access, the ``request_response`` wrapper) as in the broker's own work
(decision 0504). The handlers use only ``method``, ``headers.get``, ``path_params``, ``query_params``, ``stream()``
and, for paging links, ``url``; :class:`LeanRequest` provides exactly those, with the same values Starlette would
give: headers as one dict (ASGI header names are lower-case; the first of repeated headers wins, as
``Headers.get`` does), query parameters as Starlette's own ``QueryParams`` built only when a query string exists,
``url`` built on demand. Handlers still return Starlette ``Response`` objects, which are ASGI applications already.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from starlette.datastructures import URL, QueryParams
from starlette.requests import ClientDisconnect
from starlette.responses import Response

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_NO_PARAMS: QueryParams = QueryParams("")


class RequestLike(Protocol):
    """The part of a request the broker's handlers use (Starlette's ``Request`` has it too)."""

    @property
    def method(self) -> str: ...

    @property
    def headers(self) -> Any: ...

    @property
    def path_params(self) -> dict[str, Any]: ...

    @property
    def query_params(self) -> QueryParams: ...

    @property
    def url(self) -> URL: ...

    def stream(self) -> AsyncIterator[bytes]: ...


class LeanRequest:
    """One HTTP request as the broker's handlers see it (see module docstring)."""

    __slots__ = ("_consumed", "_query", "_receive", "headers", "method", "path_params", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        self.path_params: dict[str, Any] = scope.get("path_params", {})
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1")
            if key not in headers:
                headers[key] = value.decode("latin-1")
        self.headers = headers
        self._query: QueryParams | None = None
        self._consumed = False

    @property
    def query_params(self) -> QueryParams:
        if self._query is None:
            raw = self.scope.get("query_string", b"")
            self._query = QueryParams(raw) if raw else _NO_PARAMS
        return self._query

    @property
    def url(self) -> URL:
        return URL(scope=self.scope)

    def stream(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive (a disconnect ends the request, as with Starlette); once only, as with
        Starlette (a second read would wait on ``receive`` for a message that never comes)."""
        if self._consumed:
            raise RuntimeError("Stream consumed")
        self._consumed = True
        return _BodyChunks(self._receive)


class _BodyChunks:
    """An async iterator over the body (a class, not an async generator: those register with the event loop's
    async-generator hooks on every request)."""

    __slots__ = ("_done", "_receive")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._done = False

    def __aiter__(self) -> _BodyChunks:
        return self

    async def __anext__(self) -> bytes:
        while not self._done:
            message = await self._receive()
            if message["type"] == "http.request":
                self._done = not message.get("more_body", False)
                chunk: bytes = message.get("body", b"")
                if chunk:
                    return chunk
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()
        raise StopAsyncIteration


class ReadResponse(Response):
    """A read's 200 with its few headers written straight into ``raw_headers`` — what Starlette's ``Response``
    builds from a header dict, without the ``MutableHeaders`` round trips (decision 0750). The header names are
    Starlette's lower-case ones; the media type is one of the broker's JSON types, which carry no charset."""

    def __init__(self, body: bytes, media_type: str, link: str | None = None,
                 results_count: str | None = None) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.media_type = media_type
        raw = []
        if results_count is not None:
            raw.append((b"ngsild-results-count", results_count.encode("latin-1")))
        if link is not None:
            raw.append((b"link", link.encode("latin-1")))
        raw += ((b"content-length", str(len(body)).encode("latin-1")), (b"content-type", media_type.encode("latin-1")))
        self.raw_headers = raw


class LeanEndpoint:
    """A route endpoint as a plain ASGI application: ``handle(LeanRequest) -> Response``, no Starlette wrapper."""

    __slots__ = ("handle",)

    def __init__(self, handle: Callable[[LeanRequest], Awaitable[Response]]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handle(LeanRequest(scope, receive))
        await response(scope, receive, send)
