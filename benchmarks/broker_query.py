"""Benchmark of the NGSI-LD query language (issue 2): parse+translate rate, matches() rate, and SQL selectivity.

Prints, each measured in this run (medians of --repeats rounds; the machine is shared, so read the ratios):

1. ``q`` parse + SQL translation per second (SQLite and PostgreSQL dialects), for a mix of meter queries;
2. ``matches()`` (compiled predicate) per second over meter entities, and a hand-written Python predicate for the same
   query — the reference — with their ratio;
3. on real SQLite with N meter entities in the store's shape: selective ``serialNumber=="..."`` and range
   ``batteryLevel>...`` queries (LIMIT 20) per second with p50/p99 — through the attribute value index, the stores'
   default SQL (direct extraction with the document scan as fallback, decision 0552) and the document scan alone —
   against the reference of the same lookup on a plain indexed column.

Run from the worktree root: ``PYTHONPATH=src python benchmarks/broker_query.py`` (defaults finish in about a minute;
``--entities 100000`` for the issue's size).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import time
from collections.abc import Callable
from typing import Any

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.query import (
    VALUE_INDEX_DDL,
    VALUE_INDEX_TABLE,
    SqlTarget,
    attribute_value_rows,
    compile_predicate,
    parse_query,
    register_sqlite_functions,
    translate,
)

V = "https://uri.etsi.org/ngsi-ld/default-context/"
QUERIES = [
    'serialNumber=="SN-000042"',
    "batteryLevel>0.9",
    'deviceState=="ok";batteryLevel>=0.2',
    "(batteryLevel<0.1|rssi<0.2);deviceCategory==\"meter\"",
    "dateLastValueReported>2026-11-01T00:00:00Z",
    'owner==urn:ngsi-ld:Organization:netbeheer,urn:ngsi-ld:Organization:other',
]


def meter(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Device:meter-{i:07d}",
        "type": [V + "Device"],
        "createdAt": "2026-11-28T00:00:00.000000Z",
        "modifiedAt": "2026-11-28T00:00:00.000000Z",
        V + "serialNumber": [{"type": "Property", "value": f"SN-{i:06d}"}],
        V + "batteryLevel": [{"type": "Property", "value": round(rng.random(), 4), "unitCode": "P1",
                              "observedAt": "2026-11-28T10:00:00Z"}],
        V + "rssi": [{"type": "Property", "value": round(rng.random(), 3)}],
        V + "deviceState": [{"type": "Property", "value": rng.choice(["ok", "ok", "ok", "fault"])}],
        V + "deviceCategory": [{"type": "Property", "value": ["meter"]}],
        V + "dateLastValueReported": [{"type": "Property", "value": f"2026-11-{rng.randint(1, 28):02d}T12:00:00Z"}],
        V + "owner": [{"type": "Relationship", "object": "urn:ngsi-ld:Organization:netbeheer"}],
        "https://uri.etsi.org/ngsi-ld/location": [{"type": "GeoProperty", "value": {
            "type": "Point", "coordinates": [round(3.3 + rng.random() * 3.9, 5), round(50.7 + rng.random() * 2.8, 5)]}}],
    }


def rate(fn: Callable[[], int], repeats: int) -> float:
    """Median operations per second of ``fn`` (which returns how many operations it did)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def _lt(value: Any, bound: float) -> bool:
    return isinstance(value, int | float) and value < bound


def hand_written(query: str) -> Callable[[dict[str, Any]], bool]:
    """The reference: what a programmer would write for each query, knowing the data's shape."""
    def value(e: dict[str, Any], name: str) -> Any:
        instances = e.get(V + name)
        return instances[0].get("value", instances[0].get("object")) if instances else None

    table: dict[str, Callable[[dict[str, Any]], bool]] = {
        QUERIES[0]: lambda e: value(e, "serialNumber") == "SN-000042",
        QUERIES[1]: lambda e: isinstance(b := value(e, "batteryLevel"), float) and b > 0.9,
        QUERIES[2]: lambda e: value(e, "deviceState") == "ok" and (value(e, "batteryLevel") or 0) >= 0.2,
        QUERIES[3]: lambda e: (_lt(value(e, "batteryLevel"), 0.1) or _lt(value(e, "rssi"), 0.2))
        and "meter" in (value(e, "deviceCategory") or ()),
        QUERIES[4]: lambda e: (value(e, "dateLastValueReported") or "") > "2026-11-01T00:00:00Z",
        QUERIES[5]: lambda e: value(e, "owner") in ("urn:ngsi-ld:Organization:netbeheer",
                                                    "urn:ngsi-ld:Organization:other"),
    }
    return table[query]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=20_000, help="meter entities in the SQLite table")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=2_000, help="SQL queries per round")
    parser.add_argument("--pg-dsn", default=None,
                        help="also measure on PostgreSQL (a scratch schema is created and dropped), e.g. "
                             "postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    rng = random.Random(7)
    ctx = ContextStore().core

    print("== 1. q parse + translate (cold: every query string new; warm: repeated, served from the caches) ==")
    counter = iter(range(10**9))
    for dialect in ("sqlite", "postgresql"):
        target = SqlTarget(dialect, value_index=VALUE_INDEX_TABLE)  # type: ignore[arg-type]

        def cold(target: SqlTarget = target) -> int:
            for _ in range(200):
                n = next(counter)
                for q in QUERIES:
                    translate(parse_query(q.replace("0.9", f"0.{n}").replace("SN-000042", f"SN-{n}"), ctx), target)
            return 200 * len(QUERIES)

        def warm(target: SqlTarget = target) -> int:
            for _ in range(200):
                for q in QUERIES:
                    translate(parse_query(q, ctx), target)
            return 200 * len(QUERIES)

        print(f"  {dialect:10s}: cold {rate(cold, args.repeats):10,.0f} queries/s   "
              f"warm {rate(warm, args.repeats):10,.0f} queries/s")

    print("== 2. matches() vs a hand-written predicate (reference) ==")
    sample = [meter(i, rng) for i in range(5_000)]
    for q in QUERIES:
        predicate, reference = compile_predicate(parse_query(q, ctx)), hand_written(q)
        assert [predicate(e) for e in sample] == [reference(e) for e in sample], q
        ours = rate(lambda p=predicate: sum(1 for e in sample if p(e) or True), args.repeats)
        ref = rate(lambda p=reference: sum(1 for e in sample if p(e) or True), args.repeats)
        print(f"  {q[:48]:48s} matches(): {ours:10,.0f}/s  hand-written: {ref:10,.0f}/s  ratio {ours / ref:5.2f}")

    print(f"== 3. SQLite, {args.entities:,} meters: LIMIT 20 queries (value index / doc scan / plain column) ==")
    conn = sqlite3.connect(":memory:")
    register_sqlite_functions(conn)
    conn.execute("CREATE TABLE broker_entities (tenant TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, "
                 "doc TEXT NOT NULL, serial TEXT, battery REAL, PRIMARY KEY (tenant, id))")
    conn.execute("CREATE INDEX broker_entities_serial ON broker_entities (serial)")
    conn.execute("CREATE INDEX broker_entities_battery ON broker_entities (battery)")
    for ddl in VALUE_INDEX_DDL["sqlite"]:
        conn.execute(ddl)
    start = time.perf_counter()
    for lo in range(0, args.entities, 5_000):
        batch = [meter(i, rng) for i in range(lo, min(lo + 5_000, args.entities))]
        conn.executemany("INSERT INTO broker_entities VALUES ('', ?, ?, ?, ?, ?)", [
            (e["id"], V + "Device", json.dumps(e), e[V + "serialNumber"][0]["value"], e[V + "batteryLevel"][0]["value"])
            for e in batch])
        conn.executemany(f"INSERT INTO {VALUE_INDEX_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                         [r for e in batch for r in attribute_value_rows("", e)])
    conn.commit()
    conn.execute("ANALYZE")
    print(f"  loaded in {time.perf_counter() - start:.1f}s")
    base = "SELECT e.id, e.doc FROM broker_entities AS e WHERE e.tenant = '' AND e.type = ? AND "

    def timed(make: Callable[[int], tuple[str, list[Any]]], n: int) -> tuple[float, float, float]:
        latencies = []
        for i in range(n):
            sql, params = make(i)
            t = time.perf_counter()
            conn.execute(base + sql + " ORDER BY e.id LIMIT 20", [V + "Device", *params]).fetchall()
            latencies.append(time.perf_counter() - t)
        latencies.sort()
        return n / sum(latencies), latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3

    def via(target: SqlTarget, template: str, value: Callable[[int], str]) -> Callable[[int], tuple[str, list[Any]]]:
        def make(i: int) -> tuple[str, list[Any]]:
            condition = translate(parse_query(template.format(value(i)), ctx), target)
            return condition.sql, condition.params
        return make

    cases = [
        ("serialNumber==\"SN-…\" (1 hit)", 'serialNumber=="{}"', lambda i: f"SN-{(i * 7919) % args.entities:06d}",
         lambda i: ("e.serial = ?", [f"SN-{(i * 7919) % args.entities:06d}"]), args.lookups, 20),
        ("batteryLevel>0.99 (1% hits)", "batteryLevel>{}", lambda i: "0.99",
         lambda i: ("e.battery > ?", [0.99]), args.lookups // 4, 20),
    ]
    indexed = SqlTarget("sqlite", value_index=VALUE_INDEX_TABLE)
    direct = SqlTarget("sqlite")  # the stores' default: direct extraction, the scan as fallback (decision 0552)
    scan = SqlTarget("sqlite", direct=False)
    for label, template, value, plain, n, n_scan in cases:
        ref = timed(plain, n)
        idx = timed(via(indexed, template, value), n)
        dir_ = timed(via(direct, template, value), n_scan)
        doc = timed(via(scan, template, value), n_scan)
        print(f"  {label}")
        for name, (qps, p50, p99) in (("plain column (ref)", ref), ("value index", idx), ("direct (default)", dir_),
                                      ("doc scan only", doc)):
            print(f"    {name:20s} {qps:9,.0f} q/s  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  ratio {qps / ref[0]:5.2f}")


    if args.pg_dsn:
        import asyncio

        asyncio.run(postgres(args, ctx))


async def postgres(args: argparse.Namespace, ctx: Any) -> None:
    """Section 3 on PostgreSQL (JSONB documents; jit off, as the store should run it)."""
    import asyncpg

    from sleutelbos.broker.query import POSTGRES_FUNCTIONS_DDL

    print(f"== 4. PostgreSQL, {args.entities:,} meters: LIMIT 20 queries (value index / doc scan / plain column) ==")
    rng = random.Random(11)
    conn = await asyncpg.connect(args.pg_dsn, server_settings={"jit": "off"})
    schema = f"bench_query_{random.randrange(1 << 30)}"
    await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}")
    try:
        await conn.execute(POSTGRES_FUNCTIONS_DDL)
        await conn.execute("CREATE TABLE broker_entities (tenant TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, "
                           "doc JSONB NOT NULL, serial TEXT, battery DOUBLE PRECISION, PRIMARY KEY (tenant, id))")
        await conn.execute("CREATE INDEX ON broker_entities (serial); CREATE INDEX ON broker_entities (battery)")
        for ddl in VALUE_INDEX_DDL["postgresql"]:
            await conn.execute(ddl)
        start = time.perf_counter()
        for lo in range(0, args.entities, 5_000):
            batch = [meter(i, rng) for i in range(lo, min(lo + 5_000, args.entities))]
            await conn.executemany("INSERT INTO broker_entities VALUES ('', $1, $2, $3::jsonb, $4, $5)", [
                (e["id"], V + "Device", json.dumps(e), e[V + "serialNumber"][0]["value"],
                 e[V + "batteryLevel"][0]["value"]) for e in batch])
            await conn.copy_records_to_table(VALUE_INDEX_TABLE, records=[
                r for e in batch for r in attribute_value_rows("", e)])
        await conn.execute("ANALYZE")
        print(f"  loaded in {time.perf_counter() - start:.1f}s")
        base = "SELECT e.id, e.doc FROM broker_entities AS e WHERE e.tenant = '' AND e.type = $1 AND "

        async def timed(make: Callable[[int], tuple[str, list[Any]]], n: int) -> tuple[float, float, float]:
            latencies = []
            for i in range(n):
                sql, params = make(i)
                numbered = sql.format(*(f"${k}" for k in range(2, sql.count("{}") + 2)))
                t = time.perf_counter()
                await conn.fetch(base + numbered + " ORDER BY e.id LIMIT 20", V + "Device", *params)
                latencies.append(time.perf_counter() - t)
            latencies.sort()
            return n / sum(latencies), latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * .99)] * 1e3

        def via(target: SqlTarget, template: str, value: Callable[[int], str]) -> Callable[[int], tuple[str, list[Any]]]:
            def make(i: int) -> tuple[str, list[Any]]:
                condition = translate(parse_query(template.format(value(i)), ctx), target)
                return condition.sql, condition.params
            return make

        n = args.lookups
        cases = [
            ('serialNumber=="SN-…" (1 hit)', 'serialNumber=="{}"', lambda i: f"SN-{(i * 7919) % args.entities:06d}",
             lambda i: ("e.serial = {}", [f"SN-{(i * 7919) % args.entities:06d}"]), n, 5),
            ("batteryLevel>0.99 (1% hits)", "batteryLevel>{}", lambda i: "0.99",
             lambda i: ("e.battery > {}", [0.99]), n // 4, 5),
        ]
        for label, template, value, plain, count, count_scan in cases:
            ref = await timed(plain, count)
            idx = await timed(via(SqlTarget("postgresql", value_index=VALUE_INDEX_TABLE), template, value), count)
            dir_ = await timed(via(SqlTarget("postgresql"), template, value), count_scan)
            doc = await timed(via(SqlTarget("postgresql", direct=False), template, value), count_scan)
            print(f"  {label}")
            for name, (qps, p50, p99) in (("plain column (ref)", ref), ("value index", idx),
                                          ("direct (default)", dir_), ("doc scan only", doc)):
                print(f"    {name:20s} {qps:9,.0f} q/s  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  ratio {qps / ref[0]:5.2f}")
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


if __name__ == "__main__":
    main()
