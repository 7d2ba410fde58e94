"""Purposes: what each key is for, and therefore which operations it may perform.

A key is made for one purpose and custody refuses any other use (NIST SP 800-57 Part 1 §5.2: one key, one
purpose). Signing purposes are free names chosen by the consumer (``identity-token``, ``audit-checkpoint``,
``tuf-root``, ``tuf-targets``, ``breakglass-officer:alice`` …). The four DLMS/COSEM purposes are fixed, after
IEC 62056-5-3 (DLMS Green Book) §9.2.5 "security keys": the master key (KEK) only wraps; the global unicast
and broadcast encryption keys only encrypt/decrypt; the authentication key only enters the GCM additional data
and is therefore created extractable — the recorded exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sleutelbos.custody.backend import ENCRYPT, SIGN, WRAP
from sleutelbos.custody.errors import InvalidKeyRequest, WrongPurpose
from sleutelbos.custody.models import KeyAlgorithm

DLMS_MASTER = "dlms-master"
DLMS_UNICAST = "dlms-unicast"
DLMS_BROADCAST = "dlms-broadcast"
DLMS_AUTHENTICATION = "dlms-authentication"
DLMS_PURPOSES = (DLMS_MASTER, DLMS_UNICAST, DLMS_BROADCAST, DLMS_AUTHENTICATION)
STORAGE = "custody-storage"
"""The token-resident AES-256 key that wraps per-meter keys for storage in the metadata database (note 0201)."""
RESERVED_PURPOSES = (*DLMS_PURPOSES, STORAGE)

AK_EXCEPTION = (
    "DLMS security suite 0 puts the authentication key into the AES-GCM additional data, so the head-end "
    "must hold it in memory (IEC 62056-5-3 §9.2.7.2.4); created extractable and unwrapped only into that process"
)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._:@-]{0,95}$")


@dataclass(frozen=True)
class PurposeRule:
    usage: frozenset[str]
    algorithms: tuple[KeyAlgorithm, ...]
    extractable_reason: str | None = None


_DLMS_RULES = {
    DLMS_MASTER: PurposeRule(frozenset({WRAP}), (KeyAlgorithm.AES_128, KeyAlgorithm.AES_256)),
    DLMS_UNICAST: PurposeRule(frozenset({ENCRYPT}), (KeyAlgorithm.AES_128, KeyAlgorithm.AES_256)),
    DLMS_BROADCAST: PurposeRule(frozenset({ENCRYPT}), (KeyAlgorithm.AES_128, KeyAlgorithm.AES_256)),
    DLMS_AUTHENTICATION: PurposeRule(frozenset(), (KeyAlgorithm.AES_128, KeyAlgorithm.AES_256), AK_EXCEPTION),
    STORAGE: PurposeRule(frozenset({WRAP}), (KeyAlgorithm.AES_256,)),
}


def check_purpose_name(purpose: str) -> str:
    if not _NAME.match(purpose):
        raise InvalidKeyRequest(
            f"invalid purpose {purpose!r}: lower-case letters, digits and . _ : @ - (at most 96 characters)"
        )
    return purpose


def rule_for(purpose: str, algorithm: KeyAlgorithm) -> PurposeRule:
    """The usage a new key for ``purpose`` gets; raises when the algorithm does not fit the purpose."""
    check_purpose_name(purpose)
    dlms = _DLMS_RULES.get(purpose)
    if dlms is not None:
        if algorithm not in dlms.algorithms:
            allowed = " or ".join(a.value for a in dlms.algorithms)
            raise InvalidKeyRequest(f"a {purpose} key must be {allowed}, not {algorithm.value}")
        return dlms
    if algorithm.is_signing:
        return PurposeRule(frozenset({SIGN}), (algorithm,))
    return PurposeRule(frozenset({ENCRYPT, WRAP}), (algorithm,))


def require(purpose: str, algorithm: KeyAlgorithm, operation: str, key_id: str) -> None:
    """Raise :class:`WrongPurpose` unless a key made for ``purpose`` may perform ``operation``."""
    allowed = rule_for(purpose, algorithm).usage
    if operation not in allowed:
        raise WrongPurpose(
            f"key {key_id} was made for {purpose!r} ({algorithm.value}) and may not {operation}"
        )
