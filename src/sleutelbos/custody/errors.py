"""Typed errors of key custody.

Each says what was wrong and is raised *before* anything changed: a wrong PIN, a module that is not there, a token
that cannot be found, a key that does not exist, a key used for a purpose it was not made for, an attempt to read a
sensitive key's value. :class:`HsmUnavailable` is the fail-closed signal: every dependent operation raises it.
"""

from __future__ import annotations

from sleutelbos.core.errors import SleutelbosError


class CustodyError(SleutelbosError):
    """Root of custody's errors; ``status`` is the HTTP status the API maps it to."""

    status = 400
    code = "custody_error"


class Pkcs11ModuleMissing(CustodyError):
    """The configured PKCS#11 module (``SLEUTELBOS_PKCS11_MODULE``) cannot be loaded."""

    status = 503
    code = "pkcs11_module_missing"


class TokenNotFound(CustodyError):
    """No token with the configured label (``SLEUTELBOS_PKCS11_TOKEN``) is present."""

    status = 503
    code = "token_not_found"


class WrongPin(CustodyError):
    """The token refused the user PIN (or the PIN is locked / missing)."""

    status = 503
    code = "wrong_pin"


class HsmUnavailable(CustodyError):
    """The token stopped answering (removed, session lost, device error): fail closed."""

    status = 503
    code = "hsm_unavailable"


class KeyNotFound(CustodyError):
    """No key with this id (or no active key for this purpose) exists."""

    status = 404
    code = "key_not_found"


class WrongPurpose(CustodyError):
    """The key was made for another purpose or operation (e.g. a DLMS AK asked to sign firmware)."""

    status = 403
    code = "wrong_purpose"


class SensitiveKeyRead(CustodyError):
    """Someone asked for the value of a key that is sensitive or not extractable; the token refuses, so do we."""

    status = 403
    code = "sensitive_key_read"


class KeyStateError(CustodyError):
    """The key's NIST SP 800-57 state forbids the operation (e.g. signing with a deactivated key)."""

    status = 409
    code = "key_state"


class InvalidKeyRequest(CustodyError):
    """A request is malformed: unknown algorithm, bad purpose name, bad nonce length, …"""

    status = 400
    code = "invalid_request"


class CampaignError(CustodyError):
    """A rotation campaign cannot start or continue as asked."""

    status = 409
    code = "campaign_error"
