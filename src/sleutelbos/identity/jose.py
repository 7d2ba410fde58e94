"""Compact JWS (RFC 7515 §7.1) for ES256 (RFC 7518 §3.4): the one module that touches signature bytes.

Signing builds ``BASE64URL(header) '.' BASE64URL(payload)`` here and hands it to a custody ``Signer`` with the
``raw`` (r‖s) encoding JOSE wants, so the private key never enters Python. Verification accepts exactly one
algorithm, ES256, chosen by the verifier and never by the token: ``alg: none``, HS256 keyed with the public key and
every other algorithm are refused before any key is touched (RFC 8725 §3.1, §3.2); ``jku``, ``x5u`` and ``jwk``
headers are ignored — keys come only from the verifier's configured JWKS — and ``crit`` is refused. JWKs are made
with ``joserfc``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key
from joserfc.jwk import ECKey

from sleutelbos.core.protocols import PublicKeyInfo, Signer
from sleutelbos.identity.errors import InvalidToken

ALGORITHM = "ES256"
MAX_TOKEN_BYTES = 8192
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if "=" in text:
        raise ValueError("padding is not allowed in base64url JOSE segments")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_compact(header: dict[str, Any], claims: dict[str, Any], signer: Signer) -> str:
    """A compact JWS of ``claims`` signed by ``signer``; ``header`` gets ``alg`` and ``kid`` from the signer."""
    if signer.algorithm != ALGORITHM:
        raise InvalidToken(f"signer algorithm {signer.algorithm!r} is not {ALGORITHM}")
    full_header = {"alg": ALGORITHM, "kid": signer.key_id, **header}
    signing_input = b64url(orjson.dumps(full_header)) + "." + b64url(orjson.dumps(claims))
    signature = signer.sign(signing_input.encode("ascii"), "raw")
    if len(signature) != 64:
        raise InvalidToken("ES256 signer returned a signature that is not 64 bytes of r‖s")
    return signing_input + "." + b64url(signature)


@dataclass(frozen=True)
class ParsedJws:
    header: dict[str, Any]
    payload_segment: str
    signing_input: bytes
    signature: bytes

    def claims(self) -> dict[str, Any]:
        try:
            claims = orjson.loads(b64url_decode(self.payload_segment))
        except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
            raise InvalidToken("token payload is not base64url JSON") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("token payload is not a JSON object")
        return claims


def parse_compact(token: str) -> ParsedJws:
    """Split and decode a compact JWS, refusing anything but a well-formed ES256 one."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("token missing or larger than 8 KiB")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("token is not a compact JWS (three dot-separated segments)")
    header_seg, payload_seg, sig_seg = parts
    try:
        header = orjson.loads(b64url_decode(header_seg))
        signature = b64url_decode(sig_seg)
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidToken("token header or signature is not base64url") from exc
    if not isinstance(header, dict):
        raise InvalidToken("token header is not a JSON object")
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise InvalidToken(f"algorithm {alg!r} refused: only {ALGORITHM} is accepted")
    if "crit" in header:
        raise InvalidToken("critical header parameters are not supported")
    if not isinstance(header.get("kid"), str):
        raise InvalidToken("token header has no kid")
    if len(signature) != 64:
        raise InvalidToken("ES256 signature must be 64 bytes of r‖s")
    return ParsedJws(header, payload_seg, f"{header_seg}.{payload_seg}".encode("ascii"), signature)


def verify_signature(key: ec.EllipticCurvePublicKey, jws: ParsedJws) -> None:
    der = encode_dss_signature(int.from_bytes(jws.signature[:32], "big"), int.from_bytes(jws.signature[32:], "big"))
    try:
        key.verify(der, jws.signing_input, _ECDSA_SHA256)
    except InvalidSignature as exc:
        raise InvalidToken("token signature does not verify") from exc


def jwk_from_public_key(info: PublicKeyInfo) -> dict[str, Any]:
    """RFC 7517 JWK of a custody verification key, with ``kid``/``alg``/``use``."""
    return ECKey.import_key(info.spki_der).as_dict(private=False, kid=info.key_id, alg=info.algorithm, use="sig")


def public_key_from_jwk(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    """An EC P-256 verification key from a JWK; anything else (oct keys, RSA, other curves) is refused."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise InvalidToken("JWKS key is not an EC P-256 key")
    key = ECKey.import_key(jwk).public_key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidToken("JWKS key is not an EC public key")
    return key


def public_key_from_spki(spki_der: bytes) -> ec.EllipticCurvePublicKey:
    key = load_der_public_key(spki_der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidToken("verification key is not an EC public key")
    return key
