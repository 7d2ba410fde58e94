"""Issue 3's part of the broker component — "this issue makes the broker notify and remember": subscriptions with
HTTP/MQTT notifications, the temporal API, and the embedded MQTT broker, wired around the core's store, service and
API (``component.py`` calls this module; nothing here changes how the core handles entities).

* The entity store is wrapped in :class:`~sleutelbos.broker.notifications.changes.ObservedStore` before the core
  service gets it, so every committed write reaches the subscription matcher.
* Subscriptions and temporal queries run their own statements through
  :class:`~sleutelbos.broker.database.BrokerDatabase`.
* The in-process MQTT broker runs when ``mqtt_url`` is not set (see :mod:`sleutelbos.broker.mqtt_broker`).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.database import BrokerDatabase
from sleutelbos.broker.mqtt_broker import EmbeddedMqttBroker
from sleutelbos.broker.notifications.changes import ObservedStore
from sleutelbos.broker.notifications.dispatcher import Dispatcher
from sleutelbos.broker.store import EntityStore
from sleutelbos.broker.subscriptions.service import SubscriptionService
from sleutelbos.broker.subscriptions.store import SubscriptionStore
from sleutelbos.broker.temporal.service import TemporalService


class NotifyAndRemember:
    def __init__(self, store: EntityStore, contexts: ContextStore, settings: Any, services: dict[str, Any]) -> None:
        self.inner_store = store
        self.settings = settings
        self.database = BrokerDatabase(store)
        self.dispatcher = Dispatcher(
            SubscriptionStore(self.database),
            retry_base_s=settings.broker_notification_retry_base_s,
            retry_max_s=settings.broker_notification_retry_max_s,
            timeout_s=settings.broker_notification_timeout_s,
            threaded=settings.broker_notifier_thread)
        self.subscriptions = SubscriptionService(self.dispatcher.store, self.dispatcher, contexts, store)
        self.store = ObservedStore(store, self.subscriptions)
        self.temporal = TemporalService(self.database, self.store, settings)
        self.mqtt: EmbeddedMqttBroker | None = None
        if settings.mqtt_url is None and settings.mqtt_port is not None:
            self.mqtt = EmbeddedMqttBroker(port=settings.mqtt_port)
        self.services = services
        self._api: list[BaseRoute] = []

    def bind(self, core_api: Any) -> None:
        from sleutelbos.broker.subscriptions.api import SubscriptionApi
        from sleutelbos.broker.temporal.api import TemporalApi

        self._api = [*SubscriptionApi(core_api, self.subscriptions).routes(),
                     *TemporalApi(core_api, self.temporal).routes()]

    def routes(self) -> list[BaseRoute]:
        return self._api

    async def start(self) -> None:
        """After the core store is open (its migrations include ours)."""
        if self.mqtt is not None:
            await self.mqtt.start()
            self.services["mqtt_url"] = self.mqtt.url
        await self.database.open()
        await self.temporal.start()
        self.dispatcher.start()
        await self.subscriptions.start()

    async def stop(self) -> None:
        await self.subscriptions.stop()
        await self.dispatcher.stop()
        await self.temporal.stop()
        await self.database.close()
        if self.mqtt is not None:
            await self.mqtt.stop()
