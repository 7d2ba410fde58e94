"""Per-meter DLMS key sets and the global_key_transfer payload, on the real token and the software store."""

from __future__ import annotations

import asyncio

import pytest

from sleutelbos.custody import InvalidKeyRequest, KeyCustody, KeyState, KeyStateError, SensitiveKeyRead, WrongPurpose
from sleutelbos.custody.backend import ENCRYPT
from sleutelbos.custody.dlms_key_transfer import (
    DlmsEncodingError,
    DlmsKeyId,
    KeyData,
    decode_key_transfer,
    encode_key_transfer,
)
from sleutelbos.custody.models import KeyAlgorithm

NONCE = bytes.fromhex("4d4d4d0000bc614e01234567")  # system title (8) ‖ invocation counter (4)


def _same_key(custody: KeyCustody, session_id: bytes, record_id: str) -> bool:
    """Two keys are the same when one decrypts (and authenticates) what the other encrypted; their values
    never leave the token, so this is how a test compares them."""
    probe = custody.backend.encrypt_gcm(session_id, NONCE, b"probe block 1234", b"aad", 12)
    try:
        return custody.decrypt(record_id, NONCE, probe, b"aad") == b"probe block 1234"
    except InvalidKeyRequest:
        return False


def test_a_x_dr_encoding_is_the_blue_book_structure() -> None:
    items = [KeyData(DlmsKeyId.GLOBAL_UNICAST_ENCRYPTION, bytes(range(24))),
             KeyData(DlmsKeyId.AUTHENTICATION, bytes(24))]
    data = encode_key_transfer(items)
    # array(2) { structure(2) { enum 0, octet-string(24) … }, structure(2) { enum 2, octet-string(24) … } }
    assert data[:7] == bytes([0x01, 0x02, 0x02, 0x02, 0x16, 0x00, 0x09])
    assert data[7] == 24 and data[8:32] == bytes(range(24))
    assert data[32:37] == bytes([0x02, 0x02, 0x16, 0x02, 0x09])
    assert decode_key_transfer(data) == items
    with pytest.raises(DlmsEncodingError):
        decode_key_transfer(data + b"\x00")
    with pytest.raises(DlmsEncodingError):
        decode_key_transfer(bytes([0x01, 0x01, 0x02, 0x02, 0x16, 0x07, 0x09, 0x00]))  # key_id 7


def test_key_change_payload_unwraps_under_the_master_key_to_the_new_keys(custody: KeyCustody, audit_sink) -> None:
    meters = custody.meters
    keys = asyncio.run(meters.provision(["E0031"]))["E0031"]
    assert {r.state for r in keys.values()} == {KeyState.ACTIVE}
    old_ek = keys["dlms-unicast"]
    frame = custody.encrypt(old_ek.key_id, NONCE, b"old reading", b"")

    payload = asyncio.run(meters.key_change("E0031", reason="post-delivery re-key"))
    assert (payload.class_id, payload.method_id) == (64, 2)
    items = decode_key_transfer(payload.data)
    assert [i.key_id for i in items] == [DlmsKeyId.GLOBAL_UNICAST_ENCRYPTION,
                                         DlmsKeyId.GLOBAL_BROADCAST_ENCRYPTION, DlmsKeyId.AUTHENTICATION]
    assert all(len(i.key_wrapped) == 24 for i in items)  # RFC 3394 of a 16-byte key

    # The meter's side: unwrap each item under the master key (in the token) and compare with custody's keys.
    master = keys["dlms-master"]
    custody.load(custody.record(master.key_id))
    purposes = {
        DlmsKeyId.GLOBAL_UNICAST_ENCRYPTION: "dlms-unicast",
        DlmsKeyId.GLOBAL_BROADCAST_ENCRYPTION: "dlms-broadcast",
        DlmsKeyId.AUTHENTICATION: "dlms-authentication",
    }
    pending = meters.key_set("E0031", KeyState.PRE_ACTIVATION)
    assert set(pending) == set(purposes.values())
    asyncio.run(meters.confirm("E0031"))
    for n, item in enumerate(items):
        session_id = bytes([0xEE, n]) * 8
        custody.backend.unwrap(bytes.fromhex(master.key_id), item.key_wrapped, session_id, "check",
                               KeyAlgorithm.AES_128, usage=frozenset({ENCRYPT}), extractable=False,
                               persistent=False)
        new_id = payload.new_keys[purposes[item.key_id]]
        if item.key_id is DlmsKeyId.AUTHENTICATION:
            custody.backend.destroy(session_id)
            continue
        assert _same_key(custody, session_id, new_id)
        assert not _same_key(custody, session_id, keys[purposes[item.key_id]].key_id)  # not the old key
        custody.backend.destroy(session_id)

    # The AK (the exception) can be exported for the head-end, audited first.
    ak_value = asyncio.run(meters.export_authentication_key("E0031", reason="head-end start"))
    assert len(ak_value) == 16
    assert audit_sink.events[-1].action == "custody.key.export"
    assert audit_sink.events[-1].target == payload.new_keys["dlms-authentication"]
    after = meters.key_set("E0031")
    assert after["dlms-unicast"].key_id == payload.new_keys["dlms-unicast"]
    assert custody.record(old_ek.key_id).state is KeyState.DEACTIVATED
    assert custody.decrypt(old_ek.key_id, NONCE, frame) == b"old reading"  # deactivated still decrypts
    with pytest.raises(KeyStateError):
        custody.encrypt(old_ek.key_id, NONCE, b"new frame")
    actions = audit_sink.actions()
    assert actions[-4:] == ["custody.key.provision-meters", "custody.key.key-change",
                            "custody.key.key-change-confirm", "custody.key.export"]


def test_ak_cannot_sign_firmware_and_master_key_cannot_be_read(custody: KeyCustody) -> None:
    keys = asyncio.run(custody.meters.provision(["E0032"]))["E0032"]
    ak = keys["dlms-authentication"]
    with pytest.raises(WrongPurpose):
        custody.sign(ak.key_id, b"firmware-image.bin", purpose="tuf-targets")
    with pytest.raises(WrongPurpose):
        custody.signer(ak.key_id, "dlms-authentication")
    with pytest.raises(WrongPurpose):
        custody.encrypt(keys["dlms-master"].key_id, NONCE, b"a KEK does not encrypt data")
    with pytest.raises(SensitiveKeyRead):
        custody.read_value(keys["dlms-master"].key_id)
    with pytest.raises(SensitiveKeyRead):
        custody.read_value(ak.key_id)  # even the AK is sensitive: it leaves only wrapped, to the head-end


def test_the_storage_key_cannot_be_destroyed_while_it_holds_meter_keys(custody: KeyCustody) -> None:
    keys = asyncio.run(custody.meters.provision(["E0035"]))["E0035"]
    storage = keys["dlms-master"].wrapped_by
    assert storage is not None
    with pytest.raises(KeyStateError):
        asyncio.run(custody.destroy(storage))
    for record in keys.values():
        asyncio.run(custody.destroy(record.key_id, reason="meter scrapped"))
        assert custody.record(record.key_id).wrapped is None  # the blob is gone: crypto-shredded
    asyncio.run(custody.destroy(storage, reason="no keys left under it"))
    with pytest.raises(InvalidKeyRequest):
        asyncio.run(custody.unwrap(storage, b"\x00" * 24, "dlms-master", "aes-128"))


def test_provisioning_twice_is_refused(custody: KeyCustody) -> None:
    asyncio.run(custody.meters.provision(["E0033"]))
    with pytest.raises(KeyStateError):
        asyncio.run(custody.meters.provision(["E0033", "E0034"]))
    assert custody.meters.key_set("E0034") == {}


def test_batched_campaign_gives_each_meter_its_own_keys_under_its_own_master(custody: KeyCustody) -> None:
    """The bulk path (decision 0290) generates a batch's keys purpose by purpose: every meter's payload must
    still unwrap, under *that* meter's master key, to the key custody stored for that meter — not a
    neighbour's."""
    meter_ids = ["B001", "B002", "B003", "B004"]
    provisioned = asyncio.run(custody.meters.provision(meter_ids))
    masters = {m: keys["dlms-master"] for m, keys in provisioned.items()}
    campaign = asyncio.run(custody.campaigns.start("bulk", meter_ids))
    progress = asyncio.run(custody.campaigns.run(campaign, batch_size=3))  # two batches: 3 + 1
    assert progress.keyed == 4 and progress.state == "finished"
    new_unicast = {m: custody.meters.key_set(m, KeyState.PRE_ACTIVATION)["dlms-unicast"].key_id for m in meter_ids}
    assert len(set(new_unicast.values())) == 4
    for meter_id in meter_ids:
        assert not custody.is_loaded(masters[meter_id])  # used for its key change, then unloaded
        asyncio.run(custody.meters.confirm(meter_id))
    for n, meter_id in enumerate(meter_ids):
        items = decode_key_transfer(custody.campaigns.payload(campaign, meter_id))
        unicast = next(i for i in items if i.key_id is DlmsKeyId.GLOBAL_UNICAST_ENCRYPTION)
        master = masters[meter_id]
        custody.load(custody.record(master.key_id))
        session_id = bytes([0xBB, n]) * 8
        custody.backend.unwrap(bytes.fromhex(master.key_id), unicast.key_wrapped, session_id, "check",
                               KeyAlgorithm.AES_128, usage=frozenset({ENCRYPT}), extractable=False,
                               persistent=False)
        try:
            assert _same_key(custody, session_id, new_unicast[meter_id])
            assert not _same_key(custody, session_id, new_unicast[meter_ids[(n + 1) % 4]])
        finally:
            custody.backend.destroy(session_id)
    # A second campaign plans from the current versions only, yet numbers past every earlier version.
    second = asyncio.run(custody.campaigns.start("bulk-2", meter_ids))
    assert asyncio.run(custody.campaigns.run(second, batch_size=3)).keyed == 4
    for meter_id in meter_ids:
        pending = custody.meters.key_set(meter_id, KeyState.PRE_ACTIVATION)
        assert {r.version for r in pending.values()} == {3}
        assert custody.meters.key_set(meter_id)["dlms-master"].version == 1
