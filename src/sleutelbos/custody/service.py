"""``KeyCustody``: the custody service — generate, use, wrap, rotate and destroy keys in the token, keep their
metadata, and tell the truth about them (the inventory).

Write-ahead audit: every key operation except the per-message ones (sign, encrypt, decrypt — those are counted,
see :meth:`KeyCustody.usage`) is recorded in the :class:`~sleutelbos.core.protocols.AuditSink` *before* it touches
the token; if the sink raises, nothing happens. The control operations are ``async`` and await the sink on the
caller's loop. The :class:`~sleutelbos.core.protocols.SignerProvider` side is synchronous (that protocol is), and
creates a missing key on first use through :meth:`KeyCustody._record_blocking`, which waits for the sink from
synchronous code (decision note 0200).

Key states follow NIST SP 800-57 Part 1 §5.3.5: a new key is active; rotation deactivates the previous version,
which still verifies/decrypts (``public_keys_for`` lists it) until it is destroyed; a compromised key does neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sleutelbos.core.protocols import (
    SYSTEM_ACTOR,
    Actor,
    AuditEvent,
    AuditSink,
    AuditUnavailable,
    PublicKeyInfo,
    SignatureEncoding,
)
from sleutelbos.custody.audit_bridge import record_blocking
from sleutelbos.custody.backend import ENCRYPT, SIGN, WRAP, KeyBackend
from sleutelbos.custody.errors import (
    CustodyError,
    InvalidKeyRequest,
    KeyNotFound,
    KeyStateError,
    SensitiveKeyRead,
    WrongPurpose,
)
from sleutelbos.custody.models import InventoryEntry, KeyAlgorithm, KeyRecord, KeyState, TokenIdentity
from sleutelbos.custody.purposes import RESERVED_PURPOSES, check_purpose_name, require, rule_for
from sleutelbos.custody.signatures import CustodySigner, check_encoding, raw_to_der, verify_signature
from sleutelbos.custody.store import KeyMetadataStore, utcnow

DEFAULT_SIGNING_ALGORITHM = KeyAlgorithm.EC_P256
GCM_TAG_BYTES = 12  # DLMS security suite 0 (IEC 62056-5-3 §9.2.7.2.4.4): 96-bit authentication tag
USAGE_FLUSH_EVERY = 10_000  # per-message counts are written to the store every this many operations
MAX_LOADED_WRAPPED_KEYS = 4096  # per-meter keys held as session objects at once (least recently used goes)


class KeyCustody:
    """The custody service, and the stack's :class:`~sleutelbos.core.protocols.SignerProvider`."""

    def __init__(
        self,
        backend: KeyBackend,
        store: KeyMetadataStore,
        audit: AuditSink,
        *,
        custodian: str,
        jurisdiction: str,
        signing_algorithm: KeyAlgorithm = DEFAULT_SIGNING_ALGORITHM,
    ) -> None:
        self.backend = backend
        self.store = store
        self.audit = audit
        self.custodian = custodian
        self.jurisdiction = jurisdiction
        self.signing_algorithm = signing_algorithm
        self._records: dict[str, KeyRecord] = {r.key_id: r for r in store.all(include_meters=False)}
        self._public: dict[str, bytes] = {}
        self._usage: Counter[tuple[str, str]] = Counter()
        self._usage_lock = threading.Lock()
        self._pending_counts = 0
        self._series_lock = threading.RLock()
        self._home_loop: asyncio.AbstractEventLoop | None = None
        self._loaded: OrderedDict[str, None] = OrderedDict()
        self._load_lock = threading.Lock()
        self._closed = False
        from sleutelbos.custody.campaign import RotationCampaigns
        from sleutelbos.custody.meter_keys import MeterKeys

        self.meters = MeterKeys(self)
        self.campaigns = RotationCampaigns(self)

    # --- identity of the store ---------------------------------------------------------------------------

    @property
    def sovereign(self) -> bool:
        return self.backend.sovereign

    @property
    def sovereign_reason(self) -> str:
        return self.backend.sovereign_reason

    def token_identity(self) -> TokenIdentity:
        return self.backend.identity()

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Remember the event loop the audit sink lives on, so synchronous first-use key creation from other
        threads records its audit event there (the component's ``start()`` calls this)."""
        self._home_loop = loop or asyncio.get_running_loop()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.flush_usage()
        self.backend.close()
        self.store.close()

    # --- audit -------------------------------------------------------------------------------------------

    def audit_event(self, actor: Actor, action: str, target: str, reason: str, **details: Any) -> AuditEvent:
        return AuditEvent(
            actor=actor, action=f"custody.key.{action}", target=target, reason=reason,
            details={**details, "custodian": self.custodian, "jurisdiction": self.jurisdiction,
                     "hsm": self.backend.identity().label, "sovereign": self.sovereign},
        )

    async def audit_first(self, event: AuditEvent) -> None:
        try:
            await self.audit.record(event)
        except AuditUnavailable:
            raise
        except Exception as exc:
            raise AuditUnavailable(f"audit sink failed to record {event.action}: {exc}") from exc

    async def _record_failure(self, event: AuditEvent, exc: Exception) -> None:
        """After a recorded action failed in the token: say so in the log too (best effort — the action did not
        happen, so there is nothing to fail closed on)."""
        failed = replace(event, decision="failed", reason=f"{event.reason} — failed: {exc}".strip(" —"))
        with contextlib.suppress(Exception):
            await self.audit.record(failed)

    def _record_blocking(self, event: AuditEvent) -> None:
        """Write-ahead audit from synchronous code (first-use key creation); see :mod:`.audit_bridge`."""
        record_blocking(self.audit_first, event, self._home_loop)

    # --- records -----------------------------------------------------------------------------------------

    def record(self, key_id: str) -> KeyRecord:
        """Custody's metadata for a key id (CKA_ID hex); per-meter keys are read from the store each time."""
        cached = self._records.get(key_id)
        if cached is not None:
            return cached
        found = self.store.get(key_id)
        if found is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        return found

    def load(self, record: KeyRecord) -> None:
        """Make a wrapped (per-meter) key usable: unwrap its blob under the storage key into a session object
        with the purpose's attributes (non-extractable, except the DLMS AK). No-op for token objects."""
        if record.wrapped is None or record.wrapped_by is None or record.state is KeyState.DESTROYED:
            return
        with self._load_lock:
            if record.key_id in self._loaded:
                self._loaded.move_to_end(record.key_id)
                return
            rule = rule_for(record.purpose, record.algorithm)
            self.backend.unwrap(
                bytes.fromhex(record.wrapped_by), record.wrapped, bytes.fromhex(record.key_id), record.label,
                record.algorithm, usage=rule.usage, extractable=rule.extractable_reason is not None,
                persistent=False,
            )
            self._loaded[record.key_id] = None
            while len(self._loaded) > MAX_LOADED_WRAPPED_KEYS:
                evicted, _ = self._loaded.popitem(last=False)
                self.backend.destroy(bytes.fromhex(evicted))

    def is_loaded(self, record: KeyRecord) -> bool:
        return record.key_id in self._loaded

    def unload(self, record: KeyRecord) -> None:
        """Drop a wrapped key's session object (it stays stored as its blob): a campaign uses each meter's master
        key once, and thousands of idle session objects only slow the token down."""
        with self._load_lock:
            if self._loaded.pop(record.key_id, 0) is None:
                self.backend.destroy(bytes.fromhex(record.key_id))

    def _remember(self, record: KeyRecord) -> None:
        if record.meter_id is None:
            self._records[record.key_id] = record

    def key_records(self, purpose: str | None = None) -> list[KeyRecord]:
        """Every key's record (without ``purpose``: the keys that do not belong to a meter)."""
        records = self.store.all(include_meters=purpose is not None)
        return [r for r in records if purpose is None or r.purpose == purpose]

    def _series_records(self, series: str) -> list[KeyRecord]:
        return self.store.series(series)

    def active_record(self, series: str) -> KeyRecord | None:
        """The active version of a rotation series (a purpose, or ``meter:<id>/<purpose>``), read from the store
        — the truth when several processes share it (a rotation made by the CLI or another worker is seen at the
        next ``signer_for``) — and remembered for the per-message state checks."""
        records = self._series_records(series)
        for record in records:
            self._remember(record)
        return next((r for r in records if r.state is KeyState.ACTIVE), None)

    # --- generate ----------------------------------------------------------------------------------------

    def _plan(
        self, purpose: str, algorithm: KeyAlgorithm, label: str | None, *, series: str | None = None,
        meter_id: str | None = None,
    ) -> KeyRecord:
        rule = rule_for(purpose, algorithm)
        if not self.backend.supports(algorithm):
            raise InvalidKeyRequest(f"the key store does not support {algorithm.value}")
        series = series or purpose
        existing = self._series_records(series)
        version = max((r.version for r in existing), default=0) + 1
        key_id = secrets.token_hex(16)
        return KeyRecord(
            key_id=key_id, series=series, purpose=purpose, algorithm=algorithm, version=version,
            state=KeyState.PRE_ACTIVATION, label=label or f"{series}#v{version}", created_at=utcnow(),
            meter_id=meter_id, extractable_reason=rule.extractable_reason,
        )

    def _create_now(self, record: KeyRecord, *, activate: bool, previous: KeyRecord | None) -> KeyRecord:
        """The effect of generate/rotate, after the audit event is durable: the token object first, then the
        metadata in one transaction (a crash in between leaves an orphan object, never a record without one)."""
        rule = rule_for(record.purpose, record.algorithm)
        self.backend.generate(
            bytes.fromhex(record.key_id), record.label, record.algorithm, usage=rule.usage,
            extractable=rule.extractable_reason is not None,
        )
        now = utcnow()
        created = replace(record, state=KeyState.ACTIVE if activate else KeyState.PRE_ACTIVATION,
                          activated_at=now if activate else None)
        with self.store.transaction():
            if previous is not None:
                self.store.set_state(previous.key_id, KeyState.DEACTIVATED, now)
            self.store.insert(created)
        if previous is not None:
            self._remember(replace(previous, state=KeyState.DEACTIVATED, deactivated_at=now))
        self._remember(created)
        return created

    async def generate(
        self,
        purpose: str,
        algorithm: KeyAlgorithm | str,
        *,
        label: str | None = None,
        actor: Actor = SYSTEM_ACTOR,
        reason: str = "",
    ) -> KeyRecord:
        """Create the first version of a key for ``purpose`` in the token, active. A purpose that already has an
        active key is refused: that is :meth:`rotate`."""
        algorithm = KeyAlgorithm(algorithm)
        if purpose in RESERVED_PURPOSES:
            raise InvalidKeyRequest(f"{purpose!r} keys are made by custody itself (meter key sets, storage key)")
        return await self.create_key(purpose, algorithm, label=label, actor=actor, reason=reason)

    async def create_key(
        self, purpose: str, algorithm: KeyAlgorithm, *, label: str | None, actor: Actor, reason: str
    ) -> KeyRecord:
        with self._series_lock:
            if self.active_record(purpose) is not None:
                raise KeyStateError(f"{purpose!r} already has an active key; rotate it instead")
            planned = self._plan(purpose, algorithm, label)
        event = self.audit_event(
            actor, "generate", planned.key_id, reason, purpose=purpose, algorithm=algorithm.value,
            label=planned.label, version=planned.version,
        )
        await self.audit_first(event)
        try:
            return self._create_now(planned, activate=True, previous=None)
        except CustodyError as exc:
            await self._record_failure(event, exc)
            raise

    async def rotate(self, purpose: str, *, actor: Actor = SYSTEM_ACTOR, reason: str = "") -> KeyRecord:
        """New version of ``purpose``'s key, active; the previous one deactivated (still verifies)."""
        with self._series_lock:
            previous = self.active_record(purpose)
            if previous is None:
                raise KeyNotFound(f"no active key for purpose {purpose!r} to rotate")
            planned = self._plan(purpose, previous.algorithm, None)
        event = self.audit_event(
            actor, "rotate", planned.key_id, reason, purpose=purpose, algorithm=planned.algorithm.value,
            version=planned.version, previous=previous.key_id,
        )
        await self.audit_first(event)
        try:
            return self._create_now(planned, activate=True, previous=previous)
        except CustodyError as exc:
            await self._record_failure(event, exc)
            raise

    async def destroy(self, key_id: str, *, actor: Actor = SYSTEM_ACTOR, reason: str = "") -> KeyRecord:
        """Destroy the token object; the metadata stays, in state ``destroyed`` (SP 800-57 §5.3.5)."""
        record = self.record(key_id)
        if record.state is KeyState.DESTROYED:
            raise KeyStateError(f"key {key_id} is already destroyed")
        dependants = self.store.wrapped_by_count(key_id)
        if dependants:
            raise KeyStateError(f"key {key_id} still wraps {dependants} stored key(s); destroy or re-wrap them first")
        event = self.audit_event(actor, "destroy", key_id, reason, purpose=record.purpose, version=record.version,
                            storage=record.storage)
        await self.audit_first(event)
        try:
            self.backend.destroy(bytes.fromhex(key_id))  # the token object, or a wrapped key's session copy
        except CustodyError as exc:
            await self._record_failure(event, exc)
            raise
        self._loaded.pop(key_id, None)
        now = utcnow()
        with self.store.transaction():
            self.store.set_state(key_id, KeyState.DESTROYED, now)
            self.store.forget_wrapped(key_id)  # the blob is the key: destroying it is destroying the key
        destroyed = replace(record, state=KeyState.DESTROYED, destroyed_at=now)
        self._remember(destroyed)
        self._public.pop(key_id, None)
        return destroyed

    async def deactivate(self, key_id: str, *, actor: Actor = SYSTEM_ACTOR, reason: str = "") -> KeyRecord:
        """Stop applying protection with this key; it still verifies and decrypts."""
        return await self._transition(key_id, KeyState.DEACTIVATED, "deactivate", actor, reason)

    async def mark_compromised(self, key_id: str, *, actor: Actor = SYSTEM_ACTOR, reason: str = "") -> KeyRecord:
        """The key is no longer trusted for anything, verification included (SP 800-57 §5.3.5 "compromised")."""
        return await self._transition(key_id, KeyState.COMPROMISED, "compromise", actor, reason)

    async def _transition(self, key_id: str, state: KeyState, action: str, actor: Actor, reason: str) -> KeyRecord:
        record = self.record(key_id)
        if record.state is KeyState.DESTROYED or record.state is state:
            raise KeyStateError(f"key {key_id} is {record.state.value}; cannot {action}")
        await self.audit_first(self.audit_event(actor, action, key_id, reason, purpose=record.purpose,
                                       previous_state=record.state.value))
        now = utcnow()
        self.store.set_state(key_id, state, now)
        updated = self.store.get(key_id)
        assert updated is not None
        self._remember(updated)
        return updated

    # --- SignerProvider ----------------------------------------------------------------------------------

    def signer_for(self, purpose: str) -> CustodySigner:
        """The active signing key for ``purpose``, generated (audited) on first use."""
        check_purpose_name(purpose)
        with self._series_lock:
            record = self.active_record(purpose)
            if record is None:
                if purpose in RESERVED_PURPOSES:
                    raise WrongPurpose(f"{purpose!r} keys are AES keys; they cannot sign")
                planned = self._plan(purpose, self.signing_algorithm, None)
                event = self.audit_event(
                    SYSTEM_ACTOR, "generate", planned.key_id, "first use by a signing consumer",
                    purpose=purpose, algorithm=planned.algorithm.value, label=planned.label,
                    version=planned.version,
                )
                self._record_blocking(event)
                try:
                    record = self._create_now(planned, activate=True, previous=None)
                except CustodyError as exc:
                    with contextlib.suppress(Exception):
                        self._record_blocking(replace(event, decision="failed", reason=f"failed: {exc}"))
                    raise
        if not record.algorithm.is_signing:
            raise WrongPurpose(f"the active key for {purpose!r} is {record.algorithm.value}; it cannot sign")
        return CustodySigner(self, record.key_id, record.algorithm)

    async def prepare_signer(self, purpose: str) -> CustodySigner:
        """The active signing key for ``purpose``; a missing one is generated here, its audit record awaited on
        the running loop (see :class:`~sleutelbos.core.protocols.SignerProvider`)."""
        check_purpose_name(purpose)
        if self.active_record(purpose) is None:
            await self.generate(purpose, self.signing_algorithm, reason="first use by a signing consumer")
        return self.signer_for(purpose)

    def signer(self, key_id: str, purpose: str) -> CustodySigner:
        """A specific key version as a signer, for a caller that states what it signs for."""
        record = self.record(key_id)
        if record.purpose != purpose:
            raise WrongPurpose(f"key {key_id} was made for {record.purpose!r}, not {purpose!r}")
        require(record.purpose, record.algorithm, SIGN, key_id)
        return CustodySigner(self, key_id, record.algorithm)

    def public_keys_for(self, purpose: str) -> list[PublicKeyInfo]:
        """Active and deactivated (not destroyed, not compromised) versions, newest first."""
        records = [r for r in self._series_records(purpose) if r.state.may_process and r.algorithm.is_signing]
        return [self.public_key(r.key_id) for r in sorted(records, key=lambda r: -r.version)]

    def public_key(self, key_id: str) -> PublicKeyInfo:
        record = self.record(key_id)
        if not record.algorithm.is_signing:
            raise WrongPurpose(f"key {key_id} is a secret key; it has no public half")
        if record.state is KeyState.DESTROYED:
            raise KeyStateError(f"key {key_id} is destroyed")
        der = self._public.get(key_id)
        if der is None:
            der = self.backend.public_key_der(bytes.fromhex(key_id))
            self._public[key_id] = der
        return PublicKeyInfo(key_id=key_id, algorithm=record.algorithm.jose or "", spki_der=der,
                             active=record.state is KeyState.ACTIVE)

    # --- per-message operations (counted, not audited) ---------------------------------------------------

    def _count(self, key_id: str, operation: str) -> None:
        with self._usage_lock:
            self._usage[(key_id, operation)] += 1
            self._pending_counts += 1
            flush = self._pending_counts >= USAGE_FLUSH_EVERY
        if flush:
            self.flush_usage()

    def sign(self, key_id: str, message: bytes, *, purpose: str, encoding: SignatureEncoding = "raw") -> bytes:
        return self.signer(key_id, purpose).sign(message, encoding)

    def _sign_checked(
        self, key_id: str, cka_id: bytes, algorithm: KeyAlgorithm, message: bytes, encoding: SignatureEncoding
    ) -> bytes:
        record = self._records.get(key_id) or self.record(key_id)
        if not record.state.may_apply_protection:
            raise KeyStateError(f"key {key_id} is {record.state.value}; it no longer signs")
        if encoding != "raw":
            check_encoding(algorithm, encoding)
        raw = self.backend.sign(cka_id, algorithm, message)
        self._count(key_id, "sign")
        return raw if encoding == "raw" else raw_to_der(raw)

    def verify(self, key_id: str, message: bytes, signature: bytes, encoding: SignatureEncoding = "raw") -> bool:
        """Verify with the public half (in software: verification needs no secret). Deactivated keys verify."""
        record = self.record(key_id)
        if not record.state.may_process:
            raise KeyStateError(f"key {key_id} is {record.state.value}; its signatures are not accepted")
        spki = self.public_key(key_id).spki_der
        self._count(key_id, "verify")
        return verify_signature(spki, message, signature, encoding)

    def _usable_secret(self, key_id: str, operation: str, *, protect: bool) -> KeyRecord:
        record = self.record(key_id)
        require(record.purpose, record.algorithm, operation, key_id)
        allowed = record.state.may_apply_protection if protect else record.state.may_process
        if not allowed:
            raise KeyStateError(f"key {key_id} is {record.state.value}")
        self.load(record)
        return record

    def encrypt(self, key_id: str, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        """AES-GCM, 12-byte nonce and 12-byte tag (DLMS suite 0); returns ciphertext ‖ tag."""
        if len(nonce) != 12:
            raise InvalidKeyRequest("AES-GCM nonce must be 12 bytes (DLMS: system title ‖ invocation counter)")
        self._usable_secret(key_id, ENCRYPT, protect=True)
        out = self.backend.encrypt_gcm(bytes.fromhex(key_id), nonce, plaintext, aad, GCM_TAG_BYTES)
        self._count(key_id, "encrypt")
        return out

    def decrypt(self, key_id: str, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        if len(nonce) != 12:
            raise InvalidKeyRequest("AES-GCM nonce must be 12 bytes (DLMS: system title ‖ invocation counter)")
        if len(ciphertext) < GCM_TAG_BYTES:
            raise InvalidKeyRequest("ciphertext shorter than the 12-byte tag")
        self._usable_secret(key_id, ENCRYPT, protect=False)
        out = self.backend.decrypt_gcm(bytes.fromhex(key_id), nonce, ciphertext, aad, GCM_TAG_BYTES)
        self._count(key_id, "decrypt")
        return out

    # --- wrap / unwrap -----------------------------------------------------------------------------------

    async def wrap(self, kek_id: str, key_id: str, *, actor: Actor = SYSTEM_ACTOR, reason: str = "") -> bytes:
        """RFC 3394 wrap of ``key_id`` under ``kek_id``; refused for non-extractable keys (by the token)."""
        self._usable_secret(kek_id, WRAP, protect=True)
        record = self.record(key_id)
        self.load(record)
        attributes = self.backend.attributes(bytes.fromhex(key_id))
        if attributes is None:
            raise KeyNotFound(f"key {key_id} is not in the token")
        if not attributes.extractable:
            raise SensitiveKeyRead(f"key {key_id} ({record.purpose}) is not extractable; it cannot be wrapped")
        await self.audit_first(self.audit_event(actor, "wrap", key_id, reason, kek=kek_id, purpose=record.purpose))
        return self.backend.wrap(bytes.fromhex(kek_id), bytes.fromhex(key_id))

    async def unwrap(
        self, kek_id: str, wrapped: bytes, purpose: str, algorithm: KeyAlgorithm | str, *,
        label: str | None = None, actor: Actor = SYSTEM_ACTOR, reason: str = "",
    ) -> KeyRecord:
        """Import a wrapped AES key under ``kek_id`` as the next version of ``purpose`` (pre-active: an imported
        key is activated by an explicit decision, :meth:`activate`). ``CKA_LOCAL`` will say it was not made here."""
        algorithm = KeyAlgorithm(algorithm)
        if algorithm.is_signing:
            raise InvalidKeyRequest("only AES keys can be unwrapped into custody")
        if purpose in RESERVED_PURPOSES:
            raise InvalidKeyRequest(f"{purpose!r} keys are made by custody itself, not imported")
        self._usable_secret(kek_id, WRAP, protect=False)
        with self._series_lock:
            planned = self._plan(purpose, algorithm, label)
        rule = rule_for(purpose, algorithm)
        await self.audit_first(self.audit_event(actor, "unwrap", planned.key_id, reason, kek=kek_id, purpose=purpose,
                                       algorithm=algorithm.value, version=planned.version))
        self.backend.unwrap(
            bytes.fromhex(kek_id), wrapped, bytes.fromhex(planned.key_id), planned.label, algorithm,
            usage=rule.usage, extractable=rule.extractable_reason is not None,
        )
        self.store.insert(planned)
        self._remember(planned)
        return planned

    async def activate(self, key_id: str, *, actor: Actor = SYSTEM_ACTOR, reason: str = "") -> KeyRecord:
        """Pre-active → active; the series' previously active version is deactivated."""
        record = self.record(key_id)
        if record.state is not KeyState.PRE_ACTIVATION:
            raise KeyStateError(f"key {key_id} is {record.state.value}, not pre-active")
        previous = self.active_record(record.series)
        await self.audit_first(self.audit_event(actor, "activate", key_id, reason, purpose=record.purpose,
                                       previous=previous.key_id if previous else None))
        now = utcnow()
        with self.store.transaction():
            if previous is not None:
                self.store.set_state(previous.key_id, KeyState.DEACTIVATED, now)
            self.store.set_state(key_id, KeyState.ACTIVE, now)
        for changed in filter(None, (previous, record)):
            fresh = self.store.get(changed.key_id)
            assert fresh is not None
            self._remember(fresh)
        return self.record(key_id)

    def read_value(self, key_id: str) -> bytes:
        """What an attacker holding the PIN would try: ask the token for ``CKA_VALUE``. Every custody key is
        sensitive, so this always raises :class:`SensitiveKeyRead`; it exists so that tests and the truth test
        can show the token's refusal rather than assert it."""
        self.load(self.record(key_id))
        reader: Callable[[bytes], bytes] = self.backend.read_attribute_value  # type: ignore[attr-defined]
        return reader(bytes.fromhex(key_id))

    # --- usage counts and inventory ----------------------------------------------------------------------

    def flush_usage(self) -> None:
        with self._usage_lock:
            pending, self._usage = dict(self._usage), Counter()
            self._pending_counts = 0
        if pending:
            self.store.add_usage(pending)

    def usage(self) -> dict[str, dict[str, int]]:
        """Per-message operation counts per key (persisted totals plus what is not flushed yet)."""
        self.flush_usage()
        out: dict[str, dict[str, int]] = {}
        for (key_id, op), n in self.store.usage().items():
            out.setdefault(key_id, {})[op] = n
        return out

    def inventory_entry(self, record: KeyRecord) -> InventoryEntry:
        attributes = None
        if record.state is not KeyState.DESTROYED:
            self.load(record)
            attributes = self.backend.attributes(bytes.fromhex(record.key_id))
        return InventoryEntry(
            record=record, token=self.backend.identity(), attributes=attributes, custodian=self.custodian,
            jurisdiction=self.jurisdiction, sovereign=self.sovereign, sovereign_reason=self.sovereign_reason,
        )

    def inventory(self, *, include_meters: bool = True, limit: int | None = None, offset: int = 0,
                  ) -> list[InventoryEntry]:
        """Every key with the attributes read back from the token now (not from this store)."""
        return [self.inventory_entry(r) for r in self.store.all(include_meters=include_meters, limit=limit,
                                                                offset=offset)]

    @staticmethod
    def timestamp() -> datetime:
        return utcnow()


__all__ = ["CustodyError", "CustodySigner", "KeyCustody"]
