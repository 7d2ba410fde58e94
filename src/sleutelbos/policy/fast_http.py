"""The HTTP protocol of ``sleutelbos serve policy``: decisions answered inside the protocol, everything else by ASGI.

uvicorn's cost per request on this machine is mostly the ASGI cycle around the application — a task per request,
the ``receive``/``send`` awaits, the message dicts — not HTTP parsing (httptools, in C): uvicorn with a no-op ASGI
application served ~6,000 requests/s on one core where the same uvicorn protocol answering in its parser callbacks
served ~25,000/s (decision 0391). A decision needs none of the ASGI machinery: the body is read completely, the
evaluation is synchronous CPU work with no I/O, and the answer is one write. So :class:`PdpHttpProtocol`, a
subclass of uvicorn's httptools protocol, answers ``POST /authzforce-ce/domains/{id}/pdp`` for a domain whose PDP
is compiled already straight from the parser callbacks (:func:`.api.decide_body`, the same function the ASGI
endpoint calls), and hands every other request — the AuthZForce PAP, ``/health``, a domain not loaded yet (so an
unknown domain is the ASGI endpoint's 404), ``Expect: 100-continue``, upgrades, a request pipelined behind one the
application is still answering — to uvicorn's ordinary ASGI path, i.e. to the Starlette application unchanged.
Lifespan, worker processes, signals, graceful shutdown, the ``date``/``server`` headers stay uvicorn's.

What the fast path adds to uvicorn's protections (uvicorn itself bounds neither the request head with httptools nor
the time a client takes to send a request):
- the request head (URL and headers) is bounded (:attr:`PdpHttpProtocol.max_head_bytes`, 431 and close);
- a decision body over the limit is refused with the endpoint's 413 as soon as the declared length (or the bytes
  received) exceed it, the connection closes after the rest of the body is discarded, nothing is buffered;
- a connection must deliver each request within ``policy_http_read_timeout_s`` (a slow client is disconnected) and
  may stay idle between requests for uvicorn's ``timeout_keep_alive``;
- writes are flow-controlled: a client that pipelines requests without reading the answers is not read from until
  it catches up, so answers do not pile up in memory;
- malformed HTTP is uvicorn's 400 and close; an unexpected error in a decision is a 500 (logged), never a crash.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from sleutelbos.core.http_bounds import BoundedHttpToolsProtocol, HeadTooLarge
from sleutelbos.policy.api import (
    PREFIX,
    UNSUPPORTED_MEDIA_TYPE,
    DecisionFastPath,
    decide_body,
    error_body,
    pdp_media_type,
)
from sleutelbos.policy.xacml import Pdp

log = logging.getLogger("sleutelbos.policy")

_DECISION_PREFIX = (PREFIX + "/domains/").encode()
_XML = b"application/xml"


def find_decision_route(app: Any) -> DecisionFastPath | None:
    """The :class:`.api.DecisionFastPath` in uvicorn's loaded application (uvicorn wraps the application in its
    own middleware, e.g. ``ProxyHeadersMiddleware``, which keeps the wrapped one as ``.app``)."""
    for _ in range(8):
        if isinstance(app, DecisionFastPath):
            return app if app.service is not None else None
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def decision_domain(url: bytes) -> str | None:
    """The domain id of a decision URL ``/authzforce-ce/domains/{id}/pdp[?query]``, or ``None`` for any other URL
    (an escaped or non-ASCII path goes to the ASGI path, which unescapes like uvicorn does)."""
    if not url.startswith(_DECISION_PREFIX):
        return None
    path = url.split(b"?", 1)[0]
    if not path.endswith(b"/pdp"):
        return None
    domain = path[len(_DECISION_PREFIX):-4]
    if not domain or b"/" in domain or b"%" in domain or not domain.isascii():
        return None
    return domain.decode("ascii")


_DOMAINS: dict[bytes, str | None] = {}


def _decision_domain(url: bytes) -> str | None:
    """:func:`decision_domain` through a small cache (clients ask the same few domains over and over); emptied when
    it reaches 1,024 URLs, so memory stays bounded whatever URLs clients send."""
    try:
        return _DOMAINS[url]
    except KeyError:
        if len(_DOMAINS) >= 1024:
            _DOMAINS.clear()
        domain = _DOMAINS[url] = decision_domain(url)
        return domain


class PdpHttpProtocol(BoundedHttpToolsProtocol):
    """uvicorn's httptools protocol, with the request head and read time bounded (``core.http_bounds``, whose
    deadline and 431 it shares), and the decision endpoint answered in the parser callbacks (see the module
    docstring). Select it with ``uvicorn.run(..., http="sleutelbos.policy.fast_http:PdpHttpProtocol")``; with any
    application that is not (or does not wrap) a :class:`.api.DecisionFastPath` it behaves like the bounded
    protocol."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.route = find_decision_route(self.app)
        self.read_timeout_s = self.route.read_timeout_s if self.route is not None else 30.0
        self.max_body_bytes = self.route.max_body_bytes if self.route is not None else 0
        # per request on the fast path
        self.fast = False
        self.fast_keep_alive = True
        self.decider: Pdp | None = None
        self.media_type: bytes | None = None
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.reading_paused_for_writes = False
        self.default_head: tuple[object, bytes] = (None, b"")

    # --- connection -------------------------------------------------------------------------------------------

    def _waiting_for_application(self) -> bool:
        # reading paused by this protocol for a client that does not read its answers is the client's doing
        return super()._waiting_for_application() and not self.reading_paused_for_writes

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.reading_paused_for_writes:
            self.reading_paused_for_writes = False
            self.flow.resume_reading()

    # --- parser callbacks -------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # uvicorn builds the ASGI scope here; a decision answered in the protocol needs none, so the scope is built
        # only for a request that goes to the application (:meth:`_to_application`)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._unset_keepalive_if_required()
        self.fast = False
        self.head_bytes = 0
        self._set_deadline(self.read_timeout_s)

    def on_url(self, url: bytes) -> None:
        self.head_bytes += len(url)
        if self.head_bytes > self.max_head_bytes:
            self._refuse_head()
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header (lower-cased names, the Expect flag) inline: it runs for every header of every request
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_head_bytes:
            self._refuse_head()
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def _refuse_head(self) -> None:
        self.refused = True
        self._write(431, b"text/plain; charset=utf-8", b"Request Header Fields Too Large", keep_alive=False)
        raise HeadTooLarge()  # stops the parser; uvicorn's 400 is suppressed by ``refused``

    def _to_application(self) -> None:
        """uvicorn's path for this request: its scope (built by uvicorn's ``on_message_begin``, keeping the URL and
        headers read so far) and the ASGI cycle."""
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)  # uvicorn's, not the bounded one's: the deadline runs on
        self.url, self.expect_100_continue = url, expect_100_continue
        self.headers.extend(headers)  # the list uvicorn's scope holds
        super().on_headers_complete()

    def on_headers_complete(self) -> None:
        route = self.route
        domain = _decision_domain(self.url) if route is not None else None
        if (domain is None or self.parser.get_method() != b"POST" or self.expect_100_continue
                or self.parser.should_upgrade() or self.pipeline
                or (self.cycle is not None and not self.cycle.response_complete)):
            self._to_application()
            return
        assert route is not None and route.service is not None
        decider = route.service.cached_pdp(domain)
        if decider is None:  # not loaded (or no such domain): the ASGI endpoint loads it or answers 404
            self._to_application()
            return
        self.fast = True
        self.decider = decider
        self.body_parts = []
        self.body_size = 0
        self.fast_keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"
        media_type, declared = None, None
        for name, value in self.headers:
            if name == b"content-type":
                media_type = pdp_media_type(value)
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
        self.media_type = media_type
        if media_type is not None and declared is not None and declared > self.max_body_bytes:
            self._refuse_body()

    def on_body(self, body: bytes) -> None:
        if not self.fast:
            super().on_body(body)
            return
        if self.refused or self.media_type is None:
            return  # discarded: the 413 is sent (the connection closes at the end of the message), or the 415 will be
        self.body_size += len(body)
        if self.body_size > self.max_body_bytes:
            self._refuse_body()
            return
        self.body_parts.append(body)

    def _refuse_body(self) -> None:
        self.refused = True
        self.body_parts = []
        self._write(413, _XML, error_body(f"request body over {self.max_body_bytes} bytes"), keep_alive=False,
                    close=False)

    def on_message_complete(self) -> None:
        if not self.fast:  # the application answers now (the deadline ends; uvicorn's keep-alive timer follows)
            super().on_message_complete()
            return
        self.fast = False
        self.server_state.total_requests += 1
        if self.refused:
            self.transport.close()
            return
        decider, self.decider = self.decider, None
        parts, self.body_parts = self.body_parts, []
        if self.media_type is None:
            self._write(415, _XML, error_body(UNSUPPORTED_MEDIA_TYPE), self.fast_keep_alive)
        else:
            assert decider is not None
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            try:
                status, content_type, answer = decide_body(decider, self.media_type, body)
            except Exception:
                log.exception("decision failed")
                self._write(500, b"text/plain; charset=utf-8", b"Internal Server Error", keep_alive=False)
                return
            self._write(status, content_type, answer, self.fast_keep_alive)
        if self.fast_keep_alive:
            self._set_deadline(self.timeout_keep_alive)

    # --- writing ----------------------------------------------------------------------------------------------

    def _write(self, status: int, content_type: bytes, body: bytes, keep_alive: bool, close: bool = True) -> None:
        """One whole response in one write, with uvicorn's default headers (``date``, ``server``); without
        keep-alive: ``connection: close`` and (unless ``close`` is false) the transport closed after it."""
        if self.transport.is_closing():
            return
        defaults = self.server_state.default_headers
        cached, head = self.default_head
        if cached is not defaults:  # uvicorn replaces the list once per second (the date)
            head = b"".join(name + b": " + value + b"\r\n" for name, value in defaults)
            self.default_head = (defaults, head)
        self.transport.write(b"".join((
            STATUS_LINE[status], head, b"content-type: ", content_type, b"\r\ncontent-length: ",
            str(len(body)).encode(), b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n", body)))
        if not keep_alive:
            if close:
                self.transport.close()
        elif self.flow.write_paused and not self.flow.read_paused:
            self.reading_paused_for_writes = True
            self.flow.pause_reading()

