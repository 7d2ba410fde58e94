"""``sleutelbos up`` (the embedded stack, a real subprocess on SQLite) has subscriptions and the temporal API working:
an HTTP subscription and an MQTT subscription through the stack's own in-process MQTT broker are notified, the
temporal API answers, and after a stop and a new ``up`` on the same data directory both are still there."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx

from tests.broker.receivers import HttpReceiver
from tests.broker.test_notifications_mqtt import MqttListener, mqtt_subscription
from tests.broker.test_subscriptions import meter, subscription
from tests.conftest import free_port, start_cli

ROOT = Path(__file__).resolve().parents[2]
BASE = "/ngsi-ld/v1"


def start_up(data_dir: Path, port: int, mqtt_port: int) -> subprocess.Popen[bytes]:
    return start_cli("up", "--data-dir", str(data_dir), "--port", str(port), port=port,
                     env={"SLEUTELBOS_MQTT_PORT": str(mqtt_port), "SLEUTELBOS_BROKER_NOTIFICATION_RETRY_BASE_S": "0.2"})


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def test_up_has_subscriptions_and_temporal(tmp_path: Path) -> None:
    port, mqtt_port = free_port(), free_port()
    receiver = HttpReceiver().start()
    proc = start_up(tmp_path / "data", port, mqtt_port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client, \
                MqttListener("127.0.0.1", mqtt_port, "up/notifications") as listener:
            r = await client.post(f"{BASE}/subscriptions", json=subscription(receiver.url))
            assert r.status_code == 201, r.text
            http_sub = r.headers["Location"].rsplit("/", 1)[1]
            r = await client.post(f"{BASE}/subscriptions", json=mqtt_subscription(
                f"mqtt://127.0.0.1:{mqtt_port}/up/notifications", "mqtt3.1.1", "1"))
            assert r.status_code == 201, r.text
            assert (await client.post(f"{BASE}/entities", json=meter(1, 2.0))).status_code == 201
            r = await client.patch(f"{BASE}/entities/urn:ngsi-ld:Device:m1/attrs",
                                   json={"power": {"type": "Property", "value": 3.0,
                                                   "observedAt": "2026-01-01T00:15:00Z"}})
            assert r.status_code == 204
            notified = await receiver.wait_for(2)
            assert [e["power"]["value"] for e in notified] == [2.0, 3.0]
            messages = await listener.wait_for(2)
            assert [m["body"]["data"][0]["power"] for m in messages] == [2.0, 3.0]
            r = await client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Device:m1",
                                 params={"options": "temporalValues"})
            assert r.status_code == 200, r.text
            assert r.json()["power"]["values"] == [[2.0, "2026-01-01T00:00:00Z"], [3.0, "2026-01-01T00:15:00Z"]]
    finally:
        stop(proc)
    proc = start_up(tmp_path / "data", port, mqtt_port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert (await client.get(f"{BASE}/subscriptions/{http_sub}")).status_code == 200
            r = await client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Device:m1", params={"lastN": "1"})
            assert [i["value"] for i in r.json()["power"]] == [3.0]
            r = await client.patch(f"{BASE}/entities/urn:ngsi-ld:Device:m1/attrs",
                                   json={"power": {"type": "Property", "value": 4.0}})
            assert r.status_code == 204
            notified = await receiver.wait_for(3)
            assert notified[-1]["power"]["value"] == 4.0
    finally:
        stop(proc)
        receiver.stop()
