"""How the composition root builds the audit component (see ``sleutelbos.stack``).

Audit is built first and registers itself as ``ctx.audit_sink``. Its checkpoint signer is looked up *when a
checkpoint is signed*: custody (built after audit) registers ``ctx.signers``, and from then on checkpoints are
signed by custody's ``audit-checkpoint`` key; until then — or in a stack without custody — by the software Ed25519
key in the data directory, which is not sovereign and says so.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute

from sleutelbos.audit.api import routes as audit_routes
from sleutelbos.audit.service import AuditLog
from sleutelbos.audit.software_signer import SoftwareSigner
from sleutelbos.audit.store import open_store
from sleutelbos.core.protocols import Signer
from sleutelbos.stack import StackContext

PROVIDES = "audit_sink"  # the StackContext attribute this component fills
REQUIRES: tuple[str, ...] = ()
CHECKPOINT_PURPOSE = "audit-checkpoint"


class AuditComponent:
    name = "audit"

    def __init__(self, log: AuditLog, ctx: StackContext) -> None:
        self.log = log
        self._ctx = ctx

    def routes(self) -> list[BaseRoute]:
        return audit_routes(self.log)

    async def start(self) -> None:
        await self.log.start()
        if self._ctx.signers is not None:
            # Create custody's checkpoint key now, its audit record awaited on this loop, so that the first
            # checkpoint never has to create a key (an audited action) from inside the log's own signing path.
            await self._ctx.signers.prepare_signer(CHECKPOINT_PURPOSE)

    async def stop(self) -> None:
        await self.log.stop()


def checkpoint_signer_source(ctx: StackContext) -> Callable[[], Signer]:
    """Custody's ``audit-checkpoint`` key if custody is wired (asked each time, so rotations apply), else the
    software key (created on first use, then kept)."""
    software: list[SoftwareSigner] = []

    def source() -> Signer:
        if ctx.signers is not None:
            return ctx.signers.signer_for(CHECKPOINT_PURPOSE)
        if not software:
            software.append(SoftwareSigner.load_or_create(ctx.settings.data_dir))
        return software[0]

    return source


def build(ctx: StackContext) -> AuditComponent:
    settings = ctx.settings
    log = AuditLog(
        open_store(settings.database_url_for("audit")),
        origin=settings.audit_origin,
        signer_source=checkpoint_signer_source(ctx),
        checkpoint_interval_s=settings.audit_checkpoint_interval_s,
        checkpoint_entries=settings.audit_checkpoint_entries,
    )
    ctx.audit_sink = log
    ctx.services["audit"] = log
    return AuditComponent(log, ctx)
