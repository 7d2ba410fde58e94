"""The PKCS#11 key store: one logged-in read/write session on the token selected by its label.

Implements PKCS#11 v2.40 usage through ``python-pkcs11``:
- tokens are selected by ``CKA_LABEL`` of the token (SoftHSM2 renumbers slots), never by slot number;
- keys are created in the token (``C_GenerateKey``/``C_GenerateKeyPair``, so ``CKA_LOCAL`` is true) with
  ``CKA_SENSITIVE=true`` and ``CKA_EXTRACTABLE=false`` unless the caller asks for a recorded exception;
- ECDSA hashes in software (SHA-256) and signs with ``CKM_ECDSA`` because SoftHSM2 lacks ``CKM_ECDSA_SHA256``;
  Ed25519 uses ``CKM_EDDSA`` where the token lists it;
- AES-GCM (``CKM_AES_GCM``) with the caller's nonce and tag length; RFC 3394 key wrap (``CKM_AES_KEY_WRAP``).

Every library fault is translated into custody's typed errors; a lost device or session becomes
:class:`~sleutelbos.custody.errors.HsmUnavailable` so callers fail closed. Not covered: multi-slot load balancing,
re-login after a token reset (the service must be reopened), RSA.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from sleutelbos.custody.backend import ENCRYPT, SIGN, WRAP
from sleutelbos.custody.errors import (
    HsmUnavailable,
    InvalidKeyRequest,
    KeyNotFound,
    Pkcs11ModuleMissing,
    SensitiveKeyRead,
    TokenNotFound,
    WrongPin,
)
from sleutelbos.custody.models import KeyAlgorithm, TokenAttributes, TokenIdentity

P256_OID = "secp256r1"
ED25519_OID = "1.3.101.112"  # RFC 8410 id-Ed25519, the EC_PARAMS SoftHSM2 accepts for CKK_EC_EDWARDS

_UNAVAILABLE = (
    p11e.DeviceRemoved,
    p11e.DeviceError,
    p11e.DeviceMemory,
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.SessionClosed,
    p11e.SessionHandleInvalid,
    p11e.UserNotLoggedIn,
    p11e.GeneralError,
    p11e.FunctionFailed,
)
_BAD_PIN = (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange, p11e.PinLocked, p11e.PinExpired)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (p11e.KeyUnextractable, p11e.KeyNotWrappable, p11e.AttributeSensitive) as exc:
        raise SensitiveKeyRead(f"the token refuses to {what}: the key is sensitive / not extractable") from exc
    except p11e.NoSuchKey as exc:
        raise KeyNotFound(f"{what}: no such key in the token") from exc
    except _UNAVAILABLE as exc:
        raise HsmUnavailable(f"the HSM did not answer while trying to {what} ({type(exc).__name__})") from exc
    except (p11e.DataLenRange, p11e.EncryptedDataInvalid, p11e.EncryptedDataLenRange, p11e.WrappedKeyInvalid,
            p11e.WrappedKeyLenRange, p11e.MechanismParamInvalid, p11e.ArgumentsBad) as exc:
        raise InvalidKeyRequest(f"the token rejected the input to {what} ({type(exc).__name__})") from exc
    except p11e.PKCS11Error as exc:
        raise HsmUnavailable(f"the HSM failed to {what} ({type(exc).__name__})") from exc


# SoftHSM2 reads SOFTHSM2_CONF once, at C_Initialize: when this process has since pointed it elsewhere (the
# embedded token, a test's fresh token), the module must be re-initialised to see the new token directory.
_initialised_with: dict[str, str | None] = {}


def open_token_session(module: str, token_label: str, pin: str) -> tuple[Any, Any]:
    """Load ``module``, find the token by label and log in; returns ``(token, session)``.

    A token created after the module was initialised in this process (SoftHSM2 reads its configuration at
    ``C_Initialize``) is found by re-initialising the module once.
    """
    if not Path(module).is_file():
        raise Pkcs11ModuleMissing(f"PKCS#11 module {module!r} does not exist")
    try:
        lib = pkcs11.lib(module)
    except (OSError, RuntimeError) as exc:
        raise Pkcs11ModuleMissing(f"PKCS#11 module {module!r} could not be loaded ({type(exc).__name__})") from exc
    conf = os.environ.get("SOFTHSM2_CONF")
    stale = _initialised_with.get(module, conf) != conf
    token = None if stale else _find_token(lib, token_label)
    if token is None:
        try:
            lib.reinitialize()
        except p11e.PKCS11Error as exc:
            raise HsmUnavailable(f"PKCS#11 module {module!r} failed to re-initialise") from exc
        token = _find_token(lib, token_label)
    _initialised_with[module] = conf
    if token is None:
        raise TokenNotFound(f"no PKCS#11 token labelled {token_label!r} in module {module!r}")
    try:
        session = token.open(user_pin=pin, rw=True)
    except _BAD_PIN as exc:
        raise WrongPin(f"token {token_label!r} refused the user PIN ({type(exc).__name__})") from exc
    except p11e.UserPinNotInitialized as exc:
        raise WrongPin(f"token {token_label!r} has no user PIN set") from exc
    except p11e.UserAlreadyLoggedIn:
        # Login state belongs to the application (PKCS#11 v2.40 §5.6): another custody in this process is
        # logged in already, and a new session shares that state.
        try:
            session = token.open(rw=True)
        except p11e.PKCS11Error as exc:
            raise HsmUnavailable(f"could not open a session on token {token_label!r} ({type(exc).__name__})") from exc
    except p11e.PKCS11Error as exc:
        raise HsmUnavailable(f"could not open a session on token {token_label!r} ({type(exc).__name__})") from exc
    return token, session


def _find_token(lib: Any, label: str) -> Any | None:
    try:
        return lib.get_token(token_label=label)
    except p11e.NoSuchToken:
        return None
    except p11e.MultipleTokensReturned as exc:
        raise TokenNotFound(f"more than one token is labelled {label!r}; labels must be unique") from exc
    except p11e.PKCS11Error as exc:
        raise HsmUnavailable(f"could not list tokens ({type(exc).__name__})") from exc


def _capabilities(usage: frozenset[str]) -> MechanismFlag:
    flags = MechanismFlag(0)
    if SIGN in usage:
        flags |= MechanismFlag.SIGN | MechanismFlag.VERIFY
    if ENCRYPT in usage:
        flags |= MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
    if WRAP in usage:
        flags |= MechanismFlag.WRAP | MechanismFlag.UNWRAP
    return flags


class Pkcs11Token:
    """:class:`~sleutelbos.custody.backend.KeyBackend` over one PKCS#11 token."""

    sovereign = True

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        self.module = module
        self.token_label = token_label
        self._token, self._session = open_token_session(module, token_label, pin)
        self._lock = threading.RLock()
        self._objects: dict[tuple[bytes, ObjectClass], Any] = {}
        self._session_objects: set[bytes] = set()  # CKA_IDs of session objects made here (all handles cached)
        self._session_copies: dict[bytes, Any] = {}  # token keys we work with through a session copy
        with _translated("read the token's mechanisms"):
            mechanisms = set(self._token.slot.get_mechanisms())
        self._eddsa = Mechanism.EDDSA in mechanisms and Mechanism.EC_EDWARDS_KEY_PAIR_GEN in mechanisms
        info = self.identity()
        self.sovereign_reason = (
            f"keys generated in and used inside PKCS#11 token {info.label!r} "
            f"({info.manufacturer} {info.model}, serial {info.serial})"
        )

    # --- the token ---------------------------------------------------------------------------------------

    def identity(self) -> TokenIdentity:
        serial = self._token.serial
        if isinstance(serial, bytes):
            serial = serial.decode("ascii", "replace")
        return TokenIdentity(
            label=self._token.label.strip(),
            serial=str(serial).strip(),
            manufacturer=str(self._token.manufacturer_id).strip(),
            model=str(self._token.model).strip(),
            module=self.module,
        )

    def supports(self, algorithm: KeyAlgorithm) -> bool:
        return self._eddsa if algorithm is KeyAlgorithm.ED25519 else True

    def close(self) -> None:
        with self._lock, contextlib.suppress(p11e.PKCS11Error):
            self._objects.clear()
            self._session_objects.clear()
            self._session_copies.clear()
            self._session.close()

    # --- objects -----------------------------------------------------------------------------------------

    def _object(self, key_id: bytes, object_class: ObjectClass) -> Any:
        cached = self._objects.get((key_id, object_class))
        if cached is not None:
            return cached
        with self._lock, _translated("find a key"):
            found = list(self._session.get_objects({Attribute.ID: key_id, Attribute.CLASS: object_class}))
        if not found:
            raise KeyNotFound(f"no {object_class.name.lower()} with id {key_id.hex()} in the token")
        self._objects[(key_id, object_class)] = found[0]
        return found[0]

    def _key_object(self, key_id: bytes) -> Any:
        """The private key of a pair, else the secret key."""
        cached = self._objects.get((key_id, ObjectClass.SECRET_KEY))
        if cached is not None:
            return cached
        try:
            return self._object(key_id, ObjectClass.PRIVATE_KEY)
        except KeyNotFound:
            return self._object(key_id, ObjectClass.SECRET_KEY)

    def use_session_copy(self, key_id: bytes) -> None:
        """Work with a session copy (``C_CopyObject``, ``CKA_TOKEN=false``) of a token-resident secret key from
        now on. The copy has the original's attributes — still sensitive and non-extractable, still inside the
        token — because SoftHSM2's file-backed token objects were about 20 % slower to wrap with (measured),
        which matters when the storage key wraps millions of per-meter keys."""
        original = self._object(key_id, ObjectClass.SECRET_KEY)
        with self._lock, _translated("copy a key into the session"):
            copy = original.copy({Attribute.TOKEN: False})
        self._objects[(key_id, ObjectClass.SECRET_KEY)] = copy
        self._session_copies[key_id] = original

    def exists(self, key_id: bytes) -> bool:
        with self._lock, _translated("look for a key"):
            return any(True for _ in self._session.get_objects({Attribute.ID: key_id}))

    def generate(
        self, key_id: bytes, label: str, algorithm: KeyAlgorithm, *, usage: frozenset[str], extractable: bool,
        persistent: bool = True,
    ) -> None:
        secret = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: extractable, Attribute.PRIVATE: True}
        with self._lock, _translated(f"generate a {algorithm.value} key"):
            if algorithm is KeyAlgorithm.EC_P256:
                params = self._session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(P256_OID)}, local=True
                )
                public, private = params.generate_keypair(
                    id=key_id, label=label, store=persistent, capabilities=_capabilities(usage),
                    private_template=secret,
                )
                self._keep(key_id, persistent, public, private)
            elif algorithm is KeyAlgorithm.ED25519:
                if not self._eddsa:
                    raise InvalidKeyRequest("this token does not offer CKM_EDDSA / Ed25519 key generation")
                params = self._session.create_domain_parameters(
                    KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)},
                    local=True,
                )
                public, private = params.generate_keypair(
                    id=key_id, label=label, store=persistent, capabilities=_capabilities(usage),
                    mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, private_template=secret,
                )
                self._keep(key_id, persistent, public, private)
            else:
                secret_key = self._session.generate_key(
                    KeyType.AES, algorithm.bits, id=key_id, label=label, store=persistent,
                    capabilities=_capabilities(usage), template=secret,
                )
                self._keep(key_id, persistent, secret_key)

    def generate_wrapped(
        self, algorithm: KeyAlgorithm, count: int, *, usage: frozenset[str], wrap_under: tuple[bytes, ...],
    ) -> list[tuple[bytes, ...]]:
        """The per-meter hot loop (decision 0290): one lock, the KEK handles and the key template resolved once,
        and the new session keys never enter the handle cache — only ``C_GenerateKey``, ``C_WrapKey`` per KEK
        and ``C_DestroyObject`` per key reach the token."""
        if algorithm.is_signing:
            raise InvalidKeyRequest("only AES keys are generated for wrapped storage")
        keks = [self._object(kek_id, ObjectClass.SECRET_KEY) for kek_id in wrap_under]
        capabilities = _capabilities(usage)
        template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True, Attribute.PRIVATE: True}
        generate = self._session.generate_key
        mechanism = Mechanism.AES_KEY_WRAP
        out: list[tuple[bytes, ...]] = []
        with self._lock, _translated(f"generate {count} wrapped {algorithm.value} keys"):
            for _ in range(count):
                key = generate(KeyType.AES, algorithm.bits, store=False, capabilities=capabilities, template=template)
                try:
                    out.append(tuple(kek.wrap_key(key, mechanism=mechanism) for kek in keks))
                finally:
                    key.destroy()
        return out

    def _keep(self, key_id: bytes, persistent: bool, *objects: Any) -> None:
        """Remember the handles of objects this session made: a C_FindObjects search costs time linear in the
        number of objects, which matters when thousands of per-meter session keys come and go."""
        for obj in objects:
            self._objects[(key_id, obj.object_class)] = obj
        if not persistent:
            self._session_objects.add(key_id)

    def destroy(self, key_id: bytes) -> None:
        with self._lock, _translated("destroy a key"):
            if self._session_copies.pop(key_id, None) is not None:
                copy = self._objects.pop((key_id, ObjectClass.SECRET_KEY), None)
                if copy is not None:
                    copy.destroy()
            cached = [self._objects.pop((key_id, cls), None)
                      for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.SECRET_KEY)]
            if key_id in self._session_objects:
                self._session_objects.discard(key_id)
                for obj in filter(None, cached):
                    obj.destroy()
                return
            for obj in list(self._session.get_objects({Attribute.ID: key_id})):
                obj.destroy()

    def attributes(self, key_id: bytes) -> TokenAttributes | None:
        """Read from the token object itself (not from a session copy we work with)."""
        try:
            key = self._session_copies.get(key_id) or self._key_object(key_id)
        except KeyNotFound:
            return None
        with self._lock, _translated("read a key's attributes"):
            return TokenAttributes(
                extractable=bool(key[Attribute.EXTRACTABLE]),
                sensitive=bool(key[Attribute.SENSITIVE]),
                never_extractable=bool(key[Attribute.NEVER_EXTRACTABLE]),
                always_sensitive=bool(key[Attribute.ALWAYS_SENSITIVE]),
                local=bool(key[Attribute.LOCAL]),
            )

    # --- operations --------------------------------------------------------------------------------------

    def public_key_der(self, key_id: bytes) -> bytes:
        public = self._object(key_id, ObjectClass.PUBLIC_KEY)
        with self._lock, _translated("read a public key"):
            if public.key_type == KeyType.EC_EDWARDS:
                return _ed25519_spki(public[Attribute.EC_POINT])
            return encode_ec_public_key(public)

    def sign(self, key_id: bytes, algorithm: KeyAlgorithm, message: bytes) -> bytes:
        private = self._object(key_id, ObjectClass.PRIVATE_KEY)
        with _translated("sign"):
            if algorithm is KeyAlgorithm.EC_P256:
                return private.sign(hashlib.sha256(message).digest(), mechanism=Mechanism.ECDSA)
            return private.sign(message, mechanism=Mechanism.EDDSA)

    def encrypt_gcm(self, key_id: bytes, nonce: bytes, plaintext: bytes, aad: bytes, tag_bytes: int) -> bytes:
        key = self._object(key_id, ObjectClass.SECRET_KEY)
        with _translated("encrypt"):
            return key.encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, tag_bytes * 8)
            )

    def decrypt_gcm(self, key_id: bytes, nonce: bytes, ciphertext: bytes, aad: bytes, tag_bytes: int) -> bytes:
        key = self._object(key_id, ObjectClass.SECRET_KEY)
        try:
            return key.decrypt(
                ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, tag_bytes * 8)
            )
        except (p11e.EncryptedDataInvalid, p11e.GeneralError, p11e.FunctionFailed) as exc:
            # SoftHSM2 reports a GCM tag mismatch as CKR_GENERAL_ERROR: tell a bad tag from a dead token by
            # asking the token something trivial.
            if self.alive():
                raise InvalidKeyRequest(
                    "GCM authentication failed: wrong key, nonce, additional data or tag"
                ) from exc
            raise HsmUnavailable(f"the HSM did not answer while trying to decrypt ({type(exc).__name__})") from exc
        except p11e.PKCS11Error as exc:
            with _translated("decrypt"):
                raise exc

    def alive(self) -> bool:
        """Whether the session still answers (``C_GenerateRandom`` of a few bytes)."""
        try:
            with self._lock:
                self._session.generate_random(64)
        except p11e.PKCS11Error:
            return False
        return True

    def wrap(self, kek_id: bytes, key_id: bytes) -> bytes:
        kek = self._object(kek_id, ObjectClass.SECRET_KEY)
        key = self._key_object(key_id)
        with self._lock, _translated("wrap a key"):
            return kek.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP)

    def unwrap(
        self, kek_id: bytes, wrapped: bytes, key_id: bytes, label: str, algorithm: KeyAlgorithm, *,
        usage: frozenset[str], extractable: bool, persistent: bool = True,
    ) -> None:
        if algorithm.is_signing:
            raise InvalidKeyRequest("only AES keys are unwrapped into custody")
        if (len(wrapped) - 8) * 8 != algorithm.bits:  # RFC 3394 adds one 64-bit block
            raise InvalidKeyRequest(f"a wrapped {algorithm.value} key is {algorithm.bits // 8 + 8} bytes, "
                                    f"not {len(wrapped)}")
        kek = self._object(kek_id, ObjectClass.SECRET_KEY)
        with self._lock, _translated("unwrap a key"):
            key = kek.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.AES, wrapped, id=key_id, label=label, store=persistent,
                mechanism=Mechanism.AES_KEY_WRAP, capabilities=_capabilities(usage),
                template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: extractable, Attribute.PRIVATE: True},
            )
            self._keep(key_id, persistent, key)

    def export_value(self, key_id: bytes) -> bytes:
        """Clear value of an *extractable* secret key, for the one process that must hold it (DLMS AK).

        The key is sensitive, so its ``CKA_VALUE`` cannot be read; it is wrapped under a fresh one-time session
        transport key (non-sensitive, so this process can read it) and unwrapped here in software.
        """
        from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

        key = self._object(key_id, ObjectClass.SECRET_KEY)
        with self._lock, _translated("export a key"):
            if not key[Attribute.EXTRACTABLE]:
                raise SensitiveKeyRead(f"key {key_id.hex()} is not extractable; its value never leaves the token")
            transport = self._session.generate_key(
                KeyType.AES, 256, store=False,
                capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
                template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )
            try:
                wrapped = transport.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP)
                transport_value = transport[Attribute.VALUE]
            finally:
                transport.destroy()
        return aes_key_unwrap(bytes(transport_value), wrapped)

    def read_attribute_value(self, key_id: bytes) -> bytes:
        """Ask the token for ``CKA_VALUE`` directly (what an attacker with the PIN would try): a sensitive key
        makes the token answer ``CKR_ATTRIBUTE_SENSITIVE``, which becomes :class:`SensitiveKeyRead`."""
        key = self._key_object(key_id)
        with self._lock, _translated("read a key's value"):
            return bytes(key[Attribute.VALUE])


def _ed25519_spki(ec_point: bytes) -> bytes:
    """RFC 8410 §4 SubjectPublicKeyInfo for an Ed25519 key from its CKA_EC_POINT (an OCTET STRING of 32 bytes)."""
    raw = ec_point[2:] if len(ec_point) == 34 and ec_point[0] == 0x04 else ec_point
    if len(raw) != 32:
        raise InvalidKeyRequest("unexpected Ed25519 public key encoding from the token")
    return bytes.fromhex("302a300506032b6570032100") + raw
