"""Broker notifications: delivered per second to an HTTP receiver and through Mosquitto while the broker takes a steady
stream of updates (default 10,000 updates/s), with the delay from update to delivery (p50/p99), against the same
update stream with no subscription (the reference, same run).

Run from the worktree root::

    PYTHONPATH=src python benchmarks/broker_notifications.py                    # 10 s at 10,000 updates/s, SQLite
    PYTHONPATH=src python benchmarks/broker_notifications.py --seconds 30 --rate 10000 --db postgresql://...
    PYTHONPATH=src python benchmarks/broker_notifications.py --server-src ../main/src   # main's broker, this script

By default the run starts a private Mosquitto (the ``mosquitto`` binary on a free port of 127.0.0.1, a temporary
configuration with ``allow_anonymous true`` and ``set_tcp_nodelay true`` — the configuration docs/broker.md
recommends) and stops it at the end; ``--mqtt-port N`` uses the Mosquitto already listening on 127.0.0.1:N instead
(e.g. 1883, the system one with whatever configuration it has). Without a ``mosquitto`` binary the run falls back to
127.0.0.1:1883 and says so. The header names the Mosquitto used and its ``set_tcp_nodelay`` (``unknown`` for one
the script did not start).

What it does:

1. starts ``sleutelbos serve broker`` (uvicorn, SQLite file or the given database) as a subprocess, creates
   ``--meters`` meters;
2. reference pass: ``POST /entityOperations/upsert?options=update`` batches (100 ticks a second, ``rate/100`` meters
   each, at most 4 requests in flight) for ``--seconds``, no subscription — the updates/s the broker takes and each
   request's answer time;
3. measured pass: two subscriptions on the meters' ``power`` — one to an HTTP receiver (a minimal asyncio HTTP/1.1
   server), one to ``mqtt://127.0.0.1:<port>/...`` (the Mosquitto above) read back by an MQTT client — both receivers in a
   second process of the script, so that reading the notifications does not slow the update stream's client — and
   the same update stream again. Each update carries the time its request was sent in ``observedAt``; each receiver
   records, per notified entity, receive time − send time (when the broker cannot take the target rate, requests
   wait in the client, unstamped, and the figure shows the broker's own delay, not the client's backlog);
4. waits until every update was notified (or ``--drain`` seconds) and prints: updates/s taken (and the ratio to the
   reference, and the requests' answer times with and without), notifications/s and entities/s delivered per
   receiver, delivered/sent, delay p50/p99 from the update's send and from its request's answer (the part that is
   the notifier's, not the write's), and the goals (all delivered, p99 < 100 ms). The broker's notifier runs in its
   thread unless ``SLEUTELBOS_BROKER_NOTIFIER_THREAD=false`` is set (passed on to the broker).

``--control`` creates no subscription: the second pass repeats the reference on the now bigger database (history
and temporal tables grown by the first pass), which shows how much of the ratio is the order of the passes rather
than the subscriptions (no notification figures then).

Why the private Mosquitto: Mosquitto's default ``set_tcp_nodelay false`` leaves Nagle's algorithm on its sockets to
subscribers: a notification written while the previous one is not yet acknowledged (the reader's delayed ACK, up to
40 ms on Linux) waits for that acknowledgement — through the system Mosquitto that was ~40 ms of the Mosquitto path's
p99 after the update's answer (decision 0611), a property of that configuration rather than of the broker.

``--server-src DIR`` runs the broker from another source tree (e.g. main's ``src``) with this script, for a
before/after pair in one session. Each pass also prints the broker's CPU per update by thread (from ``/proc``, thread
names from ``py-spy dump``) and the CPU of the run's other processes, so a ratio can be read against what the
process spent; ``--py-spy DIR`` records the broker's stacks per thread during each pass (decision 0614).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import orjson

from broker_workload import ROOT, free_port, start_broker, thread_cpu_s

SERVER_SRC = str(ROOT / "src")
"""The source tree the broker runs from (``--server-src``: another checkout's, for a before/after pair)."""
ANSWERED: dict[str, float] = {}  # observedAt stamp of a request → when the broker answered it (time.time())


class Stats:
    """One receiver's notifications. In the receivers' process only (stamp, receive time) pairs are kept — no date
    parsing while the run goes on; the delays are computed afterwards in the main process."""

    def __init__(self, counts: Any = None, slot: int = 0) -> None:
        self.counts, self.slot = counts, slot
        self.notifications = 0
        self.entities = 0
        self.samples: list[tuple[str, float]] = []
        self.delays: list[float] = []
        self.after_answer: list[float] = []  # receive time − the update request's answer time (may be negative)
        self.first = 0.0
        self.last = 0.0

    def record(self, body: dict[str, Any]) -> None:
        now = time.time()
        if not self.notifications:
            self.first = now
        self.last = now
        self.notifications += 1
        for entity in body.get("data", []):
            power = entity.get("power")
            if isinstance(power, dict) and "observedAt" in power:
                self.samples.append((power["observedAt"], now))
                self.entities += 1
        if self.counts is not None:
            self.counts[self.slot] = self.entities

    def export(self) -> dict[str, Any]:
        return {"notifications": self.notifications, "entities": self.entities, "first": self.first,
                "last": self.last, "samples": self.samples}

    @classmethod
    def load(cls, exported: dict[str, Any]) -> Stats:
        stats = cls()
        stats.notifications, stats.entities = exported["notifications"], exported["entities"]
        stats.first, stats.last = exported["first"], exported["last"]
        for stamp, received in exported["samples"]:
            stats.delays.append((received - datetime.fromisoformat(stamp).timestamp()) * 1000)
            answered = ANSWERED.get(stamp)
            if answered is not None:
                stats.after_answer.append((received - answered) * 1000)
        return stats


async def http_receiver(port: int, stats: Stats) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                stats.record(orjson.loads(body))
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def mqtt_receiver(topic: str, stats: Stats, ready: asyncio.Event, port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic)
        ready.set()
        async for message in client.messages:
            stats.record(orjson.loads(bytes(message.payload))["body"])  # type: ignore[arg-type]


def receivers_process(recv_port: int, topic: str, conn: Any, counts: Any, mqtt_port: int = 1883) -> None:
    """The HTTP receiver and the MQTT subscriber, in a process of their own so that their work (reading and parsing
    every notification) does not hold up the update stream's client, whose request times are measured."""

    async def main() -> None:
        http_stats, mqtt_stats = Stats(counts, 0), Stats(counts, 1)
        server = await http_receiver(recv_port, http_stats)
        ready = asyncio.Event()
        task = asyncio.create_task(mqtt_receiver(topic, mqtt_stats, ready, mqtt_port))
        await asyncio.wait_for(ready.wait(), 10)
        conn.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        server.close()
        task.cancel()
        conn.send((http_stats.export(), mqtt_stats.export()))

    asyncio.run(main())


class PrivateMosquitto:
    """A Mosquitto of the run's own: the recommended configuration (``set_tcp_nodelay true``) on a free port, so the
    figures do not depend on how the machine's Mosquitto happens to be configured."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                        "persistence false\nlog_dest none\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')[-500:]}"
                                   if self.proc.stderr else "mosquitto exited")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def others_cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by the run's other processes (the receivers, Mosquitto, this client): on a small
    machine they compete with the broker for the same cores."""
    out = {name: sum(thread_cpu_s(pid).values()) for name, pid in pids.items()}
    times = os.times()
    out["update client"] = times.user + times.system
    return out


def thread_names(args: argparse.Namespace, pid: int) -> dict[int, str]:
    """Python thread names by thread id, from ``py-spy dump`` (Python 3.11 does not name OS threads)."""
    try:
        dump = subprocess.run([args.py_spy_bin, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True,
                              text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names: dict[int, str] = {}
    for line in dump.splitlines():
        if line.startswith("Thread "):
            head, _, name = line.partition(":")
            with contextlib.suppress(ValueError):
                names[int(head.split()[1], 0)] = name.strip().strip('"')
    return names


def cpu_line(label: str, before: dict[int, float], after: dict[int, float], updates: int, elapsed: float,
             names: dict[int, str]) -> str:
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    total = sum(spent.values())
    parts = [f"{names.get(tid, tid)} {cpu / max(updates, 1) * 1e6:.0f}" for tid, cpu in
             sorted(spent.items(), key=lambda kv: -kv[1]) if cpu / max(updates, 1) * 1e6 >= 1]
    return (f"broker CPU {label}: {total / elapsed:.0%} of a core, {total / max(updates, 1) * 1e6:.0f} µs per update"
            f" (by thread: {', '.join(parts)})")


def py_spy(args: argparse.Namespace, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """``--py-spy DIR``: sample the broker (every thread, raw collapsed stacks) over most of a pass."""
    if not args.py_spy:
        return None
    out = Path(args.py_spy) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    duration = max(1, int(args.seconds) - 2)
    return subprocess.Popen([args.py_spy_bin, "record", "--pid", str(pid), "--threads", "--format", "raw",
                             "--rate", "100", "--duration", str(duration), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def update_stream(client: httpx.AsyncClient, meters: int, rate: int, seconds: float,
                        acks: list[float] | None = None) -> tuple[int, float]:
    """Sends ``rate`` updates a second for ``seconds``; returns (updates acknowledged, elapsed). ``acks`` collects
    each request's time from stamping to the broker's answer (ms): the part of a notification's delay that is the
    write itself."""
    per_tick = max(1, rate // 100)
    ticks = int(seconds * 100)
    acked = 0
    in_flight = asyncio.Semaphore(4)
    cursor = 0

    async def send(ids: list[int]) -> None:
        nonlocal acked
        async with in_flight:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # stamped when sent, not when scheduled
            batch = [{"id": f"urn:ngsi-ld:Device:m{n % meters}", "type": "Device",
                      "power": {"type": "Property", "value": n, "observedAt": now}} for n in ids]
            sent = time.perf_counter()
            r = await client.post("/ngsi-ld/v1/entityOperations/upsert?options=update", content=orjson.dumps(batch),
                                  headers={"Content-Type": "application/json"})
            if acks is not None:
                acks.append((time.perf_counter() - sent) * 1000)
                ANSWERED[now] = time.time()
            if r.status_code in (201, 204):
                acked += len(batch)

    tasks = []
    start = time.perf_counter()
    for tick in range(ticks):
        target = start + tick / 100
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(list(range(cursor, cursor + per_tick)))))
        cursor += per_tick
    await asyncio.gather(*tasks)
    return acked, time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] if ordered else float("nan")


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sb-notify-bench-"))
    db = args.db or f"sqlite:///{tmp / 'broker.sqlite'}"
    scratch = None
    if db.startswith("postgres"):  # a fresh database next to the given one, dropped at the end
        import asyncpg

        scratch = f"sb_notify_bench_{os.getpid()}"
        admin = await asyncpg.connect(db)
        await admin.execute(f'CREATE DATABASE "{scratch}"')
        await admin.close()
        admin_dsn, db = db, db.rsplit("/", 1)[0] + f"/{scratch}"
    port, recv_port = free_port(), free_port()
    mosquitto: PrivateMosquitto | None = None
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if args.mqtt_port is not None:
        mqtt_port, mqtt_desc = args.mqtt_port, f"existing on 127.0.0.1:{args.mqtt_port} (set_tcp_nodelay: its own config, unknown)"
    elif binary is None:
        mqtt_port = 1883
        mqtt_desc = "no mosquitto binary: FALLBACK to the existing one on 127.0.0.1:1883 (set_tcp_nodelay unknown)"
    else:
        mosquitto = PrivateMosquitto(binary, tmp)
        mqtt_port, mqtt_desc = mosquitto.port, f"private {binary} on 127.0.0.1:{mosquitto.port}, set_tcp_nodelay true"
    print(f"Mosquitto: {mqtt_desc}", flush=True)
    try:
        proc = start_broker(db, port, tmp, SERVER_SRC, SLEUTELBOS_MQTT_PORT="0",
                            SLEUTELBOS_BROKER_BATCH_WORKERS=str(args.batch_workers))
    except BaseException:
        if mosquitto is not None:
            mosquitto.stop()
        raise
    topic = f"sleutelbos/bench/{os.getpid()}"
    mp = multiprocessing.get_context("spawn")
    counts = mp.Array("q", 2, lock=False)
    parent_conn, child_conn = mp.Pipe()
    receivers = mp.Process(target=receivers_process, args=(recv_port, topic, child_conn, counts, mqtt_port),
                                daemon=True)
    receivers.start()
    if not parent_conn.poll(30) or parent_conn.recv() != "ready":
        raise RuntimeError("receivers did not start")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for start in range(0, args.meters, 1000):
                batch = [{"id": f"urn:ngsi-ld:Device:m{i}", "type": "Device",
                          "power": {"type": "Property", "value": 0, "observedAt": "2026-01-01T00:00:00Z"}}
                         for i in range(start, min(args.meters, start + 1000))]
                r = await client.post("/ngsi-ld/v1/entityOperations/upsert", content=orjson.dumps(batch),
                                      headers={"Content-Type": "application/json"})
                assert r.status_code in (201, 204), r.text
            ref_acks: list[float] = []
            names = thread_names(args, proc.pid)
            cpu0 = thread_cpu_s(proc.pid)
            spy = py_spy(args, proc.pid, "without")
            ref_acked, ref_elapsed = await update_stream(client, args.meters, args.rate, args.seconds, ref_acks)
            ref_cpu = (cpu0, thread_cpu_s(proc.pid))
            if spy is not None:
                spy.wait()
            for uri in () if args.control else (f"http://127.0.0.1:{recv_port}/notify",
                                                 f"mqtt://127.0.0.1:{mqtt_port}/{topic}"):
                sub = {"type": "Subscription", "entities": [{"type": "Device"}], "watchedAttributes": ["power"],
                       "notification": {"attributes": ["power"], "format": "normalized", "endpoint": {"uri": uri}}}
                r = await client.post("/ngsi-ld/v1/subscriptions", json=sub)
                assert r.status_code == 201, r.text
            acks: list[float] = []
            names.update(thread_names(args, proc.pid))
            cpu0 = thread_cpu_s(proc.pid)
            pids = {"receivers": receivers.pid or 0}
            if mosquitto is not None:
                pids["Mosquitto"] = mosquitto.proc.pid
            others0 = others_cpu_s(pids)
            spy = py_spy(args, proc.pid, "control" if args.control else "with")
            acked, elapsed = await update_stream(client, args.meters, args.rate, args.seconds, acks)
            cpu = (cpu0, thread_cpu_s(proc.pid))
            others = {name: spent - others0[name] for name, spent in others_cpu_s(pids).items()}
            if spy is not None:
                spy.wait()
            deadline = time.monotonic() + (0 if args.control else args.drain)
            while time.monotonic() < deadline and min(counts[0], counts[1]) < acked:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        parent_conn.send("stop")
        exported = parent_conn.recv() if parent_conn.poll(60) else None
        receivers.join(10)
        if mosquitto is not None:
            mosquitto.stop()
        if scratch is not None:
            admin = await asyncpg.connect(admin_dsn)
            await admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
            await admin.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"database={db.split(':')[0]} meters={args.meters} target={args.rate}/s for {args.seconds:.0f} s, "
          f"{max(1, args.rate // 100)} updates per request, broker from {SERVER_SRC}, notifier thread "
          f"{os.environ.get('SLEUTELBOS_BROKER_NOTIFIER_THREAD', 'true')}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ref_rate, rate = ref_acked / ref_elapsed, acked / elapsed
    second = "in the second pass (control: no subscription)" if args.control else "with 2 subscriptions"
    print(f"updates taken: {rate:,.0f}/s {second} vs {ref_rate:,.0f}/s without "
          f"(ratio {rate / ref_rate:.2f}); request answered p50/p99 {statistics.median(acks):.1f}/{pct(acks, 0.99):.1f} ms"
          f" with vs {statistics.median(ref_acks):.1f}/{pct(ref_acks, 0.99):.1f} ms without")
    print(cpu_line("without", *ref_cpu, ref_acked, ref_elapsed, names))
    print(cpu_line("control" if args.control else "with", *cpu, acked, elapsed, names))
    print("other processes in that pass: " + ", ".join(f"{name} {spent / elapsed:.0%} of a core"
                                                       for name, spent in others.items()))
    if args.control:
        return
    if exported is None:
        raise RuntimeError("receivers did not report")
    http_stats, mqtt_stats = Stats.load(exported[0]), Stats.load(exported[1])
    for name, stats in (("HTTP receiver", http_stats), ("Mosquitto", mqtt_stats)):
        span = max(stats.last - stats.first, 1e-9)
        delivered = stats.entities / acked if acked else 0.0
        p50, p99 = statistics.median(stats.delays) if stats.delays else float("nan"), pct(stats.delays, 0.99)
        print(f"{name:<14} {stats.notifications / span:>8,.0f} notifications/s, {stats.entities / span:>9,.0f} "
              f"entities/s, delivered {stats.entities:,}/{acked:,} ({delivered:.1%}), delay p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms (after the update's answer: p50 {statistics.median(stats.after_answer or [0]):.1f},"
              f" p99 {pct(stats.after_answer, 0.99):.1f} ms)  — goal all delivered: {'met' if stats.entities >= acked else 'NOT met'}, "
              f"p99 < 100 ms: {'met' if p99 < 100 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file); for PostgreSQL a "
                        "fresh database is created on that server and dropped at the end")
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=10_000, help="updates per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-workers", type=int, default=0,
                        help="SQLite: the broker's broker_batch_workers (decision 0730); 0: its own process")
    parser.add_argument("--control", action="store_true", help="no subscriptions: the second pass repeats the first")
    parser.add_argument("--mqtt-port", type=int, default=None,
                        help="notify through the Mosquitto already on 127.0.0.1:N (default: start a private one with "
                             "set_tcp_nodelay true for the run)")
    parser.add_argument("--server-src", default=None,
                        help="run the broker from this source tree (e.g. main's src, to compare before/after)")
    parser.add_argument("--py-spy", default=None, metavar="DIR",
                        help="profile the broker with py-spy during each pass (DIR/without.txt, DIR/with.txt: raw "
                             "collapsed stacks per thread, 100 samples/s)")
    parser.add_argument("--py-spy-bin", default=shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"))
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the last notifications")
    args = parser.parse_args()
    global SERVER_SRC
    if args.server_src:
        SERVER_SRC = str(Path(args.server_src).resolve())
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
