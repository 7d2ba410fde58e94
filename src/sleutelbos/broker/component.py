"""How the composition root builds the broker component (see ``sleutelbos.stack``).

The broker needs no other component in-process (``REQUIRES = ()``); it registers its service as
``ctx.services["broker"]`` so that in-process components (ingest, console) call it without HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from sleutelbos.broker.api import BrokerApi
from sleutelbos.broker.batch_workers import BatchWorkers
from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.hotpaths import BrokerHotPaths
from sleutelbos.broker.notify_and_remember import NotifyAndRemember
from sleutelbos.broker.service import BrokerService
from sleutelbos.broker.store import open_store
from sleutelbos.core.collector import tune_garbage_collector

REQUIRES: tuple[str, ...] = ()
log = logging.getLogger("sleutelbos.broker")


class BrokerComponent:
    name = "broker"

    def __init__(self, service: BrokerService, api: BrokerApi, announce: Any = None,
                 notify_and_remember: NotifyAndRemember | None = None,
                 batch_workers: BatchWorkers | None = None) -> None:
        self.service = service
        self.api = api
        self._announce = announce
        self.notify_and_remember = notify_and_remember  # issue 3: subscriptions, temporal API, embedded MQTT
        self.batch_workers = batch_workers  # SQLite: batches taken apart on more cores (decision 0730)
        api.batch_workers = batch_workers

    def routes(self) -> list[BaseRoute]:
        extra = self.notify_and_remember.routes() if self.notify_and_remember else []
        # the core's routes first (the hot write routes are matched without walking issue 3's), their paths do not
        # overlap; the core's catch-all 404 last
        return [*self.api.routes(), *extra, *self.api.fallback_routes()]

    def middleware(self) -> list[Middleware]:
        """The hot paths ahead of Starlette's router (``hotpaths.BrokerHotPaths``); after :meth:`routes`."""
        if not self.api.endpoints:
            self.api.routes()
        return [Middleware(BrokerHotPaths, entities=self.api.endpoints["/entities"],
                           entity=self.api.endpoints["/entities/{entityId:path}"],
                           attrs=self.api.endpoints["/entities/{entityId:path}/attrs"])]

    async def start(self) -> None:
        await self.service.start()
        tune_garbage_collector()
        if self.notify_and_remember is not None:
            await self.notify_and_remember.start()
        if self.batch_workers is not None:  # after the store's migrations: the workers open a current file
            await self.batch_workers.start()

    async def stop(self) -> None:
        if self.batch_workers is not None:  # their batches answered before the rest stops
            await self.batch_workers.stop()
        if self.notify_and_remember is not None:
            await self.notify_and_remember.stop()
        await self.service.stop()


def build(ctx: Any) -> BrokerComponent:
    settings = ctx.settings
    store = open_store(settings.database_url_for("broker"), settings.broker_sqlite_synchronous,
                       settings.broker_sqlite_page_size)
    contexts = ContextStore(fetch_timeout_s=settings.context_fetch_timeout_s,
                            allow_private_networks=settings.context_fetch_private_networks)
    part2 = NotifyAndRemember(store, contexts, settings, ctx.services)  # wraps the store with the change feed
    service = BrokerService(part2.store, contexts)  # type: ignore[arg-type]
    api = BrokerApi(service, max_body_bytes=settings.max_body_bytes, base_url=settings.base_url)
    part2.bind(api)
    ctx.services["broker"] = service
    ctx.services["broker.subscriptions"] = part2.subscriptions
    ctx.services["broker.temporal"] = part2.temporal
    workers = _batch_workers(store, settings.broker_batch_workers, part2)
    if workers is not None:
        ctx.services["broker.batch_workers"] = workers
    return BrokerComponent(service, api, getattr(ctx, "announce", None), part2, workers)


def _batch_workers(store: Any, processes: int, part2: NotifyAndRemember) -> BatchWorkers | None:
    """``broker_batch_workers`` processes on a SQLite file; none elsewhere (said once: PostgreSQL's own server is
    the bound there, decision 0700, and an in-memory database is one process's)."""
    if processes <= 0:
        return None
    from sleutelbos.broker.store.sqlite import SqliteEntityStore

    if not isinstance(store, SqliteEntityStore) or store.path is None:
        log.warning("broker_batch_workers=%d is for a SQLite file; this broker's process takes the batches", processes)
        return None
    return BatchWorkers(store, processes, part2.subscriptions)
