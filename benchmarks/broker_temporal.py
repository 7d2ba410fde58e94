"""Broker temporal API: one meter's day and a month of daily aggregates over a large history of interval readings,
each against the raw SQL query doing the same on the same tables, in the same run.

Run from the worktree root::

    PYTHONPATH=src python benchmarks/broker_temporal.py                      # SQLite, 200 meters x 96/day x 60 days
    PYTHONPATH=src python benchmarks/broker_temporal.py --store postgresql --pg-dsn postgresql://postgres@127.0.0.1/test
    PYTHONPATH=src python benchmarks/broker_temporal.py --full               # 1,000 meters x 96/day x 105 days ≈ 10 M

What it does:

1. builds the broker in-process (the real app, migrations, materialiser) on a fresh database and creates one
   ``Device`` entity per meter through the service;
2. bulk-loads the interval readings (allowed by the issue) straight into the temporal tables, as the broker would
   have left them: on SQLite the hourly buckets of history chunks the flusher writes (docs/decisions/0720; one chunk
   per meter and hour holding its four history rows), with ``executemany``; on PostgreSQL the per-attribute rows of
   ``broker_temporal_instances`` the materialiser writes, with ``COPY`` (monthly partitions prepared first);
3. measures, over random meters and days, through the HTTP API (ASGI, in-process: request parsing, SQL, rendering):
   ``GET /temporal/entities/{id}?attrs=energy&timerel=between&timeAt=<day>&endTimeAt=<day+1>`` (96 instances),
   the same day with ``lastN=96`` and ``timerel=before``, and
   ``?options=aggregatedValues&aggrMethods=sum,avg,min,max,totalCount&aggrPeriodDuration=P1D`` over 30 days;
4. the references: the raw SQL on the same tables — the day's readings (PostgreSQL: rows by ``(tenant, entity_id,
   attr, observed_at)`` range; SQLite: the day's 24 chunks of the meter, their bucket numbers known to the script,
   taken apart with ``json_each``), and ``GROUP BY`` day with the same five aggregates — run the same number of
   times.

Prints medians and p99 in milliseconds, the ratio API / raw SQL, and the goals (day < 10 ms, month of P1D < 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from sleutelbos.core.settings import load_settings
from sleutelbos.stack import StackContext, build_app

ATTR = "https://uri.etsi.org/ngsi-ld/default-context/energy"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


def stamp(t: datetime) -> str:
    return t.strftime(FMT)


def rows_for(meter: int, days: int) -> Any:
    entity_id = f"urn:ngsi-ld:Device:meter-{meter:05d}"
    rnd = random.Random(meter)
    for i in range(days * 96):
        t = stamp(T0 + timedelta(minutes=15 * i))
        value = round(rnd.uniform(0.0, 2.5), 3)
        instance = orjson.dumps({"type": "Property", "value": value, "observedAt": t, "unitCode": "KWH"}).decode()
        yield (0, "", entity_id, ATTR, None, t, t, instance)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def hourly_buckets(meters: int, days: int, first_seq: int) -> Any:
    """SQLite: per hour, the bucket the flusher would write — (bucket, its last seq, first and last reading's
    second, chunk rows in key order) — one chunk per meter of its four history rows ``[seq, modifiedAt,
    {attribute: [instance]}]`` (each reading recorded at its observedAt)."""
    seq = first_seq
    rnds = [random.Random(m) for m in range(meters)]
    for hour in range(days * 24):
        times = [stamp(T0 + timedelta(minutes=15 * (hour * 4 + k))) for k in range(4)]
        rows = []
        for m in range(meters):
            entries = []
            for t in times:
                seq += 1
                value = round(rnds[m].uniform(0.0, 2.5), 3)
                entries.append([seq, t, {ATTR: [{"type": "Property", "value": value, "observedAt": t,
                                                 "unitCode": "KWH"}]}])
            rows.append((hour + 1, "", f"urn:ngsi-ld:Device:meter-{m:05d}", orjson.dumps(entries).decode()))
        yield hour + 1, seq, times[0][:19], times[-1][:19], rows


async def bulk_load(service: Any, meters: int, days: int) -> float:
    db = service.db
    started = time.perf_counter()
    if db.dialect == "sqlite":
        import sqlite3

        conn = sqlite3.connect(str(db.store.temporal_file), isolation_level=None)
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("ATTACH DATABASE ? AS broker", (str(db.store.path),))
        first = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM broker.broker_entity_history").fetchone()[0]
        conn.execute("BEGIN")
        last = first
        for bucket, last, lo, hi, rows in hourly_buckets(meters, days, first):
            conn.executemany("INSERT INTO broker_temporal_chunks (bucket, tenant, entity_id, body) VALUES (?,?,?,?)",
                             rows)
            conn.execute("INSERT INTO broker_temporal_buckets (bucket, seq_hi, observed_lo, observed_hi, modified_lo,"
                         " modified_hi) VALUES (?,?,?,?,?,?)", (bucket, last, lo, hi, lo, hi))
            if bucket % 100 == 0:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
        conn.execute("COMMIT")
        # the seqs handed out here stay taken in the store's history (a keeper row, as the flusher leaves one)
        conn.execute("DELETE FROM broker.broker_entity_history")
        conn.execute("INSERT INTO broker.broker_entity_history (seq, tenant, entity_id, modified_at, deleted,"
                     " instances) VALUES (?, '', '', '', 1, NULL)", (last,))
        conn.execute("ANALYZE")
        conn.close()
    else:
        last = (T0 + timedelta(days=days)).date()
        await service.partitions.ensure_months(T0.date(), last)
        async with db.store.pool.acquire() as conn:
            for m in range(meters):
                await conn.copy_records_to_table(
                    "broker_temporal_instances", records=rows_for(m, days),
                    columns=["history_seq", "tenant", "entity_id", "attr", "dataset_id", "observed_at", "modified_at",
                             "instance"])
            await conn.execute("ANALYZE broker_temporal_instances")
    return time.perf_counter() - started


async def timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sb-temporal-bench-"))
    if args.store == "sqlite":
        url = f"sqlite:///{tmp / 'broker.sqlite'}"
    else:
        import asyncpg

        dbname = args.keep_db or f"sb_temporal_bench_{int(time.time())}"
        admin = await asyncpg.connect(args.pg_dsn)
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname):
            await admin.execute(f'CREATE DATABASE "{dbname}"')
        await admin.close()
        url = args.pg_dsn.rsplit("/", 1)[0] + f"/{dbname}"
    settings = load_settings(data_dir=tmp, broker_database_url=url, mqtt_port=None, log_level="WARNING")
    app = build_app(StackContext(settings=settings), expose=("broker",))
    meters, days = args.meters, args.days
    print(f"store={args.store} meters={meters} days={days} readings={meters * days * 96:,}")
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        services = app.state.context.services
        temporal = services["broker.temporal"]
        for start in range(0, meters, 500):
            batch = [{"id": f"urn:ngsi-ld:Device:meter-{m:05d}", "type": "Device",
                      "name": {"type": "Property", "value": f"meter {m}"}} for m in range(start, min(meters, start + 500))]
            r = await client.post("/ngsi-ld/v1/entityOperations/upsert", content=orjson.dumps(batch),
                                  headers={"Content-Type": "application/json"})
            assert r.status_code in (201, 204), r.text
        await temporal.materialiser.catch_up()
        count = ("SELECT COALESCE(SUM(json_array_length(body)), 0) FROM broker_temporal_chunks"
                 if args.store == "sqlite" else "SELECT COUNT(*) FROM broker_temporal_instances")
        loaded = await temporal.db.fetchval(count)
        if loaded >= meters * days * 96:
            print(f"kept database {args.keep_db}: {loaded:,} instances already loaded")
        else:
            seconds = await bulk_load(temporal, meters, days)
            total = await temporal.db.fetchval(count)
            print(f"bulk load: {total:,} instances in {seconds:.1f} s ({total / seconds:,.0f}/s)")

        rnd = random.Random(7)

        def pick_day() -> tuple[str, str, str]:
            meter = f"urn:ngsi-ld:Device:meter-{rnd.randrange(meters):05d}"
            day = T0 + timedelta(days=rnd.randrange(days))
            return meter, stamp(day), stamp(day + timedelta(days=1))

        def pick_month() -> tuple[str, str, str]:
            meter = f"urn:ngsi-ld:Device:meter-{rnd.randrange(meters):05d}"
            day = T0 + timedelta(days=rnd.randrange(max(1, days - 30)))
            return meter, stamp(day), stamp(day + timedelta(days=30))

        async def api_between() -> None:
            meter, start, end = pick_day()
            r = await client.get(f"/ngsi-ld/v1/temporal/entities/{meter}",
                                 params={"attrs": "energy", "timerel": "between", "timeAt": start, "endTimeAt": end})
            assert r.status_code == 200 and len(r.json()["energy"]) == 96, r.text[:300]

        async def api_last_n() -> None:
            meter, _, end = pick_day()
            r = await client.get(f"/ngsi-ld/v1/temporal/entities/{meter}",
                                 params={"attrs": "energy", "lastN": "96", "timerel": "before", "timeAt": end})
            assert r.status_code == 200 and len(r.json()["energy"]) == 96, r.text[:300]

        async def api_month() -> None:
            meter, start, end = pick_month()
            r = await client.get(f"/ngsi-ld/v1/temporal/entities/{meter}", params={
                "attrs": "energy", "options": "aggregatedValues", "aggrMethods": "sum,avg,min,max,totalCount",
                "aggrPeriodDuration": "P1D", "timerel": "between", "timeAt": start, "endTimeAt": end})
            assert r.status_code == 200 and len(r.json()["energy"]["sum"]) == min(30, days), r.text[:300]

        db = temporal.db
        num = ("json_extract(instance, '$.value')" if db.dialect == "sqlite"
               else "(instance->>'value')::float8")

        def hours(start: str, end: str) -> str:
            """SQLite: the buckets (hours since T0, from 1) of [start, end), as the loader numbered them."""
            first = int((datetime.fromisoformat(start) - T0).total_seconds() // 3600) + 1
            last = int((datetime.fromisoformat(end) - T0).total_seconds() // 3600)
            return f"c.bucket IN ({', '.join(str(b) for b in range(first, last + 1))})"  # a look per bucket

        # SQLite: the meter's chunks of the range's buckets, the attribute's instances taken out of them
        chunked = ("FROM broker_temporal_chunks c, json_each(c.body) j, json_each(j.value -> 2, '$.\"" + ATTR
                   + "\"') i WHERE <hours> AND c.tenant = '' AND c.entity_id = ?")

        async def raw_day() -> None:
            meter, start, end = pick_day()
            if db.dialect == "sqlite":
                rows = await db.fetch("SELECT j.value ->> 0, i.value ->> '$.observedAt', i.value "
                                      + chunked.replace("<hours>", hours(start, end)), [meter])
            else:
                rows = await db.fetch(
                    "SELECT seq, observed_at, instance FROM broker_temporal_instances WHERE tenant = '' AND"
                    " entity_id = ? AND attr = ? AND observed_at >= ? AND observed_at < ? ORDER BY observed_at",
                    [meter, ATTR, start, end])
            assert len(rows) == 96

        async def raw_month() -> None:
            meter, start, end = pick_month()
            if db.dialect == "sqlite":
                v = "(i.value ->> '$.value')"
                rows = await db.fetch(
                    f"SELECT substr(i.value ->> '$.observedAt', 1, 10) AS d, SUM({v}), AVG({v}), MIN({v}), MAX({v}),"
                    " COUNT(*) " + chunked.replace("<hours>", hours(start, end)) + " GROUP BY d ORDER BY d", [meter])
            else:
                rows = await db.fetch(
                    f"SELECT substr(observed_at, 1, 10) AS d, SUM({num}), AVG({num}), MIN({num}), MAX({num}),"  # noqa: S608
                    " COUNT(*) FROM broker_temporal_instances WHERE tenant = '' AND entity_id = ? AND attr = ?"
                    " AND observed_at >= ? AND observed_at < ? GROUP BY d ORDER BY d", [meter, ATTR, start, end])
            assert len(rows) == min(30, days)

        n = args.repeat
        for fn in (api_between, raw_day, api_month, raw_month):  # warm caches
            await timed(fn, 5)
        results = {
            "day (between)": (await timed(api_between, n), await timed(raw_day, n)),
            "day (lastN=96)": (await timed(api_last_n, n), await timed(raw_day, n)),
            "month of P1D aggregates": (await timed(api_month, n), await timed(raw_month, n)),
        }
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    goals = {"day (between)": 10.0, "day (lastN=96)": 10.0, "month of P1D aggregates": 50.0}
    print(f"{'query':<26}{'API p50':>10}{'API p99':>10}{'raw p50':>10}{'raw p99':>10}{'ratio':>8}  goal")
    for name, (api, raw) in results.items():
        p50, p99, r50, r99 = statistics.median(api), pct(api, 0.99), statistics.median(raw), pct(raw, 0.99)
        verdict = "met" if p50 < goals[name] else "NOT met"
        print(f"{name:<26}{p50:>9.2f} {p99:>9.2f} {r50:>9.2f} {r99:>9.2f} {p50 / r50:>7.1f}x  "
              f"< {goals[name]:.0f} ms (median): {verdict}")
    if args.store == "postgresql" and not args.keep_db:
        import asyncpg

        admin = await asyncpg.connect(args.pg_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--keep-db", default=None, metavar="NAME",
                        help="PostgreSQL: use (and keep) this database; the load is skipped when it is already full")
    parser.add_argument("--full", action="store_true", help="1,000 meters x 96/day x 105 days (about 10 million)")
    args = parser.parse_args()
    if args.full:
        args.meters, args.days = 1000, 105
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
