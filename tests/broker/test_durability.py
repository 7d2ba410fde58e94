"""A write acknowledged to the client survives ``kill -9`` of the broker; a restarted broker resumes with its data.

The broker runs as a real subprocess (``sleutelbos serve broker --db sqlite:///...``); clients keep writing while it
is killed with SIGKILL, so some writes are in flight at the moment of the kill. Every write that got a 2xx must be
there after the restart, with the acknowledged value.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, start_cli

ROOT = Path(__file__).resolve().parents[2]
BASE = "/ngsi-ld/v1"


def _start(db: str, port: int, data_dir: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    return start_cli("serve", "broker", "--db", db, "--port", str(port), "--data-dir", str(data_dir),
                     port=port, env=env_extra, timeout=30)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        return "zombie (gone)"


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


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]


@pytest.mark.parametrize("batch_workers", [0, 2])
async def test_acknowledged_writes_survive_kill_9_and_restart_resumes(tmp_path: Path, batch_workers: int) -> None:
    """Also with batch worker processes (decision 0730): a batch is acknowledged after its worker committed it,
    and the workers leave with the broker's process they served."""
    db = f"sqlite:///{tmp_path / 'broker.sqlite'}"
    port = free_port()
    workers_env = {"SLEUTELBOS_BROKER_BATCH_WORKERS": str(batch_workers)}
    proc = _start(db, port, tmp_path, **workers_env)
    workers = _children(proc.pid)
    assert len(workers) >= batch_workers
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
    deadline = time.monotonic() + 10
    while any("zombie" not in _state(w) for w in workers):
        assert time.monotonic() < deadline, "batch workers outlived the broker's process"
        await asyncio.sleep(0.1)

    proc = _start(db, port, tmp_path, **workers_env)  # restart on the same database: it resumes with its data
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
