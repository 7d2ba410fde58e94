"""uvicorn's httptools protocol with the two bounds uvicorn leaves out: the request head's size and the time a client
takes to send a request.

With httptools, uvicorn bounds neither (llhttp sets no header limit; uvicorn's timers cover idle keep-alive
connections, not a request that arrives a byte at a time). A client could hold a connection and an ever-growing
header list open for as long as it likes — the "slowloris" pattern. Every server of ``sleutelbos up`` and
``sleutelbos serve`` runs :class:`BoundedHttpToolsProtocol` (``serve policy`` a subclass of it that answers
decisions in the protocol, decision 0391):

- a request head (URL and headers) over ``http_max_head_bytes`` is answered ``431`` and the connection closed;
- a request must arrive whole (head and body) within ``http_read_timeout_s`` of its first byte, and a new
  connection must start a request within that time, or the connection is closed. Time the application spends
  answering, or a pipelined request waiting behind it while uvicorn has paused reading, is not counted against the
  client.

Everything else is uvicorn's own behaviour (decision 0003).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request head over the bound."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring. Configure with :func:`bounded_protocol`, which sets the two class attributes; the
    policy server's protocol (``policy.fast_http.PdpHttpProtocol``) builds its decision fast path on this one."""

    max_head_bytes = 64 * 1024
    read_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_bytes = 0
        self.refused = False  # a response was sent before the request was read; the connection closes after it
        # one timer per connection, re-armed lazily: per request the cost is a clock read, not a TimerHandle
        self.deadline: float | None = None
        self.deadline_timer: asyncio.TimerHandle | None = None

    # --- the read deadline --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._set_deadline(self.read_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = None
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        super().connection_lost(exc)

    def _set_deadline(self, seconds: float) -> None:
        deadline = self.deadline = self.loop.time() + seconds
        timer = self.deadline_timer
        if timer is None or timer.when() > deadline:  # a later deadline is checked when the timer fires
            if timer is not None:
                timer.cancel()
            self.deadline_timer = self.loop.call_at(deadline, self._check_deadline)

    def _waiting_for_application(self) -> bool:
        """uvicorn pauses reading while the application answers (a pipelined request waits behind it, or the
        application has not taken the body yet): that time is not the client's."""
        return self.cycle is not None and not self.cycle.response_complete and self.flow.read_paused

    def _check_deadline(self) -> None:
        """Close a connection whose request did not arrive in time; ``deadline`` None: nothing is due."""
        self.deadline_timer = None
        if self.deadline is None or self.transport.is_closing():
            return
        now = self.loop.time()
        busy = self._waiting_for_application()
        if busy or now < self.deadline:
            self.deadline_timer = self.loop.call_at(max(self.deadline, now + 1.0) if busy else self.deadline,
                                                    self._check_deadline)
            return
        self.transport.close()

    # --- parser callbacks ---------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        self._set_deadline(self.read_timeout_s)

    def on_url(self, url: bytes) -> None:
        self.head_bytes += len(url)
        if self.head_bytes > self.max_head_bytes:
            self._refuse_head()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_head_bytes:
            self._refuse_head()
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self.deadline = None  # the rest is the application's time; uvicorn's keep-alive timer covers the idle after
        super().on_message_complete()

    def _refuse_head(self) -> None:
        self.refused = True
        body = b"Request Header Fields Too Large"
        self.transport.write(b"".join((
            STATUS_LINE[431], b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)))
        self.transport.close()
        raise HeadTooLarge()  # stops the parser; uvicorn's 400 for the parse error is suppressed below

    def send_400_response(self, msg: str) -> None:
        if self.refused:  # answered already (431, or a subclass's early answer) and closing
            return
        super().send_400_response(msg)


def bounded_protocol(max_head_bytes: int, read_timeout_s: float,
                     base: type[BoundedHttpToolsProtocol] = BoundedHttpToolsProtocol) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these bounds (uvicorn takes a class): ``base`` or a
    subclass of it (the broker's, which answers its reads in the protocol)."""
    return type(base.__name__, (base,), {"max_head_bytes": max_head_bytes, "read_timeout_s": read_timeout_s})
