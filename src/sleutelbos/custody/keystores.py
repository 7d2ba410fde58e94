"""Choosing and opening the key store from settings, and building the custody service.

Order (``custody_key_store = auto``): the configured PKCS#11 module (``SLEUTELBOS_PKCS11_MODULE``) — a fault
there is an error, never a silent fallback; else, in the embedded stack, SoftHSM2 under the data directory when
installed; else the software key store, whose keys say ``sovereign: false``.

For other components' tests::

    from sleutelbos.custody import custody_for_tests
    custody = custody_for_tests(tmp_path, audit_sink)                 # SoftHSM2 token from SLEUTELBOS_PKCS11_*
    custody = custody_for_tests(tmp_path, audit_sink, software=True)  # no HSM at all
    signer = custody.signer_for("identity-token")

With the ``softhsm_token`` fixture active, the ``SLEUTELBOS_PKCS11_*`` environment it sets is picked up.
"""

from __future__ import annotations

from pathlib import Path

from sleutelbos.core.errors import ConfigurationError
from sleutelbos.core.protocols import AuditSink
from sleutelbos.core.settings import Settings
from sleutelbos.custody.backend import KeyBackend
from sleutelbos.custody.errors import WrongPin
from sleutelbos.custody.pkcs11_token import Pkcs11Token
from sleutelbos.custody.service import KeyCustody
from sleutelbos.custody.softhsm import ensure_embedded_token
from sleutelbos.custody.software_store import SoftwareKeyStore
from sleutelbos.custody.store import KeyMetadataStore


def configured_pin(settings: Settings) -> str:
    if settings.pkcs11_pin is not None:
        return settings.pkcs11_pin.get_secret_value()
    if settings.pkcs11_pin_file is not None:
        try:
            return settings.pkcs11_pin_file.read_text().strip()
        except OSError as exc:
            raise WrongPin(f"cannot read the PIN file {settings.pkcs11_pin_file} ({exc.strerror})") from exc
    raise WrongPin("no PKCS#11 user PIN configured (SLEUTELBOS_PKCS11_PIN or SLEUTELBOS_PKCS11_PIN_FILE)")


def open_key_store(settings: Settings, *, embedded: bool = True) -> KeyBackend:
    """The key store the settings call for (see the module docstring for the order)."""
    mode = settings.custody_key_store
    if mode == "software":
        return SoftwareKeyStore(settings.data_dir / "custody" / "software-keystore")
    if settings.pkcs11_module:
        return Pkcs11Token(settings.pkcs11_module, settings.pkcs11_token, configured_pin(settings))
    if embedded:
        token = ensure_embedded_token(settings.data_dir, settings.pkcs11_token)
        if token is not None:
            return Pkcs11Token(token.module, token.label, token.pin)
    if mode == "pkcs11":
        raise ConfigurationError("custody_key_store=pkcs11 but no PKCS#11 module is configured or installed")
    return SoftwareKeyStore(settings.data_dir / "custody" / "software-keystore")


def open_custody(settings: Settings, audit: AuditSink, *, embedded: bool = True) -> KeyCustody:
    """The custody service on the key store and metadata database the settings name."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    backend = open_key_store(settings, embedded=embedded)
    store = KeyMetadataStore(settings.database_url_for("custody"))
    return KeyCustody(
        backend, store, audit, custodian=settings.operator_name, jurisdiction=settings.hsm_jurisdiction
    )


def custody_for_tests(
    data_dir: Path, audit: AuditSink, *, software: bool = False, database_url: str | None = None
) -> KeyCustody:
    """A custody service for a test: the SoftHSM2 token named by ``SLEUTELBOS_PKCS11_*`` (the ``softhsm_token``
    fixture sets them), or the software key store with ``software=True``; metadata in ``data_dir``."""
    overrides: dict[str, object] = {"data_dir": data_dir}
    if software:
        overrides["custody_key_store"] = "software"
    if database_url:
        overrides["custody_database_url"] = database_url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    return open_custody(settings, audit, embedded=False)
