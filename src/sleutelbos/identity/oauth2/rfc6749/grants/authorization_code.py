"""RFC 6749 §4.1.3 authorization code exchange, with PKCE (RFC 7636 §4.5-4.6, S256 only).

The code is single use. A second presentation is an attack or a bug: it is refused (``invalid_grant``) and, as
§4.1.2 recommends, every token issued from the first presentation is revoked (its access ``jti`` and its refresh
family). The ``redirect_uri`` must equal the one of the authorization request (§4.1.3), the client the one the code
was issued to, and the code may not be older than 60 s.
"""

from __future__ import annotations

import time
from typing import Any

from sleutelbos.core.protocols import SYSTEM_ACTOR
from sleutelbos.identity.errors import InvalidGrant, InvalidRequest
from sleutelbos.identity.models import Client
from sleutelbos.identity.oauth2 import rfc7636
from sleutelbos.identity.oauth2.rfc6749.grants.issue import issue_for_user
from sleutelbos.identity.passwords import bearer_digest


async def grant(service: Any, client: Client, form: dict[str, str], source: str | None) -> dict[str, Any]:
    code_value = form.get("code")
    if not code_value or len(code_value) > 200:
        raise InvalidRequest("code is required")
    code_hash = bearer_digest(code_value)
    code, first_use = await service.store.consume_code(code_hash)
    if code is None:
        raise InvalidGrant("authorization code unknown")
    if not first_use:
        await service.record(SYSTEM_ACTOR, "identity.code.replay", code.client_id,
                             {"user_id": code.user_id, "source": source})
        if code.issued_family:
            await service.revoke_family(code.issued_family)
        if code.issued_jti:
            await service.revoke_jtis([(code.issued_jti, time.time() + service.config.token_lifetime_s)])
        raise InvalidGrant("authorization code already used: tokens issued from it are revoked")
    if code.client_id != client.id:
        raise InvalidGrant("authorization code was issued to another client")
    if code.expires_at < time.time():
        raise InvalidGrant("authorization code expired")
    if form.get("redirect_uri") != code.redirect_uri:
        raise InvalidGrant("redirect_uri does not match the authorization request")
    rfc7636.verify(form.get("code_verifier"), code.code_challenge)
    response, jti, family = await issue_for_user(
        service, client, code.user_id, list(code.scope), code.amr, code.auth_time, nonce=code.nonce,
    )
    await service.store.record_code_issue(code_hash, jti, family)
    return response
