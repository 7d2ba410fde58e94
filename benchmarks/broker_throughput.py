"""Broker throughput: batch upsert, single-entity PATCH and query over HTTP, against a raw ``executemany`` reference.

Run from the worktree root::

    PYTHONPATH=src python benchmarks/broker_throughput.py                 # SQLite, small sizes (a few minutes)
    PYTHONPATH=src python benchmarks/broker_throughput.py --store both --pg-dsn postgresql://postgres@127.0.0.1/test
    PYTHONPATH=src python benchmarks/broker_throughput.py --store both --full   # 100,000 entities, as issue 2 asks

What it does, per store, in one run:

1. starts ``sleutelbos serve broker --db URL`` (uvicorn, uvloop + httptools) as a subprocess; this script is the
   client process. Requests go over keep-alive HTTP/1.1 connections with a minimal asyncio client so that the client
   costs little CPU on this 2-core machine (like ``wrk``: pre-serialized requests, concurrent connections);
2. batch upsert: ``POST /entityOperations/upsert`` with batches of 1,000 ``Device`` meters, 4 numeric properties with
   ``observedAt`` and ``unitCode``; a first pass creates the entities, the measured passes update them (new values and
   timestamps — entity *updates*, history instances included);
3. single updates: ``PATCH /entities/{id}/attrs`` of one property on random meters;
4. queries: ``GET /entities?type=Device&q=activePowerImport>2.5&limit=20`` with the entities stored, p50/p99; then
   single-entity ``GET /entities/{id}`` of random meters (Orion-LD's reference: 7,700/s);
   the history's deferred work goes on in the background while these phases run — PostgreSQL: the temporal
   materialiser (issue 3) follows the history; SQLite: the flusher moves the head of the history into a bucket of
   chunks whenever it holds ``--head-rows`` rows (by default four passes', so that each meter's chunk holds four
   readings, as an hour of quarter-hourly readings does in production; decision 0720): with the default 3 measured
   passes, once, when the last pass ends. The history rows not yet taken
   (SQLite: the head) after the batch passes and after the single updates are printed (SQLite), and with
   ``--catch-up`` the time of one temporal read at the end (PostgreSQL: it first brings the materialisation up to
   date); by default (``--settle``) the deferred work is let finish (timed: PostgreSQL, a temporal read; SQLite, until
   the flusher has moved the head) after the batch passes and after the single updates, so that each phase is
   measured without the deferred work of the ones before, and the batch rate is printed once more with that time
   included (``batch_incl_history_per_s``); on PostgreSQL settling also runs ``VACUUM (ANALYZE)`` and
   ``CHECKPOINT`` (timed), what autovacuum and the phase's WAL do on a default server anyway — the test server runs
   without autovacuum; ``--no-settle`` runs the phases back to back;
   the CPU per batch update is printed split by process — the broker (all threads), this client, PostgreSQL's
   processes — for the measured passes (``batch_update_*_cpu_us``) and for every pass with the settling included
   (``batch_incl_history_*_cpu_us``), with the cores they kept busy (``*_cores_busy``): on this 2-core machine
   that says whether a rate is bound by CPU (decision 0700);
5. the reference: the same entity rows the store writes, already serialized, upserted straight into the same
   database with ``executemany`` in batches of 1,000 (one transaction each): created with the first pass's values,
   then updated with each measured pass's (median) — the ratio is ours / that. Upserting rows identical to the
   stored ones is about twice as fast on SQLite (the reference before decision 0516): that rate is printed too
   (``raw_same_rows_again_per_s``), with our ratio to it, for comparison with earlier figures. The batch rate with
   the history's deferred work included (``batch_incl_history_per_s``, with ``--settle``) gets the same two ratios:
   the issue's goal counts the history instances in.

Figures are medians of the measured passes. The machine is shared: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from broker_workload import (
    BASE,
    ROOT,
    connect_store_file,
    free_port,
    meter,
    own_cpu_s,
    process_cpu_s,
    single_patch,
    start_broker,
    stop_broker,
    thread_cpu_s,
)

# --- workload ---------------------------------------------------------------------------------------------


# --- a minimal keep-alive HTTP/1.1 client ---------------------------------------------------------------------

class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def http_request(method: str, path: str, body: bytes | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", "Accept: application/json"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def run_requests(port: int, requests: list[bytes], concurrency: int, ok: set[int]) -> list[float]:
    """Send all requests over ``concurrency`` connections; returns each request's latency (s)."""
    queue = list(reversed(requests))
    latencies: list[float] = []

    async def worker() -> None:
        conn = await Connection.open(port)
        try:
            while queue:
                raw = queue.pop()
                t0 = time.perf_counter()
                status, body = await conn.request(raw)
                latencies.append(time.perf_counter() - t0)
                if status not in ok:
                    raise RuntimeError(f"unexpected {status}: {body[:300]!r}")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


# --- the server -------------------------------------------------------------------------------------------------

SERVER_SRC = str(ROOT / "src")
"""The source tree the broker server runs from (``--server-src``: another checkout's, for a before/after run)."""


def _absolute(path: str) -> str:
    return str(Path(path).resolve())


async def phase(name: str, port: int, pid: int, requests: list[bytes], concurrency: int, ok: set[int],
                results: dict[str, float]) -> None:
    """One measured phase: ``<name>_per_s``, the broker's CPU per request (all its threads) and p50/p99 latency."""
    t0, c0 = time.perf_counter(), process_cpu_s(pid)
    lat = await run_requests(port, requests, concurrency, ok)
    results[f"{name}_per_s"] = len(requests) / (time.perf_counter() - t0)
    results[f"{name}_server_cpu_us"] = (process_cpu_s(pid) - c0) / len(requests) * 1e6
    results[f"{name}_p50_ms"] = pct(lat, 50) * 1000
    results[f"{name}_p99_ms"] = pct(lat, 99) * 1000


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every PostgreSQL process on the machine (backends, WAL writer, checkpointer):
    the server's share of the batches' cost (the benchmark's PostgreSQL serves nothing else while it runs). Each
    process's own CPU: the backends are the postmaster's children, so counting each one's tree (as for the broker and
    its batch workers) counted them twice — the figures from 0730 until this fix (0760) are about double."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                total += own_cpu_s(int(comm.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


class BatchCpu:
    """CPU per batch update, split by who spends it — the broker (all its threads: the event loop and, on SQLite,
    the temporal materialiser's thread), this client process, and PostgreSQL's processes — with the cores they kept
    busy: against the machine's 2 cores this says whether a rate is bounded by CPU (decision 0700)."""

    def __init__(self, pid: int, kind: str, *, start: bool = True) -> None:
        self.pid, self.kind = pid, kind
        self.spent = {"server": 0.0, "server_loop": 0.0, "client": 0.0, "postgres": 0.0}
        self.wall = 0.0
        self._mark: tuple[float, dict[str, float]] | None = None
        if start:
            self.resume()

    def _now(self) -> dict[str, float]:
        now = {"server": process_cpu_s(self.pid), "server_loop": thread_cpu_s(self.pid).get(self.pid, 0.0),
               "client": time.process_time()}
        if self.kind == "postgresql":
            now["postgres"] = postgres_cpu_s()
        return now

    def resume(self) -> None:
        self._mark = (time.perf_counter(), self._now())

    def pause(self) -> None:
        assert self._mark is not None
        t0, before = self._mark
        now = self._now()
        self.wall += time.perf_counter() - t0
        for key, value in now.items():
            self.spent[key] += value - before[key]
        self._mark = None

    def report(self, name: str, updates: int, results: dict[str, float]) -> None:
        keys = ("server", "client", "postgres") if self.kind == "postgresql" else ("server", "client")
        for key in keys:
            results[f"{name}_{key}_cpu_us"] = self.spent[key] / updates * 1e6
        # the broker's event loop (its main thread) and the rest of its threads (SQLite: the materialiser's)
        results[f"{name}_server_loop_cpu_us"] = self.spent["server_loop"] / updates * 1e6
        results[f"{name}_cores_busy"] = sum(self.spent[k] for k in keys) / self.wall if self.wall else 0.0


async def settle(port: int, kind: str, db: str, head_rows: int = 0) -> float:
    """Seconds until the history's deferred work is done (``--settle``). PostgreSQL: a temporal read first brings the
    materialisation up to date (read-your-writes), so its time is the backlog's. SQLite: until no flush is due —
    the head holds fewer than ``--head-rows`` rows — and the rows of the last flush have left the head (the time
    includes up to the flusher's check interval of 250 ms and this poll's 50 ms: an upper bound of the flush's)."""
    t0 = time.perf_counter()
    if kind == "sqlite":
        while (history_backlog(kind, db) or 0) >= head_rows or flushed_rows_left(db):
            if time.perf_counter() - t0 > 600:
                raise RuntimeError("the flusher did not move the head within 10 minutes")
            await asyncio.sleep(0.05)
        return time.perf_counter() - t0
    temporal = http_request("GET", f"{BASE}/temporal/entities/urn:ngsi-ld:Device:meter-0000000?lastN=1")
    await run_requests(port, [temporal], 1, {200})
    return time.perf_counter() - t0


async def vacuum(dsn: str) -> float:
    """Seconds of a ``VACUUM (ANALYZE)`` of the broker's database and a ``CHECKPOINT``: what a default PostgreSQL's
    autovacuum does on its own once a fifth of a table's rows changed, and the checkpoint the phase's WAL will cause
    anyway. The project's test and CI server runs with ``autovacuum = off`` (``SHOW autovacuum``), where the update
    passes would otherwise leave every row's dead versions to every later phase and the planner with no statistics;
    and a checkpoint that the batches' gigabytes of WAL start would otherwise write their dirty pages out during the
    next phase (decision 0518). Part of settling (``--settle``, the default)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
        return time.perf_counter() - t0
    finally:
        await conn.close()


def history_backlog(kind: str, db: str) -> int | None:
    """History rows not yet moved into chunks — the head (SQLite: read from the files, WAL lets us read beside the
    broker; PostgreSQL's materialiser cursor is a snapshot, not a count: None)."""
    if kind != "sqlite":
        return None
    conn = connect_store_file(Path(db.split("///", 1)[1]))  # with the temporal tables' file (decision 0710)
    try:
        row = conn.execute("SELECT (SELECT MAX(seq) FROM broker_entity_history)"
                           " - (SELECT COALESCE(MAX(seq_hi), 0) FROM broker_temporal_buckets)").fetchone()
        return int(row[0] or 0)
    finally:
        conn.close()


def flushed_rows_left(db: str) -> int:
    """SQLite: history rows a flush moved into chunks that are not yet deleted from the head (the flusher deletes
    them in slices after the bucket commits; the keeper row of the last ``seq`` aside)."""
    conn = connect_store_file(Path(db.split("///", 1)[1]))
    try:
        return int(conn.execute("SELECT COUNT(*) FROM broker_entity_history WHERE entity_id <> '' AND seq <="
                                " (SELECT COALESCE(MAX(seq_hi), 0) FROM broker_temporal_buckets)").fetchone()[0])
    finally:
        conn.close()


# --- the raw reference ------------------------------------------------------------------------------------------

def store_rows(entities: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The entity rows exactly as the store writes them (expanded with the core context, serialized)."""
    from sleutelbos.broker.context import ContextStore
    from sleutelbos.broker.entity import now_iso
    from sleutelbos.broker.store.sqlite import entity_row
    from sleutelbos.broker.validation import expand_entity

    ctx = ContextStore().core
    now = now_iso()
    return [entity_row("", expand_entity(e, ctx, now)) for e in entities]


def _timed_passes(passes: list[list[tuple[Any, ...]]], batch: int, one_pass: Any) -> list[float]:
    """Rows/s of each pass of ``passes`` (each the whole fleet), ``one_pass(rows)`` writing one batch."""
    rates = []
    for rows in passes:
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            one_pass(rows[i:i + batch])
        rates.append(len(rows) / (time.perf_counter() - t0))
    return rates


def raw_sqlite(path: Path, create: list[tuple[Any, ...]], updates: list[list[tuple[Any, ...]]],
               batch: int) -> tuple[float, float]:
    """The reference: ``create`` inserted, then each pass of ``updates`` upserted — new values over the stored ones,
    as the broker's measured passes do; returns the median of those passes' rates, and the rate of upserting the last
    pass's rows once more (identical rows: the reference before decision 0516, about twice as fast, printed beside
    it for comparison with earlier figures)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("DROP TABLE IF EXISTS bench_raw_entities")
    conn.execute("CREATE TABLE bench_raw_entities AS SELECT * FROM broker_entities WHERE 0")
    conn.execute("CREATE UNIQUE INDEX bench_raw_pk ON bench_raw_entities (tenant, id)")
    conn.execute("CREATE INDEX bench_raw_type ON bench_raw_entities (tenant, type, id)")
    # as many columns as the store's row has (the scalar column of decision 0555 is written with the document)
    marks = ",".join("?" * len(create[0]))
    scalars = ", scalars=excluded.scalars" if len(create[0]) > 11 else ""
    sql = (f"INSERT INTO bench_raw_entities VALUES ({marks}) ON CONFLICT (tenant, id) DO UPDATE SET"  # noqa: S608
           f" modified_at=excluded.modified_at, doc=excluded.doc{scalars}")

    def one_batch(rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")

    _timed_passes([create], batch, one_batch)  # the first pass creates, like the broker's first pass
    rates = _timed_passes(updates, batch, one_batch)
    same = _timed_passes(updates[-1:], batch, one_batch)[0]
    conn.execute("DROP TABLE bench_raw_entities")
    conn.close()
    return statistics.median(rates), same


async def raw_postgres(dsn: str, create: list[tuple[Any, ...]], updates: list[list[tuple[Any, ...]]],
                       batch: int) -> tuple[float, float]:
    """As :func:`raw_sqlite`, with asyncpg's ``executemany`` into the same PostgreSQL database."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_raw_entities")
        await conn.execute("CREATE TABLE bench_raw_entities (LIKE broker_entities INCLUDING ALL)")
        sql = ("INSERT INTO bench_raw_entities VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,$8,$9,$10,$11)"
               " ON CONFLICT (tenant, id) DO UPDATE SET modified_at=excluded.modified_at, doc=excluded.doc")

        def pg(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            # the SQLite store's row minus its scalar column (decision 0555), which PostgreSQL does not keep
            return [(*r[:3], orjson.loads(r[3]), *r[4:11]) for r in rows]

        async def passes(rounds: list[list[tuple[Any, ...]]]) -> list[float]:
            rates = []
            for rows in rounds:
                t0 = time.perf_counter()
                for i in range(0, len(rows), batch):
                    async with conn.transaction():
                        await conn.executemany(sql, rows[i:i + batch])
                rates.append(len(rows) / (time.perf_counter() - t0))
            return rates

        updates_pg = [pg(rows) for rows in updates]
        await passes([pg(create)])
        rates = await passes(updates_pg)
        same = (await passes(updates_pg[-1:]))[0]
        await conn.execute("DROP TABLE bench_raw_entities")
        return statistics.median(rates), same
    finally:
        await conn.close()


# --- one store --------------------------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def bench_store(kind: str, db: str, data_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    n = args.entities
    batch = 1000
    # SQLite: a flush once the head holds four passes — a bucket holds an hour of a fleet that reports every quarter
    # of an hour
    head_rows = args.head_rows or 4 * n
    env = {"SLEUTELBOS_BROKER_TEMPORAL_HEAD_ROWS": str(head_rows),
           "SLEUTELBOS_BROKER_TEMPORAL_BUCKET_SECONDS": str(args.bucket_seconds),
           "SLEUTELBOS_BROKER_BATCH_WORKERS": str(args.batch_workers)} if kind == "sqlite" else {}
    proc = start_broker(db, port, data_dir, SERVER_SRC, **env)
    results: dict[str, float] = {}
    if kind == "sqlite":
        results["batch_worker_processes"] = args.batch_workers
    try:
        upsert = f"{BASE}/entityOperations/upsert"
        first = [http_request("POST", upsert, orjson.dumps([meter(i, 0) for i in range(s, min(n, s + batch))]))
                 for s in range(0, n, batch)]
        cpu_all = BatchCpu(proc.pid, kind)
        t0 = time.perf_counter()
        await run_requests(port, first, args.batch_connections, {201, 204})
        batch_seconds = time.perf_counter() - t0
        results["batch_create_per_s"] = n / batch_seconds
        rates = []
        cpu_updates = BatchCpu(proc.pid, kind, start=False)
        for round_ in range(1, args.rounds + 1):
            reqs = [http_request("POST", upsert, orjson.dumps([meter(i, round_) for i in range(s, min(n, s + batch))]))
                    for s in range(0, n, batch)]
            cpu_updates.resume()
            t0 = time.perf_counter()
            await run_requests(port, reqs, args.batch_connections, {204})
            elapsed = time.perf_counter() - t0
            cpu_updates.pause()
            batch_seconds += elapsed
            rates.append(n / elapsed)
        results["batch_update_per_s"] = statistics.median(rates)
        cpu_updates.report("batch_update", n * args.rounds, results)
        backlog = history_backlog(kind, db)
        if backlog is not None:  # the history's deferred work still to do when the next phase starts (SQLite: head)
            results["history_backlog_after_batches"] = backlog
        if args.settle:
            catch_up = await settle(port, kind, db, head_rows)
            results["history_settle_after_batches_s"] = catch_up
            # every batch pass (create included) with the history's deferred work done: the rate at which the broker
            # absorbs batches for good (PostgreSQL: materialised per instance; SQLite: moved into chunks)
            results["batch_incl_history_per_s"] = n * (1 + args.rounds) / (batch_seconds + catch_up)
            cpu_all.pause()  # (the requests built between the passes count as client time here)
            cpu_all.report("batch_incl_history", n * (1 + args.rounds), results)
            if kind == "postgresql":
                results["vacuum_after_batches_s"] = await vacuum(db)

        rnd = random.Random(7)
        singles = [http_request("PATCH", *single_patch(rnd, n)) for _ in range(args.singles)]
        await phase("single_patch", port, proc.pid, singles, args.concurrency, {204}, results)
        backlog = history_backlog(kind, db)
        if backlog is not None:
            results["history_backlog_after_patch"] = backlog
        if args.settle:
            results["history_settle_after_patch_s"] = await settle(port, kind, db, head_rows)
            if kind == "postgresql":
                results["vacuum_after_patch_s"] = await vacuum(db)

        query = http_request("GET", f"{BASE}/entities?type=Device&q=activePowerImport%3E2.5&limit=20")
        await run_requests(port, [query] * 50, 4, {200})  # warm-up
        await phase("query", port, proc.pid, [query] * args.queries, args.concurrency, {200}, results)

        gets = [http_request("GET", f"{BASE}/entities/urn:ngsi-ld:Device:meter-{rnd.randrange(n):07d}")
                for _ in range(args.queries)]
        await run_requests(port, gets[:50], 4, {200})  # warm-up
        await phase("single_get", port, proc.pid, gets, args.concurrency, {200}, results)

        if args.catch_up:
            # A temporal read first brings the materialisation up to date (read-your-writes): its time after every
            # phase is what the materialiser still had to do then — the backlog the phases above left. Opt-in: it
            # writes that whole backlog into the file the raw reference below then runs on (not the default's state).
            results["temporal_catch_up_at_end_s"] = await settle(port, kind, db, head_rows)
    finally:
        stop_broker(proc)

    # the same rows as the broker's passes: created with round 0's values, then updated with each measured round's
    create = store_rows([meter(i, 0) for i in range(n)])
    updates = [store_rows([meter(i, r) for i in range(n)]) for r in range(1, args.rounds + 1)]
    if kind == "sqlite":
        raw, same = raw_sqlite(Path(db.split("///", 1)[1]), create, updates, batch)
    else:
        raw, same = await raw_postgres(db, create, updates, batch)
    results["raw_executemany_per_s"] = raw
    results["raw_same_rows_again_per_s"] = same
    results["batch_ratio_to_raw"] = results["batch_update_per_s"] / raw
    results["batch_ratio_to_same_rows_again"] = results["batch_update_per_s"] / same
    if "batch_incl_history_per_s" in results:  # the goal: "history instances included"
        results["batch_incl_history_ratio_to_raw"] = results["batch_incl_history_per_s"] / raw
        results["batch_incl_history_ratio_to_same_rows_again"] = results["batch_incl_history_per_s"] / same
    return results


GOALS = {"batch_update_per_s": 50_000, "batch_incl_history_per_s": 50_000, "batch_ratio_to_raw": 0.2,
         "batch_incl_history_ratio_to_raw": 0.2,
         "single_patch_per_s": 3_500, "query_per_s": 5_000}


def report(kind: str, n: int, r: dict[str, float]) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n== {kind}: {n:,} meter entities, batches of 1,000, 4 properties each (load average {load}, "
          f"{os.cpu_count()} CPUs) ==", flush=True)
    for key, value in r.items():
        goal = GOALS.get(key)
        mark = "" if goal is None else f"   goal ≥ {goal:,}  {'met' if value >= goal else 'NOT met'}"
        print(f"  {key:24s} {value:>12,.2f}{mark}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="sqlite")
    ap.add_argument("--pg-dsn", default=os.environ.get("SLEUTELBOS_TEST_PG_DSN"))
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--server-src", default=None,
                    help="run the broker from this source tree (e.g. main's src, to compare before/after)")
    ap.add_argument("--rounds", type=int, default=3, help="measured update passes (median)")
    ap.add_argument("--singles", type=int, default=3_000)
    ap.add_argument("--queries", type=int, default=3_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--full", action="store_true", help="100,000 entities, 10,000 singles and queries")
    ap.add_argument("--settle", action=argparse.BooleanOptionalAction, default=True,
                    help="let the temporal materialiser catch up after the batch passes and after the single updates"
                         " (timed, and a batch rate with that time included), so that each later phase is measured"
                         " without the earlier phases' deferred work (default; --no-settle: phases back to back)")
    ap.add_argument("--batch-workers", type=int, default=0,
                    help="SQLite: the broker's broker_batch_workers, processes that take the batches apart and write "
                    "them (decision 0730); 0: the broker's own process")
    ap.add_argument("--batch-connections", type=int, default=2,
                    help="concurrent client connections sending the batches (default 2)")
    ap.add_argument("--head-rows", type=int, default=None,
                    help="SQLite: the broker's broker_temporal_head_rows (default: 4 x --entities, four passes: an"
                         " hour of quarter-hourly readings per meter in each bucket, as in production)")
    ap.add_argument("--bucket-seconds", type=float, default=3600.0,
                    help="SQLite: the broker's broker_temporal_bucket_seconds (default an hour, as in production: the"
                         " head leaves when it holds --head-rows)")
    ap.add_argument("--catch-up", action="store_true",
                    help="time a temporal read after the last phase (the materialiser's remaining backlog); the raw"
                         " reference then runs on a file holding that backlog's writes, unlike a run without")
    args = ap.parse_args()
    global SERVER_SRC
    if args.server_src:
        SERVER_SRC = _absolute(args.server_src)
        print(f"broker server from {SERVER_SRC}", flush=True)
    if args.full:
        args.entities, args.singles, args.queries = 100_000, 10_000, 10_000
    kinds = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            if kind == "sqlite":
                db = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
                report(kind, args.entities, await bench_store(kind, db, Path(tmp), args))
            else:
                if not args.pg_dsn:
                    print("\n== postgresql: skipped (no --pg-dsn / SLEUTELBOS_TEST_PG_DSN) ==")
                    continue
                import asyncpg

                name = f"sb_bench_{os.getpid()}"
                admin = await asyncpg.connect(args.pg_dsn)
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
                await admin.execute(f'CREATE DATABASE "{name}"')
                await admin.close()
                from urllib.parse import urlsplit

                db = urlsplit(args.pg_dsn)._replace(path=f"/{name}").geturl()
                try:
                    report(kind, args.entities, await bench_store(kind, db, Path(tmp), args))
                finally:
                    admin = await asyncpg.connect(args.pg_dsn)
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    await admin.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
