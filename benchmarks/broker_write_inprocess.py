"""In-process CPU cost of the broker's write path: batch upsert per entity and single ``PATCH /attrs`` per request.

No HTTP server and no client process: the broker's ASGI application is called directly with pre-built ASGI scopes
and bodies, so the figure is what the broker itself spends per operation (framework, validation, expansion,
serialization, database) — far less sensitive to a loaded machine than a throughput figure, above all as this
process's CPU time, which is printed too. Issue 3's history work off the write path but in the same process
(PostgreSQL: the materialiser, history rows → per-attribute rows; SQLite: the flush of the head into chunks, decision
0720) is timed apart after each pass. Use it while iterating, and to compare two
versions of the code in the same conditions (``PYTHONPATH=<other checkout>/src``, alternated);
``broker_throughput.py`` gives the over-HTTP figures the goals are stated in.

    PYTHONPATH=src python benchmarks/broker_write_inprocess.py [--store sqlite|postgresql] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from broker_workload import BASE, call, meter, single_patch
from sleutelbos.core.settings import load_settings
from sleutelbos.stack import StackContext, build_app


async def run(args: argparse.Namespace) -> None:
    pg_name = f"sb_bench_inproc_{os.getpid()}"
    if args.store == "postgresql":
        await _pg_admin(args.pg_dsn, f'CREATE DATABASE "{pg_name}"')
    try:
        await _run(args, pg_name)
    finally:
        if args.store == "postgresql":
            await _pg_admin(args.pg_dsn, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


async def _pg_admin(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _run(args: argparse.Namespace, pg_name: str) -> None:
    from urllib.parse import urlsplit

    with tempfile.TemporaryDirectory() as tmp:
        url = (f"sqlite:///{Path(tmp) / 'b.sqlite'}" if args.store == "sqlite"
               else urlsplit(args.pg_dsn)._replace(path=f"/{pg_name}").geturl())
        settings = load_settings(data_dir=Path(tmp), broker_database_url=url)
        app = build_app(StackContext(settings=settings), expose=("broker",))
        async with app.router.lifespan_context(app):
            n, batch = args.entities, 1000
            bodies = [orjson.dumps([meter(i, 0) for i in range(s, s + batch)]) for s in range(0, n, batch)]
            for b in bodies:
                assert (await call(app, "POST", f"{BASE}/entityOperations/upsert", body=b))[0] in (201, 204)
            # the history's deferred work: PostgreSQL's materialiser catches up; SQLite's flusher moves the head into
            # chunks (decision 0720) — after every pass here, where production flushes once an hour
            keeper = app.state.context.services["broker.temporal"].materialiser
            deferred = keeper.flush if hasattr(keeper, "flush") else keeper.catch_up
            await deferred()
            profiler = cProfile.Profile() if args.profile else None
            per_entity = []
            materialised = []
            cpu_entity: list[float] = []
            for round_ in range(1, args.rounds + 1):
                bodies = [orjson.dumps([meter(i, round_) for i in range(s, s + batch)]) for s in range(0, n, batch)]
                if profiler:
                    profiler.enable()
                t0, c0 = time.perf_counter_ns(), time.process_time_ns()
                for b in bodies:
                    status = (await call(app, "POST", f"{BASE}/entityOperations/upsert", body=b))[0]
                    assert status == 204, status
                per_entity.append((time.perf_counter_ns() - t0) / n / 1000)
                cpu_entity.append((time.process_time_ns() - c0) / n / 1000)
                if profiler:
                    profiler.disable()
                # issue 3's history work off the write path (PostgreSQL: per-attribute rows; SQLite: chunks), but in
                # the same process: its cost per entity update, measured apart
                t0 = time.perf_counter_ns()
                await deferred()
                materialised.append((time.perf_counter_ns() - t0) / n / 1000)
            rnd = random.Random(7)
            patches = [single_patch(rnd, n) for _ in range(args.singles)]
            if profiler:
                profiler.enable()
            t0, c0 = time.perf_counter_ns(), time.process_time_ns()
            for path, body in patches:
                status, _ = await call(app, "PATCH", path, body=body)
                assert status == 204, status
            per_patch = (time.perf_counter_ns() - t0) / len(patches) / 1000
            cpu_patch = (time.process_time_ns() - c0) / len(patches) / 1000
            if profiler:
                profiler.disable()
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{args.store}: batch upsert {statistics.median(per_entity):.1f} µs/entity "
              f"(passes {', '.join(f'{x:.1f}' for x in per_entity)}) ≈ {1e6 / statistics.median(per_entity):,.0f}/s "
              f"+ history materialisation/flush {statistics.median(materialised):.1f} µs/entity; "
              f"single PATCH {per_patch:.1f} µs ≈ {1e6 / per_patch:,.0f}/s; this process's CPU time: "
              f"{min(cpu_entity):.1f} µs/entity (best pass), {cpu_patch:.1f} µs/PATCH; load {load}")
        if profiler:
            pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--pg-dsn", default=os.environ.get("SLEUTELBOS_TEST_PG_DSN"))
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--singles", type=int, default=2_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
