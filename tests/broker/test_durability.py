"""A write acknowledged to the client survives ``kill -9`` of the broker; a restarted broker resumes with its data.

The broker runs as a real subprocess (``sleutelbos serve broker --db sqlite:///...``); clients keep writing while it
is killed with SIGKILL, so some writes are in flight at the moment of the kill. Every write that got a 2xx must be
there after the restart, with the acknowledged value.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import httpx

from tests.conftest import free_port, start_cli

ROOT = Path(__file__).resolve().parents[2]
BASE = "/ngsi-ld/v1"


def _start(db: str, port: int, data_dir: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    return start_cli("serve", "broker", "--db", db, "--port", str(port), "--data-dir", str(data_dir),
                     port=port, env=env_extra, timeout=30)


async def _writer(client: httpx.AsyncClient, worker: int, acked: dict[str, float], stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        if n % 2:
            entity_id = f"urn:ngsi-ld:Device:w{worker}-{n}"
            body = {"id": entity_id, "type": "Device", "power": {"type": "Property", "value": float(n)}}
            try:
                r = await client.post(f"{BASE}/entities", json=body)
            except httpx.HTTPError:
                return
            if r.status_code == 201:
                acked[entity_id] = float(n)
        else:
            batch = [{"id": f"urn:ngsi-ld:Device:w{worker}-b{n}-{i}", "type": "Device",
                      "power": {"type": "Property", "value": float(n * 100 + i)}} for i in range(50)]
            try:
                r = await client.post(f"{BASE}/entityOperations/upsert", json=batch)
            except httpx.HTTPError:
                return
            if r.status_code in (201, 204):
                acked.update({e["id"]: e["power"]["value"] for e in batch})


async def test_acknowledged_writes_survive_kill_9_and_restart_resumes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'broker.sqlite'}"
    port = free_port()
    proc = _start(db, port, tmp_path)
    acked: dict[str, float] = {}
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            writers = [asyncio.create_task(_writer(client, w, acked, stop)) for w in range(4)]
            while len(acked) < 600:  # noqa: ASYNC110 - polling a plain dict the writers fill
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)  # mid-stream: writers have requests in flight
            proc.wait(timeout=10)
            stop.set()
            await asyncio.gather(*writers)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    proc = _start(db, port, tmp_path)  # restart on the same database: it resumes with its data
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            found: dict[str, float] = {}
            offset = 0
            while True:
                r = await client.get(f"{BASE}/entities", params={"type": "Device", "limit": 1000, "offset": offset,
                                                                 "options": "keyValues", "attrs": "power"})
                page = r.json()
                found.update({e["id"]: e["power"] for e in page})
                if len(page) < 1000:
                    break
                offset += 1000
            lost = {k: v for k, v in acked.items() if found.get(k) != v}
            assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost, e.g. {list(lost.items())[:3]}"
            # and the restarted broker takes new writes
            r = await client.post(f"{BASE}/entities", json={"id": "urn:ngsi-ld:Device:after", "type": "Device"})
            assert r.status_code == 201
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
