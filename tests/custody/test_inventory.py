"""The inventory tells the truth: its attributes are what PKCS#11 reports, read here through a separate session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from sleutelbos.custody import KeyCustody, SensitiveKeyRead

ATTRS = {
    "CKA_EXTRACTABLE": Attribute.EXTRACTABLE,
    "CKA_SENSITIVE": Attribute.SENSITIVE,
    "CKA_NEVER_EXTRACTABLE": Attribute.NEVER_EXTRACTABLE,
    "CKA_ALWAYS_SENSITIVE": Attribute.ALWAYS_SENSITIVE,
    "CKA_LOCAL": Attribute.LOCAL,
}


@pytest.fixture
def raw_session(softhsm_token, hsm_custody: KeyCustody) -> Iterator[tuple[Any, Any]]:
    """A second, independent PKCS#11 session on the same token. PKCS#11 login state belongs to the application
    (v2.40 §5.6), so this session shares custody's login and needs no PIN of its own."""
    token = pkcs11.lib(softhsm_token.module).get_token(token_label=softhsm_token.label)
    session = token.open()
    yield token, session
    session.close()


def _key(session: Any, key_id: str) -> Any:
    objects = [o for o in session.get_objects({Attribute.ID: bytes.fromhex(key_id)})
               if o.object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY)]
    assert len(objects) == 1
    return objects[0]


def test_inventory_attributes_match_pkcs11(hsm_custody: KeyCustody, raw_session, softhsm_token) -> None:
    token, session = raw_session
    signer = hsm_custody.signer_for("identity-token")
    backup = asyncio.run(hsm_custody.generate("backup-encryption", "aes-256", label="backup 2026"))
    meter = asyncio.run(hsm_custody.meters.provision(["E0100"]))["E0100"]

    entries = {e.record.key_id: e for e in hsm_custody.inventory()}
    assert {signer.key_id, backup.key_id, *(r.key_id for r in meter.values())} <= set(entries)
    for key_id, entry in entries.items():
        doc = entry.as_dict()
        assert doc["hsm"]["label"] == token.label == softhsm_token.label
        serial = token.serial.decode() if isinstance(token.serial, bytes) else token.serial
        assert doc["hsm"]["serial"] == serial.strip()
        assert doc["hsm"]["manufacturer"] == token.manufacturer_id.strip()
        assert doc["hsm"]["model"] == token.model.strip()
        assert doc["jurisdiction"] == "NL" and doc["custodian"] == "Operator"
        assert doc["sovereign"] is True and "PKCS#11 token" in doc["sovereign_reason"]
        obj = _key(session, key_id)  # wrapped meter keys: custody's session copy, visible to this process
        for name, attribute in ATTRS.items():
            assert doc["attributes"][name] == bool(obj[attribute]), (entry.record.purpose, name)

    signing = entries[signer.key_id].as_dict()
    assert signing["attributes"] == {"CKA_EXTRACTABLE": False, "CKA_SENSITIVE": True, "CKA_NEVER_EXTRACTABLE": True,
                                     "CKA_ALWAYS_SENSITIVE": True, "CKA_LOCAL": True}
    assert signing["purpose"] == "identity-token" and signing["algorithm"] == "ec-p256" and signing["size"] == 256
    assert signing["state"] == "active" and signing["version"] == 1 and signing["storage"] == "token-object"
    assert entries[backup.key_id].as_dict()["label"] == "backup 2026"
    ak = entries[meter["dlms-authentication"].key_id].as_dict()
    assert ak["attributes"]["CKA_EXTRACTABLE"] is True and ak["extractable_exception"]
    master = entries[meter["dlms-master"].key_id].as_dict()
    assert master["attributes"]["CKA_EXTRACTABLE"] is False and master["extractable_exception"] is None
    assert master["storage"].startswith("wrapped-by:")


def test_non_extractable_keys_cannot_be_read_or_wrapped(hsm_custody: KeyCustody, raw_session) -> None:
    _, session = raw_session
    signer = hsm_custody.signer_for("tuf-root")
    kek = asyncio.run(hsm_custody.generate("export-kek", "aes-256"))
    data_key = asyncio.run(hsm_custody.generate("backup-encryption", "aes-128"))
    master = asyncio.run(hsm_custody.meters.provision(["E0101"]))["E0101"]["dlms-master"]

    for key_id in (signer.key_id, data_key.key_id, master.key_id):
        with pytest.raises(SensitiveKeyRead):
            hsm_custody.read_value(key_id)
    with pytest.raises(SensitiveKeyRead):
        asyncio.run(hsm_custody.wrap(kek.key_id, data_key.key_id))
    with pytest.raises(SensitiveKeyRead):
        asyncio.run(hsm_custody.wrap(kek.key_id, signer.key_id))

    # The token itself refuses, whoever asks: a second session with the PIN gets nothing either.
    raw_kek = _key(session, kek.key_id)
    for key_id in (signer.key_id, data_key.key_id, master.key_id):
        obj = _key(session, key_id)
        with pytest.raises(p11e.AttributeSensitive):
            obj[Attribute.VALUE]
        with pytest.raises((p11e.KeyUnextractable, p11e.KeyNotWrappable)):
            raw_kek.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP)


def test_software_store_says_it_is_not_sovereign(software_custody: KeyCustody) -> None:
    software_custody.signer_for("identity-token")
    [entry] = software_custody.inventory()
    doc = entry.as_dict()
    assert doc["sovereign"] is False
    assert "software key store" in doc["sovereign_reason"]
    assert doc["hsm"]["module"] is None and doc["hsm"]["model"] == "software key store"
    assert software_custody.signer_for("identity-token").sovereign is False
