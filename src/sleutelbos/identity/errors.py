"""Typed errors of the identity manager, each carrying the OAuth 2.0 error code it is answered with.

RFC 6749 §5.2 (token endpoint), §4.1.2.1 (authorization endpoint), RFC 6750 §3.1 (``invalid_token``), RFC 7009 §2.2.1
(``unsupported_token_type``) name the codes; the HTTP layer (``api.py``) turns every one of these into the standard
body ``{"error": code, "error_description": detail}`` with the status given here, and nothing is issued.
"""

from __future__ import annotations

from sleutelbos.core.errors import SleutelbosError


class IdentityError(SleutelbosError):
    """Base class: ``error`` is the OAuth code, ``status`` the HTTP status the error is answered with."""

    error = "invalid_request"
    status = 400


class InvalidRequest(IdentityError):
    """Malformed, oversized, duplicated or missing parameters (RFC 6749 §5.2 ``invalid_request``)."""


class InvalidClient(IdentityError):
    """Client authentication failed: unknown client, wrong secret, disabled client (RFC 6749 §5.2)."""

    error = "invalid_client"
    status = 401


class InvalidGrant(IdentityError):
    """Code, refresh token or resource-owner credentials invalid, expired, revoked or reused (RFC 6749 §5.2)."""

    error = "invalid_grant"


class UnauthorizedClient(IdentityError):
    """The client may not use this grant type (e.g. the password grant where not enabled)."""

    error = "unauthorized_client"


class UnsupportedGrantType(IdentityError):
    error = "unsupported_grant_type"


class UnsupportedResponseType(IdentityError):
    error = "unsupported_response_type"


class InvalidScope(IdentityError):
    error = "invalid_scope"


class AccessDenied(IdentityError):
    """The resource owner or the operator's rules refused (disabled organisation, consent refused)."""

    error = "access_denied"
    status = 403


class LoginThrottled(IdentityError):
    """Too many failed logins: the account or source is locked for ``retry_after`` seconds (brute-force guard).
    At the token endpoint this is ``invalid_grant`` (RFC 6749 §5.2 has no throttling code) with 429 and
    ``Retry-After``."""

    error = "invalid_grant"
    status = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class InvalidToken(IdentityError):
    """A bearer token that is malformed, badly signed, expired, revoked or for someone else (RFC 6750 §3.1)."""

    error = "invalid_token"
    status = 401


class UnsupportedTokenType(IdentityError):
    error = "unsupported_token_type"


class InsufficientScope(IdentityError):
    """The caller is authenticated but lacks the role the admin API demands (RFC 6750 §3.1)."""

    error = "insufficient_scope"
    status = 403


class NotFound(IdentityError):
    error = "not_found"
    status = 404


class Conflict(IdentityError):
    """A unique name already taken, or a change that contradicts the current state."""

    error = "conflict"
    status = 409


class MethodNotAllowed(IdentityError):
    status = 405


class RequestTooLarge(IdentityError):
    error = "invalid_request"
    status = 413


class ServerError(IdentityError):
    """A dependency (custody, audit) could not serve: the action did not happen (fail closed)."""

    error = "server_error"
    status = 503
