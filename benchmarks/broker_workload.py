"""The broker benchmarks' shared workload: the Dutch fleet's meter entity and one request through the ASGI app.

Not a benchmark itself; the scripts beside it import it (they run with ``benchmarks/`` first on ``sys.path``)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson

BASE = "/ngsi-ld/v1"
PROPS = (("activeEnergyImport", "KWH"), ("activeEnergyExport", "KWH"), ("activePowerImport", "KWT"),
         ("voltage", "VLT"))


def meter(i: int, round_: int) -> dict[str, Any]:
    """Meter ``i`` in update round ``round_``: a ``Device`` with 4 numeric properties carrying ``observedAt`` (the
    round's 15-minute slot) and ``unitCode``; values are reproducible per (meter, round)."""
    ts = f"2026-11-28T{(round_ // 4) % 24:02d}:{(round_ % 4) * 15:02d}:00Z"
    rnd = random.Random(i * 1000 + round_)
    entity: dict[str, Any] = {"id": f"urn:ngsi-ld:Device:meter-{i:07d}", "type": "Device"}
    for name, unit in PROPS:
        entity[name] = {"type": "Property", "value": round(rnd.uniform(0, 5), 3), "observedAt": ts, "unitCode": unit}
    return entity


def single_patch(rnd: random.Random, n: int) -> tuple[str, bytes]:
    """A single update of one random meter of ``n``: ``PATCH /entities/{id}/attrs`` of ``activePowerImport`` with
    ``observedAt`` and ``unitCode`` — path and body."""
    i = rnd.randrange(n)
    body = orjson.dumps({"activePowerImport": {"type": "Property", "value": round(rnd.uniform(0, 5), 3),
                                               "observedAt": "2026-11-28T23:00:00Z", "unitCode": "KWT"}})
    return f"{BASE}/entities/urn:ngsi-ld:Device:meter-{i:07d}/attrs", body


async def call(app: Any, method: str, path: str, query: bytes = b"", body: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI app, in process (no HTTP): the status and the body."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query,
             "headers": [(b"host", b"bench"), (b"accept", b"application/json"),
                         (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)
