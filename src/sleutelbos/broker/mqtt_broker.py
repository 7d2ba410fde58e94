"""The in-process MQTT broker of the embedded stack (``sleutelbos up``): amqtt (MQTT 3.1.1) on
``127.0.0.1:mqtt_port`` (default 1884, so that it does not clash with a system Mosquitto on 1883), started and
stopped with the broker component when ``mqtt_url`` is not set. Meters (ingest) publish to it and MQTT
notification endpoints can point at it (``mqtt://127.0.0.1:1884/topic``).

If the port is taken (another stack on the machine), it falls back to a free port and says so in the log; the URL
in force is :attr:`EmbeddedMqttBroker.url` (and ``ctx.services["mqtt_url"]`` for in-process components).
Left out: MQTT 5 (amqtt speaks 3.1.1 only — set ``mqtt_url`` to a Mosquitto for MQTT 5 endpoints), TLS, auth.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sleutelbos.broker.mqtt")


class EmbeddedMqttBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1884) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        try:
            await self._start(self.port)
        except OSError as exc:
            log.warning("embedded MQTT port taken, using a free one", extra={"port": self.port, "error": str(exc)})
            await self._start(0)

    async def _start(self, port: int) -> None:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):  # their per-connection info lines would drown the stack's log
            logging.getLogger(name).setLevel(logging.WARNING)

        config = {"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as exc:
            raise OSError(str(exc)) from exc
        self._broker = broker
        server = broker._servers["default"].instance  # amqtt keeps the asyncio server here; only the bound port is read
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
