"""Audit appends per second — batched by the group-commit writer, each durable before its caller returns — on SQLite
and PostgreSQL, against a plain ``executemany`` insert of the same rows into a table of the same shape in the same
database, in the same run (ratio; goal ≥ 0.5; goal ≥ 20,000 appends/s on SQLite).

    PYTHONPATH=src python benchmarks/audit_append.py [--entries 20000] [--clients 2048] [--rounds 7] [--no-pg]

PostgreSQL: ``--pg-dsn`` or ``SLEUTELBOS_TEST_PG_DSN`` (an admin DSN; a scratch database is created and dropped).
Each round measures the log and then the reference right after it; the ratio printed is the median of the rounds'
ratios (the machine is shared, so rates drift between rounds). The reference gets the rows ready-made (canonical JSON and leaf hash computed) and inserts them in batches of the
average size the writer committed, one durable transaction per batch; the log does everything from ``record()``:
canonical JSON, leaf hash, subtree hashes, the batch transaction, resolving each caller's future.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiosqlite
import asyncpg

from sleutelbos.audit.entry import make_entry
from sleutelbos.audit.merkle import leaf_hash
from sleutelbos.audit.service import AuditLog
from sleutelbos.audit.software_signer import SoftwareSigner
from sleutelbos.core.protocols import Actor, AuditEvent

ACTORS = [Actor(f"user-{i}", organisation="Operator", kind="operator", country="NL") for i in range(50)]
ACTIONS = ["custody.key.generate", "policy.root.set", "access.grant.approve", "firmware.sign", "identity.org.disable"]


def event(i: int) -> AuditEvent:
    return AuditEvent(
        actor=ACTORS[i % len(ACTORS)],
        action=ACTIONS[i % len(ACTIONS)],
        target=f"target-{i % 1000}",
        reason="benchmark",
        request_id=f"req-{i}",
        details={"i": i, "meter": f"E0047000{i:08d}"},
    )


async def run_log(url: str, entries: int, clients: int, key_dir: Path) -> tuple[float, float]:
    """(appends/s, mean batch size) for ``entries`` records from ``clients`` concurrent callers."""
    from sleutelbos.audit.store import open_store

    signer = SoftwareSigner.load_or_create(key_dir)
    log = AuditLog(open_store(url), origin="bench/audit", signer_source=lambda: signer,
                   checkpoint_interval_s=10, checkpoint_entries=1000)
    await log.start()
    per_client = entries // clients
    # Events are built before the clock starts, as the reference gets its rows ready-made.
    events = iter([event(i) for i in range(per_client * (clients + min(clients, 64)))])

    async def client() -> None:
        for _ in range(per_client):
            await log.record(next(events))

    await asyncio.gather(*(client() for _ in range(min(clients, 64))))  # warm-up
    b0 = log.batches
    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    batches = log.batches - b0
    await log.stop(final_checkpoint=False)
    return per_client * clients / elapsed, per_client * clients / max(batches, 1)


def plain_rows(n: int, start: int) -> list[tuple]:
    rows = []
    for i in range(n):
        e = make_entry(event(start + i))
        rows.append((start + i, e.time, e.actor, e.action, e.target, e.decision, e.data, leaf_hash(e.data)))
    return rows


PLAIN_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS plain_entries (idx {int} PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, "
    "action TEXT NOT NULL, target TEXT NOT NULL, decision TEXT NOT NULL, entry {blob} NOT NULL, leaf_hash {blob} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS plain_actor ON plain_entries (actor, idx)",
    "CREATE INDEX IF NOT EXISTS plain_action ON plain_entries (action, idx)",
    "CREATE INDEX IF NOT EXISTS plain_target ON plain_entries (target, idx)",
    "CREATE INDEX IF NOT EXISTS plain_time ON plain_entries (time)",
]


async def run_plain_sqlite(path: Path, entries: int, batch: int, start: int) -> float:
    rows = plain_rows(entries, start)
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = FULL")
    for sql in PLAIN_SCHEMA:
        await conn.execute(sql.format(int="INTEGER", blob="BLOB"))
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        await conn.execute("BEGIN IMMEDIATE")
        await conn.executemany("INSERT INTO plain_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[i : i + batch])
        await conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    await conn.close()
    return entries / elapsed


async def run_plain_pg(dsn: str, entries: int, batch: int, start: int) -> float:
    rows = plain_rows(entries, start)
    conn = await asyncpg.connect(dsn)
    for sql in PLAIN_SCHEMA:
        await conn.execute(sql.format(int="BIGINT", blob="BYTEA"))
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        async with conn.transaction():
            await conn.executemany("INSERT INTO plain_entries VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", rows[i : i + batch])
    elapsed = time.perf_counter() - t0
    await conn.close()
    return entries / elapsed


async def bench_backend(name: str, url: str, plain, args: argparse.Namespace, key_dir: Path) -> None:
    logs, plains, batches = [], [], []
    for r in range(args.rounds):
        rate, mean_batch = await run_log(url, args.entries, args.clients, key_dir)
        batch = max(1, round(mean_batch))
        ref = await plain(args.entries, batch, r * args.entries)
        logs.append(rate)
        plains.append(ref)
        batches.append(mean_batch)
        print(f"  {name} round {r + 1}: log {rate:,.0f}/s (mean batch {mean_batch:,.0f})  plain executemany {ref:,.0f}/s"
              f"  ratio {rate / ref:.2f}", flush=True)
    log_med, plain_med = statistics.median(logs), statistics.median(plains)
    ratio = statistics.median(a / b for a, b in zip(logs, plains, strict=True))
    print(f"{name}: audit appends {log_med:,.0f}/s (median of {args.rounds}; mean batch {statistics.median(batches):,.0f}) "
          f"| plain executemany of the same rows {plain_med:,.0f}/s | ratio {ratio:.2f} (median of the rounds' "
          "ratios; goal ≥ 0.5)"
          + (f" | goal ≥ 20,000/s: {'met' if log_med >= 20000 else 'NOT met'}" if name == "SQLite" else ""))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=2048, help="concurrent record() callers")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pg-dsn", default=os.environ.get("SLEUTELBOS_TEST_PG_DSN"))
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    print(f"audit append benchmark: {args.entries:,} entries per round, {args.clients} concurrent callers, "
          f"{args.rounds} rounds (2 shared cores: figures are noisy, compare the ratios)")
    with tempfile.TemporaryDirectory() as tmp:
        key_dir = Path(tmp) / "keys"
        db = Path(tmp) / "bench.sqlite"
        await bench_backend("SQLite", f"sqlite:///{db}",
                            lambda n, b, s: run_plain_sqlite(db, n, b, s), args, key_dir)
        if args.no_pg or not args.pg_dsn:
            print("PostgreSQL: skipped (no --pg-dsn / SLEUTELBOS_TEST_PG_DSN)")
            return
        name = f"sb_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(args.pg_dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            dsn = urlsplit(args.pg_dsn)._replace(path=f"/{name}").geturl()
            await bench_backend("PostgreSQL", dsn, lambda n, b, s: run_plain_pg(dsn, n, b, s), args, key_dir)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    try:  # the loop `sleutelbos up` runs on (uvicorn picks uvloop when it is installed, as uvicorn[standard] does)
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        print("event loop: uvloop")
    except ImportError:
        print("event loop: asyncio")
    asyncio.run(main())
