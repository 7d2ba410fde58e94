"""MQTT binding of notifications (ETSI GS CIM 009 v1.8, clause 7.4 / annex on MQTT notification): the endpoint is
``mqtt://[user:pass@]host[:port]/topic`` or ``mqtts://`` (TLS, default port 8883); ``notifierInfo`` ``MQTT-Version``
(``mqtt3.1.1`` default, ``mqtt5.0``) and ``MQTT-QoS`` (0 default, 1, 2); the message published on the topic is
``{"metadata": {headers}, "body": {notification}}``.

One connected client per (host, port, credentials, version, TLS), reused across notifications and reconnected after a
failure; a lock per client serialises publishes on it. Credentials come from the URI and are never logged.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import orjson

from sleutelbos.broker.notifications.delivery import DeliveryFailed, Message


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    version: str
    topic: str
    qos: int

    @property
    def connection_key(self) -> tuple[Any, ...]:
        return (self.host, self.port, self.tls, self.username, self.password, self.version)


def mqtt_target(uri: str, version: str = "mqtt3.1.1", qos: str = "0") -> MqttTarget:
    parts = urlsplit(uri)
    tls = parts.scheme.lower() == "mqtts"
    return MqttTarget(
        host=parts.hostname or "localhost", port=parts.port or (8883 if tls else 1883), tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        version=version, topic=unquote(parts.path.lstrip("/")), qos=int(qos))


class _Connection:
    def __init__(self, target: MqttTarget, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.lock = asyncio.Lock()
        self.client: aiomqtt.Client | None = None

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        async with self.lock:
            try:
                if self.client is None:
                    t = self.target
                    client = aiomqtt.Client(
                        t.host, t.port, username=t.username, password=t.password, timeout=self.timeout_s,
                        protocol=aiomqtt.ProtocolVersion.V5 if t.version == "mqtt5.0" else aiomqtt.ProtocolVersion.V311,
                        tls_context=ssl.create_default_context() if t.tls else None)
                    await asyncio.wait_for(client.__aenter__(), self.timeout_s)
                    self.client = client
                # aiomqtt's own timeout (MqttError when it passes) rather than asyncio.wait_for, which wraps the
                # publish in a task of its own: one event-loop iteration less per notification.
                await self.client.publish(topic, payload, qos=qos, timeout=self.timeout_s)
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                await self.close()
                raise DeliveryFailed(f"MQTT {self.target.host}:{self.target.port}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except Exception:
                return


class MqttSender:
    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._connections: dict[tuple[Any, ...], _Connection] = {}

    async def send(self, uri: str, message: Message, version: str = "mqtt3.1.1", qos: str = "0") -> None:
        target = mqtt_target(uri, version, qos)
        conn = self._connections.get(target.connection_key)
        if conn is None:
            conn = self._connections[target.connection_key] = _Connection(target, self.timeout_s)
        payload = orjson.dumps({"metadata": message.headers, "body": message.body})
        await conn.publish(target.topic, payload, target.qos)

    async def close(self) -> None:
        for conn in self._connections.values():
            await conn.close()
        self._connections.clear()
