"""Minting tokens: JWT access tokens (RFC 9068 profile), OpenID Connect ID tokens, opaque refresh tokens.

Access tokens carry ``iss, sub, aud, exp, iat, nbf, jti, scope, client_id`` (RFC 9068 §2.2) and the facts the
sovereignty policies are written on: ``org``, ``org_kind``, ``country``, ``roles`` (application roles), for users
``org_role`` (the membership role in ``org``: admin, approver, breakglass-officer, member), ``principal_kind``, ``amr``
(RFC 8176 values) with ``acr``, so a policy can demand MFA. They are signed ES256 by custody's ``identity-token``
key through the ``Signer`` protocol; ``kid`` is the key version. ID tokens follow OIDC Core §2 and §3.1.3.6
(``at_hash``). Refresh tokens and authorization codes are 256-bit random strings, stored only as digests.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Any

from sleutelbos.core.protocols import SignerProvider
from sleutelbos.identity.errors import ServerError
from sleutelbos.identity.jose import b64url, sign_compact
from sleutelbos.identity.principals import PrincipalContext
from sleutelbos.identity.verifier import ACCESS_TOKEN_TYPE

SIGNING_PURPOSE = "identity-token"
ACR_CLIENT = "urn:sleutelbos:acr:client"
ACR_PASSWORD = "urn:sleutelbos:acr:pwd"  # noqa: S105 - an acr value, not a secret
ACR_MFA = "urn:sleutelbos:acr:mfa"
AMR_CLIENT_SECRET = "client_secret"  # noqa: S105 - an amr value, not a secret


def acr_for(amr: tuple[str, ...] | list[str]) -> str:
    if "otp" in amr or "mfa" in amr:
        return ACR_MFA
    if "pwd" in amr:
        return ACR_PASSWORD
    return ACR_CLIENT


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


class TokenMinter:
    def __init__(self, signers: SignerProvider, issuer: str, audience: str, lifetime_s: int) -> None:
        self.signers = signers
        self.issuer = issuer
        self.audience = audience
        self.lifetime_s = lifetime_s

    def _sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        try:
            signer = self.signers.signer_for(SIGNING_PURPOSE)
            return sign_compact(header, claims, signer)
        except Exception as exc:  # custody unavailable → nothing issued (fail closed)
            raise ServerError(f"token signing failed: {type(exc).__name__}") from exc

    def access_token(
        self, principal: PrincipalContext, client_id: str, scope: list[str], amr: tuple[str, ...],
        jti: str | None = None, now: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        iat = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": principal.subject,
            "aud": [self.audience, client_id],
            "exp": iat + self.lifetime_s,
            "iat": iat,
            "nbf": iat,
            "jti": jti or str(uuid.uuid4()),
            "client_id": client_id,
            "scope": " ".join(scope),
            "org": principal.organisation.id,
            "org_kind": str(principal.organisation.kind),
            "country": principal.organisation.country,
            "roles": list(principal.roles),
            "principal_kind": principal.kind,
            "amr": list(amr),
            "acr": acr_for(amr),
        }
        if principal.user is not None:
            claims["username"] = principal.user.username
            claims["org_role"] = principal.org_role
        return self._sign({"typ": ACCESS_TOKEN_TYPE}, claims), claims

    def id_token(
        self, principal: PrincipalContext, client_id: str, amr: tuple[str, ...], auth_time: int,
        nonce: str | None, access_token: str, scope: list[str], now: float | None = None,
    ) -> str:
        iat = int(time.time() if now is None else now)
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": principal.subject, "aud": client_id, "azp": client_id,
            "exp": iat + self.lifetime_s, "iat": iat, "auth_time": auth_time,
            "amr": list(amr), "acr": acr_for(amr), "at_hash": b64url(digest[:16]),
            "org": principal.organisation.id, "org_kind": str(principal.organisation.kind),
            "country": principal.organisation.country,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if principal.user is not None:
            if "profile" in scope:
                claims["preferred_username"] = principal.user.username
            if "email" in scope:
                claims["email"] = principal.user.email
        return self._sign({"typ": "JWT"}, claims)
