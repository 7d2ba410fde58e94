"""How the composition root builds the broker component (see ``sleutelbos.stack``).

The broker needs no other component in-process (``REQUIRES = ()``); it registers its service as
``ctx.services["broker"]`` so that in-process components (ingest, console) call it without HTTP.
"""

from __future__ import annotations

import gc
from typing import Any

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from sleutelbos.broker.api import BrokerApi
from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.notify_and_remember import NotifyAndRemember
from sleutelbos.broker.readpath import BrokerReadPath
from sleutelbos.broker.service import BrokerService
from sleutelbos.broker.store import open_store

REQUIRES: tuple[str, ...] = ()

#: Young-generation threshold of the cyclic garbage collector while the broker runs (CPython's default is 700).
GC_GEN0_THRESHOLD = 20_000
_gc_tuned = False


def tune_gc() -> None:
    """Cheaper garbage collection for the write path (decision 0505). A 1,000-entity batch allocates ~20,000
    short-lived dicts and lists, none of them in reference cycles, so CPython's default (a young-generation pass
    every 700 allocations, each older pass walking every live object) ran collections that found nothing many
    times per batch: ~10 % of a batch upsert's CPU. After start-up the long-lived objects (modules, compiled
    contexts, routes) are frozen out of the collector's walks, and the young generation is collected every
    20,000 allocations. Cycles are still collected, only later; process-wide, so it also applies to the other
    components of ``sleutelbos up``, which allocate the same way. Once per process (a test run starts many
    brokers; what is frozen is never collected)."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gc.get_threshold()[0]), gen1, gen2)


class BrokerComponent:
    name = "broker"

    def __init__(self, service: BrokerService, api: BrokerApi, announce: Any = None,
                 notify_and_remember: NotifyAndRemember | None = None) -> None:
        self.service = service
        self.api = api
        self._announce = announce
        self.notify_and_remember = notify_and_remember  # issue 3: subscriptions, temporal API, embedded MQTT

    def routes(self) -> list[BaseRoute]:
        extra = self.notify_and_remember.routes() if self.notify_and_remember else []
        # the core's routes first (the hot write routes are matched without walking issue 3's), their paths do not
        # overlap; the core's catch-all 404 last
        return [*self.api.routes(), *extra, *self.api.fallback_routes()]

    def middleware(self) -> list[Middleware]:
        """The read path ahead of Starlette's router (``readpath.BrokerReadPath``); after :meth:`routes`."""
        if not self.api.endpoints:
            self.api.routes()
        return [Middleware(BrokerReadPath, entities=self.api.endpoints["/entities"],
                           entity=self.api.endpoints["/entities/{entityId:path}"])]

    async def start(self) -> None:
        await self.service.start()
        tune_gc()
        if self.notify_and_remember is not None:
            await self.notify_and_remember.start()

    async def stop(self) -> None:
        if self.notify_and_remember is not None:
            await self.notify_and_remember.stop()
        await self.service.stop()


def build(ctx: Any) -> BrokerComponent:
    settings = ctx.settings
    store = open_store(settings.database_url_for("broker"), settings.broker_sqlite_synchronous)
    contexts = ContextStore(fetch_timeout_s=settings.context_fetch_timeout_s,
                            allow_private_networks=settings.context_fetch_private_networks)
    part2 = NotifyAndRemember(store, contexts, settings, ctx.services)  # wraps the store with the change feed
    service = BrokerService(part2.store, contexts)  # type: ignore[arg-type]
    api = BrokerApi(service, max_body_bytes=settings.max_body_bytes, base_url=settings.base_url)
    part2.bind(api)
    ctx.services["broker"] = service
    ctx.services["broker.subscriptions"] = part2.subscriptions
    ctx.services["broker.temporal"] = part2.temporal
    return BrokerComponent(service, api, getattr(ctx, "announce", None), part2)
