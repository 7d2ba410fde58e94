"""Inclusion and consistency proof generation (served from the stored subtree hashes) and verification at 1 million
and 10 million entries (goal: under 1 ms to build a proof, constant in practice as the log grows).

    PYTHONPATH=src python benchmarks/audit_proofs.py                 # 1M and 10M on SQLite
    PYTHONPATH=src python benchmarks/audit_proofs.py --sizes 1000000 # 1M only (a few minutes less)
    PYTHONPATH=src python benchmarks/audit_proofs.py --pg            # also PostgreSQL (SLEUTELBOS_TEST_PG_DSN)
    PYTHONPATH=src python benchmarks/audit_proofs.py --pg --no-sqlite  # PostgreSQL only (bulk load by COPY)

The large trees are bulk-built (rows generated with their leaf and subtree hashes exactly as the writer computes
them, inserted in large unsynchronised transactions, search indexes left out — proofs read only by primary key)
rather than appended one by one. The reference in the same run is a single primary-key read of one entry row in the
same database: a proof costs O(log n) such reads done as one query.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from sleutelbos.audit.merkle import Frontier, verify_consistency, verify_inclusion
from sleutelbos.audit.service import AuditLog
from sleutelbos.audit.store import open_store

TEMPLATE = (
    '{"action":"bench.append","actor":{"country":"NL","kind":"operator","organisation":"Operator",'
    '"principal":"user-%d"},"decision":"permit","details":{"i":%d},"reason":"","request_id":null,'
    '"target":"meter-%d","time":"2026-11-28T00:00:00.000000Z"}'
)
CHUNK = 100_000


def rows(start: int, end: int, frontier: Frontier):
    sha = hashlib.sha256
    out = []
    for i in range(start, end):
        data = (TEMPLATE % (i % 50, i, i % 100_000)).encode()
        leaf = sha(b"\x00" + data).digest()
        out.append((i, "2026-11-28T00:00:00.000000Z", f"user-{i % 50}", "bench.append", f"meter-{i % 100_000}",
                    "permit", data, leaf, frontier.append(leaf)))
    return out


async def build_sqlite(path: Path, size: int) -> None:
    import aiosqlite

    store = open_store(f"sqlite:///{path}")
    await store.open()
    await store.close()
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    for index in ("audit_entries_actor", "audit_entries_action", "audit_entries_target", "audit_entries_time"):
        await conn.execute(f"DROP INDEX IF EXISTS {index}")
    await conn.execute("PRAGMA synchronous = OFF")
    frontier = Frontier()
    t0 = time.perf_counter()
    for start in range(0, size, CHUNK):
        batch = rows(start, min(size, start + CHUNK), frontier)
        await conn.execute("BEGIN")
        await conn.executemany("INSERT INTO audit_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
        await conn.execute("UPDATE audit_log_state SET tree_size = ? WHERE id = 1", (start + len(batch),))
        # Search postings left out like the indexes, and marked as done so that the store does not start filling
        # them in the background while proofs are measured.
        await conn.execute("UPDATE audit_search_state SET indexed = ? WHERE id = 1", (start + len(batch),))
        await conn.execute("COMMIT")
        if start and start % 1_000_000 == 0:
            print(f"    built {start:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
    await conn.close()
    print(f"    bulk-built {size:,} entries in {time.perf_counter() - t0:.0f} s", flush=True)


async def build_pg(dsn: str, size: int) -> None:
    store = open_store(dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(dsn)
    for index in ("audit_entries_actor", "audit_entries_action", "audit_entries_target", "audit_entries_time"):
        await conn.execute(f"DROP INDEX IF EXISTS {index}")
    await conn.execute("SET synchronous_commit = off")
    frontier = Frontier()
    t0 = time.perf_counter()
    for start in range(0, size, CHUNK):
        batch = rows(start, min(size, start + CHUNK), frontier)
        await conn.copy_records_to_table("audit_entries", records=batch)
        if start and start % 1_000_000 == 0:
            print(f"    built {start:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
    await conn.execute("UPDATE audit_log_state SET tree_size = $1 WHERE id = 1", size)
    await conn.execute("VACUUM (ANALYZE) audit_entries")  # as a long-lived log is; no autovacuum mid-measurement
    await conn.close()
    print(f"    bulk-built {size:,} entries in {time.perf_counter() - t0:.0f} s", flush=True)


def _us(samples: list[float]) -> str:
    samples = sorted(samples)
    return f"median {statistics.median(samples) * 1e6:7.0f} µs, p95 {samples[int(len(samples) * 0.95)] * 1e6:7.0f} µs"


async def measure(url: str, size: int, samples: int) -> dict[str, float]:
    store = open_store(url)
    log = AuditLog(store, origin="bench/audit", signer_source=lambda: None,  # type: ignore[arg-type,return-value]
                   checkpoint_interval_s=3600, checkpoint_entries=10**12)  # proofs only: no signing here
    await log.start()
    rng = random.Random(size)
    root = (await log.consistency_proof(size, size)).second_root
    for i in rng.sample(range(size), 50):  # warm the cache a little, as a serving log's would be
        await log.inclusion_proof(i, size)
    point, inc_build, inc_verify, con_build, con_verify = [], [], [], [], []
    for _ in range(samples):
        i = rng.randrange(size)
        t0 = time.perf_counter()
        await store.entry(i)
        point.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        proof = await log.inclusion_proof(i, size)
        inc_build.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        verify_inclusion(i, size, proof.leaf_hash, proof.hashes, root)
        inc_verify.append(time.perf_counter() - t0)
        first = rng.randrange(1, size)
        t0 = time.perf_counter()
        cons = await log.consistency_proof(first, size)
        con_build.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        verify_consistency(first, size, cons.first_root, root, cons.hashes)
        con_verify.append(time.perf_counter() - t0)
    await log.stop(final_checkpoint=False)
    print(f"  {size:>11,} entries  point read of one row (reference) {_us(point)}  (load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"  {'':>11}          inclusion proof   build {_us(inc_build)} | verify {_us(inc_verify)}")
    print(f"  {'':>11}          consistency proof build {_us(con_build)} | verify {_us(con_verify)}", flush=True)
    return {
        "point": statistics.median(point),
        "inc_build": statistics.median(inc_build),
        "con_build": statistics.median(con_build),
        "inc_verify": statistics.median(inc_verify),
        "con_verify": statistics.median(con_verify),
    }


def summarise(name: str, results: dict[int, dict[str, float]]) -> None:
    sizes = sorted(results)
    for size in sizes:
        r = results[size]
        print(f"{name} {size:,}: inclusion build {r['inc_build'] * 1e3:.3f} ms ({r['inc_build'] / r['point']:.1f}× a "
              f"point read), consistency build {r['con_build'] * 1e3:.3f} ms ({r['con_build'] / r['point']:.1f}×); "
              f"verify {r['inc_verify'] * 1e6:.0f} / {r['con_verify'] * 1e6:.0f} µs; goal < 1 ms: "
              f"{'met' if max(r['inc_build'], r['con_build']) < 1e-3 else 'NOT met'}")
    if len(sizes) > 1:
        a, b = results[sizes[0]], results[sizes[-1]]
        print(f"{name} growth {sizes[0]:,} → {sizes[-1]:,}: inclusion build ×{b['inc_build'] / a['inc_build']:.2f}, "
              f"consistency build ×{b['con_build'] / a['con_build']:.2f} (log2 ratio "
              f"{(sizes[-1].bit_length()) / sizes[0].bit_length():.2f})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL (SLEUTELBOS_TEST_PG_DSN or --pg-dsn)")
    parser.add_argument("--pg-dsn", default=os.environ.get("SLEUTELBOS_TEST_PG_DSN"))
    parser.add_argument("--dir", default=None, help="where to build the SQLite files (default: a temp dir)")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only (with --pg)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"audit proof benchmark: sizes {', '.join(f'{s:,}' for s in sizes)}; {args.samples} random proofs each "
          "(2 shared cores: noisy; compare with the point read measured alongside)")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results: dict[int, dict[str, float]] = {}
        for size in [] if args.no_sqlite else sizes:
            path = Path(tmp) / f"proofs-{size}.sqlite"
            await build_sqlite(path, size)
            results[size] = await measure(f"sqlite:///{path}", size, args.samples)
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                os.remove(leftover) if os.path.exists(leftover) else None  # noqa: ASYNC240 - after the timing
        if results:
            summarise("SQLite", results)
    if args.pg and args.pg_dsn:
        results = {}
        for size in sizes:
            name = f"sb_bench_{secrets.token_hex(4)}"
            admin = await asyncpg.connect(args.pg_dsn)
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                dsn = urlsplit(args.pg_dsn)._replace(path=f"/{name}").geturl()
                await build_pg(dsn, size)
                results[size] = await measure(dsn, size, args.samples)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.close()
        summarise("PostgreSQL", results)


if __name__ == "__main__":
    try:  # the loop `sleutelbos up` runs on (uvicorn picks uvloop when it is installed, as uvicorn[standard] does)
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        print("event loop: uvloop")
    except ImportError:
        print("event loop: asyncio")
    asyncio.run(main())
