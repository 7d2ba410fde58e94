"""Bad configuration and faults: typed errors, nothing changed, fail closed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sleutelbos.core.settings import Settings
from sleutelbos.custody import (
    HsmUnavailable,
    InvalidKeyRequest,
    KeyCustody,
    KeyNotFound,
    KeyStateError,
    Pkcs11ModuleMissing,
    TokenNotFound,
    WrongPin,
    open_custody,
)

from .conftest import RecordingAuditSink


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", **overrides)  # type: ignore[arg-type]


def test_wrong_pin_is_typed_and_never_logged(softhsm_token, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WrongPin) as raised:
        open_custody(_settings(tmp_path, pkcs11_pin="not-the-pin-4711"), RecordingAuditSink(), embedded=False)
    assert "not-the-pin-4711" not in str(raised.value)
    assert "not-the-pin-4711" not in caplog.text
    assert "not-the-pin-4711" not in repr(_settings(tmp_path, pkcs11_pin="not-the-pin-4711"))


def test_pin_file(softhsm_token, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SLEUTELBOS_PKCS11_PIN")
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm_token.pin + "\n")
    custody = open_custody(_settings(tmp_path, pkcs11_pin_file=pin_file), RecordingAuditSink(), embedded=False)
    try:
        assert custody.sovereign
    finally:
        custody.close()
    with pytest.raises(WrongPin):
        open_custody(_settings(tmp_path, pkcs11_pin_file=tmp_path / "absent"), RecordingAuditSink(), embedded=False)


def test_missing_module_and_unknown_token(softhsm_token, tmp_path: Path) -> None:
    with pytest.raises(Pkcs11ModuleMissing):
        open_custody(_settings(tmp_path, pkcs11_module=str(tmp_path / "libnothing.so")), RecordingAuditSink())
    not_a_module = tmp_path / "libfake.so"
    not_a_module.write_bytes(b"not an ELF file")
    with pytest.raises(Pkcs11ModuleMissing):
        open_custody(_settings(tmp_path, pkcs11_module=str(not_a_module)), RecordingAuditSink())
    with pytest.raises(TokenNotFound):
        open_custody(_settings(tmp_path, pkcs11_token="no-such-token"), RecordingAuditSink())


def test_unknown_keys_and_bad_requests(custody: KeyCustody) -> None:
    with pytest.raises(KeyNotFound):
        custody.record("00" * 16)
    with pytest.raises(KeyNotFound):
        asyncio.run(custody.destroy("00" * 16))
    with pytest.raises(KeyNotFound):
        asyncio.run(custody.rotate("never-made"))
    with pytest.raises(InvalidKeyRequest):
        custody.signer_for("Not A Purpose!")
    with pytest.raises(ValueError):
        asyncio.run(custody.generate("x", "rsa-2048"))
    with pytest.raises(InvalidKeyRequest):
        asyncio.run(custody.generate("dlms-master", "aes-128"))
    asyncio.run(custody.generate("tuf-root", "ec-p256"))
    with pytest.raises(KeyStateError):
        asyncio.run(custody.generate("tuf-root", "ec-p256"))  # that is a rotation
    key = asyncio.run(custody.generate("backup-encryption", "aes-256"))
    with pytest.raises(InvalidKeyRequest):
        custody.encrypt(key.key_id, b"short", b"x")
    sealed = custody.encrypt(key.key_id, b"\x01" * 12, b"x", b"aad")
    assert len(sealed) == 1 + 12  # 12-byte tag
    with pytest.raises(InvalidKeyRequest):
        custody.decrypt(key.key_id, b"\x01" * 12, sealed, b"other aad")
    assert custody.decrypt(key.key_id, b"\x01" * 12, sealed, b"aad") == b"x"
    assert len(custody.key_records()) == 2


def test_hsm_unavailable_fails_closed(hsm_custody: KeyCustody, audit_sink: RecordingAuditSink) -> None:
    signer = hsm_custody.signer_for("identity-token")
    meter = asyncio.run(hsm_custody.meters.provision(["E0200"]))["E0200"]
    hsm_custody.backend._session.close()  # the token goes away under custody's feet
    hsm_custody.backend._objects.clear()
    hsm_custody._loaded.clear()
    before = [r.key_id for r in hsm_custody.key_records()]

    with pytest.raises(HsmUnavailable):
        signer.sign(b"token payload")
    with pytest.raises(HsmUnavailable):
        hsm_custody.encrypt(meter["dlms-unicast"].key_id, b"\x00" * 12, b"frame")
    with pytest.raises(HsmUnavailable):
        asyncio.run(hsm_custody.rotate("identity-token"))
    with pytest.raises(HsmUnavailable):
        hsm_custody.signer_for("audit-checkpoint")
    assert [r.key_id for r in hsm_custody.key_records()] == before  # nothing changed
    assert audit_sink.events[-1].decision == "failed"  # the log says the recorded rotation did not happen
