"""How the composition root builds the policy component (see ``sleutelbos.stack``).

It offers the :class:`~sleutelbos.policy.service.PolicyService` to the other components as
``ctx.services["policy"]`` (the PEP decides through it in-process) and serves the AuthZForce-compatible API.
Policy changes are recorded in the audit log first, so the component requires ``audit``; without an audit sink the
PDP still decides but every change is refused (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from sleutelbos.core.tasks import cancel_and_wait
from sleutelbos.policy import api
from sleutelbos.policy.service import PolicyService
from sleutelbos.policy.store import open_store

if TYPE_CHECKING:
    from sleutelbos.stack import StackContext

REQUIRES: tuple[str, ...] = ("audit",)

log = logging.getLogger("sleutelbos.policy")


class PolicyComponent:
    name = "policy"

    def __init__(self, ctx: StackContext, service: PolicyService) -> None:
        self.ctx = ctx
        self.service = service
        self._sync: asyncio.Task[None] | None = None

    def routes(self) -> list[BaseRoute]:
        return api.routes(self.service, self.ctx.settings.max_body_bytes)

    async def start(self) -> None:
        if self.service.audit_sink is None:
            self.service.audit_sink = self.ctx.audit_sink
        await self.service.start()
        self._sync = asyncio.create_task(self._sync_loop(), name="policy-sync")

    async def stop(self) -> None:
        await cancel_and_wait(self._sync)
        await self.service.stop()

    async def _sync_loop(self) -> None:
        """Pick up changes other workers made to the shared database."""
        interval = self.ctx.settings.policy_sync_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.service.sync()
            except Exception:
                log.exception("policy sync failed; the compiled PDPs stay as they are")


def build(ctx: StackContext) -> PolicyComponent:
    store = open_store(ctx.settings.database_url_for("policy"))
    service = PolicyService(store, ctx.audit_sink)
    ctx.services["policy"] = service
    return PolicyComponent(ctx, service)
