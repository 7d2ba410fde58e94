"""Key custody: keys made and used inside an HSM over PKCS#11, with an inventory read from the token.

Public surface (other components use only this, and mostly only through ``sleutelbos.core.SignerProvider``):

- :class:`KeyCustody` — the service: generate, rotate, destroy, sign/verify, AES-GCM, wrap/unwrap, the
  inventory, and the stack's ``SignerProvider`` (``signer_for(purpose)``, ``public_keys_for(purpose)``).
- :func:`open_custody` — build it from ``Settings`` and an ``AuditSink``;
  :func:`custody_for_tests` — the same for a test (SoftHSM2 token from the ``softhsm_token`` fixture's
  environment, or ``software=True``).
- the types and typed errors below.
"""

from sleutelbos.custody.errors import (
    CampaignError,
    CustodyError,
    HsmUnavailable,
    InvalidKeyRequest,
    KeyNotFound,
    KeyStateError,
    Pkcs11ModuleMissing,
    SensitiveKeyRead,
    TokenNotFound,
    WrongPin,
    WrongPurpose,
)
from sleutelbos.custody.keystores import custody_for_tests, open_custody
from sleutelbos.custody.models import InventoryEntry, KeyAlgorithm, KeyRecord, KeyState, TokenAttributes, TokenIdentity
from sleutelbos.custody.service import CustodySigner, KeyCustody

__all__ = [
    "CampaignError",
    "CustodyError",
    "CustodySigner",
    "HsmUnavailable",
    "InvalidKeyRequest",
    "InventoryEntry",
    "KeyAlgorithm",
    "KeyCustody",
    "KeyNotFound",
    "KeyRecord",
    "KeyState",
    "KeyStateError",
    "Pkcs11ModuleMissing",
    "SensitiveKeyRead",
    "TokenAttributes",
    "TokenIdentity",
    "TokenNotFound",
    "WrongPin",
    "WrongPurpose",
    "custody_for_tests",
    "open_custody",
]
