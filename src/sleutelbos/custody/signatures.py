"""Signatures as consumers need them, and the :class:`~sleutelbos.core.protocols.Signer` custody hands out.

The token returns ECDSA signatures in the PKCS#11 form, r‖s (PKCS#11 v2.40 Mechanisms §2.3.1), which is also the
JOSE form (RFC 7518 §3.4); TUF and X.509 want the ASN.1 DER ``ECDSA-Sig-Value`` (RFC 3279 §2.2.3). Ed25519 has
only its raw 64 bytes (RFC 8032). Verification needs no secret, so it runs in software on the public key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from sleutelbos.core.protocols import PublicKeyInfo, SignatureEncoding
from sleutelbos.custody.errors import InvalidKeyRequest
from sleutelbos.custody.models import KeyAlgorithm

if TYPE_CHECKING:
    from sleutelbos.custody.service import KeyCustody


def check_encoding(algorithm: KeyAlgorithm, encoding: str) -> None:
    if encoding not in ("raw", "der"):
        raise InvalidKeyRequest(f"unknown signature encoding {encoding!r}: raw or der")
    if encoding == "der" and algorithm is KeyAlgorithm.ED25519:
        raise InvalidKeyRequest("Ed25519 signatures have only the raw form")


def raw_to_der(raw: bytes) -> bytes:
    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


def verify_signature(spki_der: bytes, message: bytes, signature: bytes, encoding: SignatureEncoding) -> bool:
    """ES256 (raw r‖s or DER) or EdDSA over ``message``; ``False`` for any malformed or wrong signature."""
    public = serialization.load_der_public_key(spki_der)
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            if encoding == "raw":
                if len(signature) != 64:
                    return False
                der = raw_to_der(signature)
            else:
                decode_dss_signature(signature)
                der = signature
            public.verify(der, message, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


class CustodySigner:
    """One key version as a :class:`~sleutelbos.core.protocols.Signer`. It holds no key material: each
    ``sign`` goes to the token, and refuses once the version is no longer active."""

    def __init__(self, custody: KeyCustody, key_id: str, algorithm: KeyAlgorithm) -> None:
        self._custody = custody
        self._key_id = key_id
        self._algorithm = algorithm
        self._cka_id = bytes.fromhex(key_id)

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def algorithm(self) -> str:
        return self._algorithm.jose or ""

    @property
    def sovereign(self) -> bool:
        return self._custody.sovereign

    def sign(self, message: bytes, encoding: SignatureEncoding = "raw") -> bytes:
        return self._custody._sign_checked(self._key_id, self._cka_id, self._algorithm, message, encoding)

    def public_key(self) -> PublicKeyInfo:
        return self._custody.public_key(self._key_id)

    def __repr__(self) -> str:
        return f"CustodySigner(key_id={self._key_id!r}, algorithm={self.algorithm!r})"
