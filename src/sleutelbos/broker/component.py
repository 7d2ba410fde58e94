"""How the composition root builds the broker component (see ``sleutelbos.stack``).

The broker needs no other component in-process (``REQUIRES = ()``); it registers its service as
``ctx.services["broker"]`` so that in-process components (ingest, console) call it without HTTP.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from sleutelbos.broker.api import BrokerApi
from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.service import BrokerService
from sleutelbos.broker.store import open_store

REQUIRES: tuple[str, ...] = ()


class BrokerComponent:
    name = "broker"

    def __init__(self, service: BrokerService, api: BrokerApi, announce: Any = None) -> None:
        self.service = service
        self.api = api
        self._announce = announce

    def routes(self) -> list[BaseRoute]:
        return self.api.routes()

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()


def build(ctx: Any) -> BrokerComponent:
    settings = ctx.settings
    store = open_store(settings.database_url_for("broker"), settings.broker_sqlite_synchronous)
    contexts = ContextStore(fetch_timeout_s=settings.context_fetch_timeout_s,
                            allow_private_networks=settings.context_fetch_private_networks)
    service = BrokerService(store, contexts)
    api = BrokerApi(service, max_body_bytes=settings.max_body_bytes, base_url=settings.base_url)
    ctx.services["broker"] = service
    return BrokerComponent(service, api, getattr(ctx, "announce", None))
