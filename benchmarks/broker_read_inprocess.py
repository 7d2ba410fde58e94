"""In-process CPU cost of the broker's read path: ``GET /entities?type=Device&q=...`` and ``GET /entities/{id}``.

The companion of ``broker_write_inprocess.py``: no HTTP server, no client process — the broker's ASGI application is
called directly, so the figures are what the broker itself spends per request (read path, SQL, rendering), as wall
time and as this process's CPU time (``time.process_time``; with PostgreSQL the database server's CPU is not in it).
Printed per request: the issue's query (``q=activePowerImport>2.5``, 20 results, ~40 candidate rows), the same with
varied thresholds (so that no cache of identical requests can flatter it), and single GETs of random entities. The
batch upsert that loads the store is timed too (µs per entity), so that a change on the write side shows its cost.

    PYTHONPATH=src python benchmarks/broker_read_inprocess.py [--store sqlite|postgresql] [--entities 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker_workload import BASE, call, meter
from broker_write_inprocess import _pg_admin
from sleutelbos.core.settings import load_settings
from sleutelbos.stack import StackContext, build_app

QUERY = b"type=Device&q=activePowerImport%3E2.5&limit=20"


async def timed(app: Any, requests: list[tuple[str, bytes]], rounds: int) -> tuple[float, float]:
    """(best wall µs, best CPU µs) per request over ``rounds`` passes of ``requests``."""
    walls, cpus = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter_ns(), time.process_time_ns()
        for path, query in requests:
            status, _ = await call(app, "GET", path, query)
            assert status == 200, status
        walls.append((time.perf_counter_ns() - t0) / len(requests) / 1000)
        cpus.append((time.process_time_ns() - c0) / len(requests) / 1000)
    return min(walls), min(cpus)


async def _run(args: argparse.Namespace, pg_name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = args.keep or tmp_dir
        url = (f"sqlite:///{Path(tmp) / 'b.sqlite'}" if args.store == "sqlite"
               else urlsplit(args.pg_dsn)._replace(path=f"/{pg_name}").geturl())
        settings = load_settings(data_dir=Path(tmp), broker_database_url=url)
        app = build_app(StackContext(settings=settings), expose=("broker",))
        async with app.router.lifespan_context(app):
            n, batch = args.entities, 1000
            upserts = []
            for round_ in range(2):
                bodies = [orjson.dumps([meter(i, round_) for i in range(s, s + batch)]) for s in range(0, n, batch)]
                c0 = time.process_time_ns()
                for b in bodies:
                    status, _ = await call(app, "POST", f"{BASE}/entityOperations/upsert", body=b)
                    assert status in (201, 204), status
                upserts.append((time.process_time_ns() - c0) / n / 1000)
            # issue 3's temporal materialiser works off the history rows in a thread of this process: let it finish,
            # or its CPU lands in the read figures (process_time counts every thread)
            await app.state.context.services["broker.temporal"].materialiser.catch_up()
            if args.store == "postgresql":
                await _pg_admin(urlsplit(args.pg_dsn)._replace(path=f"/{pg_name}").geturl(), "ANALYZE")
            rnd = random.Random(7)
            fixed = [(f"{BASE}/entities", QUERY)] * args.requests
            varied = [(f"{BASE}/entities", f"type=Device&q=activePowerImport%3E{rnd.uniform(0.5, 4.5):.3f}&limit=20"
                       .encode()) for _ in range(args.requests)]
            gets = [(f"{BASE}/entities/urn:ngsi-ld:Device:meter-{rnd.randrange(n):07d}", b"")
                    for _ in range(args.requests)]
            await timed(app, fixed[:50] + varied[:50] + gets[:50], 1)  # warm-up
            q_wall, q_cpu = await timed(app, fixed, args.rounds)
            v_wall, v_cpu = await timed(app, varied, args.rounds)
            g_wall, g_cpu = await timed(app, gets, args.rounds)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{args.store}, {n:,} meters: batch upsert CPU {statistics.median(upserts[1:]):.1f} µs/entity (update "
              f"pass); query {q_wall:.0f} µs wall / {q_cpu:.0f} µs CPU; varied queries {v_wall:.0f} / {v_cpu:.0f} µs; "
              f"single GET {g_wall:.0f} / {g_cpu:.0f} µs; load {load}")


async def run(args: argparse.Namespace) -> None:
    pg_name = f"sb_bench_read_{os.getpid()}"
    if args.store == "postgresql":
        await _pg_admin(args.pg_dsn, f'CREATE DATABASE "{pg_name}"')
    try:
        await _run(args, pg_name)
    finally:
        if args.store == "postgresql":
            await _pg_admin(args.pg_dsn, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--pg-dsn", default=os.environ.get("SLEUTELBOS_TEST_PG_DSN",
                                                       "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep", help="put the SQLite database in this directory and keep it (for SQL experiments)")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
