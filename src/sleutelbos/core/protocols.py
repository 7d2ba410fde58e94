"""Protocols that break the cycles between components.

``custody`` signs audit checkpoints, and ``audit`` records custody's key operations, yet neither imports the
other: both speak through these protocols, and ``sleutelbos.stack`` wires the concrete services together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from sleutelbos.core.errors import SleutelbosError

SignatureEncoding = Literal["raw", "der"]
"""``raw`` is r‖s for ECDSA (what JOSE wants) and the 64 bytes of Ed25519; ``der`` is the ASN.1 form TUF and
X.509 want. Ed25519 has only the raw form."""


@dataclass(frozen=True)
class PublicKeyInfo:
    """A verification key as a consumer needs it: the ``kid`` it was signed under and the SPKI DER bytes."""

    key_id: str
    algorithm: str  # JOSE name: "ES256" or "EdDSA"
    spki_der: bytes
    active: bool = True


@runtime_checkable
class Signer(Protocol):
    """A signing key whose private half the caller never sees (an HSM key, or a software key that says so)."""

    @property
    def key_id(self) -> str:
        """Stable identifier of this key *version*; used as the JOSE ``kid`` and in signed notes."""

    @property
    def algorithm(self) -> str:
        """JOSE algorithm name: ``ES256`` (ECDSA P-256 with SHA-256) or ``EdDSA`` (Ed25519)."""

    @property
    def sovereign(self) -> bool:
        """True only when the private key was generated in, and cannot leave, an HSM token."""

    def sign(self, message: bytes, encoding: SignatureEncoding = "raw") -> bytes:
        """Sign ``message`` (the signer hashes it as the algorithm requires)."""

    def public_key(self) -> PublicKeyInfo:
        """The verification key for this version."""


class SignerProvider(Protocol):
    """Hands out the active signing key for a purpose (``identity-token``, ``audit-checkpoint``, ``tuf-root`` …)."""

    def signer_for(self, purpose: str) -> Signer:
        """The active key for ``purpose``, created on first use; raises when custody is unavailable."""

    async def prepare_signer(self, purpose: str) -> Signer:
        """Like :meth:`signer_for`, but creates a missing key with its audit record awaited on the caller's loop.

        Components call this from ``start()`` for the purposes they sign with, so that key creation (a control
        action, written ahead to the audit log) never has to bridge from synchronous code into the event loop.
        """

    def public_keys_for(self, purpose: str) -> list[PublicKeyInfo]:
        """Active and still-valid previous versions, so verifiers accept signatures made before a rotation."""


@dataclass(frozen=True)
class Actor:
    """Who did it: the principal and the facts the auditor asks about (organisation, its kind, its country)."""

    principal: str
    organisation: str | None = None
    kind: str | None = None  # operator, vendor, supplier, third-party, household, service, meter
    country: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "principal": self.principal,
            "organisation": self.organisation,
            "kind": self.kind,
            "country": self.country,
        }


SYSTEM_ACTOR = Actor(principal="system:sleutelbos", kind="service")


@dataclass(frozen=True)
class AuditEvent:
    """One control-plane action, as it goes into the tamper-evident log."""

    actor: Actor
    action: str  # dotted verb, e.g. "custody.key.generate", "policy.root.set", "identity.org.disable"
    target: str  # what it acted on: a key id, a domain id, an organisation id …
    decision: str = "permit"  # permit, deny, or an outcome such as "failed"
    reason: str = ""
    request_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditReceipt:
    """Proof that an event is durable in the log: its index and its RFC 9162 leaf hash (hex)."""

    index: int
    leaf_hash: str


class AuditUnavailable(SleutelbosError):
    """The audit log could not make the event durable; the caller must not perform the action (fail closed)."""


class AuditSink(Protocol):
    """Write-ahead audit: ``record`` returns only once the event is durable, and raises
    :class:`AuditUnavailable` otherwise — callers act only after it returns."""

    async def record(self, event: AuditEvent) -> AuditReceipt: ...
