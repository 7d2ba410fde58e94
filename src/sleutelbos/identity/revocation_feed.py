"""The revocation feed: what a verifier must know to refuse a revoked token within one second.

Access tokens are self-contained JWTs, so a verifier that caches the JWKS would accept a revoked one until it
expires — the complaint about Keyrock-fronted proxies. The feed closes that gap. It is an append-only sequence
(the store's ``identity_revocations``) whose sequence number is the cursor; each entry is either

- ``{"type": "jti", "jti": …, "exp": …}`` — one token revoked (RFC 7009, a refresh-family revocation, a reused
  authorization code), listed until it would have expired anyway; or
- ``{"type": "principal", "principal": "org:…" | "user:…" | "client:…", "disabled": bool, "revoked_before": t}`` —
  a principal disabled (every token naming it refused, new ones not issued) or re-enabled (tokens issued at or
  before ``revoked_before`` stay refused).

Verifiers follow it either over HTTP (``GET /oauth2/revocations?since=CURSOR``, polled) or in process
(:meth:`RevocationFeed.subscribe`, pushed right after the revocation commits). A poller in each worker
re-publishes entries written by other workers sharing the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sleutelbos.core.tasks import cancel_and_wait
from sleutelbos.identity.store import IdentityStore

log = logging.getLogger("sleutelbos.identity.revocation_feed")

MAX_PAGE = 1000


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    type: str  # "jti" or "principal"
    value: str
    expires_at: float | None
    revoked_before: float | None
    disabled: bool

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> FeedEntry:
        return cls(int(row[0]), row[1], row[2], row[3], row[4], bool(row[5]))

    def as_dict(self) -> dict[str, Any]:
        if self.type == "jti":
            return {"seq": self.seq, "type": "jti", "jti": self.value, "exp": self.expires_at}
        return {
            "seq": self.seq, "type": "principal", "principal": self.value, "disabled": self.disabled,
            "revoked_before": self.revoked_before,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeedEntry:
        if data.get("type") == "jti":
            return cls(int(data["seq"]), "jti", str(data["jti"]), float(data["exp"]), None, True)
        return cls(
            int(data["seq"]), "principal", str(data["principal"]), None,
            float(data["revoked_before"]) if data.get("revoked_before") is not None else None,
            bool(data["disabled"]),
        )


@dataclass(frozen=True)
class FeedPage:
    cursor: int
    entries: list[FeedEntry]
    more: bool

    def as_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "more": self.more, "entries": [e.as_dict() for e in self.entries]}


Subscriber = Callable[[list[FeedEntry]], None]


class RevocationFeed:
    def __init__(self, store: IdentityStore, poll_interval_s: float = 0.25) -> None:
        self.store = store
        self.poll_interval_s = poll_interval_s
        self._subscribers: list[Subscriber] = []
        self._published = 0
        self._publish_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def since(self, cursor: int, limit: int = MAX_PAGE, now: float | None = None) -> FeedPage:
        """Entries after ``cursor``; ``jti`` entries of tokens already expired are skipped (the cursor still
        moves past them), principal entries never are."""
        now = time.time() if now is None else now
        limit = max(1, min(limit, MAX_PAGE))
        rows = await self.store.revocations_since(cursor, limit)
        entries = [FeedEntry.from_row(r) for r in rows]
        next_cursor = entries[-1].seq if entries else cursor
        live = [e for e in entries if e.type != "jti" or (e.expires_at or 0) > now]
        return FeedPage(next_cursor, live, more=len(rows) == limit)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Push: ``subscriber`` gets every new batch of entries as soon as it is committed. Returns unsubscribe."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    @property
    def published_cursor(self) -> int:
        return self._published

    async def publish(self) -> None:
        """Push entries committed since the last publish (by this worker or another) to every subscriber."""
        async with self._publish_lock:
            while True:
                page = await self.since(self._published, now=0.0)
                if page.entries:
                    for subscriber in list(self._subscribers):
                        try:
                            subscriber(page.entries)
                        except Exception:
                            log.exception("revocation subscriber failed")
                self._published = page.cursor
                if not page.more:
                    return

    async def start(self) -> None:
        await self.publish()
        self._task = asyncio.create_task(self._poll(), name="identity-revocation-feed")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.publish()
            except Exception:
                log.exception("revocation feed poll failed")
