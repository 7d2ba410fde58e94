"""Password hashing with Argon2id (RFC 9106) through ``argon2-cffi``, and client-secret digests.

User passwords are low-entropy, so they get a memory-hard hash (argon2-cffi's RFC 9106 "low memory" profile).
Client secrets are 256-bit random strings generated here, never chosen by a person: a SHA-256 digest compared in
constant time is as strong for them and keeps client authentication cheap enough for ≥1,000 token issuances/s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

from argon2 import Parameters, PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import RFC_9106_LOW_MEMORY

MIN_PASSWORD_LENGTH = 12


class PasswordHashing:
    """Argon2id with the given parameters (default: RFC 9106 §4 second recommendation, 64 MiB, t=3, p=4)."""

    def __init__(self, parameters: Parameters = RFC_9106_LOW_MEMORY) -> None:
        if parameters.type is not Type.ID:
            raise ValueError("passwords are hashed with Argon2id only")
        self._hasher = PasswordHasher.from_parameters(parameters)
        # Verified against when the username is unknown: "no such user" costs the same as "wrong password".
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash_async(self, password: str) -> str:
        """:meth:`hash` on a worker thread: Argon2id takes ~0.5 s of CPU by design and releases the GIL, so the
        event loop keeps serving token validations meanwhile."""
        return await asyncio.to_thread(self.hash, password)

    async def verify_async(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self.verify, password_hash, password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; an unknown user (``None``) still pays for one verification."""
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def new_client_secret() -> tuple[str, str]:
    """A fresh client secret and the digest that is stored."""
    secret = secrets.token_urlsafe(32)
    return secret, client_secret_digest(secret)


def client_secret_digest(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def verify_client_secret(stored_digest: str, secret: str) -> bool:
    return hmac.compare_digest(stored_digest.encode(), client_secret_digest(secret).encode())


def bearer_digest(value: str) -> str:
    """How authorization codes and refresh tokens are looked up: by digest, so a database dump holds none."""
    return hashlib.sha256(value.encode()).hexdigest()
