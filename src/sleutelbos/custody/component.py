"""How the composition root builds the custody component (see ``sleutelbos.stack``).

``build`` opens the key store the settings call for — the configured PKCS#11 module, else SoftHSM2 under the data
directory when installed, else the software key store — and registers the service as ``ctx.signers`` (the
stack's :class:`~sleutelbos.core.protocols.SignerProvider`) and ``ctx.services["custody"]``. Building is
synchronous and leaves custody usable at once, so components started before custody can already sign.

Without an audit sink on the context every audited key operation fails closed (:class:`AuditUnavailable`);
signing with existing keys still works, since per-message operations are counted, not audited.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from sleutelbos.core.protocols import AuditEvent, AuditReceipt, AuditUnavailable
from sleutelbos.custody.keystores import open_custody
from sleutelbos.custody.service import KeyCustody

REQUIRES: tuple[str, ...] = ("audit",)


class NoAuditSink:
    """Stands in when no audit component registered a sink: refuses, so nothing unaudited happens."""

    async def record(self, event: AuditEvent) -> AuditReceipt:
        raise AuditUnavailable(f"no audit sink is configured; {event.action} refused (fail closed)")


class CustodyComponent:
    name = "custody"

    def __init__(self, custody: KeyCustody) -> None:
        self.custody = custody

    def routes(self) -> list[BaseRoute]:
        from sleutelbos.custody.api import custody_routes

        return custody_routes(self.custody)

    async def start(self) -> None:
        self.custody.bind_loop()

    async def stop(self) -> None:
        self.custody.close()


def build(ctx: Any) -> CustodyComponent:
    custody = open_custody(ctx.settings, ctx.audit_sink or NoAuditSink(), embedded=True)
    ctx.signers = custody
    ctx.services["custody"] = custody
    store = "PKCS#11 token " + custody.token_identity().label if custody.sovereign else "software key store"
    ctx.announce(f"custody: {store} (sovereign: {str(custody.sovereign).lower()})")
    return CustodyComponent(custody)
