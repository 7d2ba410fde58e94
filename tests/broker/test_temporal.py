"""The temporal API (clauses 5.6.11-5.6.16, 5.7.3-5.7.4, 6.18-6.24) on SQLite and PostgreSQL with interval readings
of a meter: create/add, timerel/timeAt/endTimeAt/timeproperty, lastN, attrs, q, type/id selection, temporalValues,
aggregatedValues (every method, computed in the database and checked against Python arithmetic on the same readings),
POST query, instance modification and deletion, truncation with 206 + Content-Range, bad input.

SQLite runs every test twice (docs/decisions/0720): with the history in the head (``sqlite``, the default bucket of an
hour) and with the head moved into a new bucket of chunks before every temporal read and modification
(``sqlite-chunks``), so that reads, aggregation and modification are shown on both tiers and across many buckets."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sleutelbos.core.settings import load_settings
from sleutelbos.stack import StackContext, build_app
from tests.broker.conftest import BASE, Broker, database_url_of

JSON = {"Content-Type": "application/json"}
T0 = datetime(2026, 3, 1, tzinfo=UTC)
METER = "urn:ngsi-ld:Device:meter-1"


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def reading(i: int) -> float:
    """Quarter-hour energy readings with repeats (for distinctCount) and a daily shape."""
    return float((i * 7) % 13 + (i // 96))


def readings(days: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"type": "Property", "value": reading(i), "observedAt": at(15 * i), "unitCode": "KWH"}
            for i in range(start, start + 96 * days)]


@pytest.fixture(params=["sqlite", "sqlite-chunks", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url_of("sqlite" if request.param == "sqlite-chunks" else request.param, request, tmp_path)


@pytest.fixture
def broker_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    chunks = request.node.callspec.params.get("database_url") == "sqlite-chunks"
    return {"broker_temporal_bucket_seconds": 0} if chunks else {}


async def post_temporal(broker: Broker, body: dict[str, Any]) -> httpx.Response:
    return await broker.client.post(f"{BASE}/temporal/entities", content=json.dumps(body), headers=JSON)


async def load_meter(broker: Broker, days: int = 2) -> None:
    r = await post_temporal(broker, {"id": METER, "type": "Device", "energy": readings(days)})
    assert r.status_code == 201, r.text


async def get(broker: Broker, path: str, **params: Any) -> httpx.Response:
    return await broker.client.get(f"{BASE}/temporal/entities{path}", params=params)


async def test_create_add_and_range_queries(broker: Broker) -> None:
    await load_meter(broker, days=1)
    r = await post_temporal(broker, {"id": METER, "type": "Device", "energy": readings(1, start=96)})
    assert r.status_code == 204, r.text
    # the current value is the latest reading
    current = (await broker.client.get(f"{BASE}/entities/{METER}")).json()
    assert current["energy"]["value"] == reading(191) and current["energy"]["observedAt"] == at(15 * 191)

    day2 = await get(broker, f"/{METER}", timerel="between", timeAt=at(96 * 15), endTimeAt=at(2 * 96 * 15))
    assert day2.status_code == 200, day2.text
    instances = day2.json()["energy"]
    assert [i["value"] for i in instances] == [reading(i) for i in range(96, 192)]
    assert [i["observedAt"] for i in instances] == [at(15 * i) for i in range(96, 192)]
    assert all(i["instanceId"].startswith("urn:ngsi-ld:Instance:") and i["unitCode"] == "KWH" for i in instances)
    assert len({i["instanceId"] for i in instances}) == 96

    before = (await get(broker, f"/{METER}", timerel="before", timeAt=at(15 * 3))).json()["energy"]
    assert [i["value"] for i in before] == [reading(i) for i in range(3)]
    after = (await get(broker, f"/{METER}", timerel="after", timeAt=at(15 * 189))).json()["energy"]
    assert [i["value"] for i in after] == [reading(190), reading(191)]

    last = (await get(broker, f"/{METER}", lastN=5)).json()["energy"]
    assert [i["value"] for i in last] == [reading(i) for i in range(187, 192)]
    last_of_day1 = (await get(broker, f"/{METER}", lastN=2, timerel="before", timeAt=at(96 * 15))).json()
    assert [i["value"] for i in last_of_day1["energy"]] == [reading(94), reading(95)]

    simplified = (await get(broker, f"/{METER}", options="temporalValues", timerel="before",
                            timeAt=at(15 * 2))).json()
    assert simplified["energy"] == {"type": "Property", "values": [[reading(0), at(0)], [reading(1), at(15)]]}
    assert simplified["type"] == "Device"


async def test_every_change_is_an_instance_and_timeproperty(broker: Broker) -> None:
    body = {"id": METER, "type": "Device", "power": {"type": "Property", "value": 1.0}}
    assert (await broker.create(body)).status_code == 201
    for v in (2.0, 3.0):
        r = await broker.client.patch(f"{BASE}/entities/{METER}/attrs",
                                      content=json.dumps({"power": {"type": "Property", "value": v}}), headers=JSON)
        assert r.status_code == 204
    # no observedAt: the instances are found by modifiedAt (and createdAt, the time each was recorded)
    assert "power" not in (await get(broker, f"/{METER}")).json()
    for prop in ("modifiedAt", "createdAt"):
        got = (await get(broker, f"/{METER}", timeproperty=prop, options="sysAttrs")).json()["power"]
        assert [i["value"] for i in got] == [1.0, 2.0, 3.0]
        assert got[0]["modifiedAt"] < got[1]["modifiedAt"] < got[2]["modifiedAt"]
    since = got[1]["modifiedAt"]
    later = (await get(broker, f"/{METER}", timeproperty="modifiedAt", timerel="after", timeAt=since)).json()
    assert [i["value"] for i in later["power"]] == [3.0]


async def test_aggregated_values_per_day_match_python(broker: Broker) -> None:
    await load_meter(broker, days=3)
    methods = ["totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq"]
    r = await get(broker, f"/{METER}", options="aggregatedValues", aggrMethods=",".join(methods),
                  aggrPeriodDuration="P1D", timerel="between", timeAt=at(0), endTimeAt=at(3 * 96 * 15), attrs="energy")
    assert r.status_code == 200, r.text
    energy = r.json()["energy"]
    assert energy["type"] == "Property"
    for day in range(3):
        values = [reading(i) for i in range(96 * day, 96 * (day + 1))]
        start, end = at(day * 96 * 15).replace("Z", ".000000Z"), at((day + 1) * 96 * 15).replace("Z", ".000000Z")
        expect = {"totalCount": 96, "distinctCount": len(set(values)), "sum": sum(values),
                  "avg": statistics.fmean(values), "min": min(values), "max": max(values),
                  "stddev": statistics.pstdev(values), "sumsq": sum(v * v for v in values)}
        for method in methods:
            value, p_start, p_end = energy[method][day]
            assert (p_start, p_end) == (start, end)
            assert math.isclose(value, expect[method], rel_tol=1e-9), (method, day, value, expect[method])
    # one period over everything when no duration is given; PT6H periods
    whole = (await get(broker, f"/{METER}", options="aggregatedValues", aggrMethods="totalCount,max")).json()
    assert whole["energy"]["totalCount"][0][0] == 3 * 96
    quarter_days = (await get(broker, f"/{METER}", options="aggregatedValues", aggrMethods="totalCount",
                              aggrPeriodDuration="PT6H", timerel="between", timeAt=at(0),
                              endTimeAt=at(96 * 15))).json()
    assert [p[0] for p in quarter_days["energy"]["totalCount"]] == [24, 24, 24, 24]


async def test_query_selection_and_post_query(broker: Broker) -> None:
    for n, level in ((1, 5.0), (2, 50.0)):
        body = {"id": f"urn:ngsi-ld:Device:q{n}", "type": "Device",
                "energy": [{"type": "Property", "value": level + i, "observedAt": at(15 * i)} for i in range(4)],
                "name": {"type": "Property", "value": f"meter {n}", "observedAt": at(0)}}
        assert (await post_temporal(broker, body)).status_code == 201
    r = await get(broker, "", type="Device", attrs="energy", q="energy>20", timerel="after", timeAt=at(0),
                  count="true")
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Device:q2"]
    assert [i["value"] for i in r.json()[0]["energy"]] == [51.0, 52.0, 53.0]
    assert "name" not in r.json()[0]
    assert r.headers["NGSILD-Results-Count"] == "1"
    ids = await get(broker, "", id="urn:ngsi-ld:Device:q1,urn:ngsi-ld:Device:q2", lastN=1)
    assert [(e["id"], e["energy"][0]["value"], e["name"][0]["value"]) for e in ids.json()] == [
        ("urn:ngsi-ld:Device:q1", 8.0, "meter 1"), ("urn:ngsi-ld:Device:q2", 53.0, "meter 2")]
    query = {"type": "Query", "entities": [{"type": "Device", "idPattern": "q1$"}], "attrs": ["energy"],
             "temporalQ": {"timerel": "before", "timeAt": at(30)}}
    r = await broker.client.post(f"{BASE}/temporal/entityOperations/query", content=json.dumps(query), headers=JSON)
    assert r.status_code == 200, r.text
    assert [(e["id"], [i["value"] for i in e["energy"]]) for e in r.json()] == [("urn:ngsi-ld:Device:q1", [5.0, 6.0])]


async def test_modify_and_delete_instances(broker: Broker) -> None:
    await load_meter(broker, days=1)
    first_three = (await get(broker, f"/{METER}", timerel="before", timeAt=at(45))).json()["energy"]
    target = first_three[1]["instanceId"]
    r = await broker.client.patch(f"{BASE}/temporal/entities/{METER}/attrs/energy/{target}",
                                  content=json.dumps({"type": "Property", "value": 99.5, "observedAt": at(15)}),
                                  headers=JSON)
    assert r.status_code == 204, r.text
    got = (await get(broker, f"/{METER}", timerel="before", timeAt=at(45))).json()["energy"]
    assert [i["value"] for i in got] == [reading(0), 99.5, reading(2)]
    assert got[1]["instanceId"] == target
    assert (await broker.client.delete(f"{BASE}/temporal/entities/{METER}/attrs/energy/{target}")).status_code == 204
    got = (await get(broker, f"/{METER}", timerel="before", timeAt=at(45))).json()["energy"]
    assert [i["value"] for i in got] == [reading(0), reading(2)]
    assert (await broker.client.delete(f"{BASE}/temporal/entities/{METER}/attrs/energy/{target}")).status_code == 404
    bad = await broker.client.delete(f"{BASE}/temporal/entities/{METER}/attrs/energy/not-an-instance")
    assert bad.status_code == 400

    extra = [{"type": "Property", "value": 1.0, "observedAt": at(10_000)}]
    r = await broker.client.post(f"{BASE}/temporal/entities/{METER}/attrs",
                                 content=json.dumps({"energy": extra, "voltage": extra}), headers=JSON)
    assert r.status_code == 204, r.text
    assert [i["value"] for i in (await get(broker, f"/{METER}", attrs="voltage")).json()["voltage"]] == [1.0]
    r = await broker.client.post(f"{BASE}/temporal/entities/{METER}/attrs/voltage",
                                 content=json.dumps({"type": "Property", "value": 2.0, "observedAt": at(10_015)}),
                                 headers=JSON)
    assert r.status_code == 204, r.text
    assert len((await get(broker, f"/{METER}", attrs="voltage")).json()["voltage"]) == 2

    assert (await broker.client.delete(f"{BASE}/temporal/entities/{METER}/attrs/voltage")).status_code == 204
    assert "voltage" not in (await get(broker, f"/{METER}")).json()
    assert (await broker.client.delete(f"{BASE}/temporal/entities/{METER}")).status_code == 204
    assert (await get(broker, f"/{METER}")).status_code == 404
    assert (await broker.client.get(f"{BASE}/entities/{METER}")).status_code == 404
    assert await broker.service.store.history_count("", METER) == 0


@pytest.mark.parametrize(("params", "needle"), [
    ({"timerel": "between", "timeAt": "2026-03-01T00:00:00Z"}, "endTimeAt"),
    ({"timerel": "around", "timeAt": "2026-03-01T00:00:00Z"}, "timerel"),
    ({"timerel": "after"}, "timeAt"),
    ({"timerel": "after", "timeAt": "yesterday"}, "timeAt"),
    ({"lastN": "-2"}, "lastN"),
    ({"options": "aggregatedValues", "aggrMethods": "sum", "aggrPeriodDuration": "1 day"}, "aggrPeriodDuration"),
    ({"options": "aggregatedValues", "aggrMethods": "median"}, "median"),
    ({"options": "aggregatedValues"}, "aggrMethods"),
    ({"timeproperty": "deletedAt"}, "timeproperty"),
])
async def test_bad_query_input(broker: Broker, params: dict[str, str], needle: str) -> None:
    await load_meter(broker, days=1)
    r = await get(broker, f"/{METER}", **params)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert needle in r.json()["detail"]
    r = await get(broker, "", type="Device", q="energy>>1")
    assert r.status_code == 400 and r.json()["type"].endswith("BadRequestData")


async def test_bad_writes_store_nothing(broker: Broker) -> None:
    before = await broker.service.store.history_count("")
    for body in ({"id": METER, "type": "Device", "energy": [{"type": "Property", "observedAt": at(0)}]},
                 {"id": METER, "type": "Device", "energy": [{"type": "Property", "value": 1, "observedAt": "soon"}]},
                 {"type": "Device", "energy": readings(1)},
                 {"id": "not a uri", "type": "Device", "energy": readings(1)}):
        r = await post_temporal(broker, body)
        assert r.status_code == 400, r.text
    assert await broker.service.store.history_count("") == before
    assert (await get(broker, f"/{METER}")).status_code == 404


@pytest.fixture
async def small_pages(database_url: str, tmp_path: Path, broker_settings: dict[str, Any]) -> AsyncIterator[Broker]:
    settings = load_settings(data_dir=tmp_path, broker_database_url=database_url, broker_temporal_page_size=50,
                             mqtt_port=None, **broker_settings)
    app = build_app(StackContext(settings=settings), expose=("broker",))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker.test") as client:
        yield Broker(client, app, database_url)


async def test_truncation_206_content_range_and_next_range(small_pages: Broker) -> None:
    broker = small_pages
    await load_meter(broker, days=1)  # 96 instances, pages of 50
    r = await get(broker, f"/{METER}", timerel="after", timeAt="2026-02-28T00:00:00Z")
    assert r.status_code == 206, r.text
    first = r.json()["energy"]
    assert [i["value"] for i in first] == [reading(i) for i in range(50)]
    first_at, last_at = "2026-03-01T00:00:00.000000Z", (T0 + timedelta(minutes=15 * 49)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    assert r.headers["Content-Range"] == f"date-time {first_at}-{last_at}/*"
    r = await get(broker, f"/{METER}", timerel="after", timeAt=last_at)
    assert r.status_code == 200
    assert [i["value"] for i in r.json()["energy"]] == [reading(i) for i in range(50, 96)]
    r = await get(broker, f"/{METER}", lastN=80)
    assert r.status_code == 206
    assert [i["value"] for i in r.json()["energy"]] == [reading(i) for i in range(46, 96)]
    assert r.headers["Content-Range"].endswith("/80")
