"""Shared ground for every component: settings, errors, protocols, logging, database URLs, HTTP helpers.

``core`` imports no component. The small protocols here (``Signer``, ``AuditSink``) are how components that
would otherwise import each other in a cycle talk: the composition root (``sleutelbos.stack``) wires them.
"""

from sleutelbos.core.errors import SleutelbosError
from sleutelbos.core.protocols import (
    Actor,
    AuditEvent,
    AuditReceipt,
    AuditSink,
    AuditUnavailable,
    Signer,
    SignerProvider,
)
from sleutelbos.core.settings import Settings, load_settings

__all__ = [
    "Actor",
    "AuditEvent",
    "AuditReceipt",
    "AuditSink",
    "AuditUnavailable",
    "Settings",
    "Signer",
    "SignerProvider",
    "SleutelbosError",
    "load_settings",
]
