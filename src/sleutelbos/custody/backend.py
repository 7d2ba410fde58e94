"""What custody asks of a key store: the PKCS#11 token (:mod:`.pkcs11_token`) or the software fallback
(:mod:`.software_store`). Keys are named by their CKA_ID (bytes); the store never hands out private or secret
key values except through :meth:`KeyBackend.export_value`, which only a key created extractable *and* not
sensitive-to-the-process (the DLMS AK) passes.
"""

from __future__ import annotations

from typing import Protocol

from sleutelbos.custody.models import KeyAlgorithm, TokenAttributes, TokenIdentity

# What a key may be used for inside the store; maps to CKA_SIGN/VERIFY, CKA_ENCRYPT/DECRYPT, CKA_WRAP/UNWRAP.
SIGN = "sign"
ENCRYPT = "encrypt"
WRAP = "wrap"


class KeyBackend(Protocol):
    sovereign: bool
    sovereign_reason: str

    def identity(self) -> TokenIdentity: ...

    def supports(self, algorithm: KeyAlgorithm) -> bool: ...

    def generate(
        self, key_id: bytes, label: str, algorithm: KeyAlgorithm, *, usage: frozenset[str], extractable: bool,
        persistent: bool = True,
    ) -> None:
        """Generate in the store; ``persistent=False`` makes a session object (``CKA_TOKEN=false``) that dies
        with the session — how per-meter keys are made before they are wrapped for storage."""

    def generate_wrapped(
        self, algorithm: KeyAlgorithm, count: int, *, usage: frozenset[str], wrap_under: tuple[bytes, ...],
    ) -> list[tuple[bytes, ...]]:
        """Bulk per-meter key material (decision 0290): ``count`` AES keys generated in the store as extractable
        session objects, each wrapped (RFC 3394) under every key of ``wrap_under`` in that order, then destroyed;
        returns one tuple of blobs per key. No CKA_ID or label is set: the blob carries neither, and the key
        gets its id and attributes when it is unwrapped for use."""

    def exists(self, key_id: bytes) -> bool: ...

    def public_key_der(self, key_id: bytes) -> bytes:
        """SubjectPublicKeyInfo DER of a signing key."""

    def sign(self, key_id: bytes, algorithm: KeyAlgorithm, message: bytes) -> bytes:
        """Raw signature: r‖s (ECDSA over SHA-256 of ``message``) or the 64 bytes of Ed25519."""

    def encrypt_gcm(self, key_id: bytes, nonce: bytes, plaintext: bytes, aad: bytes, tag_bytes: int) -> bytes: ...

    def decrypt_gcm(self, key_id: bytes, nonce: bytes, ciphertext: bytes, aad: bytes, tag_bytes: int) -> bytes: ...

    def wrap(self, kek_id: bytes, key_id: bytes) -> bytes:
        """RFC 3394 AES key wrap of ``key_id`` under ``kek_id``."""

    def unwrap(
        self, kek_id: bytes, wrapped: bytes, key_id: bytes, label: str, algorithm: KeyAlgorithm, *,
        usage: frozenset[str], extractable: bool, persistent: bool = True,
    ) -> None: ...

    def use_session_copy(self, key_id: bytes) -> None:
        """Use a session copy of a token key for speed (same attributes); the software store ignores this."""

    def export_value(self, key_id: bytes) -> bytes:
        """The clear value of a secret key; raises ``SensitiveKeyRead`` unless the token allows it."""

    def destroy(self, key_id: bytes) -> None: ...

    def attributes(self, key_id: bytes) -> TokenAttributes | None:
        """Read back from the store; ``None`` when the object is not there."""

    def close(self) -> None: ...
