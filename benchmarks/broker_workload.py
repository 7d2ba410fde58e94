"""The broker benchmarks' shared parts: the Dutch fleet's meter entity, one request through the ASGI app, and the
broker server as a subprocess (start, stop, its CPU time from ``/proc``).

Not a benchmark itself; the scripts beside it import it (they run with ``benchmarks/`` first on ``sys.path``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent

BASE = "/ngsi-ld/v1"
PROPS = (("activeEnergyImport", "KWH"), ("activeEnergyExport", "KWH"), ("activePowerImport", "KWT"),
         ("voltage", "VLT"))


def meter(i: int, round_: int) -> dict[str, Any]:
    """Meter ``i`` in update round ``round_``: a ``Device`` with 4 numeric properties carrying ``observedAt`` (the
    round's 15-minute slot) and ``unitCode``; values are reproducible per (meter, round)."""
    ts = f"2026-11-28T{(round_ // 4) % 24:02d}:{(round_ % 4) * 15:02d}:00Z"
    rnd = random.Random(i * 1000 + round_)
    entity: dict[str, Any] = {"id": f"urn:ngsi-ld:Device:meter-{i:07d}", "type": "Device"}
    for name, unit in PROPS:
        entity[name] = {"type": "Property", "value": round(rnd.uniform(0, 5), 3), "observedAt": ts, "unitCode": unit}
    return entity


def single_patch(rnd: random.Random, n: int) -> tuple[str, bytes]:
    """A single update of one random meter of ``n``: ``PATCH /entities/{id}/attrs`` of ``activePowerImport`` with
    ``observedAt`` and ``unitCode`` — path and body."""
    i = rnd.randrange(n)
    body = orjson.dumps({"activePowerImport": {"type": "Property", "value": round(rnd.uniform(0, 5), 3),
                                               "observedAt": "2026-11-28T23:00:00Z", "unitCode": "KWT"}})
    return f"{BASE}/entities/urn:ngsi-ld:Device:meter-{i:07d}/attrs", body


async def call(app: Any, method: str, path: str, query: bytes = b"", body: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI app, in process (no HTTP): the status and the body."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query,
             "headers": [(b"host", b"bench"), (b"accept", b"application/json"),
                         (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


# --- the broker as a subprocess ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(db: str, port: int, data_dir: Path, src: str, **env: str) -> subprocess.Popen[bytes]:
    """``sleutelbos serve broker`` from the source tree ``src`` (``--server-src``: another checkout's, for a
    before/after pair), returned once it accepts connections (uvicorn listens after the application started)."""
    environ = {**os.environ, "PYTHONPATH": src, "SLEUTELBOS_LOG_LEVEL": "WARNING", **env}
    proc = subprocess.Popen([sys.executable, "-m", "sleutelbos", "serve", "broker", "--db", db, "--port", str(port),
                             "--data-dir", str(data_dir)], cwd=ROOT, env=environ, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("broker exited at start") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("broker did not start")


def stop_broker(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) each thread of the process has used so far, by thread id (Linux ``/proc``): per
    request far less disturbed by the shared machine's load than the rates are."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        cpu = _stat_cpu_s(task / "stat")
        if cpu is not None:
            out[int(task.name)] = cpu
    return out


def _stat_cpu_s(stat: Path) -> float | None:
    """User + system CPU seconds of a ``/proc`` ``stat`` file (a process's or a thread's); None when it is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds the process and its running child processes (the broker's batch workers, decision 0730) have
    used so far, all threads."""
    return sum(own_cpu_s(each) for each in process_tree(pid))


def own_cpu_s(pid: int) -> float:
    """CPU seconds the process itself has used so far, all threads, not its children (0 when it is gone)."""
    return _stat_cpu_s(Path(f"/proc/{pid}/stat")) or 0.0


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (Linux ``/proc/<pid>/task/<tid>/children``)."""
    out, todo = [], [pid]
    while todo:
        each = todo.pop()
        out.append(each)
        for task in Path(f"/proc/{each}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def temporal_file(path: Path) -> Path:
    """The SQLite file that holds the broker's temporal tables (decision 0710: the store's own ``temporal_path``
    beside it), or ``path`` itself for a broker that keeps them there (``--server-src`` of an older checkout)."""
    from sleutelbos.broker.store.sqlite import temporal_path

    temporal = temporal_path(path)
    return temporal if temporal.exists() else path


def connect_store_file(path: Path) -> sqlite3.Connection:
    """The broker's SQLite file with its temporal file attached when there is one (unqualified names find both)."""
    conn = sqlite3.connect(path)
    if (temporal := temporal_file(path)) != path:
        conn.execute("ATTACH DATABASE ? AS temporal", (str(temporal),))
    return conn


def tree_arguments(ap: argparse.ArgumentParser) -> None:
    """``--reference-src`` and ``--src``: the two broker source trees a before/after benchmark runs side by side."""
    ap.add_argument("--reference-src", required=True, help="the other tree's src directory (the code before)")
    ap.add_argument("--src", default=str(ROOT / "src"), help="this tree's src directory (default: this checkout)")


def trees(args: argparse.Namespace) -> dict[str, str]:
    """``{"this": ..., "reference": ...}`` from :func:`tree_arguments`, as absolute paths."""
    return {"this": str(Path(args.src).resolve()), "reference": str(Path(args.reference_src).resolve())}
