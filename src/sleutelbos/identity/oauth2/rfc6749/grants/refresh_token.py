"""RFC 6749 §6 refresh, with rotation and reuse detection (OAuth 2.0 Security BCP §4.14.2).

Every refresh returns a new refresh token of the same family and retires the presented one. Presenting a retired
token again means it was copied: the whole family is revoked — every refresh token and the access tokens issued
with them (through the revocation feed) — and the request gets ``invalid_grant``. Scope may only narrow (§6).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sleutelbos.core.protocols import SYSTEM_ACTOR
from sleutelbos.identity.errors import InvalidGrant, InvalidRequest, InvalidScope
from sleutelbos.identity.models import Client, RefreshToken, scope_list
from sleutelbos.identity.passwords import bearer_digest
from sleutelbos.identity.tokens import new_opaque_token


async def grant(service: Any, client: Client, form: dict[str, str], source: str | None) -> dict[str, Any]:
    presented = form.get("refresh_token")
    if not presented or len(presented) > 200:
        raise InvalidRequest("refresh_token is required")
    old_hash = bearer_digest(presented)
    current = await service.store.get_refresh_token(old_hash)
    if current is None or current.client_id != client.id:
        raise InvalidGrant("refresh token unknown")
    if current.state == "rotated":
        await _replay(service, current, source)
    if current.state != "active":
        raise InvalidGrant("refresh token revoked")
    if current.expires_at < time.time():
        raise InvalidGrant("refresh token expired")
    scope = list(current.scope)
    if form.get("scope"):
        try:
            requested = scope_list(form["scope"])
        except InvalidRequest as exc:
            raise InvalidScope(exc.detail) from exc
        if not set(requested) <= set(current.scope):
            raise InvalidScope("a refresh may only narrow the scope")
        scope = requested
    principal = await service.user_principal(current.subject, client)
    jti = str(uuid.uuid4())
    access, claims = service.minter.access_token(principal, client.id, scope, current.amr, jti=jti)
    successor_value = new_opaque_token()
    successor = RefreshToken(
        token_hash=bearer_digest(successor_value), family_id=current.family_id, client_id=client.id,
        subject=current.subject, scope=current.scope, amr=current.amr, auth_time=current.auth_time,
        expires_at=current.expires_at, state="active", access_jti=jti,
    )
    old, rotated = await service.store.rotate_refresh_token(old_hash, successor)
    if not rotated:  # lost a race with another presentation of the same token: that is a replay too
        assert old is not None
        if old.state == "rotated":
            await _replay(service, old, source)
        raise InvalidGrant("refresh token revoked")
    return service.token_response(access, claims, refresh_token=successor_value)


async def _replay(service: Any, token: RefreshToken, source: str | None) -> None:
    await service.record(SYSTEM_ACTOR, "identity.refresh.replay", token.family_id,
                         {"client_id": token.client_id, "subject": token.subject, "source": source})
    await service.revoke_family(token.family_id)
    raise InvalidGrant("refresh token reused after rotation: the whole token family is revoked")
