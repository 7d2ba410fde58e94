"""In-process cost of the SQLite history flush (docs/decisions/0720): the head's rows → a bucket of chunks, then the
moved rows out of the head.

A SQLite broker store gets N meters and K passes of batch upserts (1,000 entities × 4 properties with observedAt and
unitCode, as ``broker_write_inprocess.py``) with the background flusher held off, so that the head holds K + 1 rows
per meter (K = 3: the four quarter-hours of an hour, as a production bucket holds). Then one flush, timed on its own
thread (CPU and wall per history row): the write step (chunks of each entity's rows, the bucket's row) and the drop
of the moved rows from the head (slices under the store's writer lock). Repeated for ``--buckets`` buckets, so that
a growing chunk table shows whether the cost grows with the history (the per-instance layout before it did,
decision 0700).

Reference, same run: the same chunk rows, already built, inserted with a plain ``executemany`` into a copy of the chunk
table holding as many rows as the broker's did before the flush — the write alone, no reading of the head, no
building of the text — and the plain ``DELETE`` of as many rows from a copy of the head's table and index.

    PYTHONPATH=src python benchmarks/temporal_flush.py [--entities 20000] [--passes 4] [--buckets 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from broker_workload import BASE, call, connect_store_file, meter
from sleutelbos.core.settings import load_settings
from sleutelbos.stack import StackContext, build_app


def timed(fn: Any) -> Any:
    """``fn(conn)`` on the flusher's thread, returning (result, thread CPU s, wall s)."""
    def run(conn: sqlite3.Connection) -> tuple[Any, float, float]:
        c0, t0 = time.thread_time(), time.perf_counter()
        out = fn(conn)
        return out, time.thread_time() - c0, time.perf_counter() - t0
    return run


def reference(db: Path, bucket: int, rows: int) -> tuple[float, float]:
    """µs per history row of the raw writes: the bucket's chunk rows into a copy of the chunk table (as full as the
    broker's was before the flush), and a plain DELETE of ``rows`` rows from a copy of the head's table."""
    c = connect_store_file(db)
    try:
        chunks = c.execute("SELECT bucket, tenant, entity_id, observed_lo, observed_hi, body FROM"
                           " broker_temporal_chunks WHERE bucket = ?", (bucket,)).fetchall()
        c.execute("CREATE TABLE temporal.bench_ref_chunks AS SELECT * FROM broker_temporal_chunks WHERE bucket < ?",
                  (bucket,))
        c.execute("CREATE UNIQUE INDEX temporal.bench_ref_chunks_key ON bench_ref_chunks (bucket, tenant, entity_id)")
        c.execute("BEGIN")
        t0 = time.process_time()
        c.executemany("INSERT INTO bench_ref_chunks VALUES (?, ?, ?, ?, ?, ?)", chunks)
        c.execute("COMMIT")
        write = time.process_time() - t0
        c.execute("DROP TABLE bench_ref_chunks")
        # the head as the broker's history table and index, with as many rows, deleted in one statement
        c.execute("CREATE TABLE main.bench_ref_head AS SELECT * FROM broker_entity_history WHERE 0")
        c.execute("CREATE INDEX main.bench_ref_head_entity ON bench_ref_head (tenant, entity_id)")
        body = orjson.dumps({f"https://smartdatamodels.org/dataModel.Energy/a{i}": [{  # as large as a meter's
            "type": "Property", "value": 1.234, "observedAt": "2026-11-29T07:00:00.000Z", "unitCode": "KWT",
            "modifiedAt": "2026-11-29T07:00:00.000000Z"}] for i in range(4)}).decode()
        c.executemany("INSERT INTO bench_ref_head (seq, tenant, entity_id, modified_at, instances) VALUES (?,?,?,?,?)",
                      [(i + 1, "", f"urn:ngsi-ld:Device:meter-{i % 100_000:07d}", "x", body) for i in range(rows)])
        c.commit()
        t0 = time.process_time()
        c.execute("DELETE FROM bench_ref_head WHERE seq <= ?", (rows,))
        c.commit()
        drop = time.process_time() - t0
        c.execute("DROP TABLE bench_ref_head")
        c.commit()
        return write / rows * 1e6, drop / rows * 1e6
    finally:
        c.close()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        db = Path(tmp) / "b.sqlite"
        settings = load_settings(data_dir=Path(tmp), broker_database_url=f"sqlite:///{db}", mqtt_port=None,
                                 log_level="WARNING", broker_temporal_head_rows=10**12)
        app = build_app(StackContext(settings=settings), expose=("broker",))
        async with app.router.lifespan_context(app):
            f = app.state.context.services["broker.temporal"].materialiser
            n, batch = args.entities, 1000
            print(f"{n:,} meters, {args.passes} batch passes per bucket, {args.buckets} buckets;"
                  f" sqlite {sqlite3.sqlite_version}")
            round_ = 0
            for bucket in range(1, args.buckets + 1):
                for _ in range(args.passes):
                    for s in range(0, n, batch):
                        body = orjson.dumps([meter(i, round_) for i in range(s, min(n, s + batch))])
                        assert (await call(app, "POST", f"{BASE}/entityOperations/upsert", body=body))[0] in (201, 204)
                    round_ += 1
                async with f._lock:  # what flush() does, each step timed on the flusher's thread
                    async with f.db.temporal_lock:
                        rows, w_cpu, w_wall = await f._on_thread(timed(f._write_step))
                    d_cpu = d_wall = 0.0
                    while True:
                        async with f.db.store._lock:
                            dropped, cpu, wall = await f._on_thread(timed(f._drop_step))
                        d_cpu, d_wall = d_cpu + cpu, d_wall + wall
                        if not dropped:
                            break
                ref_write, ref_drop = reference(db, bucket, rows)
                per = 1e6 / rows
                print(f"bucket {bucket}: {rows:,} history rows; write step {w_cpu * per:.1f} µs/row CPU"
                      f" ({w_wall * per:.1f} wall), drop {d_cpu * per:.1f} µs/row CPU ({d_wall * per:.1f} wall);"
                      f" flush {(w_cpu + d_cpu) * per:.1f} µs/row CPU → one flushing core keeps up with"
                      f" {rows / (w_wall + d_wall):,.0f} updates/s; reference: executemany of the built chunks"
                      f" {ref_write:.1f} µs/row (write step / reference {w_cpu * per / ref_write:.1f}),"
                      f" DELETE {ref_drop:.1f} µs/row (drop / reference {d_cpu * per / ref_drop:.1f})")
            sizes = [p.stat().st_size for p in Path(tmp).glob("b*.sqlite")]  # noqa: ASYNC240 - after the runs
            print(f"files {statistics.fsum(sizes) / 1e6:,.0f} MB; load " + ", ".join(
                f"{x:.2f}" for x in os.getloadavg()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--passes", type=int, default=4, help="batch passes per bucket (4: an hour of quarter-hours)")
    ap.add_argument("--buckets", type=int, default=3)
    ap.add_argument("--tmp", default=None)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
