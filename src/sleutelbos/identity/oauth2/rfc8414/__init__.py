"""RFC 8414 authorization server metadata and OpenID Connect Discovery 1.0 §3 provider metadata.

Both documents are built from one dictionary and validated with authlib's ``AuthorizationServerMetadata`` and
``OpenIDProviderMetadata`` before they are served, so a missing required field is a start-up error, not a client's
surprise. ``sleutelbos_revocation_feed_endpoint`` is this project's extension (the feed verifiers follow).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata

SCOPES = ["openid", "profile", "email"]
CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "client_id", "org", "org_kind", "country",
          "roles", "org_role", "amr", "acr", "auth_time", "nonce", "at_hash", "azp", "preferred_username", "email",
          "principal_kind"]


def authorization_server_metadata(issuer: str) -> dict[str, Any]:
    base = issuer.rstrip("/")
    metadata = {
        "issuer": issuer,
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "token_endpoint": f"{base}/oauth2/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "userinfo_endpoint": f"{base}/oauth2/userinfo",
        "introspection_endpoint": f"{base}/oauth2/introspect",
        "revocation_endpoint": f"{base}/oauth2/revoke",
        "sleutelbos_revocation_feed_endpoint": f"{base}/oauth2/revocations",
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token", "password"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": CLAIMS,
        "acr_values_supported": ["urn:sleutelbos:acr:pwd", "urn:sleutelbos:acr:mfa", "urn:sleutelbos:acr:client"],
    }
    AuthorizationServerMetadata(metadata).validate()
    return metadata


def openid_configuration(issuer: str) -> dict[str, Any]:
    """OIDC Discovery §3. One deliberate deviation: ``id_token_signing_alg_values_supported`` is ES256 only — the
    spec wants RS256 listed, but custody keys are EC P-256 and an RSA key would be a second, weaker path."""
    metadata = authorization_server_metadata(issuer)
    checked = OpenIDProviderMetadata(metadata)
    for name in dir(checked):
        if name.startswith("validate_") and name != "validate_id_token_signing_alg_values_supported":
            getattr(checked, name)()
    return metadata
