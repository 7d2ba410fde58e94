"""``TokenVerifier``: local validation of sleutelbos access tokens, for any resource server (the PEP included).

It caches the issuer's JWKS (RFC 7517) and follows the revocation feed, so that validation is a local computation —
one ECDSA verification (skipped for a token already verified, whose claims are still checked every time) and a few
dictionary look-ups — and a revoked token is refused within one second:

- in process it subscribes to :class:`~sleutelbos.identity.revocation_feed.RevocationFeed` (pushed at commit);
- across processes it polls ``GET /oauth2/revocations?since=CURSOR`` every ``poll_interval_s`` (default 0.25 s)
  and **fails closed** when the feed has not answered for ``max_staleness_s``: a verifier that cannot know about
  revocations refuses every token rather than accept a revoked one.

Checks, in order (RFC 8725 §3 and RFC 9068 §4): size and shape; ``alg`` is ES256 and nothing else; ``typ`` is
``at+jwt``; ``kid`` is a key of the JWKS (an unknown ``kid`` triggers at most one JWKS refresh per
``jwks_min_refresh_s`` in :meth:`verify_async`); the signature; ``iss``; ``aud`` contains the expected audience;
``exp`` in the future and ``nbf``/``iat`` not in the future (``leeway_s``, default 0); ``jti`` not revoked; neither
``sub``'s principal, the ``client_id`` nor the ``org`` disabled or revoked since the token's ``iat``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from sleutelbos.core.tasks import cancel_and_wait
from sleutelbos.identity.errors import InvalidToken
from sleutelbos.identity.jose import parse_compact, public_key_from_jwk, verify_signature
from sleutelbos.identity.revocation_feed import FeedEntry, RevocationFeed

log = logging.getLogger("sleutelbos.identity.verifier")

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - RFC 9068 media type, not a secret
JwksSource = Callable[[], Awaitable[dict[str, Any]]]


def principal_keys(claims: dict[str, Any]) -> list[str]:
    """The feed principals a token names: its subject (user or client), the client it was issued to, its org."""
    keys: list[str] = []
    sub, kind = claims.get("sub"), claims.get("principal_kind")
    if isinstance(sub, str):
        keys.append(f"user:{sub}" if kind == "user" else f"client:{sub}")
    client_id = claims.get("client_id")
    if isinstance(client_id, str) and client_id != sub:
        keys.append(f"client:{client_id}")
    org = claims.get("org")
    if isinstance(org, str):
        keys.append(f"org:{org}")
    return keys


class RevocationState:
    """What the feed has said so far: revoked ``jti``s (until their ``exp``) and principals' states."""

    def __init__(self) -> None:
        self.revoked_jtis: dict[str, float] = {}
        self.disabled: set[str] = set()
        self.revoked_before: dict[str, float] = {}
        self.cursor = 0
        self._applied = 0

    def apply(self, entries: list[FeedEntry]) -> None:
        for e in entries:
            if e.seq <= self.cursor:
                continue
            if e.type == "jti":
                self.revoked_jtis[e.value] = e.expires_at or 0.0
            else:
                if e.disabled:
                    self.disabled.add(e.value)
                else:
                    self.disabled.discard(e.value)
                if e.revoked_before is not None:
                    self.revoked_before[e.value] = max(e.revoked_before, self.revoked_before.get(e.value, 0.0))
            self.cursor = e.seq
        self._applied += len(entries)
        if self._applied > 10_000:
            self.prune(time.time())

    def prune(self, now: float) -> None:
        self.revoked_jtis = {j: exp for j, exp in self.revoked_jtis.items() if exp > now}
        self._applied = 0

    def refusal(self, claims: dict[str, Any]) -> str | None:
        """Why the feed refuses this (otherwise valid) token, or None."""
        jti = claims.get("jti")
        if jti in self.revoked_jtis:
            return "token revoked"
        iat = claims.get("iat", 0)
        for key in principal_keys(claims):
            if key in self.disabled:
                return f"principal {key} is disabled"
            before = self.revoked_before.get(key)
            if before is not None and iat <= before:
                return f"tokens of {key} issued before {before:.0f} are revoked"
        return None


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str | None = None,
        jwks: JwksSource | str,
        feed: RevocationFeed | str | None,
        poll_interval_s: float = 0.25,
        max_staleness_s: float = 5.0,
        leeway_s: float = 0.0,
        token_type: str | None = ACCESS_TOKEN_TYPE,
        http: httpx.AsyncClient | None = None,
        jwks_min_refresh_s: float = 1.0,
        verified_cache_size: int = 4096,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.token_type = token_type
        self.poll_interval_s = poll_interval_s
        self.max_staleness_s = max_staleness_s
        self.jwks_min_refresh_s = jwks_min_refresh_s
        self.verified_cache_size = verified_cache_size
        self._verified: dict[str, tuple[str, dict[str, Any]]] = {}
        self.revocations = RevocationState()
        self._jwks_source = jwks
        self._feed = feed
        self._http = http
        self._own_http = False
        self._keys: dict[str, Any] = {}
        self._jwks_fetched_at = 0.0
        self._jwks_lock = asyncio.Lock()
        self._feed_ok_at = 0.0 if isinstance(feed, str) else float("inf")
        self._unsubscribe: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the JWKS and catch up with the feed; then follow it (push in process, poll over HTTP)."""
        if (isinstance(self._jwks_source, str) or isinstance(self._feed, str)) and self._http is None:
            self._http = httpx.AsyncClient(timeout=2.0)
            self._own_http = True
        try:
            await self.refresh_jwks(force=True)
        except Exception as exc:  # no keys yet: every token is refused until a later refresh succeeds
            log.warning("JWKS not loaded at start (%s); tokens are refused until it loads", type(exc).__name__)
        if isinstance(self._feed, RevocationFeed):
            self._unsubscribe = self._feed.subscribe(self.revocations.apply)
            await self._catch_up_in_process(self._feed)
        elif isinstance(self._feed, str):
            await self._poll_once()
            self._task = asyncio.create_task(self._poll_loop(), name="token-verifier-feed")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await cancel_and_wait(self._task)
        if self._own_http and self._http is not None:
            await self._http.aclose()

    async def _catch_up_in_process(self, feed: RevocationFeed) -> None:
        while True:
            page = await feed.since(self.revocations.cursor)
            self.revocations.apply(page.entries)
            self.revocations.cursor = max(self.revocations.cursor, page.cursor)
            if not page.more:
                return

    async def _poll_once(self) -> None:
        assert isinstance(self._feed, str) and self._http is not None
        while True:
            response = await self._http.get(self._feed, params={"since": self.revocations.cursor})
            response.raise_for_status()
            body = response.json()
            self.revocations.apply([FeedEntry.from_dict(e) for e in body["entries"]])
            self.revocations.cursor = max(self.revocations.cursor, int(body["cursor"]))
            if not body.get("more"):
                break
        self._feed_ok_at = time.monotonic()

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self._poll_once()
            except Exception as exc:  # keep following; staleness makes verify() fail closed meanwhile
                log.warning("revocation feed unreachable: %s", type(exc).__name__)

    # --- JWKS ------------------------------------------------------------------------------------------------
    async def refresh_jwks(self, force: bool = False) -> None:
        """Reload the key set; without ``force`` at most once per ``jwks_min_refresh_s`` (so that tokens with
        made-up ``kid``s cannot make us hammer the JWKS endpoint)."""
        async with self._jwks_lock:
            if not force and time.monotonic() - self._jwks_fetched_at < self.jwks_min_refresh_s:
                return
            if isinstance(self._jwks_source, str):
                assert self._http is not None
                response = await self._http.get(self._jwks_source)
                response.raise_for_status()
                jwks = response.json()
            else:
                jwks = await self._jwks_source()
            keys: dict[str, Any] = {}
            for jwk in jwks.get("keys", []):
                if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) and jwk.get("alg", "ES256") == "ES256":
                    try:
                        keys[jwk["kid"]] = public_key_from_jwk(jwk)
                    except InvalidToken:
                        continue
            self._keys = keys
            self._jwks_fetched_at = time.monotonic()

    # --- verification ---------------------------------------------------------------------------------------
    def verify(self, token: str, audience: str | None = None, now: float | None = None) -> dict[str, Any]:
        """The token's claims if it is valid now; :class:`InvalidToken` saying why otherwise.

        A token whose signature was verified before (same string, its key still in the JWKS) skips the ECDSA
        verification — the result cannot have changed — but every claim check (``exp``, ``aud``, revocation …)
        runs again on every call. Only verified tokens enter this bounded cache, so it cannot be poisoned."""
        hit = self._verified.get(token)
        if hit is not None and hit[0] in self._keys:
            claims = hit[1]
            self.check_claims(claims, audience, now)
            return _copy(claims)
        jws = parse_compact(token)
        if self.token_type is not None and jws.header.get("typ") != self.token_type:
            raise InvalidToken(f"token type {jws.header.get('typ')!r} is not {self.token_type!r}")
        key = self._keys.get(jws.header["kid"])
        if key is None:
            raise InvalidToken("token signed with an unknown key (kid)")
        verify_signature(key, jws)
        claims = jws.claims()
        self.check_claims(claims, audience, now)
        if self.verified_cache_size > 0:
            if len(self._verified) >= self.verified_cache_size:
                del self._verified[next(iter(self._verified))]  # oldest first
            self._verified[token] = (jws.header["kid"], claims)
        return _copy(claims)

    async def verify_async(self, token: str, audience: str | None = None) -> dict[str, Any]:
        """:meth:`verify`, refreshing the JWKS once when the ``kid`` is new to us (a rotation)."""
        try:
            return self.verify(token, audience)
        except InvalidToken as exc:
            if "unknown key" not in exc.detail:
                raise
        await self.refresh_jwks()
        return self.verify(token, audience)

    def check_claims(self, claims: dict[str, Any], audience: str | None = None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if claims.get("iss") != self.issuer:
            raise InvalidToken("token issuer is not this issuer")
        expected_aud = audience if audience is not None else self.audience
        if expected_aud is not None:
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if expected_aud not in auds:
                raise InvalidToken("token audience does not include this resource")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", claims.get("iat"))
        if not _number(exp) or not _number(iat) or not _number(nbf):
            raise InvalidToken("token lacks numeric exp/iat")
        if exp <= now - self.leeway_s:
            raise InvalidToken("token expired")
        if nbf > now + self.leeway_s or iat > now + self.leeway_s:
            raise InvalidToken("token not yet valid")
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("sub"), str):
            raise InvalidToken("token lacks jti or sub")
        if time.monotonic() - self._feed_ok_at > self.max_staleness_s:
            raise InvalidToken("revocation feed is stale: refusing tokens until it answers again")
        reason = self.revocations.refusal(claims)
        if reason is not None:
            raise InvalidToken(reason)


def _copy(claims: dict[str, Any]) -> dict[str, Any]:
    """A copy the caller may change (lists included) without touching the cached claims."""
    return {k: list(v) if isinstance(v, list) else v for k, v in claims.items()}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
