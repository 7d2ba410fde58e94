"""HTTP binding of notifications (ETSI GS CIM 009 v1.8, clause 7.2 / 6.3.x): ``POST`` of the Notification to the
endpoint URI, ``Content-Type`` from ``endpoint.accept``, the subscription's @context in a ``Link`` header (JSON) or in
the body (JSON-LD), ``receiverInfo`` as extra headers. A 2xx answer is a success (redirects are not followed); at
most 64 KiB of the answer's body is read (only so that the connection can be kept alive; a longer answer closes the
connection), so a receiver answering garbage cannot affect the broker. Keep-alive connections are pooled per
origin, with a bounded timeout so a slow receiver only holds its own subscription's worker.

Plain ``http://`` endpoints go through :class:`_LeanConnection` (decision 0612): the request is one
``transport.write`` of bytes built here, the answer is parsed by ``httptools`` (the C parser uvicorn uses) as it
arrives, and the sending task resumes once, when the answer is complete. That is ~4× less interpreter time per
notification than aiohttp's client (its request/response objects, stream readers and connector), and the notifier
thread shares the interpreter with the write path (decision 0607), where every microsecond of it delays writes.
``https://`` and URIs with user information (basic auth) keep going through aiohttp (decision 0608).
"""

from __future__ import annotations

import asyncio
from urllib.parse import SplitResult, urlsplit

import aiohttp
import httptools
import orjson

from sleutelbos.broker.notifications.delivery import DeliveryFailed, Message
from sleutelbos.broker.subscriptions.model import FRAMING_HEADERS

_ANSWER_READ_LIMIT = 65536
_IDLE_PER_ORIGIN = 8


class _LeanConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time (its sender awaits :meth:`post`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[int] | None = None
        self.status = 0
        self.headers_done = False
        self.body_read = 0
        self.reusable = True

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(error=DeliveryFailed("receiver answered with a protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._finish(error=DeliveryFailed(f"unreadable answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self.transport = None
        if self.headers_done:  # an answer delimited by the connection's end
            self._finish()
        else:
            self._finish(error=DeliveryFailed(f"connection closed before the answer ({exc or 'EOF'})"))

    # --- httptools callbacks ---
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body_read += len(body)
        if self.body_read > _ANSWER_READ_LIMIT:
            self.reusable = False
            self._finish()

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.reusable = False
        self._finish()

    def _finish(self, error: Exception | None = None) -> None:
        answer, self.answer = self.answer, None
        if answer is None or answer.done():
            return
        if error is not None:
            self.reusable = False
            answer.set_exception(error)
        else:
            answer.set_result(self.status)

    async def post(self, request: bytes) -> int:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.status, self.headers_done, self.body_read = 0, False, 0
        self.transport.write(request)
        return await self.answer

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class HttpSender:
    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._idle: dict[tuple[str, int], list[_LeanConnection]] = {}

    def _http(self) -> aiohttp.ClientSession:
        """Created on first use, on the loop that sends (the notifier thread's)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, connect=min(self.timeout_s, 2.0)),
                connector=aiohttp.TCPConnector(limit=200, limit_per_host=50), auto_decompress=False)
        return self._session

    async def send(self, uri: str, message: Message) -> None:
        parts = urlsplit(uri)
        if (parts.scheme.lower() != "http" or parts.username is not None or parts.password is not None
                or not uri.isascii()):  # aiohttp percent-encodes an IRI's path; the lean client sends bytes as given
            await self._send_aiohttp(uri, message)
            return
        status = await self._send_lean(parts.hostname or "localhost", parts.port or 80, parts, message)
        if not 200 <= status < 300:
            raise DeliveryFailed(f"receiver answered HTTP {status}")

    async def _send_lean(self, host: str, port: int, parts: SplitResult, message: Message) -> int:
        request = _request_bytes(parts, message)
        idle = self._idle.setdefault((host, port), [])
        try:
            async with asyncio.timeout(self.timeout_s):
                while idle:  # a kept-alive connection the receiver may have closed meanwhile: then a new one
                    conn = idle.pop()
                    if not conn.reusable or conn.transport is None or conn.transport.is_closing():
                        continue
                    status = await self._post(conn, request)
                    if status is not None:
                        return self._release(idle, conn, status)
                loop = asyncio.get_running_loop()
                _, conn = await asyncio.wait_for(loop.create_connection(_LeanConnection, host, port),
                                                 min(self.timeout_s, 2.0))
                status = await self._post(conn, request, fresh=True)
                assert status is not None
                return self._release(idle, conn, status)
        except (OSError, TimeoutError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    async def _post(conn: _LeanConnection, request: bytes, fresh: bool = False) -> int | None:
        """The answer's status; None when a reused connection ended before any answer (send again on a new one)."""
        try:
            return await conn.post(request)
        except DeliveryFailed:
            conn.close()
            if fresh or conn.headers_done:
                raise
            return None
        except BaseException:  # timeout or cancelled mid-request: the connection's state is unknown
            conn.close()
            raise

    @staticmethod
    def _release(idle: list[_LeanConnection], conn: _LeanConnection, status: int) -> int:
        if conn.reusable and len(idle) < _IDLE_PER_ORIGIN:
            idle.append(conn)
        else:
            conn.close()
        return status

    async def _send_aiohttp(self, uri: str, message: Message) -> None:
        try:
            async with self._http().post(uri, data=orjson.dumps(message.body), headers=message.headers,
                                         allow_redirects=False) as response:
                status = response.status
                await response.content.read(_ANSWER_READ_LIMIT)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= status < 300:
            raise DeliveryFailed(f"receiver answered HTTP {status}")

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _request_bytes(parts: SplitResult, message: Message) -> bytes:
    """The whole request: request line, Host, Content-Length, the message's headers, the JSON body. Header names or
    values with a line break (``receiverInfo`` is the client's) fail the delivery rather than split the request."""
    body = orjson.dumps(message.body)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    for name, value in message.headers.items():
        if any(c in name or c in value for c in "\r\n\0") or ":" in name or name.lower() in FRAMING_HEADERS:
            raise DeliveryFailed(f"header {name!r} cannot be sent")
        lines.append(f"{name}: {value}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return head.encode("latin-1") + body
    except UnicodeEncodeError as exc:
        raise DeliveryFailed("a header is not Latin-1") from exc

