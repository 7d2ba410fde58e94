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
from datetime import datetime

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
        self._copied: set[str] = set()

    # --- the storage key ---------------------------------------------------------------------------------

    async def storage_key(self, *, actor: Actor = SYSTEM_ACTOR) -> KeyRecord:
        active = self.custody.active_record(STORAGE)
        if active is None:
            active = await self.custody.create_key(
                STORAGE, KeyAlgorithm.AES_256, label=None, actor=actor,
                reason="storage key for per-meter keys (created on first need)",
            )
        self._session_copy(active)
        return active

    def _storage(self) -> KeyRecord | None:
        active = self.custody.active_record(STORAGE)
        if active is not None:
            self._session_copy(active)
        return active

    def _session_copy(self, storage: KeyRecord) -> None:
        if storage.key_id not in self._copied:
            self.custody.backend.use_session_copy(bytes.fromhex(storage.key_id))
            self._copied.add(storage.key_id)

    # --- key sets ----------------------------------------------------------------------------------------

    def key_set(self, meter_id: str, state: KeyState = KeyState.ACTIVE) -> dict[str, KeyRecord]:
        """The meter's keys in ``state`` by purpose."""
        return {r.purpose: r for r in self.custody.store.by_meter(meter_id) if r.state is state}

    def _new_record(self, meter_id: str, purpose: str, algorithm: KeyAlgorithm, version: int, *,
                    state: KeyState = KeyState.PRE_ACTIVATION, at: datetime | None = None) -> KeyRecord:
        rule = rule_for(purpose, algorithm)
        series = meter_series(meter_id, purpose)
        created = at or utcnow()
        return KeyRecord(
            key_id=secrets.token_hex(16), series=series, purpose=purpose, algorithm=algorithm, version=version,
            state=state, label=f"{series}#v{version}", created_at=created, meter_id=meter_id,
            extractable_reason=rule.extractable_reason,
            activated_at=created if state is KeyState.ACTIVE else None,
        )

    def _make_wrapped(self, plans: Sequence[KeyRecord], storage: KeyRecord,
                      master: KeyRecord | None) -> list[tuple[KeyRecord, bytes | None]]:
        """Generate the planned keys in the token as session objects, wrap each for storage (and under the
        meter's master key when given) and drop the session objects — one bulk backend call per purpose and
        algorithm (decision 0290). Returns the records with their blobs, and the transfer blobs, in order."""
        kek_ids = (bytes.fromhex(storage.key_id),) if master is None else (
            bytes.fromhex(storage.key_id), bytes.fromhex(master.key_id))
        groups: dict[tuple[str, KeyAlgorithm], list[int]] = {}
        for at, plan in enumerate(plans):
            groups.setdefault((plan.purpose, plan.algorithm), []).append(at)
        out: list[tuple[KeyRecord, bytes | None]] = [None] * len(plans)  # type: ignore[list-item]
        for (purpose, algorithm), positions in groups.items():
            blobs = self.custody.backend.generate_wrapped(
                algorithm, len(positions), usage=rule_for(purpose, algorithm).usage, wrap_under=kek_ids,
            )
            for at, wrapped in zip(positions, blobs, strict=True):
                stored = replace(plans[at], wrapped=wrapped[0], wrapped_by=storage.key_id)
                out[at] = (stored, wrapped[1] if master is not None else None)
        return out

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
        now = utcnow()
        planned = {m: {p: self._new_record(m, p, algorithm, 1, state=KeyState.ACTIVE, at=now)
                       for p in DLMS_PURPOSES} for m in meter_ids}
        await self.custody.audit_first(self.custody.audit_event(
            actor, "provision-meters", f"meters:{len(meter_ids)}", reason, algorithm=algorithm.value,
            storage_key=storage.key_id,
            meters={m: {p: r.key_id for p, r in keys.items()} for m, keys in planned.items()},
        ))
        flat = [r for keys in planned.values() for r in keys.values()]
        stored = iter(record for record, _ in self._make_wrapped(flat, storage, None))
        made = {meter_id: {p: next(stored) for p in keys} for meter_id, keys in planned.items()}
        with self.custody.store.transaction():
            self.custody.store.insert_many([r for keys in made.values() for r in keys.values()])
        return made

    # --- key change --------------------------------------------------------------------------------------

    def plan_key_change(self, meter_id: str) -> dict[str, KeyRecord]:
        """New pre-active versions of the three transferred keys (not yet generated)."""
        return self.plan_key_changes([meter_id])[meter_id]

    def plan_key_changes(self, meter_ids: Sequence[str]) -> dict[str, dict[str, KeyRecord]]:
        """:meth:`plan_key_change` for several meters from two metadata reads (a campaign batch)."""
        current, versions = self.current_keys(meter_ids)
        return {m: self.plan_from(m, current[m], versions[m]) for m in meter_ids}

    def current_keys(self, meter_ids: Sequence[str]) -> tuple[dict[str, list[KeyRecord]], dict[str, dict[str, int]]]:
        """The meters' active and pre-active records, and their highest version per purpose."""
        store = self.custody.store
        current = store.by_meters(meter_ids, states=(KeyState.ACTIVE, KeyState.PRE_ACTIVATION))
        return current, store.latest_versions(meter_ids)

    def plan_from(self, meter_id: str, current: list[KeyRecord], versions: dict[str, int]) -> dict[str, KeyRecord]:
        """Plan from the meter's active/pre-active records and highest versions (see :meth:`current_keys`)."""
        active = {r.purpose: r for r in current if r.state is KeyState.ACTIVE}
        if DLMS_MASTER not in active:
            raise KeyNotFound(f"meter {meter_id!r} has no active master key; provision it first")
        if any(r.state is KeyState.PRE_ACTIVATION for r in current):
            raise KeyStateError(f"meter {meter_id!r} has an unconfirmed key change; confirm or abandon it first")
        plans: dict[str, KeyRecord] = {}
        for purpose in TRANSFERRED:
            now_active = active.get(purpose)
            if now_active is None:
                raise KeyNotFound(f"meter {meter_id!r} has no active {purpose} key")
            plans[purpose] = self._new_record(meter_id, purpose, now_active.algorithm, versions[purpose] + 1)
        return plans

    @staticmethod
    def active_master(records: list[KeyRecord]) -> KeyRecord | None:
        """The active master key among one meter's records."""
        return next((r for r in records if r.purpose == DLMS_MASTER and r.state is KeyState.ACTIVE), None)

    def make_key_change(
        self, meter_id: str, plans: dict[str, KeyRecord], *, storage: KeyRecord | None = None,
        master: KeyRecord | None = None,
    ) -> tuple[list[KeyRecord], KeyChangePayload]:
        """The effect (after the audit event): generate the planned keys with their planned ids, wrap them for
        storage and under the master key, encode the payload. Nothing is stored here. A campaign passes the
        storage and master records it read for the whole batch; the master key is unloaded again afterwards
        unless it was loaded before."""
        storage = storage or self._storage()
        master = master or self.custody.active_record(meter_series(meter_id, DLMS_MASTER))
        if storage is None or master is None:
            raise KeyNotFound(f"meter {meter_id!r}: storage or master key missing")
        was_loaded = self.custody.is_loaded(master)
        self.custody.load(master)
        try:
            made = self._make_wrapped(list(plans.values()), storage, master)
        finally:
            if not was_loaded:
                self.custody.unload(master)
        records: list[KeyRecord] = []
        items: list[KeyData] = []
        for purpose, (stored, transfer) in zip(plans, made, strict=True):
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
        await self.custody.audit_first(self.custody.audit_event(
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
        await self.custody.audit_first(self.custody.audit_event(
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

    async def export_authentication_key(
        self, meter_id: str, *, actor: Actor = SYSTEM_ACTOR, reason: str = ""
    ) -> bytes:
        """The AK's clear value for the one head-end process that needs it in the GCM additional data (the
        recorded exception). Audited before the value leaves the token: who took which meter's AK, and why."""
        ak = self.key_set(meter_id).get(DLMS_AUTHENTICATION)
        if ak is None:
            raise KeyNotFound(f"meter {meter_id!r} has no active authentication key")
        await self.custody.audit_first(self.custody.audit_event(
            actor, "export", ak.key_id, reason, purpose=DLMS_AUTHENTICATION, meter=meter_id,
            exception=ak.extractable_reason,
        ))
        self.custody.load(ak)
        return self.custody.backend.export_value(bytes.fromhex(ak.key_id))
