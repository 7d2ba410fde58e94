"""Signing through the SignerProvider protocol: ECDSA P-256 and Ed25519, raw and DER, rotation, audit."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sleutelbos.core.protocols import Signer, SignerProvider
from sleutelbos.custody import KeyAlgorithm, KeyCustody, KeyState, KeyStateError, WrongPurpose


def _verify_es256(spki: bytes, message: bytes, raw: bytes) -> None:
    public = serialization.load_der_public_key(spki)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, message, ec.ECDSA(hashes.SHA256()))  # raises on a bad signature


def test_signer_for_creates_an_audited_p256_key_and_signs_raw_and_der(custody: KeyCustody, audit_sink) -> None:
    provider: SignerProvider = custody  # static check of the protocol
    assert callable(provider.signer_for) and callable(provider.public_keys_for)
    signer = custody.signer_for("identity-token")
    assert isinstance(signer, Signer)
    assert signer.algorithm == "ES256"
    assert audit_sink.actions() == ["custody.key.generate"]
    assert audit_sink.events[0].target == signer.key_id
    assert audit_sink.events[0].details["purpose"] == "identity-token"

    message = b"header.payload"
    raw = signer.sign(message)
    assert len(raw) == 64
    _verify_es256(signer.public_key().spki_der, message, raw)
    der = signer.sign(message, "der")
    public = serialization.load_der_public_key(signer.public_key().spki_der)
    public.verify(der, message, ec.ECDSA(hashes.SHA256()))
    assert custody.verify(signer.key_id, message, raw)
    assert not custody.verify(signer.key_id, message + b"!", raw)

    again = custody.signer_for("identity-token")
    assert again.key_id == signer.key_id
    assert audit_sink.actions() == ["custody.key.generate"]  # first use only
    assert signer.sovereign is (custody.backend.identity().module is not None)


def test_signer_for_inside_a_running_loop(custody: KeyCustody, audit_sink) -> None:
    """Consumers call the synchronous protocol from async handlers; first use must still be audited."""

    async def handler() -> str:
        return custody.signer_for("audit-checkpoint").key_id

    key_id = asyncio.run(handler())
    assert [e.target for e in audit_sink.events] == [key_id]


def test_rotation_keeps_old_signatures_verifiable(custody: KeyCustody, audit_sink) -> None:
    old = custody.signer_for("tuf-targets")
    message = b"targets.json canonical bytes"
    old_signature = old.sign(message)

    rotated = asyncio.run(custody.rotate("tuf-targets", reason="yearly rotation"))
    assert rotated.version == 2 and rotated.state is KeyState.ACTIVE
    new = custody.signer_for("tuf-targets")
    assert new.key_id == rotated.key_id != old.key_id

    keys = custody.public_keys_for("tuf-targets")
    assert [k.key_id for k in keys] == [new.key_id, old.key_id]
    assert [k.active for k in keys] == [True, False]
    _verify_es256(keys[1].spki_der, message, old_signature)
    assert custody.verify(old.key_id, message, old_signature)
    with pytest.raises(KeyStateError):
        old.sign(message)  # a deactivated key no longer applies protection

    asyncio.run(custody.destroy(old.key_id, reason="retired"))
    assert [k.key_id for k in custody.public_keys_for("tuf-targets")] == [new.key_id]
    assert audit_sink.actions() == ["custody.key.generate", "custody.key.rotate", "custody.key.destroy"]
    assert custody.backend.attributes(bytes.fromhex(old.key_id)) is None  # gone from the token


def test_ed25519_where_the_token_supports_it(custody: KeyCustody) -> None:
    if not custody.backend.supports(KeyAlgorithm.ED25519):
        pytest.fail("SoftHSM2 2.6 offers CKM_EDDSA; this token does not")
    record = asyncio.run(custody.generate("breakglass-officer:alice", "ed25519"))
    signer = custody.signer_for("breakglass-officer:alice")
    assert signer.key_id == record.key_id and signer.algorithm == "EdDSA"
    signature = signer.sign(b"approve playbook 7")
    public = serialization.load_der_public_key(signer.public_key().spki_der)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(signature, b"approve playbook 7")


def test_a_non_signing_key_refuses_to_sign(custody: KeyCustody) -> None:
    record = asyncio.run(custody.generate("backup-encryption", "aes-256"))
    with pytest.raises(WrongPurpose):
        custody.signer_for("backup-encryption")
    with pytest.raises(WrongPurpose):
        custody.sign(record.key_id, b"x", purpose="backup-encryption")
    signing = custody.signer_for("identity-token")
    with pytest.raises(WrongPurpose):
        custody.sign(signing.key_id, b"firmware image", purpose="tuf-targets")


def test_audit_failure_means_no_key(custody: KeyCustody, audit_sink) -> None:
    audit_sink.fail = True
    from sleutelbos.core.protocols import AuditUnavailable

    with pytest.raises(AuditUnavailable):
        custody.signer_for("identity-token")
    with pytest.raises(AuditUnavailable):
        asyncio.run(custody.generate("tuf-root", "ec-p256"))
    assert custody.key_records() == []
    audit_sink.fail = False
    assert custody.signer_for("identity-token").sign(b"x")


def test_usage_is_counted_not_audited(custody: KeyCustody, audit_sink) -> None:
    signer = custody.signer_for("identity-token")
    for i in range(5):
        signer.sign(b"m%d" % i)
    assert custody.usage()[signer.key_id]["sign"] == 5
    assert audit_sink.actions() == ["custody.key.generate"]



async def test_prepare_signer_creates_the_key_once_with_its_audit_record(hsm_custody, audit_sink) -> None:
    first = await hsm_custody.prepare_signer("audit-checkpoint")
    again = await hsm_custody.prepare_signer("audit-checkpoint")
    assert first.key_id == again.key_id == hsm_custody.signer_for("audit-checkpoint").key_id
    generated = [e for e in audit_sink.events if e.action.endswith("generate")]
    assert [e.target for e in generated] == [first.key_id]
    assert hsm_custody.verify(first.key_id, b"note", first.sign(b"note"))
