"""uvicorn's httptools protocol with the two bounds uvicorn leaves out: the request head's size and the time a client
takes to send a request.

With httptools, uvicorn bounds neither (llhttp sets no header limit; uvicorn's timers cover idle keep-alive
connections, not a request that arrives a byte at a time). A client could hold a connection and an ever-growing
header list open for as long as it likes — the "slowloris" pattern. Every server of ``sleutelbos up`` and
``sleutelbos serve`` (except ``serve policy``, whose protocol bounds the same two things around its decision fast
path, decision 0391) runs :class:`BoundedHttpToolsProtocol`:

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


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request head over the bound."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring. Configure with :func:`bounded_protocol`, which sets the two class attributes."""

    max_head_bytes = 64 * 1024
    read_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._refused = False
        self._read_timer: asyncio.TimerHandle | None = None

    # --- the read deadline --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        # uvicorn pauses reading while the application answers (a pipelined request waits behind it): not the client
        if self.cycle is not None and not self.cycle.response_complete and self.flow.read_paused:
            self._read_timer = self.loop.call_later(1.0, self._read_timed_out)
            return
        self.transport.close()

    # --- parser callbacks ---------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self._disarm()  # the rest is the application's time; uvicorn's keep-alive timer covers the idle time after
        super().on_message_complete()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_head_bytes and not self._refused:
            self._refused = True
            body = b"Request Header Fields Too Large"
            self.transport.write(b"".join((
                STATUS_LINE[431], b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)))
            self.transport.close()
            raise _HeadTooLarge()  # stops the parser; uvicorn's 400 for the parse error is suppressed below

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            return
        super().send_400_response(msg)


def bounded_protocol(max_head_bytes: int, read_timeout_s: float) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these bounds (uvicorn takes a class)."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,),
                {"max_head_bytes": max_head_bytes, "read_timeout_s": read_timeout_s})
