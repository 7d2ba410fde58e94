"""Custody's types: algorithms, NIST SP 800-57 key states, a key's metadata record, the token's identity and the
attributes read back from it, and the inventory entry that joins them.

NIST SP 800-57 Part 1 Rev. 5, §5.3.5 (key states and transitions) names the states used here; the "suspended"
state and the separate "destroyed compromised" state are folded into ``deactivated`` and ``destroyed`` (the
``compromised_at`` time still tells a destroyed-after-compromise key apart).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class KeyAlgorithm(StrEnum):
    EC_P256 = "ec-p256"
    ED25519 = "ed25519"
    AES_128 = "aes-128"
    AES_256 = "aes-256"

    @property
    def is_signing(self) -> bool:
        return self in (KeyAlgorithm.EC_P256, KeyAlgorithm.ED25519)

    @property
    def jose(self) -> str | None:
        """The JOSE ``alg`` a signature with this key carries (RFC 7518 §3.4, RFC 8037 §3.1)."""
        return {KeyAlgorithm.EC_P256: "ES256", KeyAlgorithm.ED25519: "EdDSA"}.get(self)

    @property
    def bits(self) -> int:
        return {
            KeyAlgorithm.EC_P256: 256,
            KeyAlgorithm.ED25519: 255,
            KeyAlgorithm.AES_128: 128,
            KeyAlgorithm.AES_256: 256,
        }[self]


class KeyState(StrEnum):
    """NIST SP 800-57 Part 1 §5.3.5 states."""

    PRE_ACTIVATION = "pre-active"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    COMPROMISED = "compromised"
    DESTROYED = "destroyed"

    @property
    def may_apply_protection(self) -> bool:
        """Sign / encrypt / wrap (originator usage): only an active key (§5.3.5, §5.3.6)."""
        return self is KeyState.ACTIVE

    @property
    def may_process(self) -> bool:
        """Verify / decrypt / unwrap (recipient usage): active and deactivated keys."""
        return self in (KeyState.ACTIVE, KeyState.DEACTIVATED)


@dataclass(frozen=True)
class TokenIdentity:
    """Which HSM holds the keys, as the token itself reports it (``C_GetTokenInfo``)."""

    label: str
    serial: str
    manufacturer: str
    model: str
    module: str | None  # the PKCS#11 module path, or None for the software store

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenAttributes:
    """Attributes read back from the key object in the token (PKCS#11 v2.40 §4.9 common secret/private key
    attributes). ``local`` is CKA_LOCAL: the key was generated in the token, not imported."""

    extractable: bool
    sensitive: bool
    never_extractable: bool
    always_sensitive: bool
    local: bool

    def as_dict(self) -> dict[str, bool]:
        return {
            "CKA_EXTRACTABLE": self.extractable,
            "CKA_SENSITIVE": self.sensitive,
            "CKA_NEVER_EXTRACTABLE": self.never_extractable,
            "CKA_ALWAYS_SENSITIVE": self.always_sensitive,
            "CKA_LOCAL": self.local,
        }


@dataclass
class KeyRecord:
    """Custody's metadata for one key version, keyed by the token object's CKA_ID (hex)."""

    key_id: str
    series: str  # the rotation series: the purpose, or "<meter>/<purpose>" for a meter's DLMS key
    purpose: str
    algorithm: KeyAlgorithm
    version: int
    state: KeyState
    label: str
    created_at: datetime
    activated_at: datetime | None = None
    deactivated_at: datetime | None = None
    compromised_at: datetime | None = None
    destroyed_at: datetime | None = None
    meter_id: str | None = None
    extractable_reason: str | None = None  # why this key was created wrappable (the recorded exception)
    details: dict[str, Any] = field(default_factory=dict)
    wrapped: bytes | None = None  # RFC 3394 blob under ``wrapped_by`` when the key is not a token object
    wrapped_by: str | None = None  # the storage KEK's key id

    @property
    def storage(self) -> str:
        """``token-object``, or ``wrapped-by:<storage KEK id>`` for a key kept as a blob (per-meter keys)."""
        return f"wrapped-by:{self.wrapped_by}" if self.wrapped_by else "token-object"

    @property
    def jose_algorithm(self) -> str | None:
        return self.algorithm.jose


@dataclass(frozen=True)
class InventoryEntry:
    """One line of the inventory: custody's record joined with what the token says about the key."""

    record: KeyRecord
    token: TokenIdentity
    attributes: TokenAttributes | None  # None when the object is gone from the token (destroyed)
    custodian: str
    jurisdiction: str
    sovereign: bool
    sovereign_reason: str

    def as_dict(self) -> dict[str, Any]:
        r = self.record

        def ts(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": r.key_id,
            "label": r.label,
            "purpose": r.purpose,
            "series": r.series,
            "meter": r.meter_id,
            "algorithm": r.algorithm.value,
            "size": r.algorithm.bits,
            "version": r.version,
            "state": r.state.value,
            "created": ts(r.created_at),
            "activated": ts(r.activated_at),
            "deactivated": ts(r.deactivated_at),
            "compromised": ts(r.compromised_at),
            "destroyed": ts(r.destroyed_at),
            "custodian": self.custodian,
            "jurisdiction": self.jurisdiction,
            "hsm": self.token.as_dict(),
            "attributes": self.attributes.as_dict() if self.attributes else None,
            "extractable_exception": r.extractable_reason,
            "storage": r.storage,
            "sovereign": self.sovereign,
            "sovereign_reason": self.sovereign_reason,
        }
