"""The software key store: the fallback when no PKCS#11 module is available (``sleutelbos up`` on a bare machine).

Keys are generated with ``cryptography`` and kept in one file, ``keystore.bin``, encrypted with AES-256-GCM under
a file key in ``keystore.key`` (mode 0600) beside it. That protects against a copied database, not against anyone
who can read the data directory — which is why every key from this store is reported ``sovereign: false`` with
the reason, and why the truth test counts it against the operator. It implements the same interface and the same
refusals as the token (sensitive keys cannot be read, non-extractable keys cannot be wrapped), so the rest of
custody behaves identically on both.

This is the one module outside the HSM that holds raw key material; keep it small.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from sleutelbos.custody.backend import ENCRYPT, SIGN, WRAP
from sleutelbos.custody.errors import CustodyError, InvalidKeyRequest, KeyNotFound, SensitiveKeyRead, WrongPurpose
from sleutelbos.custody.models import KeyAlgorithm, TokenAttributes, TokenIdentity

SOFTWARE_REASON = (
    "software key store: no PKCS#11 module configured or installed; keys are in an encrypted file whose key is "
    "on the same disk, so they can be copied by anyone who can read the data directory"
)


class KeystoreCorrupt(CustodyError):
    """The encrypted key file cannot be decrypted with its file key."""

    status = 500
    code = "keystore_corrupt"


class SoftwareKeyStore:
    """:class:`~sleutelbos.custody.backend.KeyBackend` in an encrypted file."""

    sovereign = False
    sovereign_reason = SOFTWARE_REASON

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._file = directory / "keystore.bin"
        self._key_file = directory / "keystore.key"
        self._lock = threading.RLock()
        self._file_key = self._load_file_key()
        self._keys: dict[str, dict[str, Any]] = self._load()
        self._loaded: dict[str, Any] = {}
        self._session: dict[str, dict[str, Any]] = {}  # session objects: never written to the file
        serial_file = directory / "keystore.serial"
        if not serial_file.exists():
            serial_file.write_text(secrets.token_hex(8))
        self._serial = serial_file.read_text().strip()

    def _load_file_key(self) -> bytes:
        if not self._key_file.exists():
            fd = os.open(self._key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(AESGCM.generate_key(bit_length=256))
        return self._key_file.read_bytes()

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self._file.exists():
            return {}
        blob = self._file.read_bytes()
        try:
            clear = AESGCM(self._file_key).decrypt(blob[:12], blob[12:], b"sleutelbos-keystore-v1")
        except InvalidTag as exc:
            raise KeystoreCorrupt(f"{self._file} cannot be decrypted with {self._key_file}") from exc
        return json.loads(clear)

    def _save(self) -> None:
        nonce = secrets.token_bytes(12)
        blob = nonce + AESGCM(self._file_key).encrypt(
            nonce, json.dumps(self._keys).encode(), b"sleutelbos-keystore-v1"
        )
        tmp = self._file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._file)

    # --- the store ---------------------------------------------------------------------------------------

    def identity(self) -> TokenIdentity:
        return TokenIdentity(
            label="software", serial=self._serial, manufacturer="sleutelbos", model="software key store",
            module=None,
        )

    def supports(self, algorithm: KeyAlgorithm) -> bool:
        return True

    def close(self) -> None:
        self._loaded.clear()

    def _entry(self, key_id: bytes) -> dict[str, Any]:
        entry = self._keys.get(key_id.hex()) or self._session.get(key_id.hex())
        if entry is None:
            raise KeyNotFound(f"no key with id {key_id.hex()} in the software key store")
        return entry

    def _material(self, key_id: bytes) -> Any:
        cached = self._loaded.get(key_id.hex())
        if cached is not None:
            return cached
        entry = self._entry(key_id)
        value = base64.b64decode(entry["value"])
        algorithm = KeyAlgorithm(entry["algorithm"])
        if algorithm is KeyAlgorithm.EC_P256:
            material: Any = serialization.load_der_private_key(value, password=None)
        elif algorithm is KeyAlgorithm.ED25519:
            material = ed25519.Ed25519PrivateKey.from_private_bytes(value)
        else:
            material = value
        self._loaded[key_id.hex()] = material
        return material

    def _require(self, key_id: bytes, usage: str) -> None:
        if usage not in self._entry(key_id)["usage"]:
            raise WrongPurpose(f"key {key_id.hex()} was not created for {usage}")

    def exists(self, key_id: bytes) -> bool:
        return key_id.hex() in self._keys or key_id.hex() in self._session

    def _store(self, key_id: bytes, label: str, algorithm: KeyAlgorithm, value: bytes, *, usage: frozenset[str],
               extractable: bool, local: bool, persistent: bool = True) -> None:
        with self._lock:
            if self.exists(key_id):
                raise InvalidKeyRequest(f"a key with id {key_id.hex()} already exists")
            (self._keys if persistent else self._session)[key_id.hex()] = {
                "algorithm": algorithm.value, "label": label, "value": base64.b64encode(value).decode(),
                "usage": sorted(usage), "extractable": extractable, "never_extractable": not extractable,
                "local": local,
            }
            if persistent:
                self._save()

    def generate(
        self, key_id: bytes, label: str, algorithm: KeyAlgorithm, *, usage: frozenset[str], extractable: bool,
        persistent: bool = True,
    ) -> None:
        if algorithm is KeyAlgorithm.EC_P256:
            value = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        elif algorithm is KeyAlgorithm.ED25519:
            value = ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        else:
            value = secrets.token_bytes(algorithm.bits // 8)
        self._store(key_id, label, algorithm, value, usage=usage, extractable=extractable, local=True,
                    persistent=persistent)

    def generate_wrapped(
        self, algorithm: KeyAlgorithm, count: int, *, usage: frozenset[str], wrap_under: tuple[bytes, ...],
    ) -> list[tuple[bytes, ...]]:
        """Same contract as the token's bulk path; here simply generate, wrap and drop a session entry."""
        if algorithm.is_signing:
            raise InvalidKeyRequest("only AES keys are generated for wrapped storage")
        out: list[tuple[bytes, ...]] = []
        for _ in range(count):
            key_id = secrets.token_bytes(16)
            self.generate(key_id, "bulk", algorithm, usage=usage, extractable=True, persistent=False)
            try:
                out.append(tuple(self.wrap(kek_id, key_id) for kek_id in wrap_under))
            finally:
                self.destroy(key_id)
        return out

    def destroy(self, key_id: bytes) -> None:
        with self._lock:
            self._loaded.pop(key_id.hex(), None)
            if self._session.pop(key_id.hex(), None) is None:
                self._keys.pop(key_id.hex(), None)
                self._save()

    def attributes(self, key_id: bytes) -> TokenAttributes | None:
        entry = self._keys.get(key_id.hex()) or self._session.get(key_id.hex())
        if entry is None:
            return None
        return TokenAttributes(
            extractable=entry["extractable"], sensitive=True, never_extractable=entry["never_extractable"],
            always_sensitive=True, local=entry["local"],
        )

    # --- operations --------------------------------------------------------------------------------------

    def public_key_der(self, key_id: bytes) -> bytes:
        material = self._material(key_id)
        if isinstance(material, bytes):
            raise WrongPurpose(f"key {key_id.hex()} is a secret key and has no public key")
        return material.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, key_id: bytes, algorithm: KeyAlgorithm, message: bytes) -> bytes:
        self._require(key_id, SIGN)
        material = self._material(key_id)
        if algorithm is KeyAlgorithm.EC_P256:
            r, s = decode_dss_signature(material.sign(message, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return material.sign(message)

    def _aes(self, key_id: bytes) -> bytes:
        material = self._material(key_id)
        if not isinstance(material, bytes):
            raise WrongPurpose(f"key {key_id.hex()} is not an AES key")
        return material

    def encrypt_gcm(self, key_id: bytes, nonce: bytes, plaintext: bytes, aad: bytes, tag_bytes: int) -> bytes:
        self._require(key_id, ENCRYPT)
        return _gcm_encrypt(self._aes(key_id), nonce, plaintext, aad, tag_bytes)

    def decrypt_gcm(self, key_id: bytes, nonce: bytes, ciphertext: bytes, aad: bytes, tag_bytes: int) -> bytes:
        self._require(key_id, ENCRYPT)
        return _gcm_decrypt(self._aes(key_id), nonce, ciphertext, aad, tag_bytes)

    def wrap(self, kek_id: bytes, key_id: bytes) -> bytes:
        self._require(kek_id, WRAP)
        entry = self._entry(key_id)
        if not entry["extractable"]:
            raise SensitiveKeyRead(f"key {key_id.hex()} is not extractable; it cannot be wrapped")
        return aes_key_wrap(self._aes(kek_id), self._aes(key_id))

    def unwrap(
        self, kek_id: bytes, wrapped: bytes, key_id: bytes, label: str, algorithm: KeyAlgorithm, *,
        usage: frozenset[str], extractable: bool, persistent: bool = True,
    ) -> None:
        self._require(kek_id, WRAP)
        if algorithm.is_signing:
            raise InvalidKeyRequest("only AES keys are unwrapped into custody")
        try:
            value = aes_key_unwrap(self._aes(kek_id), wrapped)
        except InvalidUnwrap as exc:
            raise InvalidKeyRequest("the wrapped key does not unwrap under this key (RFC 3394 check failed)") from exc
        if len(value) * 8 != algorithm.bits:
            raise InvalidKeyRequest(f"unwrapped key is {len(value) * 8} bits, expected {algorithm.bits}")
        self._store(key_id, label, algorithm, value, usage=usage, extractable=extractable, local=False,
                    persistent=persistent)

    def use_session_copy(self, key_id: bytes) -> None:
        """Nothing to gain in software: keys are already in memory."""

    def export_value(self, key_id: bytes) -> bytes:
        if not self._entry(key_id)["extractable"]:
            raise SensitiveKeyRead(f"key {key_id.hex()} is not extractable; its value is not handed out")
        return self._aes(key_id)

    def read_attribute_value(self, key_id: bytes) -> bytes:
        raise SensitiveKeyRead(f"key {key_id.hex()} is sensitive; its value cannot be read")


def _gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes, tag_bytes: int) -> bytes:
    """AES-GCM with a truncated tag (NIST SP 800-38D §5.2.1.2); ``AESGCM`` only makes 16-byte tags, so use
    the lower-level cipher for DLMS's 12-byte tag."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)
    body = encryptor.update(plaintext) + encryptor.finalize()
    return body + encryptor.tag[:tag_bytes]


def _gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes, tag_bytes: int) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    body, tag = ciphertext[:-tag_bytes], ciphertext[-tag_bytes:]
    decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce, tag, min_tag_length=tag_bytes)).decryptor()
    decryptor.authenticate_additional_data(aad)
    try:
        return decryptor.update(body) + decryptor.finalize()
    except InvalidTag as exc:
        raise InvalidKeyRequest("GCM authentication failed: wrong key, nonce, additional data or tag") from exc
