"""Per-meter DLMS/COSEM key sets and the ``global_key_transfer`` key-change payload.

Each meter has four keys (IEC 62056-5-3 §9.2.5): the master key (KEK), the global unicast encryption key (EK),
the global broadcast encryption key and the authentication key (AK). A fleet has millions of them, more than any
HSM keeps as token objects (SoftHSM2 writes ~17 token objects a second), so per-meter keys are *generated in
the token* as session objects, wrapped at once (RFC 3394) under the token-resident, non-extractable storage key
(purpose ``custody-storage``), and only the wrapped blob is kept in the metadata database (decision note 0201).
To use one, custody unwraps it back into a session object with the purpose's attributes — non-extractable and
sensitive, except the AK (suite 0 puts it in the GCM additional data; the recorded exception).

A key change (Security Setup method 2) makes new EK, broadcast key and AK in the token, wraps each under the
meter's master key, and encodes them as ``key_transfer_data``; the new keys are *pre-active* until the meter
acknowledges (:meth:`MeterKeys.confirm`), then active while the previous versions are deactivated — they still
decrypt frames the meter sent before it switched.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sleutelbos.core.protocols import SYSTEM_ACTOR, Actor
from sleutelbos.custody.dlms_key_transfer import (
    GLOBAL_KEY_TRANSFER_METHOD,
    SECURITY_SETUP_CLASS_ID,
    DlmsKeyId,
    KeyData,
    encode_key_transfer,
)
from sleutelbos.custody.errors import InvalidKeyRequest, KeyNotFound, KeyStateError
from sleutelbos.custody.models import KeyAlgorithm, KeyRecord, KeyState
from sleutelbos.custody.purposes import (
    DLMS_AUTHENTICATION,
    DLMS_BROADCAST,
    DLMS_MASTER,
    DLMS_PURPOSES,
    DLMS_UNICAST,
    STORAGE,
    rule_for,
)
from sleutelbos.custody.service import KeyCustody
from sleutelbos.custody.store import utcnow

TRANSFERRED = {
    DLMS_UNICAST: DlmsKeyId.GLOBAL_UNICAST_ENCRYPTION,
    DLMS_BROADCAST: DlmsKeyId.GLOBAL_BROADCAST_ENCRYPTION,
    DLMS_AUTHENTICATION: DlmsKeyId.AUTHENTICATION,
}


_METER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def check_meter_id(meter_id: str) -> str:
    """A meter id as the registry writes it (serial number or NGSI-LD id tail): letters, digits, ``._:-``."""
    if not _METER_ID.match(meter_id):
        raise InvalidKeyRequest(f"invalid meter id {meter_id!r}: letters, digits and . _ : - (at most 64)")
    return meter_id


def meter_series(meter_id: str, purpose: str) -> str:
    return f"meter:{meter_id}/{purpose}"


@dataclass(frozen=True)
class KeyChangePayload:
    """What the head-end sends: ``global_key_transfer`` (class 64, method 2) with ``data`` as its parameter."""

    meter_id: str
    data: bytes
    new_keys: dict[str, str]  # purpose → key id of the new (pre-active) version
    master_key_id: str
    class_id: int = SECURITY_SETUP_CLASS_ID
    method_id: int = GLOBAL_KEY_TRANSFER_METHOD


class MeterKeys:
    """Per-meter key sets on top of :class:`KeyCustody` (reached as ``custody.meters``)."""

    def __init__(self, custody: KeyCustody) -> None:
        self.custody = custody

    # --- the storage key ---------------------------------------------------------------------------------

    async def storage_key(self, *, actor: Actor = SYSTEM_ACTOR) -> KeyRecord:
        active = self.custody._active(STORAGE)
        if active is not None:
            return active
        return await self.custody._generate(
            STORAGE, KeyAlgorithm.AES_256, label=None, actor=actor,
            reason="storage key for per-meter keys (created on first need)",
        )

    # --- key sets ----------------------------------------------------------------------------------------

    def key_set(self, meter_id: str, state: KeyState = KeyState.ACTIVE) -> dict[str, KeyRecord]:
        """The meter's keys in ``state`` by purpose."""
        return {r.purpose: r for r in self.custody.store.by_meter(meter_id) if r.state is state}

    def _new_record(self, meter_id: str, purpose: str, algorithm: KeyAlgorithm, version: int) -> KeyRecord:
        rule = rule_for(purpose, algorithm)
        series = meter_series(meter_id, purpose)
        return KeyRecord(
            key_id=secrets.token_hex(16), series=series, purpose=purpose, algorithm=algorithm, version=version,
            state=KeyState.PRE_ACTIVATION, label=f"{series}#v{version}", created_at=utcnow(), meter_id=meter_id,
            extractable_reason=rule.extractable_reason,
        )

    def _make_wrapped(self, record: KeyRecord, storage: KeyRecord, master: KeyRecord | None) -> tuple[KeyRecord,
                                                                                                 bytes | None]:
        """Generate ``record``'s key in the token as a session object, wrap it for storage (and under the
        meter's master key when given), and drop the session object."""
        backend = self.custody.backend
        cka_id = bytes.fromhex(record.key_id)
        rule = rule_for(record.purpose, record.algorithm)
        backend.generate(cka_id, record.label, record.algorithm, usage=rule.usage, extractable=True,
                         persistent=False)
        try:
            blob = backend.wrap(bytes.fromhex(storage.key_id), cka_id)
            transfer = backend.wrap(bytes.fromhex(master.key_id), cka_id) if master is not None else None
        finally:
            backend.destroy(cka_id)
        return replace(record, wrapped=blob, wrapped_by=storage.key_id), transfer

    async def provision(
        self, meter_ids: Sequence[str], *, algorithm: KeyAlgorithm | str = KeyAlgorithm.AES_128,
        actor: Actor = SYSTEM_ACTOR, reason: str = "",
    ) -> dict[str, dict[str, KeyRecord]]:
        """First key set (master, EK, broadcast, AK), active, for meters that have none. One audit event per
        call lists every meter and key id; nothing is generated if it fails."""
        algorithm = KeyAlgorithm(algorithm)
        if not meter_ids:
            return {}
        for meter_id in meter_ids:
            check_meter_id(meter_id)
        if len(set(meter_ids)) != len(meter_ids):
            raise InvalidKeyRequest("a meter is listed twice")
        already = self.custody.store.meters_with_keys(meter_ids)
        if already:
            raise KeyStateError(f"{len(already)} meter(s) already have keys (e.g. {sorted(already)[0]}); "
                                "change them with a key-change / campaign instead")
        storage = await self.storage_key(actor=actor)
        planned = {m: {p: self._new_record(m, p, algorithm, 1) for p in DLMS_PURPOSES} for m in meter_ids}
        await self.custody._record(self.custody._event(
            actor, "provision-meters", f"meters:{len(meter_ids)}", reason, algorithm=algorithm.value,
            storage_key=storage.key_id,
            meters={m: {p: r.key_id for p, r in keys.items()} for m, keys in planned.items()},
        ))
        now = utcnow()
        made: dict[str, dict[str, KeyRecord]] = {}
        for meter_id, keys in planned.items():
            made[meter_id] = {
                p: replace(self._make_wrapped(r, storage, None)[0], state=KeyState.ACTIVE, activated_at=now)
                for p, r in keys.items()
            }
        with self.custody.store.transaction():
            self.custody.store.insert_many([r for keys in made.values() for r in keys.values()])
        return made

    # --- key change --------------------------------------------------------------------------------------

    def plan_key_change(self, meter_id: str) -> dict[str, KeyRecord]:
        """New pre-active versions of the three transferred keys (not yet generated)."""
        active = self.key_set(meter_id)
        if DLMS_MASTER not in active:
            raise KeyNotFound(f"meter {meter_id!r} has no active master key; provision it first")
        pending = self.key_set(meter_id, KeyState.PRE_ACTIVATION)
        if pending:
            raise KeyStateError(f"meter {meter_id!r} has an unconfirmed key change; confirm or abandon it first")
        plans: dict[str, KeyRecord] = {}
        for purpose in TRANSFERRED:
            current = active.get(purpose)
            if current is None:
                raise KeyNotFound(f"meter {meter_id!r} has no active {purpose} key")
            versions = [r.version for r in self.custody.store.series(meter_series(meter_id, purpose))]
            plans[purpose] = self._new_record(meter_id, purpose, current.algorithm, max(versions) + 1)
        return plans

    def make_key_change(self, meter_id: str, plans: dict[str, KeyRecord]) -> tuple[list[KeyRecord],
                                                                                   KeyChangePayload]:
        """The effect (after the audit event): generate the planned keys with their planned ids, wrap them for
        storage and under the master key, encode the payload. Nothing is stored here."""
        storage = self.custody._active(STORAGE)
        master = self.key_set(meter_id).get(DLMS_MASTER)
        if storage is None or master is None:
            raise KeyNotFound(f"meter {meter_id!r}: storage or master key missing")
        self.custody.load(master)
        records: list[KeyRecord] = []
        items: list[KeyData] = []
        for purpose, plan in plans.items():
            stored, transfer = self._make_wrapped(plan, storage, master)
            assert transfer is not None
            records.append(stored)
            items.append(KeyData(TRANSFERRED[purpose], transfer))
        payload = KeyChangePayload(
            meter_id=meter_id, data=encode_key_transfer(items), master_key_id=master.key_id,
            new_keys={p: r.key_id for p, r in plans.items()},
        )
        return records, payload

    async def key_change(self, meter_id: str, *, actor: Actor = SYSTEM_ACTOR, reason: str = "") -> KeyChangePayload:
        """One meter's key change: new pre-active EK, broadcast key and AK, and the payload that carries them."""
        plans = self.plan_key_change(meter_id)
        await self.custody._record(self.custody._event(
            actor, "key-change", f"meter:{meter_id}", reason, new_keys={p: r.key_id for p, r in plans.items()},
        ))
        records, payload = self.make_key_change(meter_id, plans)
        with self.custody.store.transaction():
            self.custody.store.insert_many(records)
        return payload

    async def confirm(self, meter_id: str, *, actor: Actor = SYSTEM_ACTOR, reason: str = "") -> dict[str, KeyRecord]:
        """The meter acknowledged the key change: new versions active, previous ones deactivated."""
        pending = self.key_set(meter_id, KeyState.PRE_ACTIVATION)
        if not pending:
            raise KeyStateError(f"meter {meter_id!r} has no key change waiting for confirmation")
        active = self.key_set(meter_id)
        await self.custody._record(self.custody._event(
            actor, "key-change-confirm", f"meter:{meter_id}", reason,
            activated={p: r.key_id for p, r in pending.items()},
            deactivated={p: active[p].key_id for p in pending if p in active},
        ))
        now = utcnow()
        store = self.custody.store
        with store.transaction():
            for purpose, record in pending.items():
                if purpose in active:
                    store.set_state(active[purpose].key_id, KeyState.DEACTIVATED, now)
                store.set_state(record.key_id, KeyState.ACTIVE, now)
        return self.key_set(meter_id)

    def authentication_key(self, meter_id: str) -> bytes:
        """The AK's clear value for the head-end process (the recorded exception; counted as an export)."""
        ak = self.key_set(meter_id).get(DLMS_AUTHENTICATION)
        if ak is None:
            raise KeyNotFound(f"meter {meter_id!r} has no active authentication key")
        self.custody.load(ak)
        value = self.custody.backend.export_value(bytes.fromhex(ak.key_id))
        self.custody._count(ak.key_id, "export")
        return value
