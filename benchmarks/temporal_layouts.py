"""What it costs, per meter update, to index a fleet's readings per meter in SQLite: the store's layout of
``broker_temporal_instances`` against three others (docs/decisions/0700).

Issue 2's batch goal counts history instances; the temporal API (issue 3) needs them indexed per entity, attribute
and time. A fleet sends each meter's readings once per 15 minutes, so a materialiser step of a few hundred history
rows never holds two updates of one meter: every instance row lands on a leaf page of its own in every index keyed
by entity, and every such page is written to the WAL at commit. This script measures that write, without the broker
(no HTTP, no JSON parsing, no history explode): the instance rows of each pass are staged in a temporary table, as
the materialiser stages them, and only the copy into the layout and the commit are timed, per step of ``--step``
history rows, as the materialiser's write step does.

Layouts (the reference is the first):

``store``
    The store's table (schema.py): a rowid table with ``(tenant, entity_id, attr, observed_at)`` and
    ``(..., modified_at)`` indexes over the IRIs.
``entity_clustered``
    ``WITHOUT ROWID`` clustered on ``(entity key, observed_at, attr key, seq)`` with integer keys, so that the four
    instances of one meter update are neighbours; ``(entity key, modified_at)`` and ``(seq)`` indexes.
``grouped``
    One row per history row and ``observedAt`` (the four readings of a meter update as one JSON object), clustered on
    ``(entity key, observed_at, seq)``, one ``(entity key, modified_at)`` index.
``chunked``
    Bucket-major chunks: once per hour bucket (``--passes-per-bucket`` passes), every series' instances of the bucket
    as one JSON array, written in key order ``(bucket, entity key, attr key)`` — appends, not scattered page writes.
    Readings not yet in a chunk would have to be read from elsewhere; that part is not measured here.
``store_hourly``
    The store's table and indexes, written once per hour bucket as ``chunked`` is, its rows sorted by the index key:
    each series' leaf page then takes the bucket's four instances in one write (readings of the open hour would be
    read from the history).
``history_chunks``
    As ``chunked``, but per entity rather than per attribute, and made of the history rows' instance text as the
    core wrote it (``{attribute IRI: [instances]}``, decision 0502), concatenated without taking the JSON apart: the
    flush neither parses nor explodes; a read picks its attribute out of the chunk with ``json_each``.

It prints, per layout and pass, CPU and wall µs per meter update of the write step, the ratio of the last passes'
median to the store's, the database size, and the median time to read one meter attribute's instances of the whole
run (an index range or, for the bucketed layouts, one look per bucket). Then the temporal goal's read — a month of
daily aggregates of one meter attribute, < 50 ms — on a month of data for ``--month-meters`` meters in the store's
layout and in ``history_chunks`` (hourly buckets), with the ratio.

    PYTHONPATH=src python benchmarks/temporal_layouts.py [--meters 100000] [--passes 8] [--step 500]
        [--layouts store,entity_clustered,grouped,chunked,store_hourly,history_chunks] [--month-meters 50] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

BASE_IRI = "https://smartdatamodels.org/dataModel.Energy/"
ATTRS = [BASE_IRI + a for a in ("activePowerImport", "activePowerExport", "activeEnergyImport", "activeEnergyExport")]
PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0", "temp_store=MEMORY")
CACHE_MB = 64  # the store's page cache per connection (store/sqlite.py); --cache-mb to see what a bigger one buys
STAGE = "CREATE TEMP TABLE stage (history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at, instance)"
KEYS = """
    CREATE TABLE ent (k INTEGER PRIMARY KEY, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, UNIQUE (tenant, entity_id));
    CREATE TABLE att (k INTEGER PRIMARY KEY, attr TEXT NOT NULL UNIQUE);
"""
ENT_KEY = "(SELECT k FROM ent WHERE ent.tenant = s.tenant AND ent.entity_id = s.entity_id)"
ATT_KEY = "(SELECT k FROM att WHERE att.attr = s.attr)"
NEW_KEYS = ("INSERT OR IGNORE INTO ent (tenant, entity_id) SELECT DISTINCT tenant, entity_id FROM stage",
            "INSERT OR IGNORE INTO att (attr) SELECT DISTINCT attr FROM stage")

SCHEMAS = {
    "store": """
        CREATE TABLE inst (seq INTEGER PRIMARY KEY, history_seq INTEGER NOT NULL, tenant TEXT NOT NULL,
            entity_id TEXT NOT NULL, attr TEXT NOT NULL, dataset_id TEXT, observed_at TEXT, modified_at TEXT NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0, instance TEXT NOT NULL);
        CREATE INDEX inst_observed ON inst (tenant, entity_id, attr, observed_at);
        CREATE INDEX inst_modified ON inst (tenant, entity_id, attr, modified_at);""",
    "entity_clustered": KEYS + """
        CREATE TABLE inst (e INTEGER NOT NULL, observed_at TEXT, a INTEGER NOT NULL, seq INTEGER NOT NULL,
            history_seq INTEGER NOT NULL, dataset_id TEXT, modified_at TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
            instance TEXT NOT NULL, PRIMARY KEY (e, observed_at, a, seq)) WITHOUT ROWID;
        CREATE INDEX inst_modified ON inst (e, modified_at);
        CREATE INDEX inst_seq ON inst (seq);""",
    "grouped": KEYS + """
        CREATE TABLE inst (e INTEGER NOT NULL, observed_at TEXT, seq INTEGER NOT NULL, modified_at TEXT NOT NULL,
            instances TEXT NOT NULL, PRIMARY KEY (e, observed_at, seq)) WITHOUT ROWID;
        CREATE INDEX inst_modified ON inst (e, modified_at);""",
    "chunked": KEYS + """
        CREATE TABLE inst (bucket TEXT NOT NULL, e INTEGER NOT NULL, a INTEGER NOT NULL, instances TEXT NOT NULL,
            PRIMARY KEY (bucket, e, a)) WITHOUT ROWID;""",
    "history_chunks": KEYS + """
        CREATE TABLE inst (bucket TEXT NOT NULL, e INTEGER NOT NULL, changes TEXT NOT NULL,
            PRIMARY KEY (bucket, e)) WITHOUT ROWID;""",
}
SCHEMAS["store_hourly"] = SCHEMAS["store"]  # the same table and indexes, written per hour, sorted

COPY = {
    "store": ["INSERT INTO inst (history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at, instance)"
              " SELECT history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at, instance"
              " FROM stage ORDER BY rowid"],
    "entity_clustered": [*NEW_KEYS,
                         "INSERT INTO inst (e, observed_at, a, seq, history_seq, dataset_id, modified_at, instance)"  # noqa: S608 - constants
                         f" SELECT {ENT_KEY}, observed_at, {ATT_KEY}, :seq + rowid, history_seq, dataset_id,"
                         " modified_at, instance FROM stage s ORDER BY rowid"],
    "grouped": [*NEW_KEYS,
                "INSERT INTO inst (e, observed_at, seq, modified_at, instances)"  # noqa: S608 - constants
                f" SELECT {ENT_KEY}, observed_at, :seq + MIN(rowid), modified_at,"
                " '{' || group_concat(json_quote(attr) || ':' || instance, ',') || '}' FROM stage s"
                " GROUP BY history_seq, observed_at ORDER BY MIN(rowid)"],
    "chunked": [*NEW_KEYS,
                # grouped on the text keys first, so that the integer keys are looked up once per series
                "INSERT INTO inst (bucket, e, a, instances)"  # noqa: S608 - constants
                f" SELECT :bucket, {ENT_KEY}, {ATT_KEY}, s.instances FROM"
                " (SELECT tenant, entity_id, attr, '[' || group_concat(instance, ',') || ']' AS instances FROM"
                " (SELECT * FROM stage ORDER BY tenant, entity_id, attr, observed_at) GROUP BY tenant, entity_id, attr) s"
                " ORDER BY 2, 3"],
    "store_hourly": ["INSERT INTO inst (history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at,"
                     " instance) SELECT history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at,"
                     " instance FROM stage ORDER BY tenant, entity_id, attr, observed_at"],
    "history_chunks": [NEW_KEYS[0],
                       "INSERT INTO inst (bucket, e, changes)"  # noqa: S608 - constants
                       f" SELECT :bucket, {ENT_KEY}, s.changes FROM"
                       " (SELECT tenant, entity_id, '[' || group_concat(instance, ',') || ']' AS changes FROM"
                       " (SELECT * FROM stage ORDER BY tenant, entity_id, history_seq) GROUP BY tenant, entity_id) s"
                       " ORDER BY 2"],
}

READ = {
    "store": "SELECT instance FROM inst WHERE tenant = '' AND entity_id = :entity AND attr = :attr"
             " ORDER BY observed_at",
    "entity_clustered": "SELECT instance FROM inst WHERE e = (SELECT k FROM ent WHERE tenant = '' AND entity_id = :entity)"
                        " AND a = (SELECT k FROM att WHERE attr = :attr) ORDER BY observed_at",
    "grouped": "SELECT json_extract(instances, '$.\"' || :attr || '\"') FROM inst"
               " WHERE e = (SELECT k FROM ent WHERE tenant = '' AND entity_id = :entity) ORDER BY observed_at",
    "chunked": "SELECT instances FROM inst WHERE bucket IN (SELECT value FROM json_each(:buckets))"
               " AND e = (SELECT k FROM ent WHERE tenant = '' AND entity_id = :entity)"
               " AND a = (SELECT k FROM att WHERE attr = :attr)",
    "store_hourly": "SELECT instance FROM inst WHERE tenant = '' AND entity_id = :entity AND attr = :attr"
                    " ORDER BY observed_at",
    "history_chunks": "SELECT i.value FROM inst, json_each(inst.changes) h, json_each(h.value, '$.\"' || :attr || '\"') i"
                      " WHERE bucket IN (SELECT value FROM json_each(:buckets))"
                      " AND e = (SELECT k FROM ent WHERE tenant = '' AND entity_id = :entity)",
}


START = datetime(2026, 11, 1, tzinfo=UTC)


def slot(pass_: int) -> str:
    """The pass's 15-minute ``observedAt`` (pass 0: 1 November 2026, 00:00), in the store's form."""
    return (START + timedelta(minutes=15 * pass_)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def meter_updates(meters: int, pass_: int) -> list[tuple[int, str, str, str, dict[str, dict[str, Any]]]]:
    """One pass of ``meters`` batch updates: (history seq, entity id, observedAt, modifiedAt, {attribute IRI:
    instance}), 4 readings each."""
    ts, modified = slot(pass_), f"2026-11-29T07:{pass_ % 60:02d}:00.000000Z"
    updates = []
    for i in range(meters):
        rnd = random.Random(i * 1000 + pass_)
        readings = {attr: {"type": "Property", "value": round(rnd.uniform(0, 5), 3), "observedAt": ts,
                           "unitCode": "KWT", "modifiedAt": modified} for attr in ATTRS}
        updates.append((pass_ * meters + i, f"urn:ngsi-ld:Device:meter-{i:07d}", ts, modified, readings))
    return updates


def instance_rows(meters: int, pass_: int) -> list[tuple[Any, ...]]:
    """The instance rows the materialiser stages for one pass of ``meters`` batch updates (4 readings each)."""
    return [(seq, "", entity, attr, None, ts, modified, orjson.dumps(instance).decode())
            for seq, entity, ts, modified, readings in meter_updates(meters, pass_)
            for attr, instance in readings.items()]


def history_rows(meters: int, pass_: int) -> list[tuple[Any, ...]]:
    """``history_chunks``: the core's history rows of the pass (one per meter update, its instances by attribute
    IRI as one JSON text), in the staging table's columns (no attribute, the text as ``instance``)."""
    return [(seq, "", entity, None, None, ts, modified,
             orjson.dumps({attr: [instance] for attr, instance in readings.items()}).decode())
            for seq, entity, ts, modified, readings in meter_updates(meters, pass_)]


BUCKETED = {"chunked": instance_rows, "store_hourly": instance_rows, "history_chunks": history_rows}


class Layout:
    """One layout in a database file of its own; ``write`` times only the copy from staging and the commit."""

    def __init__(self, name: str, path: Path, cache_mb: int) -> None:
        self.name, self.path = name, path
        self.conn = sqlite3.connect(path, isolation_level=None)
        for pragma in (*PRAGMAS, f"cache_size=-{cache_mb * 1024}", f"mmap_size={max(1024, 4 * cache_mb) << 20}"):
            self.conn.execute("PRAGMA " + pragma)
        self.conn.executescript(SCHEMAS[name])
        self.conn.execute(STAGE)
        self.seq = 0

    def _timed(self, rows: list[tuple[Any, ...]], params: dict[str, Any]) -> tuple[float, float]:
        self.conn.execute("DELETE FROM stage")
        self.conn.executemany("INSERT INTO stage VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        c0, t0 = time.process_time(), time.perf_counter()
        self.conn.execute("BEGIN IMMEDIATE")
        for sql in COPY[self.name]:
            self.conn.execute(sql, {k: v for k, v in params.items() if f":{k}" in sql})
        self.conn.execute("COMMIT")
        return time.process_time() - c0, time.perf_counter() - t0

    def write(self, rows: list[tuple[Any, ...]], step: int) -> tuple[float, float]:
        """Copy one pass in steps of ``step`` history rows (4 instance rows each); CPU and wall seconds."""
        cpu = wall = 0.0
        for k in range(0, len(rows), 4 * step):
            chunk = rows[k:k + 4 * step]
            c, w = self._timed(chunk, {"seq": self.seq})
            self.seq += len(chunk)
            cpu, wall = cpu + c, wall + w
        return cpu, wall

    def write_bucket(self, rows: list[tuple[Any, ...]], bucket: str) -> tuple[float, float]:
        """``chunked``: the bucket's passes in one statement, in key order."""
        return self._timed(rows, {"bucket": bucket})

    def checkpoint(self) -> float:
        """The WAL written into the database file (what ``wal_autocheckpoint`` or the store's checkpoint loop does
        after the commits): its wall seconds, counted with the writes."""
        t0 = time.perf_counter()
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return time.perf_counter() - t0

    def read_ms(self, meters: int, buckets: list[str], samples: int = 200) -> float:
        """Median milliseconds to read one meter attribute's instances of the whole run."""
        rnd = random.Random(7)
        times = []
        for _ in range(samples):
            params = {"entity": f"urn:ngsi-ld:Device:meter-{rnd.randrange(meters):07d}", "attr": ATTRS[1],
                      "buckets": orjson.dumps(buckets).decode()}
            sql = READ[self.name]
            t0 = time.perf_counter()
            self.conn.execute(sql, {k: v for k, v in params.items() if f":{k}" in sql}).fetchall()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3


def run(name: str, args: argparse.Namespace, workdir: Path, out: Callable[[str], None]) -> dict[str, Any]:
    """Write ``args.passes`` passes into one layout; per-pass µs per meter update (CPU, wall incl. checkpoint)."""
    meters, passes, step, per_bucket = args.meters, args.passes, args.step, args.passes_per_bucket
    layout = Layout(name, workdir / f"{name}.sqlite3", args.cache_mb)
    cpu_us, wall_us, buckets = [], [], []
    if name in BUCKETED:
        for b in range(0, passes, per_bucket):
            bucket = slot(b)[:13]
            buckets.append(bucket)
            rows = [r for p in range(b, min(b + per_bucket, passes)) for r in BUCKETED[name](meters, p)]
            cpu, wall = layout.write_bucket(rows, bucket)
            wall += layout.checkpoint()
            updates = meters * min(per_bucket, passes - b)
            cpu_us.append(cpu / updates * 1e6)
            wall_us.append(wall / updates * 1e6)
            out(f"  {name:<17} bucket {bucket}: {cpu_us[-1]:6.1f} µs CPU, {wall_us[-1]:6.1f} µs wall per meter update")
    else:
        for p in range(passes):
            cpu, wall = layout.write(instance_rows(meters, p), step)
            wall += layout.checkpoint()
            cpu_us.append(cpu / meters * 1e6)
            wall_us.append(wall / meters * 1e6)
            out(f"  {name:<17} pass {p}: {cpu_us[-1]:6.1f} µs CPU, {wall_us[-1]:6.1f} µs wall per meter update")
    later = max(1, len(cpu_us) // 2)  # the second half: the indexes already hold earlier passes
    result = {"cpu_us": statistics.median(cpu_us[-later:]), "wall_us": statistics.median(wall_us[-later:]),
              "size_mb": layout.path.stat().st_size / 1e6, "read_ms": layout.read_ms(meters, buckets)}
    layout.conn.close()
    return result


AGGREGATE = {
    "store": "SELECT substr(observed_at, 1, 10) AS day, avg(json_extract(instance, '$.value')),"
             " max(json_extract(instance, '$.value')) FROM inst WHERE tenant = '' AND entity_id = :entity"
             " AND attr = :attr AND observed_at >= :start AND observed_at < :end GROUP BY day",
    "history_chunks": "SELECT substr(json_extract(i.value, '$.observedAt'), 1, 10) AS day,"
                      " avg(json_extract(i.value, '$.value')), max(json_extract(i.value, '$.value'))"
                      " FROM inst, json_each(inst.changes) h, json_each(h.value, '$.\"' || :attr || '\"') i"
                      " WHERE bucket IN (SELECT value FROM json_each(:buckets))"
                      " AND e = (SELECT k FROM ent WHERE tenant = '' AND entity_id = :entity) GROUP BY day",
}


def month_aggregates(args: argparse.Namespace, workdir: Path) -> str:
    """The temporal goal's read (a month of daily aggregates of one meter attribute, < 50 ms) on a month of data
    for ``--month-meters`` meters, in the store's layout (the reference) and in ``history_chunks`` (hourly buckets):
    median milliseconds and the ratio."""
    meters, passes = args.month_meters, 30 * 96
    buckets = [slot(b)[:13] for b in range(0, passes, 4)]
    times: dict[str, float] = {}
    for name in AGGREGATE:
        layout = Layout(name, workdir / f"month-{name}.sqlite3", args.cache_mb)
        if name == "store":
            for p in range(passes):
                layout.write(instance_rows(meters, p), args.step)
        else:
            for b in range(0, passes, 4):
                layout.write_bucket([r for p in range(b, b + 4) for r in history_rows(meters, p)], slot(b)[:13])
        layout.checkpoint()
        rnd = random.Random(11)
        samples = []
        for _ in range(50):
            params = {"entity": f"urn:ngsi-ld:Device:meter-{rnd.randrange(meters):07d}", "attr": ATTRS[1],
                      "start": slot(0), "end": slot(passes), "buckets": orjson.dumps(buckets).decode()}
            sql = AGGREGATE[name]
            t0 = time.perf_counter()
            days = layout.conn.execute(sql, {k: v for k, v in params.items() if f":{k}" in sql}).fetchall()
            samples.append(time.perf_counter() - t0)
            assert len(days) == 30, len(days)
        times[name] = statistics.median(samples) * 1e3
        layout.conn.close()
    return (f"a month of daily aggregates (avg, max) of one meter attribute, {meters} meters × 30 days × 96:"
            f" store {times['store']:.2f} ms, history_chunks {times['history_chunks']:.2f} ms"
            f" ({times['history_chunks'] / times['store']:.2f}×; goal < 50 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--step", type=int, default=500, help="history rows per materialiser step")
    parser.add_argument("--passes-per-bucket", type=int, default=4, help="chunked: passes per hour bucket")
    parser.add_argument("--layouts", default=",".join(SCHEMAS), help="comma-separated; 'store' is the reference")
    parser.add_argument("--cache-mb", type=int, default=CACHE_MB, help="page cache per connection (mmap: 4×, ≥ 1 GiB)")
    parser.add_argument("--month-meters", type=int, default=50,
                        help="meters for the month-of-aggregates read (0: skip it)")
    parser.add_argument("--quick", action="store_true", help="10,000 meters, 4 passes")
    args = parser.parse_args()
    if args.quick:
        args.meters, args.passes = 10_000, 4
    names = args.layouts.split(",")  # the ratios need "store" (the reference) among them
    print(f"temporal layouts: {args.meters:,} meters × {args.passes} passes of 4 readings, steps of {args.step}"
          f" history rows, page cache {args.cache_mb} MiB, SQLite {sqlite3.sqlite_version}, load {os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="sleutelbos-layouts-") as tmp:
        for name in names:
            results[name] = run(name, args, Path(tmp), lambda line: print(line, flush=True))
            (Path(tmp) / f"{name}.sqlite3").unlink()
        month = month_aggregates(args, Path(tmp)) if args.month_meters else ""
    ref = results.get("store")
    print(f"median of the later passes, µs per meter update; ratio to 'store' (load {os.getloadavg()[0]:.2f}):")
    for name, r in results.items():
        cpu_ratio = f" ({r['cpu_us'] / ref['cpu_us']:.2f}×)" if ref else ""
        wall_ratio = f" ({r['wall_us'] / ref['wall_us']:.2f}×)" if ref else ""
        print(f"  {name:<17} CPU {r['cpu_us']:6.1f}{cpu_ratio}  wall {r['wall_us']:6.1f}{wall_ratio}"
              f"  file {r['size_mb']:7.1f} MB  read one meter attribute {r['read_ms']:.3f} ms")
    if month:
        print(month)


if __name__ == "__main__":
    main()
