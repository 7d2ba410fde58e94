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
import gc
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
from sleutelbos.core.collector import GEN0_THRESHOLD
from sleutelbos.core.protocols import Actor, AuditEvent

DEFAULT_GC = gc.get_threshold()

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


async def run_log(url: str, entries: int, clients: int, key_dir: Path, tune_gc: bool = True) -> tuple[float, float, float]:
    """(appends/s, mean batch size, CPU seconds per append) for ``entries`` records from ``clients`` concurrent callers.

    ``tune_gc``: the collector settings ``sleutelbos up`` / ``serve`` use (``core.collector.tune_garbage_collector``: the heap built so far —
    here including the ready-made events, which a server would not hold — frozen, a larger young generation)."""
    from sleutelbos.audit.store import open_store

    signer = SoftwareSigner.load_or_create(key_dir)
    log = AuditLog(open_store(url), origin="bench/audit", signer_source=lambda: signer,
                   checkpoint_interval_s=10, checkpoint_entries=1000)
    await log.start()
    per_client = entries // clients
    # Events are built before the clock starts, as the reference gets its rows ready-made.
    events = iter([event(i) for i in range(per_client * (clients + min(clients, 64)))])
    if tune_gc:
        gc.freeze()  # as core.collector.tune_garbage_collector, repeatable between rounds
        gc.set_threshold(GEN0_THRESHOLD, *DEFAULT_GC[1:])
    else:
        gc.unfreeze()
        gc.set_threshold(*DEFAULT_GC)

    async def client() -> None:
        for _ in range(per_client):
            await log.record(next(events))

    await asyncio.gather(*(client() for _ in range(min(clients, 64))))  # warm-up
    b0 = log.batches
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    batches = log.batches - b0
    # Stopping is timed too: it brings the SQLite search postings up to date (work the log defers past the commit).
    await log.stop(final_checkpoint=False)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = per_client * clients
    return n / elapsed, n / max(batches, 1), cpu / n


def plain_rows(n: int, start: int) -> list[tuple]:
    rows = []
    for i in range(n):
        e = make_entry(event(start + i))
        rows.append((start + i, e.time, e.actor, e.action, e.target, e.decision, e.data, leaf_hash(e.data)))
    return rows


# The references: the same rows (canonical JSON and leaf hash ready-made) inserted with a plain ``executemany``.
# "indexed": a table searchable like the log, its four search indexes maintained in every transaction (what a plain
# audit table costs, and the shape the log itself had before its SQLite search postings moved off the commit path).
# "bare" (SQLite): the table the log's commit path writes — primary key and time index only, no search postings.
PLAIN_TABLE = (
    "CREATE TABLE IF NOT EXISTS {table} (idx {int} PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, "
    "action TEXT NOT NULL, target TEXT NOT NULL, decision TEXT NOT NULL, entry {blob} NOT NULL, leaf_hash {blob} NOT NULL)"
)
PLAIN_INDEXES = {
    "indexed": ["actor, idx", "action, idx", "target, idx", "time"],
    "bare": ["time"],
}


def plain_schema(kind: str, int_type: str, blob: str) -> tuple[str, list[str]]:
    table = f"plain_{kind}"
    return table, [PLAIN_TABLE.format(table=table, int=int_type, blob=blob)] + [
        f"CREATE INDEX IF NOT EXISTS {table}_{n} ON {table} ({cols})" for n, cols in enumerate(PLAIN_INDEXES[kind])
    ]


async def run_plain_sqlite(path: Path, kind: str, entries: int, batch: int, start: int) -> tuple[float, float]:
    rows = plain_rows(entries, start)
    table, schema = plain_schema(kind, "INTEGER", "BLOB")
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = FULL")
    for sql in schema:
        await conn.execute(sql)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(rows), batch):
        await conn.execute("BEGIN IMMEDIATE")
        await conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[i : i + batch])  # noqa: S608
        await conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await conn.close()
    return entries / elapsed, cpu / entries


async def run_plain_pg(dsn: str, kind: str, entries: int, batch: int, start: int) -> tuple[float, float]:
    rows = plain_rows(entries, start)
    table, schema = plain_schema(kind, "BIGINT", "BYTEA")
    conn = await asyncpg.connect(dsn)
    for sql in schema:
        await conn.execute(sql)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(rows), batch):
        async with conn.transaction():
            await conn.executemany(
                f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", rows[i : i + batch]  # noqa: S608
            )
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await conn.close()
    return entries / elapsed, cpu / entries


async def bench_backend(name: str, url: str, plain, kinds: list[str], args: argparse.Namespace, key_dir: Path) -> None:
    logs, cpus, batches, loads = [], [], [], []
    refs: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        rate, mean_batch, cpu = await run_log(url, args.entries, args.clients, key_dir, not args.default_gc)
        batch = max(1, round(mean_batch))
        logs.append(rate)
        cpus.append(cpu)
        batches.append(mean_batch)
        line = f"  {name} round {r + 1}: log {rate:,.0f}/s ({cpu * 1e6:.1f} µs CPU/append, mean batch {mean_batch:,.0f})"
        for kind in kinds:
            ref = await plain(kind, args.entries, batch, r * args.entries)
            refs[kind].append(ref)
            line += f" | plain {kind} {ref[0]:,.0f}/s ({ref[1] * 1e6:.1f} µs) ratio {rate / ref[0]:.2f}"
        loads.append(os.getloadavg()[0])
        print(line + f" | load {loads[-1]:.1f}", flush=True)
    log_med = statistics.median(logs)
    print(f"{name}: audit appends {log_med:,.0f}/s (median of {args.rounds}; {statistics.median(cpus) * 1e6:.1f} µs CPU "
          f"per append, all threads; mean batch {statistics.median(batches):,.0f}; load average "
          f"{min(loads):.1f}–{max(loads):.1f})"
          + (f" | goal ≥ 20,000/s: {'met' if log_med >= 20000 else 'NOT met'}" if name == "SQLite" else ""))
    for kind in kinds:
        rates = [x[0] for x in refs[kind]]
        ratio = statistics.median(a / b for a, b in zip(logs, rates, strict=True))
        print(f"  vs plain executemany ({kind}) {statistics.median(rates):,.0f}/s "
              f"({statistics.median(x[1] for x in refs[kind]) * 1e6:.1f} µs CPU/row): ratio {ratio:.2f} "
              "(median of the rounds' ratios; goal ≥ 0.5)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=2048, help="concurrent record() callers")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pg-dsn", default=os.environ.get("SLEUTELBOS_TEST_PG_DSN"))
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--default-gc", action="store_true",
                        help="leave the garbage collector at Python's defaults (not as `sleutelbos up` runs)")
    args = parser.parse_args()
    print(f"audit append benchmark: {args.entries:,} entries per round, {args.clients} concurrent callers, "
          f"{args.rounds} rounds (2 shared cores: figures are noisy, compare the ratios)")
    with tempfile.TemporaryDirectory() as tmp:
        key_dir = Path(tmp) / "keys"
        db = Path(tmp) / "bench.sqlite"
        await bench_backend("SQLite", f"sqlite:///{db}",
                            lambda k, n, b, s: run_plain_sqlite(db, k, n, b, s), ["indexed", "bare"], args, key_dir)
        if args.no_pg or not args.pg_dsn:
            print("PostgreSQL: skipped (no --pg-dsn / SLEUTELBOS_TEST_PG_DSN)")
            return
        name = f"sb_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(args.pg_dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            dsn = urlsplit(args.pg_dsn)._replace(path=f"/{name}").geturl()
            await bench_backend("PostgreSQL", dsn, lambda k, n, b, s: run_plain_pg(dsn, k, n, b, s), ["indexed"], args,
                                key_dir)
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
