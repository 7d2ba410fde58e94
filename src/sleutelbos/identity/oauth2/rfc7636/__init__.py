"""RFC 7636 PKCE, restricted to the ``S256`` method (the ``plain`` method is refused: OAuth 2.0 Security BCP §2.1.1).

The comparison itself is authlib's ``compare_s256_code_challenge`` (constant time).
"""

from __future__ import annotations

import re

from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge

from sleutelbos.identity.errors import InvalidGrant, InvalidRequest

_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # BASE64URL(SHA256(verifier)) without padding
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # §4.1 code_verifier ABNF


def check_challenge(challenge: str | None, method: str | None) -> str:
    """The authorization request's ``code_challenge`` (§4.3), required, S256 only."""
    if not challenge:
        raise InvalidRequest("code_challenge is required (PKCE, RFC 7636)")
    if method != "S256":
        raise InvalidRequest("code_challenge_method must be S256")
    if not _CHALLENGE.match(challenge):
        raise InvalidRequest("code_challenge must be 43 base64url characters")
    return challenge


def verify(code_verifier: str | None, code_challenge: str) -> None:
    """§4.6: the token request's verifier must hash to the stored challenge; ``invalid_grant`` otherwise."""
    if not code_verifier or not _VERIFIER.match(code_verifier):
        raise InvalidGrant("code_verifier missing or malformed (RFC 7636 §4.1)")
    if not compare_s256_code_challenge(code_verifier, code_challenge):
        raise InvalidGrant("PKCE verification failed: code_verifier does not match code_challenge")
