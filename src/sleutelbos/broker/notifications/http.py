"""HTTP binding of notifications (ETSI GS CIM 009 v1.8, clause 7.2 / 6.3.x): ``POST`` of the Notification to the
endpoint URI, ``Content-Type`` from ``endpoint.accept``, the subscription's @context in a ``Link`` header (JSON) or in
the body (JSON-LD), ``receiverInfo`` as extra headers. A 2xx answer is a success; the answer's body is never read
beyond what httpx needs, so a receiver answering garbage cannot affect the broker. One pooled client for all
subscriptions, with a bounded timeout so a slow receiver only holds its own subscription's worker.
"""

from __future__ import annotations

import httpx
import orjson

from sleutelbos.broker.notifications.delivery import DeliveryFailed, Message


class HttpSender:
    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 2.0)),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50), follow_redirects=False)
        return self._client

    async def send(self, uri: str, message: Message) -> None:
        try:
            response = await self._http().post(uri, content=orjson.dumps(message.body), headers=message.headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"receiver answered HTTP {response.status_code}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
