"""MQTT notifications (endpoint ``mqtt://[user:pass@]host[:port]/topic``, notifierInfo MQTT-Version and MQTT-QoS;
message ``{"metadata": {headers}, "body": {notification}}``) against the real Mosquitto and against the in-process
amqtt broker that ``sleutelbos up`` runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.broker.conftest import BASE
from tests.broker.test_notifications import running_broker, status
from tests.broker.test_subscriptions import meter, patch_power, subscribe, subscription
from tests.conftest import free_port, missing_part, port_open


class MqttListener:
    """A real MQTT client subscribed to a topic, collecting the JSON messages."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> MqttListener:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client(self.host, self.port) as client:
            await client.subscribe(self.topic, qos=2)
            self._ready.set()
            async for message in client.messages:
                self.messages.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]

    async def wait_for(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {count} MQTT messages, got {self.messages}")


def mqtt_subscription(uri: str, version: str, qos: str) -> dict[str, Any]:
    return subscription(uri, notification={"format": "keyValues", "endpoint": {
        "accept": "application/json", "receiverInfo": [{"key": "X-Supplier", "value": "s1"}],
        "notifierInfo": [{"key": "MQTT-Version", "value": version}, {"key": "MQTT-QoS", "value": qos}]}})


@pytest.mark.parametrize(("version", "qos", "userinfo"), [
    ("mqtt3.1.1", "0", ""), ("mqtt5.0", "1", "meteruser:s3cret@"), ("mqtt3.1.1", "2", "")])
async def test_mosquitto(database_url: str, tmp_path: Path, mosquitto: tuple[str, int], version: str, qos: str,
                         userinfo: str) -> None:
    host, port = mosquitto
    topic = f"sleutelbos/test/{time.monotonic_ns()}"
    async with MqttListener(host, port, topic) as listener, running_broker(database_url, tmp_path) as broker:
        sub_id = await subscribe(broker, mqtt_subscription(f"mqtt://{userinfo}{host}:{port}/{topic}", version, qos))
        await broker.create(meter(1, 1.0))
        await patch_power(broker, 1, 2.0)
        messages = await listener.wait_for(2)
        assert set(messages[0]) == {"metadata", "body"}
        assert messages[0]["metadata"]["Content-Type"] == "application/json"
        assert messages[0]["metadata"]["X-Supplier"] == "s1"
        assert "ngsi-ld-core-context" in messages[0]["metadata"]["Link"]
        bodies = [m["body"] for m in messages]
        assert all(b["type"] == "Notification" and b["subscriptionId"] == sub_id for b in bodies)
        assert [b["data"][0]["power"] for b in bodies] == [1.0, 2.0]
        assert (await status(broker, sub_id))["timesSent"] == 2


async def test_in_process_broker_of_the_embedded_stack(database_url: str, tmp_path: Path) -> None:
    async with running_broker(database_url, tmp_path, mqtt_port=0) as broker:
        url = broker.app.state.context.services["mqtt_url"]
        host, port = url.removeprefix("mqtt://").split(":")
        async with MqttListener(host, int(port), "meters/notifications") as listener:
            await subscribe(broker, mqtt_subscription(f"{url}/meters/notifications", "mqtt3.1.1", "1"))
            await broker.create(meter(7, 3.5))
            messages = await listener.wait_for(1)
            assert messages[0]["body"]["data"] == [{"id": "urn:ngsi-ld:Device:m7", "type": "Device", "power": 3.5}]
            assert messages[0]["metadata"]["X-Supplier"] == "s1"


async def test_unreachable_mqtt_broker_is_recorded_and_retried(database_url: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    async with running_broker(database_url, tmp_path) as broker:
        sub_id = await subscribe(broker, mqtt_subscription(f"mqtt://127.0.0.1:{port}/nowhere", "mqtt3.1.1", "1"))
        await broker.create(meter(1, 1.0))
        await asyncio.sleep(0.5)
        failed = await status(broker, sub_id)
        assert failed["timesFailed"] >= 2 and failed["timesSent"] == 0 and failed["status"] == "failed"
        assert await broker.app.state.context.services["broker.subscriptions"].store.pending_count() == 1
        assert (await broker.client.get(f"{BASE}/entities/urn:ngsi-ld:Device:m1")).status_code == 200


async def test_qos0_connection_dropped_is_reopened(database_url: str, tmp_path: Path,
                                                  mosquitto: tuple[str, int]) -> None:
    """MQTT 3.1.1 at QoS 0 goes through the broker's own minimal publisher: when its connection to Mosquitto is
    gone, the next notification opens a new one."""
    host, port = mosquitto
    topic = f"sleutelbos/test/{time.monotonic_ns()}"
    async with MqttListener(host, port, topic) as listener, running_broker(database_url, tmp_path) as broker:
        sub_id = await subscribe(broker, mqtt_subscription(f"mqtt://{host}:{port}/{topic}", "mqtt3.1.1", "0"))
        await broker.create(meter(1, 1.0))
        await listener.wait_for(1)
        dispatcher = broker.app.state.context.services["broker.subscriptions"].dispatcher
        connections = list(dispatcher.senders.mqtt._connections.values())
        assert len(connections) == 1 and connections[0].writer is not None
        dispatcher._loop.call_soon_threadsafe(connections[0].writer.transport.abort)  # on the notifier's loop
        await asyncio.sleep(0.2)
        await patch_power(broker, 1, 2.0)
        messages = await listener.wait_for(2)
        assert [m["body"]["data"][0]["power"] for m in messages] == [1.0, 2.0]
        assert (await status(broker, sub_id))["timesSent"] == 2


async def test_qos0_message_mqtt_cannot_carry_fails_that_delivery_only(mosquitto: tuple[str, int]) -> None:
    """A topic over MQTT's 65,535-byte string limit cannot be encoded: that notification is a recorded delivery
    failure (retried like any other), not an unexpected error, and the connection keeps serving other topics."""
    from sleutelbos.broker.notifications.delivery import DeliveryFailed, Message
    from sleutelbos.broker.notifications.mqtt import MqttSender, publish_packet

    with pytest.raises(ValueError, match="65,535"):
        publish_packet("t" * 70_000, b"{}")
    host, port = mosquitto
    topic = f"sleutelbos/test/{time.monotonic_ns()}"
    sender = MqttSender(timeout_s=5)
    try:
        async with MqttListener(host, port, topic) as listener:
            message = Message(headers={"Content-Type": "application/json"}, body={"n": 1})
            with pytest.raises(DeliveryFailed, match="65,535"):
                await sender.send(f"mqtt://{host}:{port}/{'t' * 70_000}", message)
            await sender.send(f"mqtt://{host}:{port}/{topic}", message)
            assert (await listener.wait_for(1))[0]["body"] == {"n": 1}
    finally:
        await sender.close()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it: (CA, certificate, key) PEM files."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sleutelbos test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
          .not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_mosquitto(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """A private Mosquitto with a plain listener (for the test's reader) and a TLS one (for the broker's
    ``mqtts://`` endpoint), its certificate signed by a throw-away CA: (plain port, TLS port, CA file)."""
    import shutil
    import subprocess

    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        missing_part("the mosquitto binary (a TLS listener of the test's own)")
    ca, cert, key = _tls_files(tmp_path)
    plain, tls = free_port(), free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"user root\nallow_anonymous true\nlistener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\n"
                      f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    proc = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (port_open("127.0.0.1", plain) and port_open("127.0.0.1", tls)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the test's TLS Mosquitto did not start")
            time.sleep(0.05)
        yield plain, tls, ca
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("qos", ["0", "1"])  # the broker's own QoS 0 publisher, and aiomqtt
async def test_mqtts_endpoint(database_url: str, tmp_path: Path, tls_mosquitto: tuple[int, int, Path],
                              monkeypatch: pytest.MonkeyPatch, qos: str) -> None:
    """``mqtts://`` publishes over TLS and verifies the broker's certificate: trusted through the CA the operator
    configures for the process (OpenSSL's ``SSL_CERT_FILE``), delivered; not trusted, a recorded failure."""
    plain, tls, ca = tls_mosquitto
    topic = f"sleutelbos/tls/{time.monotonic_ns()}"
    async with MqttListener("127.0.0.1", plain, topic) as listener, running_broker(database_url, tmp_path) as broker:
        untrusted = await subscribe(broker, mqtt_subscription(f"mqtts://127.0.0.1:{tls}/{topic}", "mqtt3.1.1", qos))
        await broker.create(meter(1, 1.0))
        failed = await status(broker, untrusted)
        assert failed["timesSent"] == 0 and failed["timesFailed"] >= 1 and listener.messages == []
        assert (await broker.client.delete(f"{BASE}/subscriptions/{untrusted}")).status_code == 204

        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # read when the next TLS context is made
        sub_id = await subscribe(broker, mqtt_subscription(f"mqtts://127.0.0.1:{tls}/{topic}", "mqtt3.1.1", qos))
        await patch_power(broker, 1, 2.0)
        messages = await listener.wait_for(1)
        assert messages[-1]["body"]["subscriptionId"] == sub_id
        assert messages[-1]["body"]["data"] == [{"id": "urn:ngsi-ld:Device:m1", "type": "Device", "power": 2.0}]
        assert (await status(broker, sub_id))["timesSent"] == 1
