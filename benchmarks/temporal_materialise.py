"""In-process cost of the temporal materialiser on SQLite (docs/decisions/0631): history rows → rows of
``broker_temporal_instances`` (decisions 0600, 0605, 0630).

A SQLite broker store gets N meters, then K batch upserts of 1,000 entities × 4 properties with observedAt/unitCode
(as ``broker_write_inprocess.py``) and S single-attribute PATCHes, with the background materialiser stopped so that
a backlog builds up; then the materialiser works the backlog off and its time is printed: history rows/s, µs per
history row and per instance, split into the read step (bounds, json_each into the temporary staging table; on the
step's thread, no writer lock) and the write step (copy into the instances table and its indexes, cursor move;
under the writer lock). Reference, same run: a plain ``executemany`` of the resulting instance rows into a copy of
the instances table with the same indexes, holding the rows that were there before them.

    PYTHONPATH=src python benchmarks/temporal_materialise.py [--entities 5000] [--rounds 3] [--singles 5000]
        [--batch N (history rows per step)] [--keep FILE (copy of the database for statement timings)]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from broker_workload import BASE, call, connect_store_file, meter, single_patch, temporal_file
from sleutelbos.core.settings import load_settings
from sleutelbos.stack import StackContext, build_app


class StepTimes:
    """Thread CPU and wall time of the materialiser's read and write steps (wrapped on the instance)."""

    def __init__(self, materialiser: Any) -> None:
        self.cpu = {"read": 0.0, "write": 0.0}
        self.wall = {"read": 0.0, "write": 0.0}
        read, write = materialiser._read_step, materialiser._write_step

        def timed(name: str, fn: Any) -> Any:
            def run(*a: Any) -> Any:
                c0, t0 = time.thread_time(), time.perf_counter()
                try:
                    return fn(*a)
                finally:
                    self.cpu[name] += time.thread_time() - c0
                    self.wall[name] += time.perf_counter() - t0
            return run

        materialiser._read_step = timed("read", read)
        materialiser._write_step = timed("write", write)

    def reset(self) -> None:
        for d in (self.cpu, self.wall):
            for k in d:
                d[k] = 0.0


def instance_count(path: Path) -> tuple[int, int]:
    with connect_store_file(path) as c:
        return (c.execute("SELECT COUNT(*) FROM broker_temporal_instances").fetchone()[0],
                c.execute("SELECT MAX(seq) FROM broker_entity_history").fetchone()[0])


def reference(path: Path, first_seq: int) -> float:
    """µs per instance (process CPU) of a plain executemany of the materialised rows (seq > first_seq) into a copy of
    the instances table with the same indexes, holding the rows up to first_seq."""
    c = sqlite3.connect(temporal_file(path))  # instances only: the file that holds them
    try:
        rows = c.execute("SELECT history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at, instance"
                         " FROM broker_temporal_instances WHERE seq > ?", (first_seq,)).fetchall()
        ddl = [r[0] for r in c.execute("SELECT sql FROM sqlite_master WHERE tbl_name = 'broker_temporal_instances'"
                                       " AND sql IS NOT NULL")]
        c.executescript(";".join(s.replace("broker_temporal_instances", "bench_ref_instances") for s in ddl))
        # as big as the real table before the measured rows went in
        c.execute("INSERT INTO bench_ref_instances SELECT * FROM broker_temporal_instances WHERE seq <= ?",
                  (first_seq,))
        c.commit()
        c0 = time.process_time()
        with c:
            c.executemany("INSERT INTO bench_ref_instances (history_seq, tenant, entity_id, attr, dataset_id,"
                          " observed_at, modified_at, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        cpu = time.process_time() - c0
        c.executescript("DROP TABLE bench_ref_instances")
        return cpu / max(len(rows), 1) * 1e6
    finally:
        c.close()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        db = Path(tmp) / "b.sqlite"
        settings = load_settings(data_dir=Path(tmp), broker_database_url=f"sqlite:///{db}")
        app = build_app(StackContext(settings=settings), expose=("broker",))
        async with app.router.lifespan_context(app):
            m = app.state.context.services["broker.temporal"].materialiser
            if m._task is not None:  # the backlog is worked off below, timed, not by the background task
                m._task.cancel()
            if args.batch:
                m.batch = args.batch
            times = StepTimes(m)
            n, batch = args.entities, 1000
            for s in range(0, n, batch):
                body = orjson.dumps([meter(i, 0) for i in range(s, s + batch)])
                assert (await call(app, "POST", f"{BASE}/entityOperations/upsert", body=body))[0] in (201, 204)
            await m.catch_up()
            print(f"{n} meters, rounds={args.rounds} × {n} batch upserts (4 props), singles={args.singles};"
                  f" sqlite {sqlite3.sqlite_version}; batch={m.batch}")

            async def measure(label: str) -> None:
                before_inst, _ = instance_count(db)
                with connect_store_file(db) as c:
                    first = c.execute("SELECT COALESCE(MAX(seq), 0) FROM broker_temporal_instances").fetchone()[0]
                    cur = c.execute("SELECT seq FROM broker_temporal_cursor").fetchone()[0]
                times.reset()
                c0, t0 = time.process_time(), time.perf_counter()
                rows = await m.catch_up()
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                after_inst, hi = instance_count(db)
                assert hi == cur + rows, (hi, cur, rows)
                inst = after_inst - before_inst
                ref = reference(db, first)
                print(f"{label}: {rows} history rows, {inst} instances: {rows / wall:,.0f} rows/s wall,"
                      f" process CPU {cpu / rows * 1e6:.1f} µs/row ({cpu / inst * 1e6:.1f} µs/instance);"
                      f" read step {times.cpu['read'] / inst * 1e6:.1f} µs/instance CPU"
                      f" ({times.wall['read'] / inst * 1e6:.1f} wall), write step"
                      f" {times.cpu['write'] / inst * 1e6:.1f} µs/instance CPU"
                      f" ({times.wall['write'] / inst * 1e6:.1f} wall);"
                      f" reference executemany {ref:.1f} µs/instance → write step / reference"
                      f" {times.cpu['write'] / inst * 1e6 / ref:.2f}, whole / reference"
                      f" {cpu / inst * 1e6 / ref:.2f}")

            for round_ in range(1, args.rounds + 1):
                for s in range(0, n, batch):
                    body = orjson.dumps([meter(i, round_) for i in range(s, s + batch)])
                    assert (await call(app, "POST", f"{BASE}/entityOperations/upsert", body=body))[0] == 204
            await measure("batch upserts")
            rnd = random.Random(7)
            for _ in range(args.singles):
                path, body = single_patch(rnd, n)
                assert (await call(app, "PATCH", path, body=body))[0] == 204
            await measure("1-attribute PATCHes")
            if args.keep:  # a copy of the file for statement-by-statement timing (the store's file only)
                with sqlite3.connect(db) as c, sqlite3.connect(args.keep) as out:
                    c.backup(out)
    print("load " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--singles", type=int, default=5_000)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", default=None, help="copy the final database file here")
    ap.add_argument("--batch", type=int, default=0, help="history rows per materialiser step (default: the broker's)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
