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

PROVIDES = "signers"  # the StackContext attribute this component fills
REQUIRES: tuple[str, ...] = ("audit",)  # at record time, through ContextAuditSink


class ContextAuditSink:
    """The stack's audit sink, looked up at record time.

    Custody is built before the audit log (so that the log's final checkpoint, at shutdown, can still be signed
    by a custody key that is closed after it), so the sink is found on the context when an action is recorded.
    No sink registered by then: refuse, so nothing unaudited happens."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    async def record(self, event: AuditEvent) -> AuditReceipt:
        sink = self._ctx.audit_sink
        if sink is None:
            raise AuditUnavailable(f"no audit sink is configured; {event.action} refused (fail closed)")
        return await sink.record(event)


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
    custody = open_custody(ctx.settings, ContextAuditSink(ctx), embedded=True)
    ctx.signers = custody
    ctx.services["custody"] = custody
    store = "PKCS#11 token " + custody.token_identity().label if custody.sovereign else "software key store"
    ctx.announce(f"custody: {store} (sovereign: {str(custody.sovereign).lower()})")
    return CustodyComponent(custody)
