"""The software checkpoint key used where custody (the HSM) is not wired: an Ed25519 key in the data directory.

This is the one place in the audit component that holds raw private key material. The key file is created with
mode 0600 and never logged; the signer says ``sovereign = False`` so that the assurance truth test reports it for
what it is. When ``ctx.signers`` is wired, checkpoints are signed by custody's ``audit-checkpoint`` key instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sleutelbos.core.errors import ConfigurationError
from sleutelbos.core.protocols import PublicKeyInfo, SignatureEncoding

KEY_FILE = "audit-checkpoint-ed25519.pem"


class SoftwareSigner:
    """An Ed25519 :class:`~sleutelbos.core.Signer` whose private key lives in a 0600 file (not sovereign)."""

    algorithm = "EdDSA"
    sovereign = False

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self._key = private_key
        self._spki = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._key_id = "audit-sw-" + hashlib.sha256(self._spki).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, message: bytes, encoding: SignatureEncoding = "raw") -> bytes:
        if encoding != "raw":
            raise ConfigurationError("Ed25519 signatures have only the raw encoding")
        return self._key.sign(message)

    def public_key(self) -> PublicKeyInfo:
        return PublicKeyInfo(self._key_id, "EdDSA", self._spki)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SoftwareSigner:
        """Load the key from ``data_dir``, creating it (0600, exclusive create) on first use."""
        path = data_dir / KEY_FILE
        if path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise ConfigurationError(f"{path} is readable by others (mode {mode:o}); it must be 0600")
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ed25519.Ed25519PrivateKey):
                raise ConfigurationError(f"{path} does not hold an Ed25519 private key")
            return cls(key)
        data_dir.mkdir(parents=True, exist_ok=True)
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return cls.load_or_create(data_dir)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        return cls(key)
