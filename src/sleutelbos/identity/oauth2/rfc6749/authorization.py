"""RFC 6749 §4.1.1-4.1.2 authorization endpoint: validate the request, log the user in, redirect with a code.

Errors about the client or the redirect URI are never redirected (§4.1.2.1: an unregistered ``redirect_uri`` would
make us an open redirector) — they are shown on our own page. The redirect URI must equal a registered one exactly
(OAuth 2.0 Security BCP §2.1); it may be omitted only when exactly one is registered. Every other error goes back to
the client's redirect URI with ``error``, ``state`` and ``iss`` (RFC 9207). PKCE S256 is mandatory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sleutelbos.identity.errors import (
    IdentityError,
    InvalidRequest,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from sleutelbos.identity.models import GRANT_AUTHORIZATION_CODE, AuthorizationCode, Client
from sleutelbos.identity.oauth2 import rfc7636
from sleutelbos.identity.oauth2.rfc6749.grants.scopes import granted_scope
from sleutelbos.identity.passwords import bearer_digest
from sleutelbos.identity.tokens import new_opaque_token


class RedirectableError(Exception):
    """An authorization error the client should hear about at its (validated) redirect URI."""

    def __init__(self, error: IdentityError, redirect_uri: str, state: str | None, issuer: str) -> None:
        super().__init__(error.detail)
        self.error = error
        self.location = with_params(redirect_uri, {
            "error": error.error, "error_description": error.detail, "state": state, "iss": issuer,
        })


@dataclass(frozen=True)
class AuthorizationRequest:
    client: Client
    redirect_uri: str
    scope: list[str]
    state: str | None
    code_challenge: str
    nonce: str | None

    def as_form(self) -> dict[str, str]:
        """The parameters the login page posts back (re-validated on POST)."""
        form = {
            "client_id": self.client.id, "redirect_uri": self.redirect_uri, "response_type": "code",
            "scope": " ".join(self.scope), "code_challenge": self.code_challenge, "code_challenge_method": "S256",
        }
        if self.state is not None:
            form["state"] = self.state
        if self.nonce is not None:
            form["nonce"] = self.nonce
        return form


def with_params(uri: str, params: dict[str, Any]) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def validate(service: Any, params: dict[str, str]) -> AuthorizationRequest:
    """Raises a plain :class:`IdentityError` (show on our page) or :class:`RedirectableError`."""
    client = await service.public_client(params.get("client_id"))
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None:
        if len(client.redirect_uris) != 1:
            raise InvalidRequest("redirect_uri is required for this client")
        redirect_uri = client.redirect_uris[0]
    elif redirect_uri not in client.redirect_uris:
        raise InvalidRequest("redirect_uri is not registered for this client")
    state = params.get("state")
    issuer = service.config.issuer
    try:
        if state is not None and len(state) > 500:
            state = None
            raise InvalidRequest("state longer than 500 characters")
        if params.get("response_type") != "code":
            raise UnsupportedResponseType("only response_type=code is supported")
        if GRANT_AUTHORIZATION_CODE not in client.grant_types:
            raise UnauthorizedClient("this client may not use the authorization code grant")
        challenge = rfc7636.check_challenge(params.get("code_challenge"), params.get("code_challenge_method"))
        nonce = params.get("nonce")
        if nonce is not None and len(nonce) > 500:
            raise InvalidRequest("nonce longer than 500 characters")
        scope = granted_scope(client, params.get("scope"), allow_openid=True)
    except IdentityError as exc:
        raise RedirectableError(exc, redirect_uri, state, issuer) from exc
    return AuthorizationRequest(client, redirect_uri, scope, state, challenge, nonce)


async def approve(service: Any, request: AuthorizationRequest, auth: Any) -> str:
    """Issue a code for the authenticated user; the Location the browser goes to next (§4.1.2)."""
    await service.user_principal(auth.user.id, request.client)  # user, client and both organisations enabled
    code = new_opaque_token()
    await service.store.add_code(AuthorizationCode(
        code_hash=bearer_digest(code), client_id=request.client.id, user_id=auth.user.id,
        redirect_uri=request.redirect_uri, scope=tuple(request.scope), code_challenge=request.code_challenge,
        nonce=request.nonce, amr=auth.amr, auth_time=auth.auth_time,
        expires_at=time.time() + service.config.code_lifetime_s,
    ))
    return with_params(request.redirect_uri, {"code": code, "state": request.state, "iss": service.config.issuer})


def denied(service: Any, request: AuthorizationRequest, error: IdentityError) -> str:
    return with_params(request.redirect_uri, {
        "error": error.error, "error_description": error.detail, "state": request.state,
        "iss": service.config.issuer,
    })
