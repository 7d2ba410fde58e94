"""Checkpoints as C2SP ``tlog-checkpoint`` signed notes (c2sp.org/tlog-checkpoint, c2sp.org/signed-note).

Body: origin line, decimal tree size, base64 root hash, each ending in a newline. Then a blank line and one
signature line per key: ``— <key name> base64(key ID ‖ signature)``.

Signature types (signed-note §"Signature types"), both through the :class:`~sleutelbos.core.Signer` protocol:

- ``0x01`` Ed25519 (``EdDSA``): RFC 8032 over the note text; key ID = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte key)[:4].
- ``0x02`` ECDSA (``ES256``, P-256) as transparency-dev/witness does it: ASN.1 DER signature over SHA-256 of the
  note text; key ID = SHA-256(DER SubjectPublicKeyInfo)[:4].

A verifier key ("vkey") is shared as ``<name>+<hex key ID>+base64(type byte ‖ public key)`` (the public key is the
32 raw bytes for Ed25519, the SPKI DER for ECDSA), as Go's ``sumdb/note`` and the witness ecosystem do.

Left out: extension lines (the spec does not recommend them; we never write them and reject them on parse),
cosignatures (0x04) and the other reserved types — signatures from unknown keys are ignored, as the spec requires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sleutelbos.audit.merkle import HASH_SIZE
from sleutelbos.core.errors import SleutelbosError
from sleutelbos.core.protocols import PublicKeyInfo, Signer

SIG_ED25519 = 0x01
SIG_ECDSA = 0x02
_DASH = "\u2014 "
MAX_SIGNATURES = 64


class CheckpointError(SleutelbosError):
    """A checkpoint or signed note that is malformed or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    """The note text of a tlog-checkpoint: origin, tree size and RFC 9162 root hash."""

    origin: str
    tree_size: int
    root_hash: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.tree_size}\n{base64.b64encode(self.root_hash).decode()}\n"

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint text has fewer than three lines")
        if len(lines) > 3:
            raise CheckpointError("checkpoint has extension lines, which this log never writes")
        origin, size_text, root_text = lines
        if not origin:
            raise CheckpointError("checkpoint origin is empty")
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            raise CheckpointError(f"checkpoint tree size {size_text!r} is not a decimal without leading zeroes")
        try:
            root = base64.b64decode(root_text, validate=True)
        except binascii.Error:
            raise CheckpointError("checkpoint root hash is not base64") from None
        if len(root) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, not {HASH_SIZE}")
        return cls(origin, int(size_text), root)


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted note key: name, 4-byte key ID, signature type and public key (see the module docstring)."""

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes  # Ed25519: 32 raw bytes; ECDSA: SPKI DER

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @property
    def algorithm(self) -> str:
        return "EdDSA" if self.sig_type == SIG_ED25519 else "ES256"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        parts = vkey.strip().split("+", 2)  # the base64 key may itself contain "+"
        if len(parts) != 3:
            raise CheckpointError("a verifier key is <name>+<hex key ID>+<base64 type‖key>")
        name, hex_id, b64 = parts
        try:
            key_id = bytes.fromhex(hex_id)
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise CheckpointError("verifier key ID or key is not hex/base64") from None
        if len(key_id) != 4 or not raw:
            raise CheckpointError("verifier key ID must be 4 bytes and the key non-empty")
        verifier = cls.for_key(name, raw[0], raw[1:])
        if verifier.key_id != key_id:
            raise CheckpointError("verifier key ID does not match its name and key")
        return verifier

    @classmethod
    def for_key(cls, name: str, sig_type: int, public_key: bytes) -> NoteVerifier:
        _check_key_name(name)
        if sig_type == SIG_ED25519:
            if len(public_key) != 32:
                raise CheckpointError("an Ed25519 note key is 32 bytes")
            key_id = hashlib.sha256(name.encode() + b"\n" + bytes([SIG_ED25519]) + public_key).digest()[:4]
        elif sig_type == SIG_ECDSA:
            try:
                key = serialization.load_der_public_key(public_key)
            except ValueError:
                raise CheckpointError("ECDSA note key is not a DER SubjectPublicKeyInfo") from None
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise CheckpointError("ECDSA note key is not an elliptic-curve key")
            key_id = hashlib.sha256(public_key).digest()[:4]
        else:
            raise CheckpointError(f"unsupported note signature type 0x{sig_type:02x}")
        return cls(name, key_id, sig_type, public_key)

    @classmethod
    def for_public_key(cls, name: str, info: PublicKeyInfo) -> NoteVerifier:
        """The note key of a ``Signer``'s public key (``EdDSA`` → 0x01, ``ES256`` → 0x02)."""
        if info.algorithm == "EdDSA":
            key = serialization.load_der_public_key(info.spki_der)
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return cls.for_key(name, SIG_ED25519, raw)
        if info.algorithm == "ES256":
            return cls.for_key(name, SIG_ECDSA, info.spki_der)
        raise CheckpointError(f"signer algorithm {info.algorithm!r} cannot sign notes (need EdDSA or ES256)")

    @classmethod
    def from_pem(cls, name: str, pem: bytes) -> NoteVerifier:
        key = serialization.load_pem_public_key(pem)
        spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if isinstance(key, ed25519.Ed25519PublicKey):
            return cls.for_public_key(name, PublicKeyInfo("pem", "EdDSA", spki))
        if isinstance(key, ec.EllipticCurvePublicKey):
            return cls.for_public_key(name, PublicKeyInfo("pem", "ES256", spki))
        raise CheckpointError("PEM key is neither Ed25519 nor an elliptic-curve key")

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            if self.sig_type == SIG_ED25519:
                ed25519.Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
            else:
                key = serialization.load_der_public_key(self.public_key)
                assert isinstance(key, ec.EllipticCurvePublicKey)
                key.verify(signature, text, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise CheckpointError("note key names must be non-empty, without spaces or '+'")


def load_verifier(spec: str, default_name: str) -> NoteVerifier:
    """``--key`` argument: a vkey string, or a file holding a vkey or a PEM public key (named ``default_name``)."""
    path = Path(spec)
    if path.is_file():
        content = path.read_bytes()
        if content.lstrip().startswith(b"-----BEGIN"):
            return NoteVerifier.from_pem(default_name, content)
        return NoteVerifier.from_vkey(content.decode().strip())
    return NoteVerifier.from_vkey(spec)


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer, key_name: str | None = None) -> tuple[str, NoteVerifier]:
    """The signed note for ``checkpoint`` (key name = origin by default) and the verifier key of its signer."""
    name = key_name or checkpoint.origin
    verifier = NoteVerifier.for_public_key(name, signer.public_key())
    text = checkpoint.body().encode()
    signature = signer.sign(text, "raw" if verifier.sig_type == SIG_ED25519 else "der")
    line = f"{_DASH}{name} {base64.b64encode(verifier.key_id + signature).decode()}\n"
    return checkpoint.body() + "\n" + line, verifier


def open_note(note: str, verifiers: list[NoteVerifier]) -> tuple[Checkpoint, NoteVerifier]:
    """Verify a signed checkpoint note (signed-note §"Signatures") and return its body and the key that signed it.

    Unknown keys are ignored; a known key whose signature fails rejects the whole note; at least one known key must
    have signed.
    """
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError("note contains control characters")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise CheckpointError("note has no blank line before its signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError("note has too many signatures")
    known = {(v.name, v.key_id): v for v in verifiers}
    good: NoteVerifier | None = None
    for line in lines:
        if not line.startswith(_DASH):
            raise CheckpointError("malformed signature line (must start with an em dash and a space)")
        try:
            name, b64 = line[len(_DASH) :].split(" ")
            blob = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise CheckpointError("malformed signature line") from None
        if len(blob) < 5:
            raise CheckpointError("signature is too short")
        verifier = known.get((name, blob[:4]))
        if verifier is None:
            continue
        if not verifier.verify(text.encode(), blob[4:]):
            raise CheckpointError(f"checkpoint signature by {name} ({blob[:4].hex()}) does not verify")
        good = good or verifier
    if good is None:
        raise CheckpointError("checkpoint is not signed by any trusted key")
    return Checkpoint.parse_body(text), good
