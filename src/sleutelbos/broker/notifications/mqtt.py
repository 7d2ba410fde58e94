"""MQTT binding of notifications (ETSI GS CIM 009 v1.8, clause 7.4 / annex on MQTT notification): the endpoint is
``mqtt://[user:pass@]host[:port]/topic`` or ``mqtts://`` (TLS, default port 8883); ``notifierInfo`` ``MQTT-Version``
(``mqtt3.1.1`` default, ``mqtt5.0``) and ``MQTT-QoS`` (0 default, 1, 2); the message published on the topic is
``{"metadata": {headers}, "body": {notification}}``.

One connected client per (host, port, credentials, version, TLS), reused across notifications and reconnected after a
failure; a lock per client serialises publishes on it. Credentials come from the URI and are never logged.

MQTT 3.1.1 at QoS 0 (the defaults) goes through :class:`_Qos0Connection`, a minimal publisher on an asyncio stream
(decision 0611): a publish is one ``transport.write`` of the PUBLISH packet, done in the caller's step of the
event loop. Through aiomqtt (paho-mqtt driven by the loop's reader/writer callbacks) a QoS 0 publish took three loop
iterations — paho queues the packet and registers a writer, the writer callback sends it and resolves a future, the
publishing task resumes — and on the notifier thread each iteration has to win the GIL back from the write path (up
to the 5 ms switch interval): that made the Mosquitto delay's p99 four times HTTP's. QoS 1 and 2 (which wait for the
broker's acknowledgement) and MQTT 5.0 stay on aiomqtt.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
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


_MAX_REMAINING = 268_435_455


def _length(n: int) -> bytes:
    """MQTT "remaining length": 7 bits a byte, high bit set on every byte but the last (at most 4 bytes)."""
    if n > _MAX_REMAINING:
        raise ValueError(f"an MQTT packet holds at most {_MAX_REMAINING} bytes, this one needs {n}")
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str16(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("an MQTT string (topic, client id, user name, password) holds at most 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, username: str | None, password: str | None, keepalive: int) -> bytes:
    """MQTT 3.1.1 CONNECT (clause 3.1): clean session, optional user name and password."""
    flags = 0x02
    if username is not None:
        flags |= 0x80 | (0x40 if password is not None else 0)  # 3.1.1: no password without a user name
    body = _str16("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + _str16(client_id)
    if username is not None:
        body += _str16(username)
        if password is not None:
            body += _str16(password)
    return b"\x10" + _length(len(body)) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    """MQTT 3.1.1 PUBLISH at QoS 0 (clause 3.3): no packet identifier, nothing comes back."""
    body = _str16(topic)
    return b"\x30" + _length(len(body) + len(payload)) + body + payload


_PINGREQ = b"\xc0\x00"


class _Qos0Connection:
    """One MQTT 3.1.1 connection that only publishes at QoS 0 (see module docstring).

    A reader task consumes what the broker sends (PINGRESP) and notices the connection's end; a PINGREQ goes out
    when nothing was written for half the keep-alive. A failed or closed connection is reopened by the next publish;
    a QoS 0 message written to a connection that the broker had already dropped is lost, as with any QoS 0 client."""

    KEEPALIVE_S = 60

    def __init__(self, target: MqttTarget, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_write = 0.0

    async def _open(self) -> asyncio.StreamWriter:
        t = self.target
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            t.host, t.port, ssl=ssl.create_default_context() if t.tls else None), self.timeout_s)
        try:
            writer.write(connect_packet(f"sleutelbos-{uuid.uuid4().hex[:16]}", t.username, t.password,
                                        self.KEEPALIVE_S))
            connack = await asyncio.wait_for(reader.readexactly(4), self.timeout_s)
        except BaseException:
            writer.close()
            raise
        if connack[0] != 0x20 or connack[3] != 0:
            writer.close()
            raise DeliveryFailed(f"MQTT {t.host}:{t.port}: connection refused (CONNACK code {connack[3]})")
        self._last_write = asyncio.get_running_loop().time()
        self._tasks = [asyncio.create_task(self._read(reader, writer), name="mqtt qos0 reader"),
                       asyncio.create_task(self._ping(writer), name="mqtt qos0 ping")]
        return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass
        if self.writer is writer:  # the broker closed it: the next publish reconnects
            self.writer = None
        writer.close()

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while not writer.is_closing():
            await asyncio.sleep(self.KEEPALIVE_S / 4)
            if loop.time() - self._last_write >= self.KEEPALIVE_S / 2:
                writer.write(_PINGREQ)
                self._last_write = loop.time()

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        writer = self.writer
        try:
            if writer is None or writer.is_closing():
                async with self.lock:  # one connect at a time; publishing itself needs no lock (one write)
                    writer = self.writer
                    if writer is None or writer.is_closing():
                        await self.close()
                        writer = self.writer = await self._open()
            writer.write(publish_packet(topic, payload))
            self._last_write = asyncio.get_running_loop().time()
            if writer.transport.get_write_buffer_size() > 1 << 20:  # a slow broker: wait (bounded), as a client must
                await asyncio.wait_for(writer.drain(), self.timeout_s)
        except ValueError as exc:  # a topic or notification MQTT cannot carry: this one fails, the connection stays
            raise DeliveryFailed(f"MQTT {self.target.host}:{self.target.port}: {exc}") from exc
        except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError) as exc:
            await self.close()
            raise DeliveryFailed(f"MQTT {self.target.host}:{self.target.port}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        writer, self.writer = self.writer, None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class MqttSender:
    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._connections: dict[tuple[Any, ...], _Connection | _Qos0Connection] = {}

    async def send(self, uri: str, message: Message, version: str = "mqtt3.1.1", qos: str = "0") -> None:
        target = mqtt_target(uri, version, qos)
        key = (*target.connection_key, target.qos == 0 and version == "mqtt3.1.1")
        conn = self._connections.get(key)
        if conn is None:
            conn = self._connections[key] = (_Qos0Connection if key[-1] else _Connection)(target, self.timeout_s)
        payload = orjson.dumps({"metadata": message.headers, "body": message.body})
        await conn.publish(target.topic, payload, target.qos)

    async def close(self) -> None:
        for conn in self._connections.values():
            await conn.close()
        self._connections.clear()
