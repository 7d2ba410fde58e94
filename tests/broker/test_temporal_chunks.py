"""SQLite's attribute history in head and chunks (docs/decisions/0720): the flush moves the head into a bucket and
keeps every instance id; a read picks its buckets by time and still finds late and modified readings; the flush is due
after a bucket's time or a head's size; retention drops whole buckets; a flush cut short between its two files
neither loses nor doubles a reading; and a random history of writes, flushes and deletions reads as a Python model of
it does."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sleutelbos.stack import StackContext, build_app
from tests.broker.conftest import BASE, _settings

JSON = {"Content-Type": "application/json"}
POWER = "https://uri.etsi.org/ngsi-ld/default-context/power"


def meter(i: int) -> str:
    return f"urn:ngsi-ld:Device:c-{i}"


def at(minute: int, year: int = 2026) -> str:
    return f"{year}-03-01T{minute // 60:02d}:{minute % 60:02d}:00Z"


def reading(value: float, minute: int, year: int = 2026) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": at(minute, year)}


@asynccontextmanager
async def running(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    url = f"sqlite:///{tmp_path / 'broker.sqlite'}"
    app = build_app(StackContext(settings=_settings(url, tmp_path, **settings)), expose=("broker",))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker.test") as client:
        temporal = app.state.context.services["broker.temporal"]
        async with temporal.materialiser._lock:  # the background flusher waits: the tests flush themselves
            pass
        temporal.materialiser.interval_s = 3600.0
        yield client, temporal


async def add(client: httpx.AsyncClient, i: int, instances: list[dict[str, Any]]) -> None:
    r = await client.post(f"{BASE}/temporal/entities", content=json.dumps(
        {"id": meter(i), "type": "Device", "power": instances}), headers=JSON)
    assert r.status_code in (201, 204), r.text


async def read(client: httpx.AsyncClient, i: int, **params: Any) -> list[tuple[str, float, str]]:
    """(instanceId, value, observedAt) of the meter's power instances in the answer's order."""
    r = await client.get(f"{BASE}/temporal/entities/{meter(i)}", params={"attrs": "power", **params})
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    got = r.json().get("power", [])
    return [(x["instanceId"], x["value"], x["observedAt"]) for x in (got if isinstance(got, list) else [got])]


def head_rows(tmp_path: Path) -> int:
    conn = sqlite3.connect(tmp_path / "broker.sqlite")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM broker_entity_history WHERE entity_id <> ''").fetchone()[0])
    finally:
        conn.close()


async def test_flush_moves_the_head_and_keeps_every_id(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, temporal):
        await add(client, 1, [reading(float(m), m) for m in range(0, 60, 15)])
        await add(client, 1, [reading(9.0, 60)])
        await add(client, 2, [reading(1.0, 0)])
        before = await read(client, 1)
        assert [v for _, v, _ in before] == [0.0, 15.0, 30.0, 45.0, 9.0]
        assert head_rows(tmp_path) == 3
        assert await temporal.materialiser.flush() == 3
        assert head_rows(tmp_path) == 0
        assert await read(client, 1) == before
        buckets = await temporal.db.fetch(
            "SELECT bucket, seq_hi, observed_lo, observed_hi FROM broker_temporal_buckets")
        assert buckets == [(1, 3, "2026-03-01T00:00:00", "2026-03-01T01:00:00")]
        chunks = await temporal.db.fetch("SELECT entity_id, json_array_length(body) FROM broker_temporal_chunks")
        assert chunks == [(meter(1), 2), (meter(2), 1)]  # one chunk per entity, in key order
        assert await temporal.materialiser.flush() == 0  # nothing new: no empty bucket
        await add(client, 1, [reading(10.0, 75)])
        after = await read(client, 1)
        assert after[:5] == before and [v for _, v, _ in after[5:]] == [10.0]


async def test_buckets_are_chosen_by_time_and_hold_late_readings(tmp_path: Path) -> None:
    """A bucket is chosen by the times it holds, not by when it was written: a bulk load of last year's readings in
    the newest bucket is found by a range over last year; lastN and aggregation span buckets and the head."""
    async with running(tmp_path) as (client, temporal):
        await add(client, 1, [reading(float(m), m) for m in range(0, 120, 15)])  # this year, 8 readings
        await temporal.materialiser.flush()
        await add(client, 1, [reading(100.0 + m, m, 2025) for m in range(0, 60, 15)])  # last year, late
        await temporal.materialiser.flush()
        await add(client, 1, [reading(200.0, 120)])  # this year, in the head
        last_year = await read(client, 1, timerel="between", timeAt=at(0, 2025), endTimeAt=at(0, 2026))
        assert [v for _, v, _ in last_year] == [100.0, 115.0, 130.0, 145.0]
        this_year = await read(client, 1, timerel="after", timeAt=at(100))
        assert [v for _, v, _ in this_year] == [105.0, 200.0]
        assert [v for _, v, _ in await read(client, 1, lastN=3)] == [90.0, 105.0, 200.0]
        everything = await read(client, 1)
        assert [v for _, v, _ in everything][:4] == [100.0, 115.0, 130.0, 145.0] and len(everything) == 13
        # the bucket of last year's readings was not even looked at for this year's range
        r = await client.get(f"{BASE}/temporal/entities/{meter(1)}", params={
            "attrs": "power", "options": "aggregatedValues", "aggrMethods": "totalCount,sum",
            "aggrPeriodDuration": "PT1H", "timerel": "between", "timeAt": at(0), "endTimeAt": at(180)})
        assert r.status_code == 200, r.text
        power = r.json()["power"]
        assert [p[0] for p in power["totalCount"]] == [4, 4, 1]
        assert [p[0] for p in power["sum"]] == [90.0, 330.0, 200.0]
        chosen = await temporal.db.fetch(
            "SELECT bucket FROM broker_temporal_buckets WHERE observed_hi >= '2026-03-01T01:40:00'")
        assert chosen == [(1,)]


async def test_a_modified_instance_widens_its_bucket(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, temporal):
        await add(client, 1, [reading(1.0, 0), reading(2.0, 15)])
        await temporal.materialiser.flush()
        (first, _, _), (second, _, _) = await read(client, 1)
        r = await client.patch(f"{BASE}/temporal/entities/{meter(1)}/attrs/power/{second}", content=json.dumps(
            {"type": "Property", "value": 3.0, "observedAt": "2030-01-01T00:00:00Z"}), headers=JSON)
        assert r.status_code == 204, r.text
        later = await read(client, 1, timerel="after", timeAt="2029-12-31T00:00:00Z")
        assert later == [(second, 3.0, "2030-01-01T00:00:00Z")]
        assert [iid for iid, _, _ in await read(client, 1, timerel="before", timeAt=at(60))] == [first]
        r = await client.delete(f"{BASE}/temporal/entities/{meter(1)}/attrs/power/{first}")
        assert r.status_code == 204
        assert await read(client, 1) == later
        # an id of another attribute's place, or of no instance, is not found
        for wrong in (first, first.replace("-0-", "-1-"), "urn:ngsi-ld:Instance:99-0-0", "urn:ngsi-ld:Instance:7"):
            r = await client.delete(f"{BASE}/temporal/entities/{meter(1)}/attrs/power/{wrong}")
            assert r.status_code == 404, wrong


async def test_flush_is_due_after_a_bucket_or_a_full_head(tmp_path: Path) -> None:
    async with running(tmp_path, broker_temporal_head_rows=3) as (client, temporal):
        flusher = temporal.materialiser
        await add(client, 1, [reading(1.0, 0)])
        await add(client, 1, [reading(2.0, 15)])
        assert not await flusher.due()
        await add(client, 1, [reading(3.0, 30)])
        assert await flusher.due()
        await flusher.flush()
        assert not await flusher.due()
        await add(client, 1, [reading(4.0, 45)])
        assert not await flusher.due()
        flusher.bucket_s = 0.000001  # the head's oldest row is now a bucket old
        assert await flusher.due()


async def test_retention_drops_whole_buckets(tmp_path: Path) -> None:
    async with running(tmp_path, broker_temporal_retention_days=30) as (client, temporal):
        await add(client, 1, [reading(1.0, 0)])
        await temporal.materialiser.flush()
        await add(client, 1, [reading(2.0, 15)])
        await temporal.materialiser.flush()
        assert await temporal.materialiser.drop_before("2000-01-01T00:00:00") == 0
        assert [v for _, v, _ in await read(client, 1)] == [1.0, 2.0]
        # both buckets recorded before the horizon; the next change goes on after the cursor all the same
        assert await temporal.materialiser.drop_before("2999-01-01T00:00:00") == 2
        assert await read(client, 1) == []
        await add(client, 1, [reading(3.0, 30)])
        assert [v for _, v, _ in await read(client, 1)] == [3.0]
        await temporal.materialiser.flush()
        assert [v for _, v, _ in await read(client, 1)] == [3.0]
        assert await temporal.db.fetchval("SELECT MAX(bucket) FROM broker_temporal_buckets") == 3


async def test_a_flush_cut_short_between_the_files_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """The bucket committed, the head rows not yet deleted (a crash between the two files' transactions): reads show
    every reading once, and the next start deletes the moved rows."""
    async with running(tmp_path) as (client, temporal):
        flusher = temporal.materialiser
        await add(client, 1, [reading(1.0, 0), reading(2.0, 15)])
        await add(client, 1, [reading(3.0, 30)])
        before = await read(client, 1)
        async with flusher._lock, temporal.db.temporal_lock:
            assert await flusher._on_thread(flusher._write_step) == 2
        assert head_rows(tmp_path) == 2
        assert await read(client, 1) == before
    async with running(tmp_path) as (client, temporal):
        assert head_rows(tmp_path) == 0
        assert await read(client, 1) == before
        # a flush cut short before its bucket's row: chunks of a bucket no row names are read by nobody, and the
        # next flush (which takes that bucket number) replaces them
        flusher = temporal.materialiser
        await add(client, 1, [reading(4.0, 45)])
        async with temporal.db.temporal_transaction() as tx:
            orphan = json.dumps([[999, "2026-03-01T00:00:00.000000Z", {POWER: [{"type": "Property", "value": 66.0}]}]])
            await tx.execute("INSERT INTO broker_temporal_chunks (bucket, tenant, entity_id, body)"
                             " VALUES (2, '', ?, ?)", [meter(1), orphan])
        assert [v for _, v, _ in await read(client, 1)] == [1.0, 2.0, 3.0, 4.0]
        assert await flusher.flush() == 1
        assert [v for _, v, _ in await read(client, 1)] == [1.0, 2.0, 3.0, 4.0]
        assert await temporal.db.fetchval("SELECT COUNT(*) FROM broker_temporal_chunks WHERE bucket = 2") == 1


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_history_reads_as_its_model(tmp_path: Path, seed: int) -> None:
    """Writes (several instances per change, out of order, equal instants), flushes at random, deleted instances and
    a deleted attribute: every answer — all instances, ranges, lastN, hourly sums — holds what a Python model of the
    writes holds, and an id once seen keeps naming the same reading."""
    rnd = random.Random(seed)
    written: dict[int, list[tuple[float, str, str | None]]] = {i: [] for i in range(4)}  # (value, observedAt, ds)
    seen: dict[str, tuple[float, str]] = {}
    async with running(tmp_path) as (client, temporal):

        async def check(n: int) -> list[tuple[str, float, str]]:
            got = await read(client, n)
            assert sorted((v, o) for _, v, o in got) == sorted((v, o) for v, o, _ in written[n])
            assert [o for _, _, o in got] == sorted(o for _, _, o in got)  # time order
            for iid, value, observed in got:
                assert seen.setdefault(iid, (value, observed)) == (value, observed)
            return got

        for step in range(40):
            i = rnd.randrange(4)
            instances = []
            for _ in range(rnd.randint(1, 3)):
                value, minute = float(rnd.randint(0, 50)), rnd.randrange(0, 300, 5)
                ds = rnd.choice([None, None, "urn:ds:a"])
                instances.append({**reading(value, minute), **({"datasetId": ds} if ds else {})})
                written[i].append((value, at(minute), ds))
            await add(client, i, instances)
            if rnd.random() < 0.25:
                await temporal.materialiser.flush()
            if step % 10 == 9:  # every meter checked; one instance deleted
                for n in written:
                    await check(n)
                got = await check(i)
                victim, value, observed = rnd.choice(got)
                r = await client.delete(f"{BASE}/temporal/entities/{meter(i)}/attrs/power/{victim}")
                assert r.status_code == 204
                written[i].remove(next(w for w in written[i] if w[:2] == (value, observed)))
        if seed == 1:
            await temporal.materialiser.flush()
        for n in written:
            got = await check(n)
            window = [x for x in got if at(60) <= x[2] < at(180)]
            assert await read(client, n, timerel="between", timeAt=at(60), endTimeAt=at(180)) == window
            assert await read(client, n, lastN=3) == got[-3:]
            r = await client.get(f"{BASE}/temporal/entities/{meter(n)}", params={
                "attrs": "power", "options": "aggregatedValues", "aggrMethods": "sum,totalCount",
                "aggrPeriodDuration": "PT1H", "timerel": "between", "timeAt": at(0), "endTimeAt": at(300)})
            hours: dict[str, list[float]] = {}
            for value, observed, _ in written[n]:
                hours.setdefault(observed[11:13], []).append(value)
            power = r.json().get("power", {"sum": [], "totalCount": []})
            assert [(p[1][11:13], p[0]) for p in power["totalCount"]] == [(h, len(v)) for h, v in sorted(hours.items())]
            assert [p[0] for p in power["sum"]] == [sum(v) for _, v in sorted(hours.items())]
        # the default instances of a meter deleted: those of the datasetId stay
        keep = sorted((v, o) for v, o, ds in written[0] if ds == "urn:ds:a")
        r = await client.delete(f"{BASE}/temporal/entities/{meter(0)}/attrs/power")
        assert r.status_code == 204 if len(keep) < len(written[0]) else 404
        assert sorted((v, o) for _, v, o in await read(client, 0)) == keep


async def test_last_n_while_a_flush_commits_between_its_statements(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``lastN`` chooses its buckets in one statement and reads them in the next: a flush that commits between the
    two moves the head's rows into a bucket the choice did not see, and the read takes that bucket too."""
    from sleutelbos.broker.temporal.chunks import ChunkedHistory

    async with running(tmp_path) as (client, temporal):
        await add(client, 1, [reading(1.0, 0), reading(2.0, 15)])
        await temporal.materialiser.flush()
        await add(client, 1, [reading(3.0, 30), reading(4.0, 45)])  # in the head
        read_chunks = ChunkedHistory._instances

        async def flush_first(self: ChunkedHistory, *args: Any) -> Any:
            await temporal.materialiser.flush()  # the head's rows leave for bucket 2
            return await read_chunks(self, *args)

        monkeypatch.setattr(ChunkedHistory, "_instances", flush_first)
        assert [v for _, v, _ in await read(client, 1, lastN=3)] == [2.0, 3.0, 4.0]
        assert await temporal.db.fetchval("SELECT MAX(bucket) FROM broker_temporal_buckets") == 2
