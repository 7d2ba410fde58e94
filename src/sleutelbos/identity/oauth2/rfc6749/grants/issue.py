"""What the user-facing grants share: issuing an access token, a rotating refresh token and an ID token."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sleutelbos.identity.models import GRANT_REFRESH_TOKEN, Client, RefreshToken
from sleutelbos.identity.passwords import bearer_digest
from sleutelbos.identity.tokens import new_opaque_token


async def issue_for_user(
    service: Any, client: Client, user_id: str, scope: list[str], amr: tuple[str, ...], auth_time: int,
    nonce: str | None = None, family_id: str | None = None,
) -> tuple[dict[str, Any], str, str | None]:
    """Returns (token response, access jti, refresh family id or None). A new family starts when none is given."""
    principal = await service.user_principal(user_id, client)
    jti = str(uuid.uuid4())
    access, claims = service.minter.access_token(principal, client.id, scope, amr, jti=jti)
    extra: dict[str, str] = {}
    family = None
    if GRANT_REFRESH_TOKEN in client.grant_types and family_id is None:
        family = str(uuid.uuid4())
        refresh = new_opaque_token()
        await service.store.add_refresh_token(RefreshToken(
            token_hash=bearer_digest(refresh), family_id=family, client_id=client.id, subject=user_id,
            scope=tuple(scope), amr=amr, auth_time=auth_time,
            expires_at=time.time() + service.config.refresh_token_lifetime_s, state="active", access_jti=jti,
        ))
        extra["refresh_token"] = refresh
    if "openid" in scope:
        extra["id_token"] = service.minter.id_token(principal, client.id, amr, auth_time, nonce, access, scope)
    return service.token_response(access, claims, **extra), jti, family
