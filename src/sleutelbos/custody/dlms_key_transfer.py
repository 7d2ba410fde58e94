"""The DLMS/COSEM key-change payload: the parameter of Security Setup (interface class 64) method 2,
``global_key_transfer``.

IEC 62056-6-2 (DLMS "Blue Book") §4.4.7, Security setup, method 2::

    key_transfer_data ::= array key_data
    key_data ::= structure { key_id: enum, key_wrapped: octet-string }
    key_id: (0) global unicast encryption key, (1) global broadcast encryption key, (2) authentication key,
            (3) master key (KEK, from version 1 of the class)

Each new key is wrapped under the meter's master key (KEK) with the AES key wrap of RFC 3394 (IEC 62056-5-3
§9.2.3.3.4 "key transport"). The data is in the A-XDR encoding of COSEM ``Data`` (IEC 62056-6-2 §4.1.5 / the
"Green Book" ``Data`` CHOICE): array = tag 1, structure = tag 2, octet-string = tag 9, enum = tag 22, lengths
and element counts as A-XDR variable-length integers. Left out: the ACTION-Request APDU around it (the
head-end's xDLMS layer builds that) and the key agreement method 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from sleutelbos.custody.errors import InvalidKeyRequest

SECURITY_SETUP_CLASS_ID = 64
GLOBAL_KEY_TRANSFER_METHOD = 2

TAG_ARRAY = 0x01
TAG_STRUCTURE = 0x02
TAG_OCTET_STRING = 0x09
TAG_ENUM = 0x16


class DlmsKeyId(IntEnum):
    GLOBAL_UNICAST_ENCRYPTION = 0
    GLOBAL_BROADCAST_ENCRYPTION = 1
    AUTHENTICATION = 2
    MASTER = 3


class DlmsEncodingError(InvalidKeyRequest):
    """The bytes are not a well-formed ``key_transfer_data``."""


@dataclass(frozen=True)
class KeyData:
    key_id: DlmsKeyId
    key_wrapped: bytes


def _length(n: int) -> bytes:
    """A-XDR variable-length integer (short form below 128, else 0x80|count then big-endian bytes)."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_key_transfer(items: list[KeyData]) -> bytes:
    if not items:
        raise DlmsEncodingError("key_transfer_data needs at least one key")
    out = bytearray([TAG_ARRAY]) + _length(len(items))
    for item in items:
        if len(item.key_wrapped) < 24 or len(item.key_wrapped) % 8:
            raise DlmsEncodingError("a wrapped AES key is at least 24 bytes and a multiple of 8 (RFC 3394)")
        out += bytes([TAG_STRUCTURE, 2, TAG_ENUM, int(item.key_id), TAG_OCTET_STRING])
        out += _length(len(item.key_wrapped)) + item.key_wrapped
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise DlmsEncodingError("key_transfer_data ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def length(self) -> int:
        first = self.byte()
        if first < 0x80:
            return first
        count = first & 0x7F
        if not 1 <= count <= 4:
            raise DlmsEncodingError("bad A-XDR length")
        return int.from_bytes(bytes(self.byte() for _ in range(count)), "big")

    def expect(self, tag: int, what: str) -> None:
        got = self.byte()
        if got != tag:
            raise DlmsEncodingError(f"expected {what} (tag {tag}), found tag {got} at offset {self.pos - 1}")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlmsEncodingError("octet-string runs past the end")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def decode_key_transfer(data: bytes) -> list[KeyData]:
    reader = _Reader(data)
    reader.expect(TAG_ARRAY, "array")
    items: list[KeyData] = []
    for _ in range(reader.length()):
        reader.expect(TAG_STRUCTURE, "structure")
        if reader.length() != 2:
            raise DlmsEncodingError("key_data is a structure of two elements")
        reader.expect(TAG_ENUM, "enum key_id")
        raw_id = reader.byte()
        try:
            key_id = DlmsKeyId(raw_id)
        except ValueError as exc:
            raise DlmsEncodingError(f"unknown key_id {raw_id}") from exc
        reader.expect(TAG_OCTET_STRING, "octet-string key_wrapped")
        items.append(KeyData(key_id, reader.take(reader.length())))
    if reader.pos != len(data):
        raise DlmsEncodingError("trailing bytes after key_transfer_data")
    return items
